"""Run the server: uvicorn in a thread its owner starts and stops, the settings, and the API key.

Binding anything but loopback is a deliberate choice: it requires an API key
(generated once, shown once, its hash kept in a 0600 file) and the server
says so. `ServerHandle` is what the CLI's `camelid serve` and the GUI's
switch use.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import ipaddress
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.errors import UsageError
from app.core.server.http import DEFAULT_MAX_BODY
from app.core.server.service import ModelService

DEFAULT_PORT = 1234
DEFAULT_HOST = "127.0.0.1"
KEY_FILE = "server-key.sha256"


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServerConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    #: Required when `host` is not loopback; optional otherwise.
    api_key: str | None = None
    #: Origins allowed to call from a browser (CORS); empty: none.
    cors: tuple[str, ...] = ()
    max_body: int = DEFAULT_MAX_BODY

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise UsageError(f"Port {self.port} is not a TCP port.", "Use a port from 1 to 65535.")
        if not is_loopback(self.host) and not self.api_key:
            raise UsageError(f"Serving on {self.host} lets other machines on the network in, so it needs an "
                             "API key.", "Pass --api-key KEY (or --api-key generate), or bind 127.0.0.1.")

    @property
    def lan(self) -> bool:
        return not is_loopback(self.host)


# -- the API key -----------------------------------------------------------------------
def key_path() -> Path:
    from app.paths import config_dir

    return config_dir() / KEY_FILE


def new_api_key() -> str:
    """A fresh key; its hash is stored (0600) so the same key works next time, the key itself never is."""
    key = "camelid-" + secrets.token_urlsafe(32)
    path = key_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(hashlib.sha256(key.encode()).hexdigest() + "\n")
    os.replace(tmp, path)
    return key


def stored_key_hash() -> str | None:
    try:
        with key_path().open() as f:
            text = f.read(200).strip()
    except OSError:
        return None
    return text if len(text) == 64 else None


def key_matches(key: str) -> bool:
    """Whether `key` is the one generated last (compared by hash, in constant time)."""
    stored = stored_key_hash()
    return stored is not None and hmac.compare_digest(stored, hashlib.sha256(key.encode()).hexdigest())


# -- uvicorn in a thread ---------------------------------------------------------------
class ServerHandle:
    """One running server. `start()` returns once it listens (or raises a UsageError sentence)."""

    def __init__(self, service: ModelService, config: ServerConfig) -> None:
        self.service = service
        self.config = config
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.port = config.port

    @property
    def url(self) -> str:
        host = self.config.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "localhost") else f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 15.0) -> None:
        import uvicorn

        from app.core.server.app import create_app

        sock = self._bind()
        self.port = sock.getsockname()[1]
        app = create_app(self.service, api_key=self.config.api_key, cors=self.config.cors,
                         max_body=self.config.max_body)
        config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_keep_alive=30,
                                timeout_graceful_shutdown=3, lifespan="off", log_config=None,
                                h11_max_incomplete_event_size=64 * 1024)
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # the owner (CLI, GUI) handles signals

        def run() -> None:
            try:
                self._server.run(sockets=[sock])
            except BaseException as exc:  # reported by start() or stop()
                self._error = exc
            finally:
                sock.close()

        self._thread = threading.Thread(target=run, name="camelid-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise UsageError(f"The server could not start on {self.url} ({self._error or 'no answer'}).",
                                 "Check the log, or try another port.")
            time.sleep(0.02)

    def _bind(self) -> socket.socket:
        host, port = self.config.host, self.config.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise UsageError(f"Port {port} on {host} is already in use (another server, or Camelid "
                                 "running twice).", "Stop the other server, or pick another port with "
                                 "--port.") from None
            if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
                raise UsageError(f"{host} is not an address of this machine.",
                                 "Use 127.0.0.1, 0.0.0.0 or one of this machine's addresses.") from None
            raise UsageError(f"The server cannot listen on {host}:{port} ({exc.strerror or exc}).",
                             "Pick another port or address.") from None
        sock.listen(128)
        sock.setblocking(False)
        return sock

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, end open requests (their replies are cancelled) and wait for the thread."""
        if self._server is None:
            return
        # Open streams are cancelled by uvicorn's shutdown, and each cancels its own reply
        # (never a reply the chat window is writing).
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(timeout)
        self._server = None
