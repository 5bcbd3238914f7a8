"""Ask a `camelid worker` (a llama.cpp RPC server) what it offers, in pure Python.

llama.cpp's RPC client aborts the whole process when a worker is missing, busy
or speaks another protocol version, so every worker is probed here first: a
dead or mismatched worker becomes a sentence, and llama.cpp only ever meets
workers that answered.

The wire format is llama.cpp's (vendor/llama.cpp/ggml/src/ggml-rpc/ggml-rpc.cpp,
llama-cpp-python 0.3.36): a request is `cmd:u8 | size:u64 le | payload`, a
reply `size:u64 le | payload`, all structs packed. The first command on a
connection must be HELLO. The protocol has no command that names a device: a
device's name comes only from the worker's status side channel.

`camelid worker` also serves a small JSON status on PORT+1 (`GET /status`),
because a CPU worker's RPC memory report counts all of its RAM as free. Both
sides of that side channel live here (`read_status`, `StatusServer`).
"""

from __future__ import annotations

import ipaddress
import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from app.core.errors import CamelidError

#: The RPC protocol the bundled llama.cpp speaks: RPC_PROTO_{MAJOR,MINOR,PATCH}_VERSION in
#: vendor/llama.cpp/ggml/include/ggml-rpc.h of llama-cpp-python 0.3.36 (its server prints
#: "Starting RPC server v7.0.0"). Update it with llama-cpp-python.
PROTOCOL: tuple[int, int, int] = (7, 0, 0)

#: rpc-server's default port (tools/rpc/rpc-server.cpp).
DEFAULT_PORT = 50052
#: The status side channel listens on the worker's port plus this.
STATUS_PORT_OFFSET = 1
STATUS_PATH = "/status"

# enum rpc_cmd in ggml-rpc.cpp (RPC_CMD_HELLO is asserted to stay 14).
CMD_GET_DEVICE_MEMORY = 11
CMD_HELLO = 14
CMD_DEVICE_COUNT = 15

#: rpc_msg_hello_req is conn_caps[RPC_CONN_CAPS_SIZE = 24] (ggml-rpc/transport.h); zeros ask for
#: plain TCP (no RDMA upgrade).
CONN_CAPS_SIZE = 24
#: rpc_msg_hello_rsp: major u8, minor u8, patch u8, padding u8, conn_caps[24].
HELLO_REPLY_SIZE = 4 + CONN_CAPS_SIZE
#: The most devices a worker is believed to offer; more means the reply is not a worker's.
MAX_DEVICES = 64
#: The most a status reply may be.
MAX_STATUS_BYTES = 64 * 1024


class WorkerError(CamelidError):
    """A worker (another machine's `camelid worker`) cannot be used."""

    code = "worker"

    def __init__(self, message: str, fix: str | None = None, *, reason: str = "error") -> None:
        super().__init__(message, fix)
        #: refused | timeout | unreachable | protocol | garbage | address | closed
        self.reason = reason


@dataclass
class WorkerDevice:
    """One device a worker serves, as the RPC protocol (and its status, when present) reports it."""

    index: int
    name: str | None = None  # the protocol names no device: only the status does
    free_bytes: int = 0
    total_bytes: int = 0
    kind: str | None = None  # "cpu" | "gpu", from the status
    #: Where free_bytes came from: "status" (measured by the worker) or "rpc" (the protocol's number,
    #: all of the RAM for a CPU worker).
    free_source: str = "rpc"

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "kind": self.kind,
                "free_bytes": self.free_bytes, "total_bytes": self.total_bytes,
                "free_source": self.free_source}


#: The name the brief for this module uses.
RemoteDevice = WorkerDevice


@dataclass
class WorkerInfo:
    endpoint: str  # host:port as llama.cpp takes it
    host: str
    port: int
    version: tuple[int, int, int]
    devices: list[WorkerDevice] = field(default_factory=list)
    latency_s: float = 0.0  # one HELLO round trip
    status: dict[str, Any] | None = None  # the worker's status side channel, when it answered
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "host": self.host, "port": self.port,
                "version": list(self.version), "devices": [d.to_dict() for d in self.devices],
                "latency_s": self.latency_s, "status": self.status, "notes": list(self.notes)}


def format_version(version: tuple[int, int, int] | list[int]) -> str:
    return ".".join(str(v) for v in version)


def compatible(version: tuple[int, int, int]) -> bool:
    """What llama.cpp's client accepts (negotiate_hello): the same major, a minor no newer than ours."""
    return version[0] == PROTOCOL[0] and version[1] <= PROTOCOL[1]


def parse_endpoint(text: str) -> tuple[str, int]:
    """`HOST`, `HOST:PORT`, `[IPv6]` or `[IPv6]:PORT` → (host, port); the port defaults to 50052."""
    raw = text.strip()
    example = ("write HOST:PORT, for example 192.168.1.20:50052 (an IPv6 address goes in brackets: "
               "[fd00::20]:50052).")
    if not raw or any(c.isspace() for c in raw) or "/" in raw:
        raise WorkerError(f"{text!r} is not a worker address:", example, reason="address")
    port_text: str | None = None
    if raw.startswith("["):
        end = raw.find("]")
        if end < 0:
            raise WorkerError(f"{text!r} is not a worker address (no closing bracket):", example,
                              reason="address")
        host, rest = raw[1:end], raw[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise WorkerError(f"{text!r} is not a worker address:", example, reason="address")
            port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise WorkerError(f"{host!r} in {text!r} is not an IPv6 address:", example,
                              reason="address") from None
    elif raw.count(":") > 1:
        raise WorkerError(f"{text!r} looks like an IPv6 address without brackets:", example,
                          reason="address")
    else:
        host, colon, after = raw.partition(":")
        port_text = after if colon else None
        if not host:
            raise WorkerError(f"{text!r} has no host name or address:", example, reason="address")
    if port_text is None:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise WorkerError(f"{port_text!r} in {text!r} is not a port number (1 to 65535):", example,
                          reason="address")
    return host, int(port_text)


def endpoint_text(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def probe(endpoint: str, *, timeout: float = 3.0, status: bool = True) -> WorkerInfo:
    """Handshake with a worker, count its devices and their memory, read its status when it has one.

    Never reads more than a few hundred bytes of RPC replies; raises WorkerError with a sentence.
    """
    host, port = parse_endpoint(endpoint)
    where = endpoint_text(host, port)
    _refuse_ipv6(host, where)
    address = _resolve_ipv4(host, port, where)
    deadline_s = timeout
    try:
        sock = socket.create_connection(address, timeout=deadline_s)
    except ConnectionRefusedError:
        raise WorkerError(f"Nothing answers at {where}:",
                          "start `camelid worker` there, or check the address.", reason="refused") from None
    except TimeoutError:
        raise WorkerError(f"Nothing answered at {where} within {timeout:g}s (the machine is off, "
                          "or a firewall drops the connection):",
                          "check the address, the network, and that `camelid worker` runs there.",
                          reason="unreachable") from None
    except OSError as exc:
        raise WorkerError(f"{where} cannot be reached ({exc.strerror or exc}):",
                          "check the address and the network.", reason="unreachable") from None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started = time.monotonic()
        reply = _call(sock, CMD_HELLO, bytes(CONN_CAPS_SIZE), HELLO_REPLY_SIZE, where, timeout,
                      handshake=True)
        latency = time.monotonic() - started
        version = (reply[0], reply[1], reply[2])
        if not compatible(version):
            raise WorkerError(f"{where} speaks RPC protocol {format_version(version)}, this Camelid "
                              f"speaks {format_version(PROTOCOL)}:",
                              "install the same Camelid version on both machines.", reason="protocol")
        (count,) = struct.unpack("<I", _call(sock, CMD_DEVICE_COUNT, b"", 4, where, timeout))
        if count == 0 or count > MAX_DEVICES:
            raise _garbage(where, f"it claims {count} devices")
        devices = []
        for index in range(count):
            free, total = struct.unpack(
                "<QQ", _call(sock, CMD_GET_DEVICE_MEMORY, struct.pack("<I", index), 16, where, timeout))
            devices.append(WorkerDevice(index=index, free_bytes=free, total_bytes=total))
    finally:
        sock.close()  # the worker serves one client at a time: let the next one in
    info = WorkerInfo(endpoint=f"{host}:{port}", host=host, port=port, version=version,
                      devices=devices, latency_s=latency)
    if status:
        _merge_status(info, read_status(address[0], port + STATUS_PORT_OFFSET, timeout=min(timeout, 2.0)))
    return info


def _refuse_ipv6(host: str, where: str) -> None:
    try:
        is_v6 = isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address)
    except ValueError:
        return
    if is_v6:
        raise WorkerError(f"{where} is an IPv6 address, and llama.cpp's RPC client connects over IPv4 "
                          "only:", "use the worker's IPv4 address or a host name that has one.",
                          reason="address")


def _resolve_ipv4(host: str, port: int, where: str) -> tuple[str, int]:
    """The IPv4 address llama.cpp's client will use (it resolves with gethostbyname: IPv4 only)."""
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise WorkerError(f"{host!r} (in {where}) cannot be found as an IPv4 host:",
                          "check the spelling, or give the worker's IPv4 address.",
                          reason="address") from None
    addr = infos[0][4]
    return str(addr[0]), int(addr[1])


def _call(sock: socket.socket, cmd: int, payload: bytes, reply_size: int, where: str, timeout: float,
          *, handshake: bool = False) -> bytes:
    try:
        sock.settimeout(timeout)
        sock.sendall(struct.pack("<BQ", cmd, len(payload)) + payload)
        try:
            header = _recv_exact(sock, 8)
        except (ConnectionResetError, BrokenPipeError):
            header = None  # a server that hangs up with our request unread resets the connection
        if header is None:
            if handshake:
                raise WorkerError(f"{where} closed the connection at the handshake: it is not a Camelid "
                                  "worker, or one of another version (older llama.cpp RPC servers "
                                  "hang up on this handshake):",
                                  "install the same Camelid version on both machines, or check the port.",
                                  reason="closed")
            raise WorkerError(f"{where} closed the connection in the middle of the probe:",
                              "check the worker's terminal for an error, and start it again.",
                              reason="closed")
        (size,) = struct.unpack("<Q", header)
        if size != reply_size:
            raise _garbage(where, f"a reply of {size} bytes where {reply_size} were expected")
        body = _recv_exact(sock, reply_size)
        if body is None:
            raise _garbage(where, f"a reply cut short (under {reply_size} bytes)")
        return body
    except TimeoutError:
        raise WorkerError(f"{where} accepted the connection but did not answer within {timeout:g}s: it "
                          "is probably serving another Camelid (a worker serves one client at a time).",
                          "Wait until that one is done, or start another worker.",
                          reason="timeout") from None
    except (ConnectionResetError, BrokenPipeError):
        raise WorkerError(f"{where} reset the connection during the probe:",
                          "check the worker's terminal for an error, and start it again.",
                          reason="closed") from None


def _garbage(where: str, what: str) -> WorkerError:
    return WorkerError(f"{where} answered with {what}: it is not a Camelid worker, or speaks another "
                       "protocol.", "Check the address and port (the worker prints the one to use).",
                       reason="garbage")


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    """Exactly n bytes, or None when the peer closed first (with nothing or part of them)."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


# -- the status side channel ---------------------------------------------------------------------


def read_status(host: str, port: int, *, timeout: float = 2.0) -> dict[str, Any] | None:
    """A worker's status JSON (GET /status on PORT+1), or None when it has none or it is unusable.

    Bounded: at most MAX_STATUS_BYTES, and `timeout` seconds in all.
    """
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(f"GET {STATUS_PATH} HTTP/1.0\r\nHost: {endpoint_text(host, port)}\r\n"
                         "Connection: close\r\n\r\n".encode("ascii"))
            data = bytearray()
            while len(data) <= MAX_STATUS_BYTES:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                sock.settimeout(left)
                chunk = sock.recv(8192)
                if not chunk:
                    break
                data += chunk
            else:
                return None
    except (OSError, UnicodeError):
        return None
    head, sep, body = bytes(data).partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/") or head.split(b" ", 2)[1:2] != [b"200"]:
        return None
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return clean_status(value)


def clean_status(value: Any) -> dict[str, Any] | None:
    """A status reply with only the fields and types Camelid uses (it comes from the network)."""
    if not isinstance(value, dict) or not isinstance(value.get("devices"), list):
        return None
    devices = []
    for d in value["devices"][:MAX_DEVICES]:
        if not isinstance(d, dict) or not _is_count(d.get("index")):
            continue
        entry: dict[str, Any] = {"index": d["index"]}
        for key in ("name", "description", "kind"):
            if isinstance(d.get(key), str):
                entry[key] = d[key][:200]
        for key in ("free_bytes", "total_bytes"):
            if _is_count(d.get(key)):
                entry[key] = d[key]
        devices.append(entry)
    out: dict[str, Any] = {"devices": devices}
    if isinstance(value.get("camelid"), str):
        out["camelid"] = value["camelid"][:50]
    protocol = value.get("protocol")
    if isinstance(protocol, list) and len(protocol) == 3 and all(_is_count(v) for v in protocol):
        out["protocol"] = list(protocol)
    if _is_count(value.get("threads")):
        out["threads"] = value["threads"]
    if isinstance(value.get("busy"), bool):
        out["busy"] = value["busy"]
    if _is_count(value.get("connections")):
        out["connections"] = value["connections"]
    return out


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63


def _merge_status(info: WorkerInfo, status: dict[str, Any] | None) -> None:
    if status is None:
        info.notes.append("The worker has no status side channel (not `camelid worker`, or port "
                          f"{info.port + STATUS_PORT_OFFSET} is closed): free memory is the RPC "
                          "protocol's number, which for a CPU worker is all of its RAM.")
        return
    info.status = status
    by_index = {d["index"]: d for d in status["devices"]}
    for dev in info.devices:
        known = by_index.get(dev.index)
        if known is None:
            continue
        dev.name = known.get("name", dev.name)
        dev.kind = known.get("kind", dev.kind)
        if "free_bytes" in known:
            dev.free_bytes = known["free_bytes"]
            dev.free_source = "status"
        if "total_bytes" in known and known["total_bytes"] > 0:
            dev.total_bytes = known["total_bytes"]


class StatusServer:
    """`camelid worker`'s status side channel: GET /status answers `status()` as JSON.

    Runs in daemon threads; every request is bounded by the handler's timeout and one line.
    """

    def __init__(self, host: str, port: int, status: Callable[[], dict[str, Any]]) -> None:
        provider = status

        class Handler(BaseHTTPRequestHandler):
            timeout = 5  # seconds a client may take to send its request
            server_version = "camelid-worker"

            def do_GET(self) -> None:
                if self.path.split("?")[0] != STATUS_PATH:
                    self.send_error(404, "only GET /status")
                    return
                try:
                    body = json.dumps(provider()).encode("utf-8")
                except Exception as exc:  # a status that cannot be measured: say so, keep serving
                    body = json.dumps({"error": str(exc)[:200], "devices": []}).encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="camelid-worker-status",
                                        daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> StatusServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
