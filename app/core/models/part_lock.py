"""One writer per partial download: an OS lock on ``<name>.part.lock`` beside the part file.

The lock is the operating system's (``flock`` on Linux and macOS, ``msvcrt.locking``
on Windows), so it is released the moment its holder exits, however it exits:
a SIGKILLed download leaves no stale lock to detect, only a file with a dead pid
in it, which the next download locks at once. ``flock`` locks belong to an open
file, not a process, so two threads of one process exclude each other too (the
GUI's queue and its wizard).

The holder removes the lock file when it is done. Removing a lock file races with
a process that opened it just before: that process would lock a file no longer on
disk. So a lock is held only once the open file is still the one at the path.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

#: On Windows the locked byte lies far past the pid, so another process can still read the pid.
_WINDOWS_LOCK_OFFSET = 1 << 30


class PartLock:
    """An exclusive, non-blocking lock for one part file."""

    def __init__(self, part: Path) -> None:
        self.path = part.with_name(part.name + ".lock")
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; False when another writer does."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(100):  # each retry means a holder removed the file under us: rare
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o644)
            if not _lock(fd):
                os.close(fd)
                return False
            if _same_file(fd, self.path):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self._fd = fd
                return True
            _unlock(fd)
            os.close(fd)
        return False

    def holder_pid(self) -> int | None:
        """The pid written by whoever holds (or last held) the lock, if readable."""
        try:
            text = self.path.read_bytes()[:32].decode("ascii", "replace").strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def release(self) -> None:
        """Remove the lock file (while still holding it), then let go."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if sys.platform != "win32":
            with contextlib.suppress(OSError):
                self.path.unlink()
        _unlock(fd)
        os.close(fd)
        if sys.platform == "win32":
            # Windows refuses to remove a file another process has open: then that process owns it now.
            with contextlib.suppress(OSError):
                self.path.unlink()

    def __enter__(self) -> PartLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _lock(fd: int) -> bool:
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        finally:
            os.lseek(fd, 0, os.SEEK_SET)
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock(fd: int) -> None:
    with contextlib.suppress(OSError):
        if sys.platform == "win32":
            import msvcrt

            os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_UN)


def _same_file(fd: int, path: Path) -> bool:
    if sys.platform == "win32":
        return True  # an open file cannot be removed there, so the path still names it
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_ino, here.st_dev) == (there.st_ino, there.st_dev)
