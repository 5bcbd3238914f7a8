"""What the API server does besides HTTP: models by name, plan-checked loads, one queue, the log.

Every request becomes one job on the engine's owner thread (house rule 4), the
same thread the chat window uses, so a model loaded in the window is the one
the server answers with. Jobs run in arrival order; more than `queue_limit`
waiting or running are refused at once (`QueueFullError`, HTTP 429) instead of
piling up.

A request names a model of the library (the names `camelid models` shows). A
model that is not loaded is planned on this machine first and loaded only if
the plan says it fits (`WontFitError` with the plan's reasons otherwise). A
model the server loaded itself is unloaded after `idle_unload_s` without
requests; one the user loaded in the window stays.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from app.core.chat.engine import Engine, EngineThread, LoadReport, plan_params
from app.core.embed import Embedder
from app.core.errors import CamelidError, ModelFileError, WontFitError
from app.core.fit import LoadChoices
from app.core.machine import HardwareProfile
from app.core.models.library import LibraryModel, find_library_model, scan_models
from app.core.units import human_bytes

T = TypeVar("T")
_log = logging.getLogger(__name__)

#: Requests waiting or running at once before new ones get 429.
DEFAULT_QUEUE_LIMIT = 32
#: A model the server loaded itself is unloaded after this long without requests.
DEFAULT_IDLE_UNLOAD_S = 15 * 60.0
#: The library is scanned again after this long (a scan reads every GGUF header once, then a cache).
LIBRARY_TTL_S = 10.0


class QueueFullError(CamelidError):
    """Too many requests are waiting for the engine."""

    code = "queue_full"

    def __init__(self, message: str, fix: str | None = None, *, retry_after: int = 1) -> None:
        super().__init__(message, fix)
        self.retry_after = retry_after


class ModelNotFoundError(ModelFileError):
    """A request named a model that is not in the library."""

    code = "model_not_found"


class EngineRunner(Protocol):
    """Runs callables on the engine's owner thread, in order (EngineThread; the GUI's owner thread)."""

    engine: Engine

    def call(self, fn: Callable[[], T]) -> Future[T]: ...


class ThreadRunner:
    """An `EngineRunner` over core's EngineThread (the CLI's `camelid serve`)."""

    def __init__(self, thread: EngineThread | None = None) -> None:
        self.thread = thread or EngineThread(name="camelid-server-engine")
        self.engine = self.thread.engine

    def call(self, fn: Callable[[], T]) -> Future[T]:
        return self.thread.submit(lambda _engine: fn())

    def close(self) -> None:
        self.thread.close()


@dataclass
class RequestRecord:
    """One line of the server's request log."""

    at: float
    method: str
    route: str
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: Completion tokens per second of the whole request, as the client saw it (wall clock).
    tokens_per_s: float | None = None
    status: int = 200
    seconds: float = 0.0
    error: str | None = None
    #: How the reply ended: stop | length | context | cancelled (None: no reply, e.g. an error).
    stop_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Listener = Callable[[str, Any], None]


@dataclass
class _Loaded:
    name: str
    path: Path
    by_server: bool
    loaded_at: float = field(default_factory=time.time)


class ModelService:
    """The server's access to the engine: resolve, plan, load, queue, log."""

    def __init__(self, runner: EngineRunner, *, choices: Callable[[], LoadChoices] | None = None,
                 models: Callable[[], list[LibraryModel]] | None = None,
                 queue_limit: int = DEFAULT_QUEUE_LIMIT, idle_unload_s: float = DEFAULT_IDLE_UNLOAD_S,
                 log_size: int = 500, embedder: Embedder | None = None,
                 hardware: Callable[[], HardwareProfile] | None = None) -> None:
        self.runner = runner
        self.engine = runner.engine
        #: The embedding model, shared with document search when the owner passes its own.
        self.embedder = embedder or Embedder()
        self._choices = choices or LoadChoices.current
        #: The machine to plan on (this one when None; with --rpc, this one plus the workers).
        self._hardware = hardware
        self._scan = models or scan_models
        self.queue_limit = queue_limit
        self.idle_unload_s = idle_unload_s
        self._lock = threading.Lock()
        self._active = 0
        self._library: list[LibraryModel] = []
        self._library_at = 0.0
        self._chat: _Loaded | None = None
        self._embed: _Loaded | None = None
        self._timer: threading.Timer | None = None
        self._listeners: list[Listener] = []
        self.log: collections.deque[RequestRecord] = collections.deque(maxlen=log_size)
        self._closed = False
        self.started_at = time.time()

    # -- events for the GUI ----------------------------------------------------------
    def add_listener(self, listener: Listener) -> None:
        """`listener(event, data)` from any thread: "active" (int), "request" (RequestRecord), "model" (dict|None)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _emit(self, event: str, data: Any) -> None:
        for listener in list(self._listeners):
            try:
                listener(event, data)
            except Exception:  # a listener must never break a request
                _log.exception("server listener failed")

    @property
    def active(self) -> int:
        """Requests waiting or running."""
        return self._active

    def record(self, record: RequestRecord) -> None:
        self.log.append(record)
        self._emit("request", record)

    # -- the library -----------------------------------------------------------------
    def library(self, *, fresh: bool = False) -> list[LibraryModel]:
        """The library's complete models (scanned at most every LIBRARY_TTL_S seconds)."""
        now = time.monotonic()
        with self._lock:
            if fresh or not self._library or now - self._library_at > LIBRARY_TTL_S:
                self._library = [m for m in self._scan() if m.complete]
                self._library_at = now
            return list(self._library)

    def resolve(self, name: str | None) -> LibraryModel:
        """The library model a request names; the loaded one when no name is given."""
        loaded = self.loaded_model()
        if not name or not name.strip():
            if loaded is not None:
                return loaded
            raise ModelNotFoundError("The request names no model, and none is loaded.",
                                     "Name a model from `camelid models` (GET /v1/models lists them).")
        key = name.strip()
        # Ollama clients add a tag (":latest"); OpenAI-style ids are the library names themselves.
        candidates = [key, key.removesuffix(":latest")]
        if loaded is not None and any(c.lower() in (loaded.name.lower(), loaded.path.name.lower())
                                      for c in candidates):
            return loaded
        for fresh in (False, True):
            models = self.library(fresh=fresh)
            for candidate in candidates:
                try:
                    return find_library_model(candidate, models=models)
                except ModelFileError as exc:
                    if "matches several" in exc.message:
                        raise ModelNotFoundError(exc.message, exc.fix) from None
        raise ModelNotFoundError(f"There is no model called {name!r} in Camelid's library.",
                                 "GET /v1/models lists the names; `camelid download` fetches more.")

    def loaded_model(self) -> LibraryModel | None:
        """The chat model loaded now (by the server or the window), as a library entry."""
        path = self.engine.model_path
        if path is None:
            return None
        for model in self._library:
            if model.path == path:
                return model
        return LibraryModel(name=path.name.removesuffix(".gguf"), path=path, files=(path,),
                            size_bytes=path.stat().st_size if path.exists() else 0, source="path")

    def status(self) -> dict[str, Any]:
        """What is loaded and how busy the engine is (for /api/ps and the GUI)."""
        report = self.engine.report
        chat = None
        if report is not None and self.engine.model_path is not None:
            model = self.loaded_model()
            plan = report.plan
            chat = {"name": model.name if model else self.engine.model_path.name,
                    "path": str(self.engine.model_path), "n_ctx": report.n_ctx,
                    "size_bytes": model.size_bytes if model else 0,
                    "gpu_bytes": plan.gpu_total if plan is not None else 0,
                    "by_server": bool(self._chat and self._chat.path == self.engine.model_path
                                      and self._chat.by_server),
                    "expires_at": self._expiry()}
        embed = None
        if self.embedder.report is not None and self._embed is not None:
            embed = {"name": self._embed.name, "path": str(self._embed.path),
                     "dimensions": self.embedder.report.dimensions, "expires_at": self._expiry()}
        return {"chat": chat, "embedding": embed, "active": self._active, "queue_limit": self.queue_limit}

    def _expiry(self) -> float | None:
        if self._chat is None or not self._chat.by_server:
            return None
        return time.time() + self.idle_unload_s

    # -- running work ----------------------------------------------------------------
    def admit(self) -> None:
        """Count one request in, or QueueFullError when `queue_limit` are already waiting or running."""
        with self._lock:
            if self._closed:
                raise QueueFullError("The server is shutting down.", "Try again in a moment.",
                                     retry_after=5)
            if self._active >= self.queue_limit:
                raise QueueFullError(
                    f"{self._active} requests are already waiting for the model (the limit is "
                    f"{self.queue_limit}).", "Retry after a few seconds.", retry_after=2)
            self._active += 1
            active = self._active
            self._cancel_timer()
        self._emit("active", active)

    def release(self) -> None:
        with self._lock:
            self._active = max(0, self._active - 1)
            active = self._active
            if active == 0:
                self._arm_timer()
        self._emit("active", active)

    def run_chat(self, name: str | None, work: Callable[[Engine], T], *, n_ctx: int | None = None) -> Future[T]:
        """Run `work(engine)` on the owner thread once the named chat model is loaded (per plan).

        The caller has called `admit()`, and calls `release()` when the future is done and
        its results are sent.
        """
        return self.runner.call(lambda: work(self._ensure_chat(name, n_ctx)))

    def run_embed(self, name: str | None, work: Callable[[Embedder], T]) -> Future[T]:
        """Run `work(embedder)` on the owner thread once the named embedding model is loaded."""
        return self.runner.call(lambda: work(self._ensure_embed(name)))

    def _ensure_chat(self, name: str | None, n_ctx: int | None) -> Engine:
        model = self.resolve(name)
        engine = self.engine
        current_ctx = engine.report.n_ctx if engine.report is not None else None
        if engine.model_path == model.path and (n_ctx is None or n_ctx == current_ctx):
            return engine
        self.load_chat(model, n_ctx=n_ctx)
        return engine

    def load_chat(self, model: LibraryModel, *, n_ctx: int | None = None) -> LoadReport:
        """Plan `model` here and load it (on the owner thread), or WontFitError with the plan's reasons."""
        from app.core.embed import is_embedding_model
        from app.core.fit import read_gguf

        if is_embedding_model(read_gguf(model.path)):
            raise ModelNotFoundError(f"{model.name} is an embedding model, not a chat model.",
                                     "Use it with /v1/embeddings, and name a chat model here.")
        choices = self._choices()
        if n_ctx is not None:
            choices = LoadChoices(**{**asdict(choices), "n_ctx": n_ctx})
        params, plan, _notices = plan_params(model.path, choices,
                                             hardware=self._hardware() if self._hardware else None)
        if not plan.fits:
            reasons = " ".join(plan.reasons[:2])
            raise WontFitError(
                f"{model.name} does not fit on this machine: it needs about {human_bytes(plan.total_bytes)} "
                f"at {plan.n_ctx:,} tokens of context. {reasons}".strip(),
                "Choose a smaller model or quantization, or a shorter context (`camelid plan "
                f"{model.name}` shows the numbers).")
        report = self.engine.load(model.path, params, plan=plan)
        self._chat = _Loaded(name=model.name, path=model.path, by_server=True)
        self._emit("model", self.status()["chat"])
        _log.info("server loaded %s (%s)", model.name, report.params)
        return report

    def _ensure_embed(self, name: str | None) -> Embedder:
        if not name:
            if self.embedder.loaded:
                return self.embedder
            name = _embedding_setting()
            if not name:
                raise ModelNotFoundError("The request names no embedding model, and none is set.",
                                         "Name one from `camelid models`, or set `camelid settings "
                                         "embedding_model NAME`.")
        if self.embedder.model_path is not None and name in (str(self.embedder.model_path),
                                                             self.embedder.model_path.stem):
            return self.embedder
        model = self.resolve(name)
        if self.embedder.model_path != model.path:
            self.embedder.load(model.path)
            self._embed = _Loaded(name=model.name, path=model.path, by_server=True)
        return self.embedder

    # -- idle unload -----------------------------------------------------------------
    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm_timer(self) -> None:
        self._cancel_timer()
        if self.idle_unload_s <= 0 or self._closed:
            return
        self._timer = threading.Timer(self.idle_unload_s, self._idle)
        self._timer.daemon = True
        self._timer.start()

    def _idle(self) -> None:
        with self._lock:
            if self._active or self._closed:
                return
        self.runner.call(self.unload_idle)

    def unload_idle(self) -> None:
        """On the owner thread: unload what the server loaded itself (never the window's model)."""
        if self._chat is not None and self._chat.by_server and self.engine.model_path == self._chat.path:
            self.engine.unload()
            self._emit("model", None)
        self._chat = None
        if self._embed is not None and self.embedder.model_path == self._embed.path:
            self.embedder.unload()  # only the one the server loaded; document search may share it
        self._embed = None

    def close(self) -> None:
        """No new requests; unload what the server loaded (queued after any running request)."""
        with self._lock:
            self._closed = True
            self._cancel_timer()
        self.runner.call(self.unload_idle)


def _embedding_setting() -> str | None:
    try:
        from app.core.settings import Settings

        return str(Settings()["embedding_model"] or "") or None
    except Exception:  # unreadable settings: as if none were set
        return None
