"""The pure-Python probe against fake workers: every way a worker can fail is a sentence."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from app.core.cluster.probe import (
    DEFAULT_PORT,
    PROTOCOL,
    StatusServer,
    WorkerError,
    clean_status,
    parse_endpoint,
    probe,
    read_status,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeWorker:
    """A TCP server on 127.0.0.1 that hands each connection to `handle` in a thread."""

    def __init__(self, handle: Callable[[socket.socket], None]) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = int(self.sock.getsockname()[1])
        self.handle = handle
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            self.handle(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def fake() -> Iterator[Callable[[Callable[[socket.socket], None]], FakeWorker]]:
    made: list[FakeWorker] = []

    def make(handle: Callable[[socket.socket], None]) -> FakeWorker:
        made.append(FakeWorker(handle))
        return made[-1]

    yield make
    for w in made:
        w.close()


def read_request(conn: socket.socket) -> tuple[int, bytes]:
    head = b""
    while len(head) < 9:
        chunk = conn.recv(9 - len(head))
        if not chunk:
            raise OSError("closed")
        head += chunk
    cmd, size = struct.unpack("<BQ", head)
    payload = b""
    while len(payload) < size:
        payload += conn.recv(size - len(payload))
    return cmd, payload


def reply(conn: socket.socket, payload: bytes) -> None:
    conn.sendall(struct.pack("<Q", len(payload)) + payload)


def good_worker(version: tuple[int, int, int] = PROTOCOL, devices: int = 2) -> Callable[[socket.socket], None]:
    def handle(conn: socket.socket) -> None:
        while True:
            cmd, payload = read_request(conn)
            if cmd == 14:
                assert payload == bytes(24)
                reply(conn, bytes(version) + b"\0" + bytes(24))
            elif cmd == 15:
                reply(conn, struct.pack("<I", devices))
            elif cmd == 11:
                (index,) = struct.unpack("<I", payload)
                reply(conn, struct.pack("<QQ", 1000 + index, 2000 + index))
    return handle


def test_parse_endpoint() -> None:
    assert parse_endpoint("192.168.1.20") == ("192.168.1.20", DEFAULT_PORT)
    assert parse_endpoint(" host.lan:6000 ") == ("host.lan", 6000)
    assert parse_endpoint("[fd00::20]:7000") == ("fd00::20", 7000)
    assert parse_endpoint("[::1]") == ("::1", DEFAULT_PORT)
    for bad in ("", "host:", "host:0", "host:65536", "host:port", "fd00::20", "[fd00::20",
                "[nothex]:1", "[::1]x", ":50052", "a b:1", "http://host:1"):
        with pytest.raises(WorkerError) as err:
            parse_endpoint(bad)
        assert err.value.reason == "address"
        assert "HOST:PORT" in str(err.value)


def test_ipv6_is_refused_before_connecting() -> None:
    with pytest.raises(WorkerError, match="IPv4 only"):
        probe("[::1]:50052")


def test_nothing_answers() -> None:
    port = free_port()
    with pytest.raises(WorkerError) as err:
        probe(f"127.0.0.1:{port}", timeout=2)
    assert str(err.value) == (f"Nothing answers at 127.0.0.1:{port}: start `camelid worker` there, "
                              "or check the address.")
    assert err.value.reason == "refused"


def test_good_worker_without_status(fake) -> None:
    w = fake(good_worker())
    info = probe(f"127.0.0.1:{w.port}")
    assert info.version == PROTOCOL
    assert [(d.index, d.free_bytes, d.total_bytes, d.free_source) for d in info.devices] == [
        (0, 1000, 2000, "rpc"), (1, 1001, 2001, "rpc")]
    assert info.status is None and "no status side channel" in info.notes[0]
    assert info.endpoint == f"127.0.0.1:{w.port}"
    assert 0 < info.latency_s < 1


def test_status_side_channel_overrides_free_memory(fake) -> None:
    w = fake(good_worker(devices=1))
    status = {"camelid": "x", "protocol": list(PROTOCOL), "threads": 1, "busy": False,
              "devices": [{"index": 0, "name": "CUDA0", "kind": "gpu", "free_bytes": 500,
                           "total_bytes": 2000, "evil": "x" * 10}]}
    try:
        server = StatusServer("127.0.0.1", w.port + 1, lambda: status).start()
    except OSError:
        pytest.skip("the port after the fake worker's is taken")
    try:
        info = probe(f"127.0.0.1:{w.port}")
    finally:
        server.close()
    dev = info.devices[0]
    assert (dev.name, dev.kind, dev.free_bytes, dev.free_source) == ("CUDA0", "gpu", 500, "status")
    assert info.status is not None and "evil" not in info.status["devices"][0]
    assert info.notes == []


def test_protocol_mismatch(fake) -> None:
    w = fake(good_worker(version=(3, 0, 0)))
    with pytest.raises(WorkerError) as err:
        probe(f"127.0.0.1:{w.port}")
    assert str(err.value) == (f"127.0.0.1:{w.port} speaks RPC protocol 3.0.0, this Camelid speaks "
                              f"{'.'.join(map(str, PROTOCOL))}: install the same Camelid version on "
                              "both machines.")
    newer = fake(good_worker(version=(PROTOCOL[0], PROTOCOL[1] + 1, 0)))
    with pytest.raises(WorkerError, match="speaks RPC protocol"):
        probe(f"127.0.0.1:{newer.port}")


def test_accepts_and_never_answers(fake) -> None:
    w = fake(lambda conn: time.sleep(30))
    started = time.monotonic()
    with pytest.raises(WorkerError) as err:
        probe(f"127.0.0.1:{w.port}", timeout=0.5)
    assert time.monotonic() - started < 3
    assert err.value.reason == "timeout"
    assert str(err.value).startswith(f"127.0.0.1:{w.port} accepted the connection but did not answer "
                                     "within 0.5s: it is probably serving another Camelid (a worker "
                                     "serves one client at a time).")


def test_huge_reply_is_not_read(fake) -> None:
    sent: list[int] = []

    def handle(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(struct.pack("<Q", 2**40))
        sent.append(1)
        time.sleep(5)

    w = fake(handle)
    started = time.monotonic()
    with pytest.raises(WorkerError) as err:
        probe(f"127.0.0.1:{w.port}", timeout=2)
    assert time.monotonic() - started < 1.5
    assert err.value.reason == "garbage"
    assert f"a reply of {2**40} bytes where 28 were expected" in str(err.value)


def test_short_reply_and_hang_up(fake) -> None:
    def short(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(struct.pack("<Q", 28) + b"\x07\x00")
        conn.close()

    w = fake(short)
    with pytest.raises(WorkerError, match="cut short") as err:
        probe(f"127.0.0.1:{w.port}")
    assert err.value.reason == "garbage"

    hang_up = fake(lambda conn: conn.close())
    with pytest.raises(WorkerError, match="closed the connection at the handshake"):
        probe(f"127.0.0.1:{hang_up.port}")


def test_absurd_device_count(fake) -> None:
    w = fake(good_worker(devices=0))
    with pytest.raises(WorkerError, match="claims 0 devices"):
        probe(f"127.0.0.1:{w.port}")


def test_read_status_is_bounded(fake) -> None:
    def flood(conn: socket.socket) -> None:
        conn.recv(1000)
        conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n{\"devices\": [" + b" " * 200_000)

    w = fake(flood)
    assert read_status("127.0.0.1", w.port, timeout=2) is None

    def slow(conn: socket.socket) -> None:
        conn.recv(1000)
        for _ in range(100):
            conn.sendall(b" ")
            time.sleep(0.1)

    w2 = fake(slow)
    started = time.monotonic()
    assert read_status("127.0.0.1", w2.port, timeout=0.5) is None
    assert time.monotonic() - started < 1.5

    def not_json(conn: socket.socket) -> None:
        conn.recv(1000)
        conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nnot json")

    assert read_status("127.0.0.1", fake(not_json).port) is None
    assert read_status("127.0.0.1", free_port()) is None


def test_clean_status_keeps_only_known_types() -> None:
    assert clean_status([1]) is None
    assert clean_status({"devices": "x"}) is None
    out = clean_status({"devices": [{"index": 0, "free_bytes": -1, "total_bytes": True, "name": 3},
                                    {"index": "0"}, "x"], "busy": 1, "threads": 2,
                        "protocol": [7, 0, 0]})
    assert out == {"devices": [{"index": 0}], "threads": 2, "protocol": [7, 0, 0]}
    assert json.dumps(out)
