"""Camelid's log: one rotating file in the logs folder, for the GUI and the CLI alike.

Everything Camelid logs, llama.cpp's own lines (through app.core.fit.llama_log)
and Qt's warnings go to ``logs/camelid.log`` (1 MiB, five old files kept), and
never to the terminal: the CLI and the window say what happened in their own
sentences. The last warnings and errors are also kept in memory for "Copy
diagnostics".
"""

from __future__ import annotations

import collections
import logging
import logging.handlers
import threading
from collections.abc import Sequence
from pathlib import Path

from app import paths

LOG_NAME = "camelid.log"
MAX_BYTES = 1024 * 1024
BACKUP_COUNT = 5
#: How many warnings and errors "Copy diagnostics" can quote.
RECENT_PROBLEMS = 20
FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

#: ggml's ggml_log_level (ggml.h: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5 "continue the previous
#: line") -> logging level. llama-cpp-python's own table predates that order: it takes WARN for ERROR,
#: which is why "decode: removing memory module entries" reached the terminal after each Stop.
_LLAMA_LEVELS = {0: logging.INFO, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}

_lock = threading.Lock()
_file_handler: logging.Handler | None = None
_recent: RecentProblems | None = None


class RecentProblems(logging.Handler):
    """Keeps the last warnings and errors, formatted, in memory."""

    def __init__(self, capacity: int = RECENT_PROBLEMS) -> None:
        super().__init__(logging.WARNING)
        self.lines: collections.deque[str] = collections.deque(maxlen=capacity)
        self.setFormatter(logging.Formatter(FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # a log call must never raise into the caller
            self.handleError(record)


class LlamaLines:
    """Joins llama.cpp's log pieces into lines and logs each one on the "llama.cpp" logger."""

    def __init__(self) -> None:
        self.logger = logging.getLogger("llama.cpp")
        self._pending = ""
        self._level = logging.INFO
        self._lock = threading.Lock()

    def __call__(self, level: int, text: str) -> None:
        with self._lock:
            if level != 5:
                self._level = _LLAMA_LEVELS.get(level, logging.INFO)
            self._pending += text
            *lines, self._pending = self._pending.split("\n")
            level_now = self._level
        for line in lines:
            if line.strip():
                self.logger.log(level_now, "%s", line.rstrip())


def log_path() -> Path:
    return paths.logs_dir() / LOG_NAME


def configure(front: str) -> Path | None:
    """Send the log of this process (`front`: "gui" or "cli") to the rotating file; returns its path.

    Safe to call again (a test with another CAMELID_HOME moves the file). When the
    logs folder cannot be written, nothing is logged to a file and None comes back;
    the terminal still gets nothing.
    """
    global _file_handler, _recent
    path: Path | None = log_path()
    root = logging.getLogger()
    with _lock:
        if _file_handler is not None:
            root.removeHandler(_file_handler)
            _file_handler.close()
            _file_handler = None
        handler: logging.Handler
        try:
            target = log_path()
            target.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.handlers.RotatingFileHandler(
                target, maxBytes=MAX_BYTES, backupCount=BACKUP_COUNT, encoding="utf-8", delay=False)
        except OSError:
            # Read-only storage: swallow the log rather than let Python's last-resort handler print it.
            handler, path = logging.NullHandler(), None
        handler.setLevel(logging.INFO)
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
        _file_handler = handler
        if _recent is None:
            _recent = RecentProblems()
            root.addHandler(_recent)
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
    # Chatty libraries: their debug lines would fill the file in minutes.
    for name in ("httpx", "httpcore", "urllib3", "filelock", "PIL"):
        logging.getLogger(name).setLevel(logging.WARNING)
    _route_llama_log()
    # A full disk mid-run must not print "--- Logging error ---" tracebacks to the terminal.
    logging.raiseExceptions = False
    from app import __version__

    logging.getLogger("camelid").info("Camelid %s (%s) started", __version__, front)
    return path


def _route_llama_log() -> None:
    from app.core.fit import llama_log

    llama_log.forward(LlamaLines())


def recent_problems() -> list[str]:
    """The last warnings and errors logged by this process, oldest first."""
    return list(_recent.lines) if _recent is not None else []


def shutdown() -> None:
    """Detach the file and llama.cpp's forwarding (tests, and a clean exit)."""
    global _file_handler
    from app.core.fit import llama_log

    with _lock:
        if _file_handler is not None:
            logging.getLogger().removeHandler(_file_handler)
            _file_handler.close()
            _file_handler = None
    llama_log.forward(None)


def configure_cli(argv: Sequence[str] | None) -> Path | None:
    """configure("cli") and log which command runs (its name only: arguments may hold paths or keys)."""
    import sys

    from app.cli import COMMAND_MODULES

    words = list(argv) if argv is not None else sys.argv[1:]
    names = {module.rsplit(".", 1)[-1] for module in COMMAND_MODULES}
    command = next((w for w in words if not w.startswith("-")), None)
    path = configure("cli")
    logging.getLogger("camelid.cli").info("camelid %s", command if command in names else "(no command)")
    return path
