"""The window's one chat engine and conversation store, each on its own owner thread.

House rule 4: one llama model, owned by one thread. Every call that touches
the model (load, reply, unload) is a Job on `engine_thread`; `stop()` is the
one call made from the GUI thread, as core's Engine allows. The conversation
store gets its own thread so listing or searching chats never waits behind a
reply (ChatStore keeps one SQLite connection per thread).

Models split across machines (the Machines page): `engine` is a `SharedEngine`,
one object for the chat, the local server's runner and document search, that
holds a local `Engine` and a `ChildEngine` (the model in a child process that
registers the workers first, so a worker's failure is a sentence, not a crash)
and forwards every call to the one in use. A load switches between them on the
engine thread, ending the other's model first.
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


class SharedEngine:
    """The window's engine: this machine's `Engine`, or a `ChildEngine` for a model split across machines.

    Everything that holds the window's engine (chat, local server, documents) holds this one object,
    so switching between the two never leaves a stale reference. Tickets stay one sequence: each
    `reserve_reply`, `stop` and `cancel` goes to both engines (their counters stay equal), and every
    reply is sent with a ticket, so a ticket reserved before a switch means the same reply after it.
    Loads and replies run on the engine thread; `stop`, `cancel`, `reserve_reply` from any thread.
    """

    def __init__(self) -> None:
        from app.core.cluster.child import ChildEngine

        self.local = Engine()
        #: Its setup (register the workers) and label are set before each split load; no process until then.
        self.child = ChildEngine()
        self.current: Any = self.local
        #: The workers the split model was loaded on (empty: the model, if any, is on this machine).
        self.endpoints: list[str] = []

    # -- state of the engine in use ------------------------------------------------
    @property
    def split(self) -> bool:
        """Whether the engine in use is the one for a model split across machines."""
        return self.current is self.child

    @property
    def loaded(self) -> bool:
        return bool(self.current.loaded)

    @property
    def report(self) -> LoadReport | None:
        return self.current.report  # type: ignore[no-any-return]

    @property
    def model_path(self) -> Path | None:
        return self.current.model_path  # type: ignore[no-any-return]

    @property
    def failure(self) -> str | None:
        """Why the split model stopped (a worker failed), until the next load; None otherwise."""
        return self.child.failure if self.split else None

    @property
    def template_limits(self) -> Any:
        return self.current.template_limits

    @template_limits.setter
    def template_limits(self, limits: Any) -> None:
        self.local.template_limits = limits
        self.child.template_limits = limits

    def __getattr__(self, name: str) -> Any:
        # n_ctx, template_source, architecture, chat, complete, count_tokens, render...: the engine in use.
        if name in ("local", "child", "current", "endpoints"):
            raise AttributeError(name)
        return getattr(self.current, name)

    # -- tickets (any thread) ---------------------------------------------------------
    def reserve_reply(self) -> int:
        ticket = self.local.reserve_reply()
        self.child.reserve_reply()
        return ticket

    def stop(self) -> None:
        self.local.stop()
        self.child.stop()

    def cancel(self, ticket: int) -> None:
        self.local.cancel(ticket)
        self.child.cancel(ticket)

    # -- replies: always with a ticket, so both counters stay equal ------------------
    def chat(self, messages: Any, sampling: SamplingSettings | None = None, *, ticket: int | None = None,
             **kwargs: Any) -> Any:
        if ticket is None:
            ticket = self.reserve_reply()
        return self.current.chat(messages, sampling, ticket=ticket, **kwargs)

    def complete(self, prompt: str, sampling: SamplingSettings | None = None, *, ticket: int | None = None,
                 **kwargs: Any) -> Any:
        if ticket is None:
            ticket = self.reserve_reply()
        return self.current.complete(prompt, sampling, ticket=ticket, **kwargs)

    # -- loads (engine thread) ------------------------------------------------------------
    def load(self, path: Path | str, params: Any = None, **kwargs: Any) -> LoadReport:
        """Load on this machine (as `Engine.load`), ending a split model first."""
        if self.split:
            self.child.close()
            self.current = self.local
            self.endpoints = []
        return self.local.load(path, params, **kwargs)

    def load_split(self, path: Path, choices: LoadChoices, endpoints: list[str], *,
                   progress: Any = None, cancel: threading.Event | None = None) -> LoadReport:
        """Plan `path` over this machine and the workers at `endpoints` (probed now: a dead one is its
        sentence, and the model loaded before stays), then load it in the child process."""
        from app import paths
        from app.core.chat.engine import plan_params
        from app.core.cluster.machines import endpoints_of, engine_for, with_workers
        from app.core.machine import detect

        hardware = with_workers(detect(models_dir=paths.models_dir()), endpoints)
        params, plan, notices = plan_params(path, choices, hardware=hardware)
        # One model at a time: this machine's first, and a child that registered other workers.
        self.local.unload()
        self.child.close()
        self.current = self.child
        made = engine_for(hardware)  # the setup and the sentence's label for exactly these workers
        self.child.setup, self.child.label = made.setup, made.label
        self.endpoints = endpoints_of(hardware)
        report = self.child.load(path, params, plan=plan, progress=progress, cancel=cancel)
        if notices:
            report.notices[:0] = notices
        return report

    def unload(self) -> None:
        """Unload whichever model is loaded (and end the child process)."""
        self.local.unload()
        self.child.close()
        self.current = self.local
        self.endpoints = []


class OwnerRunner:
    """The server's way onto the window's engine: its `EngineRunner` (app/core/server/service.py).

    Calls run on the window's engine thread, in order with the window's own loads and replies,
    so a model loaded in the window is the one the server answers with (and the other way round).
    """

    def __init__(self, engine: SharedEngine | Engine, thread: OwnerThread) -> None:
        self.engine = engine
        self._thread = thread

    def call(self, fn: Callable[[], T]) -> Future[T]:
        return self._thread.call(fn)


class EngineHost(QObject):
    """Owns the Engine and the ChatStore for one window."""

    def __init__(self, store_path: Path | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.engine = SharedEngine()
        #: The workers (HOST:PORT) a load plans with, set by the Machines page; empty: this machine only.
        self.machines: list[str] = []
        self.engine_thread = OwnerThread("camelid-engine")
        self.store_thread = OwnerThread("camelid-store")
        self._store_path = store_path
        self._store: ChatStore | None = None
        self._store_lock = threading.Lock()
        self.report: LoadReport | None = None
        #: The document index (app/core/docs/store.py), opened on first use from a worker (see docs_index).
        self._docs_index: Any = None
        #: (setting, EmbedderModel, path) of the embedding model loaded on the engine thread (see embedding).
        self._embedding: tuple[str, Any, Path] | None = None
        from app.core.embed import Embedder

        #: One embedding model for the window: document search and the local server's /v1/embeddings.
        self.embedder = Embedder()

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
        machines = list(self.machines)

        def run(progress: Any, cancel: threading.Event) -> LoadReport:
            if machines:  # planned over this machine and the workers, loaded in a child process
                return self.engine.load_split(path, choices, machines, progress=progress, cancel=cancel)
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
             finished: Handler = None, ticket: int | None = None, augment: Any = None) -> Job:
        """Add `text` as the user's turn (None: answer the stored conversation again) and stream the reply.

        `progress` receives text chunks; `result` gets (Reply, stored Message). A `stop()` from now
        on stops this reply, even before its job starts (`ticket`: one reserved when Send was pressed).
        `augment` (app.core.chat.conversation.Augment, e.g. documents' passages) is called on the
        engine thread with the stored conversation and rewrites what the model reads.
        """
        if ticket is None:
            ticket = self.engine.reserve_reply()

        def run(progress: Any) -> Any:
            store = self.store()
            if text is None:
                return answer(self.engine, store, conversation_id, sampling, on_text=progress, ticket=ticket,
                              augment=augment)
            return send_message(self.engine, store, conversation_id, text, sampling, on_text=progress,
                                ticket=ticket, augment=augment)

        return run_job(run, result=result, error=error, progress=progress, finished=finished,
                       where=self.engine_thread)

    # --- documents ----------------------------------------------------------------
    def docs_index(self) -> Any:
        """The window's document index (one SQLite connection, thread-safe), opened on first use.

        Call it from a worker: opening creates or checks the file.
        """
        with self._store_lock:
            if self._docs_index is None:
                from app.core.docs.store import DocIndex

                self._docs_index = DocIndex()
            return self._docs_index

    def embedding(self, setting: str, wanted: str | None = None) -> Any:
        """The embedding model (an `indexer.EmbedderModel`), loaded once; None for words-only search.

        Only on the engine thread (the Embedder belongs to the thread that loaded it). `setting` is
        the embedding_model setting (a library name or .gguf path); `wanted` the model a collection
        was indexed with, which wins when the setting names another one.
        """
        from app.core.docs.indexer import EmbedderModel
        from app.core.errors import CamelidError
        from app.core.models import find_model

        setting = setting.strip()
        if setting.lower() == "none":
            setting = ""
        if not setting and not wanted:
            return None  # words only
        cached = self._embedding
        if cached is not None and self.embedder.model_path is None:
            cached = self._embedding = None  # the server unloaded or replaced it
        if cached is not None and ((wanted and cached[1].name == wanted) or (not wanted and cached[0] == setting)) \
                and self.embedder.model_path == cached[2]:
            return cached[1]
        path: Path | None = None
        if setting:
            try:
                path = Path(find_model(setting))
            except CamelidError:
                if not wanted:
                    raise
        if wanted and (path is None or path.name.removesuffix(".gguf") != wanted):
            path = Path(find_model(wanted))
        assert path is not None
        name = path.name.removesuffix(".gguf")
        if cached is not None and cached[1].name == name and self.embedder.model_path == path:
            return cached[1]
        if self.embedder.model_path != path:
            self.embedder.load(path)  # replaces the one loaded before, if any
        model = EmbedderModel(self.embedder, name)
        self._embedding = (setting, model, path)
        return model

    def _unload_embedding(self) -> None:
        if self._embedding is not None:
            self._embedding[1].embedder.unload()
            self._embedding = None

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
        run_job(self._unload_embedding, where=self.engine_thread)
        self.engine_thread.shutdown()
        if self._docs_index is not None:
            self._docs_index.close()
            self._docs_index = None
        if self._store is not None:
            run_job(self._store.close, where=self.store_thread)
        self.store_thread.shutdown()
