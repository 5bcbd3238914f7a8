"""The window's one chat engine and conversation store, each on its own owner thread.

House rule 4: one llama model, owned by one thread. Every call that touches
the model (load, reply, unload) is a Job on `engine_thread`; `stop()` is the
one call made from the GUI thread, as core's Engine allows. The conversation
store gets its own thread so listing or searching chats never waits behind a
reply (ChatStore keeps one SQLite connection per thread).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from PySide6.QtCore import QObject

from app.core.chat import ChatStore, Engine, LoadReport, SamplingSettings, answer, send_message
from app.core.fit import LoadChoices
from app.ui.workers import Handler, Job, OwnerThread, run_job

T = TypeVar("T")


class OwnerRunner:
    """The server's way onto the window's engine: its `EngineRunner` (app/core/server/service.py).

    Calls run on the window's engine thread, in order with the window's own loads and replies,
    so a model loaded in the window is the one the server answers with (and the other way round).
    """

    def __init__(self, engine: Engine, thread: OwnerThread) -> None:
        self.engine = engine
        self._thread = thread

    def call(self, fn: Callable[[], T]) -> Future[T]:
        return self._thread.call(fn)


class EngineHost(QObject):
    """Owns the Engine and the ChatStore for one window."""

    def __init__(self, store_path: Path | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.engine = Engine()
        self.engine_thread = OwnerThread("camelid-engine")
        self.store_thread = OwnerThread("camelid-store")
        self._store_path = store_path
        self._store: ChatStore | None = None
        self._store_lock = threading.Lock()
        self.report: LoadReport | None = None

    # --- store ------------------------------------------------------------------
    def store(self) -> ChatStore:
        """The store, opened on first use (from a worker thread: opening migrates the file)."""
        with self._store_lock:
            if self._store is None:
                self._store = ChatStore(self._store_path)
            return self._store

    def store_call(self, method: str, *args: Any, result: Handler = None, error: Handler = None,
                   **kwargs: Any) -> Job:
        """Run `ChatStore.<method>(*args, **kwargs)` on the store thread."""
        return run_job(lambda: getattr(self.store(), method)(*args, **kwargs), result=result,
                       error=error, where=self.store_thread)

    # --- engine -------------------------------------------------------------------
    def load(self, path: Path, choices: LoadChoices, *, result: Handler = None, error: Handler = None,
             progress: Handler = None, cancelled: Handler = None) -> Job:
        def run(progress: Any, cancel: threading.Event) -> LoadReport:
            # Planned from the header with the user's choices, loaded, and checked against the plan.
            return self.engine.load(path, choices=choices, progress=progress, cancel=cancel)

        def loaded(report: LoadReport) -> None:
            self.report = report
            if result is not None:
                result(report)

        return run_job(run, result=loaded, error=error, progress=progress, cancelled=cancelled,
                       where=self.engine_thread)

    def send(self, conversation_id: int, text: str | None, sampling: SamplingSettings, *,
             result: Handler = None, error: Handler = None, progress: Handler = None,
             finished: Handler = None, ticket: int | None = None) -> Job:
        """Add `text` as the user's turn (None: answer the stored conversation again) and stream the reply.

        `progress` receives text chunks; `result` gets (Reply, stored Message). A `stop()` from now
        on stops this reply, even before its job starts (`ticket`: one reserved when Send was pressed).
        """
        if ticket is None:
            ticket = self.engine.reserve_reply()

        def run(progress: Any) -> Any:
            store = self.store()
            if text is None:
                return answer(self.engine, store, conversation_id, sampling, on_text=progress, ticket=ticket)
            return send_message(self.engine, store, conversation_id, text, sampling, on_text=progress,
                                ticket=ticket)

        return run_job(run, result=result, error=error, progress=progress, finished=finished,
                       where=self.engine_thread)

    def runner(self) -> OwnerRunner:
        """The engine and its thread as the local server's runner (shared with the window)."""
        return OwnerRunner(self.engine, self.engine_thread)

    def stop(self) -> None:
        """End the current reply now (safe from any thread)."""
        self.engine.stop()

    def shutdown(self) -> None:
        """Stop, unload and end both threads (window closing)."""
        self.engine.stop()
        run_job(self.engine.unload, where=self.engine_thread)
        self.engine_thread.shutdown()
        if self._store is not None:
            run_job(self._store.close, where=self.store_thread)
        self.store_thread.shutdown()
