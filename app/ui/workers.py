"""The one way core work runs off the GUI thread.

A `Job` wraps a core callable. It runs either on the shared thread pool
or on an `OwnerThread` (one long-lived thread that runs its jobs one
after another, for objects that must stay on one thread, such as the loaded
llama model). Either way the callable gets a `progress` callback and a
`cancel` threading.Event when it asks for them (keyword arguments of those
names), and the job reports back through Qt signals, which Qt delivers on the
GUI thread:

- ``progress(object)``: whatever the callable passed to ``progress(...)``;
- ``result(object)``: its return value;
- ``error(str)``: a sentence that says what happened and what to do;
- ``cancelled()``: it stopped because ``cancel()`` was called;
- ``finished()``: always last, whichever of the three above came first.

Workers never touch widgets; views connect to the signals.
"""

from __future__ import annotations

import errno
import inspect
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from PySide6.QtCore import QObject, QRunnable, QThread, QThreadPool, Signal, Slot

from app.core.errors import CamelidError

log = logging.getLogger(__name__)
T = TypeVar("T")


class Cancelled(Exception):
    """Raised by a core callable that noticed its cancel event (any exception works too)."""


class OwnerClosed(CamelidError):
    """A call reached an OwnerThread that has stopped (the window is closing)."""

    code = "owner_closed"


def user_message(exc: BaseException) -> str:
    """A sentence for a person: what happened and what to do. Never a traceback."""
    if isinstance(exc, CamelidError):
        return str(exc)
    if isinstance(exc, OSError):
        if exc.errno == errno.ENOSPC:
            return "The disk is full. Free some space (or choose another models folder in Settings) and try again."
        if exc.errno in (errno.EACCES, errno.EPERM):
            where = f" ({exc.filename})" if exc.filename else ""
            return f"Camelid is not allowed to write there{where}. Choose another folder in Settings."
        if isinstance(exc, ConnectionError | TimeoutError):
            return "The connection failed. Check your internet connection and try again."
        return f"A file operation failed: {exc.strerror or exc}. Check the folder and try again."
    if isinstance(exc, MemoryError):
        return "The machine ran out of memory. Close other apps or pick a smaller model, then try again."
    return (f"Something unexpected went wrong ({type(exc).__name__}: {exc}). "
            "Try again; if it keeps happening, the log file in Camelid's logs folder has the details.")


class JobSignals(QObject):
    """Signals of one job; created on the GUI thread so they are delivered there."""

    progress = Signal(object)
    result = Signal(object)
    error = Signal(str)
    cancelled = Signal()
    finished = Signal()


#: Jobs that have been started and not finished. Holding them here keeps the
#: Python objects (and their signals) alive while a thread still uses them.
_running: set[Job] = set()
_running_lock = threading.Lock()


class Job(QRunnable):
    """A core callable run off the GUI thread, reporting through `signals`."""

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """`fn(*args, **kwargs)`, plus `progress` and `cancel` when `fn` takes them."""
        super().__init__()
        self.setAutoDelete(False)  # lifetime is managed by `_running`, not by Qt
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.signals = JobSignals()
        self.cancel_event = threading.Event()
        self.done = threading.Event()
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            params = {}
        self._wants_progress = "progress" in params
        self._wants_cancel = "cancel" in params

    # --- wiring helpers, all optional --------------------------------------
    def on(self, *, result: Callable[[Any], None] | None = None,
           error: Callable[[str], None] | None = None,
           progress: Callable[[Any], None] | None = None,
           cancelled: Callable[[], None] | None = None,
           finished: Callable[[], None] | None = None) -> Job:
        """Connect handlers in one call; returns the job so calls can chain."""
        for signal, slot in ((self.signals.result, result), (self.signals.error, error),
                             (self.signals.progress, progress), (self.signals.cancelled, cancelled),
                             (self.signals.finished, finished)):
            if slot is not None:
                signal.connect(slot)
        return self

    def cancel(self) -> None:
        """Ask the callable to stop; it sees `cancel.is_set()` at its next check."""
        self.cancel_event.set()

    def start(self, where: QThreadPool | OwnerThread | None = None) -> Job:
        """Run on the shared thread pool (default), another pool, or an OwnerThread.

        Connect handlers (``on``) before starting: a signal emitted before a
        slot is connected is lost.
        """
        self._register()
        if isinstance(where, OwnerThread):
            where._enqueue(self)
        else:
            (where or QThreadPool.globalInstance()).start(self)
        return self

    # --- runs on the worker thread ----------------------------------------
    def _register(self) -> None:
        with _running_lock:
            _running.add(self)
        # Released on the GUI thread after the last signal, so the signals
        # object outlives every queued delivery.
        self.signals.finished.connect(self._release)

    def _release(self) -> None:
        with _running_lock:
            _running.discard(self)

    def run(self) -> None:
        kwargs = dict(self.kwargs)
        if self._wants_progress:
            kwargs["progress"] = self.signals.progress.emit
        if self._wants_cancel:
            kwargs["cancel"] = self.cancel_event
        try:
            value = self.fn(*self.args, **kwargs)
        except BaseException as exc:  # every failure becomes a signal, never a crash
            if self.cancel_event.is_set():
                self.signals.cancelled.emit()
            else:
                if not isinstance(exc, CamelidError):
                    log.exception("job %s failed", getattr(self.fn, "__qualname__", self.fn))
                else:  # the user sees the sentence; the log keeps it for "Copy diagnostics"
                    log.warning("job %s: %s", getattr(self.fn, "__qualname__", self.fn), exc)
                self.signals.error.emit(user_message(exc))
        else:
            if self.cancel_event.is_set():
                self.signals.cancelled.emit()
            else:
                self.signals.result.emit(value)
        finally:
            self.done.set()
            self.signals.finished.emit()


Handler = Callable[..., None] | None


def run_job(fn: Callable[..., Any], *args: Any, result: Handler = None, error: Handler = None,
            progress: Handler = None, cancelled: Handler = None, finished: Handler = None,
            where: QThreadPool | OwnerThread | None = None) -> Job:
    """Connect the handlers, then start: ``run_job(core.fn, x, result=show)``.

    Keyword arguments for `fn` itself go through functools.partial.
    """
    job = Job(fn, *args)
    job.on(result=result, error=error, progress=progress, cancelled=cancelled, finished=finished)
    return job.start(where)


def running_jobs() -> int:
    """How many jobs are still running (tests check that none leak)."""
    with _running_lock:
        return sum(not job.done.is_set() for job in _running)


class _Executor(QObject):
    """Lives in an OwnerThread and runs the jobs (and plain calls) queued to it, one at a time."""

    submitted = Signal(object)
    #: (callable, Future): a plain call from any thread (`OwnerThread.call`).
    called = Signal(object)

    def __init__(self, owner: OwnerThread) -> None:
        super().__init__()
        self._owner = owner
        self.submitted.connect(self._run)
        self.called.connect(self._call)

    @Slot(object)
    def _run(self, job: Job) -> None:
        job.run()

    @Slot(object)
    def _call(self, item: tuple[Callable[[], Any], Future[Any]]) -> None:
        fn, future = item
        self._owner._forget(future)
        if not future.set_running_or_notify_cancel():
            return  # cancelled by its caller while it waited
        try:
            value = fn()
        except BaseException as exc:  # the caller gets it from the future, as from any executor
            future.set_exception(exc)
        else:
            future.set_result(value)


class OwnerThread(QObject):
    """One long-lived thread that owns an object (the loaded model) and runs jobs in order.

    llama.cpp contexts are not thread-safe, so every call that touches the
    model (load, stream, unload) goes through the same OwnerThread. Stopping a
    reply does not queue behind it: the caller sets the job's cancel event,
    which the streaming callable checks between tokens.
    """

    def __init__(self, name: str = "camelid-owner", parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread = QThread()
        self._thread.setObjectName(name)
        self._executor = _Executor(self)
        self._executor.moveToThread(self._thread)
        self._closed = False
        #: Futures of plain calls not started yet: failed with a sentence if the thread stops first.
        self._pending: set[Future[Any]] = set()
        self._pending_lock = threading.Lock()
        self._thread.start()

    def _enqueue(self, job: Job) -> None:
        if self._closed:
            # The owner is gone (window closing): the job ends as cancelled instead of waiting forever.
            job.cancel_event.set()
            job.done.set()
            job.signals.cancelled.emit()
            job.signals.finished.emit()
            return
        # Queued because the executor lives in the other thread.
        self._executor.submitted.emit(job)

    def call(self, fn: Callable[[], T]) -> Future[T]:
        """Run `fn()` on this thread, in order with its jobs; from any thread (a server's too).

        The future holds the return value or the exception. Once the owner has stopped, the
        future fails at once with OwnerClosed (a sentence), never waits forever.
        """
        future: Future[T] = Future()
        with self._pending_lock:
            if self._closed:
                future.set_exception(_closed_error())
                return future
            self._pending.add(future)
            # Queued because the executor lives in the other thread: the same queue as the jobs.
            self._executor.called.emit((fn, future))
        return future

    def _forget(self, future: Future[Any]) -> None:
        with self._pending_lock:
            self._pending.discard(future)

    def is_running(self) -> bool:
        return self._thread.isRunning()

    def shutdown(self, timeout_ms: int = 10_000) -> bool:
        """Run the jobs already queued, then stop the thread and wait for it. True when it stopped."""
        if not self._thread.isRunning():
            return True
        # quit() would drop queued jobs; a last job marks the end of the queue instead.
        last = Job(lambda: None)
        last._register()
        self._enqueue(last)
        last.done.wait(timeout_ms / 1000)
        with self._pending_lock:
            self._closed = True
        self._thread.quit()
        stopped = self._thread.wait(timeout_ms)
        if stopped:
            # Calls queued after the last job never ran: their callers get the sentence.
            with self._pending_lock:
                left, self._pending = self._pending, set()
            for future in left:
                if future.set_running_or_notify_cancel():
                    future.set_exception(_closed_error())
        return stopped


def _closed_error() -> OwnerClosed:
    return OwnerClosed("Camelid is closing, so the model takes no more work.",
                       "Start Camelid again and retry.")


def wait_for_jobs(timeout_ms: int = 10_000) -> bool:
    """Block until every pool job has finished (app exit and tests)."""
    return QThreadPool.globalInstance().waitForDone(timeout_ms)
