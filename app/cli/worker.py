"""`camelid worker`: lend this machine's CPU or GPUs to another Camelid (llama.cpp's RPC server).

The client adds it with `--rpc HOST:PORT`. llama.cpp's server runs in a
background thread (it blocks in C, where SIGINT never arrives), so this main
thread stays free to stop on Ctrl-C or SIGTERM. A second small server on
PORT+1 answers `GET /status` with the real free memory (see
app/core/cluster/probe.py).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from app.cli.common import at_least, human_bytes
from app.core.cluster.probe import (
    DEFAULT_PORT,
    PROTOCOL,
    STATUS_PATH,
    STATUS_PORT_OFFSET,
    StatusServer,
    WorkerError,
    format_version,
)
from app.core.errors import CamelidError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "worker", help="lend this machine to another Camelid (llama.cpp RPC worker)",
        description="Serve this machine's CPU or GPUs to another Camelid, which adds it with "
                    "--rpc HOST:PORT. Loopback only by default: the protocol has no authentication.")
    add_arguments(parser)
    parser.set_defaults(run=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="IPv4 address to listen on (default 127.0.0.1; reach it through an SSH "
                             "tunnel; anything else lets anyone who can reach the port run code here)")
    parser.add_argument("--port", type=at_least(1), default=DEFAULT_PORT,
                        help=f"port (default {DEFAULT_PORT}); the status side channel uses PORT+1")
    parser.add_argument("--threads", type=at_least(1), default=None,
                        help="CPU threads (default: half the logical CPUs, as llama.cpp's rpc-server)")
    parser.add_argument("--devices", default=None, metavar="NAME,...",
                        help="llama.cpp devices to serve (e.g. CUDA0,CUDA1 or CPU; default: every GPU, "
                             "else the CPU)")
    parser.add_argument("--cache", action="store_true",
                        help="keep tensors the client sends in a local cache (faster reloads)")
    parser.add_argument("--json", action="store_true",
                        help="print JSON lines: one 'ready' object, then one per client event")


def tunnel_hint(port: int) -> str:
    return (f"ssh -N -L {port}:127.0.0.1:{port} user@worker on the client, then "
            f"--rpc 127.0.0.1:{port}")


def exposure_warning(host: str, port: int) -> str | None:
    """The warning for a worker that listens beyond loopback, or None."""
    if ipaddress.ip_address(host).is_loopback:
        return None
    return (f"WARNING: this worker listens on {host}:{port} with no authentication: anyone who can "
            "reach the port can run code on this machine. Prefer the default 127.0.0.1 and an SSH "
            f"tunnel: {tunnel_hint(port)}.")


def run(args: argparse.Namespace) -> int:
    host = _ipv4_host(args.host)
    port = int(args.port)
    if port + STATUS_PORT_OFFSET > 65535:
        raise WorkerError(f"--port {port} is too high: the worker needs it and the next one (its "
                          "status side channel).", "Use a port from 1024 to 65534.", reason="usage")
    threads = int(args.threads or max(1, (os.cpu_count() or 2) // 2))
    _check_free(host, port)
    status_free = _port_free(host, port + STATUS_PORT_OFFSET)

    from app.core.cluster import rpc

    names = [n for n in (args.devices or "").split(",") if n.strip()] or None
    served = rpc.choose_devices(names)
    cache_dir = None
    if args.cache:
        from app import paths

        cache_dir = str(paths.cache_dir() / "rpc")

    tracker = _ClientTracker(as_json=args.json)
    warning = exposure_warning(host, port)
    status_server = None
    if status_free:
        status_server = StatusServer(host, port + STATUS_PORT_OFFSET, lambda: rpc.worker_status(
            served, threads=threads, busy=tracker.busy, connections=tracker.clients)).start()
    status = rpc.worker_status(served, threads=threads)
    _announce(args, host, port, threads, served, status, warning, status_server is not None)
    sys.stdout.flush()
    tracker.capture()  # from here on llama.cpp's own prints (fd 1) go through the tracker

    failure: list[BaseException] = []

    def serve() -> None:
        try:
            rpc.start_server(host, port, threads=threads, device_names=[d.name for d in served],
                             cache_dir=cache_dir)
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)

    server = threading.Thread(target=serve, name="camelid-rpc-server", daemon=True)
    try:
        previous: Any = signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:  # not the main thread: SIGTERM keeps its default (the process ends)
        previous = None
    server.start()
    try:
        while server.is_alive():
            server.join(0.25)
    except KeyboardInterrupt:
        tracker.event("stopped", "Worker stopped.")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # llama.cpp's server thread cannot be stopped any other way
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if status_server is not None:
        status_server.close()
    time.sleep(0.1)  # let the tracker pass on llama.cpp's last lines
    if failure and isinstance(failure[0], CamelidError):
        raise failure[0]
    raise WorkerError(f"llama.cpp's RPC server stopped on {host}:{port}:",
                      "read the lines above and start the worker again.", reason="start")


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _ipv4_host(text: str) -> str:
    """An IPv4 literal (llama.cpp's server binds with inet_addr, which takes nothing else)."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        try:
            return str(socket.getaddrinfo(text, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0])
        except (socket.gaierror, UnicodeError):
            raise WorkerError(f"--host {text!r} is not an IPv4 address or a name this machine can "
                              "look up:", "use 127.0.0.1 (the default), or one of this machine's "
                              "IPv4 addresses.", reason="usage") from None
    if address.version != 4:
        raise WorkerError(f"--host {text} is IPv6, and llama.cpp's RPC server listens on IPv4 only:",
                          "use 127.0.0.1 (the default) or an IPv4 address.", reason="usage")
    return str(address)


def _bind_error(host: str, port: int) -> OSError | None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if os.name != "nt":  # as llama.cpp does; on Windows SO_REUSEADDR would allow a double bind
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc
    return None


def _port_free(host: str, port: int) -> bool:
    return _bind_error(host, port) is None


def _check_free(host: str, port: int) -> None:
    import errno

    exc = _bind_error(host, port)
    if exc is None:
        return
    if exc.errno == errno.EADDRNOTAVAIL:
        raise WorkerError(f"{host} is not an address of this machine:",
                          "use 127.0.0.1 (the default) or one of this machine's IPv4 addresses.",
                          reason="usage")
    if exc.errno in (errno.EACCES, errno.EPERM):
        raise WorkerError(f"This user may not listen on port {port}:",
                          "use a port above 1023 (the default is 50052).", reason="usage")
    raise WorkerError(f"Port {port} on {host} is already in use (another worker, or another "
                      "program):", f"stop that one, or start this one with --port {port + 2}.",
                      reason="usage")


def _client_endpoints(host: str, port: int) -> list[str]:
    if host != "0.0.0.0":
        return [f"{host}:{port}"]
    try:
        import psutil

        found = [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
                 if a.family == socket.AF_INET and not ipaddress.ip_address(a.address).is_loopback]
    except Exception:
        found = []
    return [f"{a}:{port}" for a in found] or [f"THIS_MACHINE:{port}"]


def _announce(args: argparse.Namespace, host: str, port: int, threads: int, served: Sequence[Any],
              status: dict[str, Any], warning: str | None, has_status: bool) -> None:
    endpoints = _client_endpoints(host, port)
    if args.json:
        print(json.dumps({
            "event": "ready", "host": host, "port": port, "protocol": list(PROTOCOL),
            "endpoints": endpoints, "rpc": [f"--rpc {e}" for e in endpoints], "threads": threads,
            "status_url": f"http://{host}:{port + STATUS_PORT_OFFSET}{STATUS_PATH}" if has_status else None,
            "devices": status["devices"], "warning": warning,
        }), flush=True)
        if warning:
            print(warning, file=sys.stderr, flush=True)
        return
    if warning:
        print(f"\n{warning}\n", file=sys.stderr, flush=True)
    print(f"Camelid worker on {host}:{port} (llama.cpp RPC protocol {format_version(PROTOCOL)}, "
          f"{threads} thread{'s' if threads != 1 else ''})")
    for dev, measured in zip(served, status["devices"], strict=False):
        print(f"  {dev.name:8} {dev.description}: {human_bytes(measured['free_bytes'])} free of "
              f"{human_bytes(measured['total_bytes'])}")
    if has_status:
        print(f"  status   http://{host}:{port + STATUS_PORT_OFFSET}{STATUS_PATH}")
    else:
        print(f"  status   none (port {port + STATUS_PORT_OFFSET} is in use): clients will see the RPC "
              "protocol's memory numbers")
    print("On the other machine, add: " + "  or  ".join(f"--rpc {e}" for e in endpoints))
    if warning is None and host != "0.0.0.0":
        print(f"  (from another machine, through an SSH tunnel: {tunnel_hint(port)})")
    print("Serves one client at a time. Stop with Ctrl-C.", flush=True)


class _ClientTracker:
    """Reads what llama.cpp's server prints (fd 1) to know when a client is connected."""

    def __init__(self, *, as_json: bool) -> None:
        self.as_json = as_json
        self.busy: bool | None = None  # None until llama.cpp's output is captured
        self.clients = 0

    def capture(self) -> None:
        try:
            sys.stdout.flush()
            original = os.dup(1)
            read_end, write_end = os.pipe()
            os.dup2(write_end, 1)
            os.close(write_end)
            sys.stdout = open(original, "w", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115
        except (OSError, ValueError, AttributeError):
            return
        self.busy = False
        threading.Thread(target=self._read, args=(read_end,), name="camelid-rpc-output",
                         daemon=True).start()

    def _read(self, fd: int) -> None:
        with open(fd, "rb") as pipe:
            for raw in pipe:
                line = raw.decode("utf-8", errors="replace").rstrip()
                if line.startswith("Accepted client connection"):
                    self.busy = True
                    self.clients += 1
                    self.event("client_connected", "A client connected.")
                elif line.startswith("Client connection closed"):
                    self.busy = False
                    self.event("client_disconnected", "The client disconnected.")
                elif line and not line.startswith(("Starting RPC server", "  ", "Devices:")):
                    print(line, file=sys.stderr, flush=True)

    def event(self, name: str, sentence: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        if self.as_json:
            print(json.dumps({"event": name, "time": stamp, "connections": self.clients}), flush=True)
        else:
            print(f"[{stamp}] {sentence}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m app.cli.worker ...`: the same command outside `camelid`."""
    from app.cli import report_error

    parser = argparse.ArgumentParser(prog="camelid worker")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except CamelidError as exc:
        report_error(exc, as_json=args.json)
        return 2


if __name__ == "__main__":
    sys.exit(main())
