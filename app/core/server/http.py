"""The HTTP pieces every API shares: body limits, keys, error shapes, and the bridge to the engine thread.

Three APIs live on one port (OpenAI under /v1, Anthropic at /v1/messages,
Ollama under /api); each client expects errors in its own shape, so the shape
is chosen from the path. Camelid's sentence (what happened, what to do) is
always the message.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from starlette.exceptions import HTTPException

from app.core.errors import (
    CamelidError,
    ChatTemplateError,
    GenerationError,
    ModelFileError,
    ModelLoadError,
    UsageError,
    WontFitError,
)
from app.core.server.service import ModelNotFoundError, ModelService, QueueFullError, RequestRecord

#: The largest request body accepted (a long document pasted whole is a few MB).
DEFAULT_MAX_BODY = 8 * 1024 * 1024
#: A client has this long to send its whole body once it has started (slow-loris bound).
BODY_DEADLINE_S = 30.0

Scope = dict[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def api_of(path: str) -> str:
    """Which API a path belongs to: "anthropic", "ollama" or "openai"."""
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path.startswith("/api/"):
        return "ollama"
    return "openai"


_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                 413: "invalid_request_error", 429: "rate_limit_error", 507: "insufficient_storage"}
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                    413: "request_too_large", 429: "rate_limit_error", 500: "api_error", 503: "overloaded_error",
                    507: "api_error"}


def error_body(api: str, status: int, message: str, code: str | None = None) -> dict[str, Any]:
    """An error in the API's own shape."""
    if api == "ollama":
        return {"error": message}
    if api == "anthropic":
        return {"type": "error", "error": {"type": _ANTHROPIC_TYPES.get(status, "api_error"), "message": message}}
    return {"error": {"message": message, "type": _OPENAI_TYPES.get(status, "server_error"), "param": None,
                      "code": code}}


def status_of(exc: BaseException) -> int:
    """The HTTP status for an error a request met."""
    if isinstance(exc, QueueFullError):
        return 429
    if isinstance(exc, WontFitError):
        return 507
    if isinstance(exc, ModelNotFoundError):
        return 404
    if isinstance(exc, UsageError):
        return 400
    if isinstance(exc, ModelFileError | ModelLoadError):
        return 500
    if isinstance(exc, ChatTemplateError | GenerationError):
        return 500
    return 500


def describe(exc: BaseException) -> str:
    if isinstance(exc, CamelidError):
        return str(exc)
    return (f"Something unexpected went wrong ({type(exc).__name__}: {exc}). Try again; Camelid's log "
            "has the details.")


async def send_json(send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    data = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


# -- middleware ------------------------------------------------------------------------
class Guard:
    """ASGI middleware: the API key (when set) and the body-size cap, before any route runs.

    uvicorn has no body limit of its own; a body over `max_body` is refused from its
    Content-Length, or as soon as that many bytes have arrived without one. The whole body must
    arrive within BODY_DEADLINE_S.
    """

    def __init__(self, app: ASGIApp, *, api_key: str | None, max_body: int = DEFAULT_MAX_BODY) -> None:
        self.app = app
        self.api_key = api_key
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = api_of(scope["path"])
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.api_key and scope["method"] != "OPTIONS" and not self._authorised(headers):
            await send_json(send, 401, error_body(
                api, 401, "This Camelid server needs an API key: send it as 'Authorization: Bearer KEY' or "
                "'x-api-key: KEY'.", "invalid_api_key"), {"www-authenticate": "Bearer"})
            return
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await self._too_large(send, api)
            return
        body = _BodyReader(receive, self.max_body, done=scope["method"] in ("GET", "HEAD", "OPTIONS"))
        try:
            await self.app(scope, body.receive, send)
        except _BodyTooLarge:
            await self._too_large(send, api)
        except _BodyTimeout:
            await send_json(send, 408, error_body(api, 408, "The request body did not arrive within "
                                                  f"{BODY_DEADLINE_S:.0f} seconds.", "timeout"))

    def _authorised(self, headers: dict[str, str]) -> bool:
        assert self.api_key is not None
        given = headers.get("x-api-key") or ""
        auth = headers.get("authorization") or ""
        if auth[:7].lower() == "bearer ":
            given = given or auth[7:].strip()
        return bool(given) and hmac.compare_digest(given.encode(), self.api_key.encode())

    async def _too_large(self, send: Send, api: str) -> None:
        mib = self.max_body / (1024 * 1024)
        await send_json(send, 413, error_body(
            api, 413, f"The request body is larger than this server accepts ({mib:.0f} MiB).",
            "request_too_large"))


class _BodyReader:
    """receive() with the body bounded in size and time; after the body, receives wait freely."""

    def __init__(self, receive: Receive, max_body: int, *, done: bool) -> None:
        self._receive = receive
        self.max_body = max_body
        self.received = 0
        self.done = done
        self.deadline = time.monotonic() + BODY_DEADLINE_S

    async def receive(self) -> Message:
        if self.done:  # later receives only wait for a disconnect
            return await self._receive()
        try:
            message = await asyncio.wait_for(self._receive(),
                                             timeout=max(self.deadline - time.monotonic(), 0.001))
        except asyncio.TimeoutError:
            raise _BodyTimeout from None
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.max_body:
                raise _BodyTooLarge
            self.done = not message.get("more_body")
        return message


class _BodyTooLarge(HTTPException):
    # An HTTPException, so FastAPI's body parsing passes it on instead of turning it into a 400.
    def __init__(self) -> None:
        super().__init__(413)


class _BodyTimeout(HTTPException):
    def __init__(self) -> None:
        super().__init__(408)


# -- the bridge to the engine thread ---------------------------------------------------
@dataclass
class Exchange:
    """One request's life: admission, the engine job, its streamed text, the log line."""

    service: ModelService
    method: str
    route: str
    started: float = field(default_factory=time.perf_counter)
    at: float = field(default_factory=time.time)
    model: str | None = None
    ticket: int | None = None
    future: Future[Any] | None = None
    queue: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    loop: asyncio.AbstractEventLoop | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    status: int = 200
    error: str | None = None
    stop_reason: str | None = None
    #: The client went away; the log line is written when the job has really ended.
    abandoned: bool = False
    _recorded: bool = False

    def on_text(self, text: str) -> None:
        """From the engine thread: one piece of the reply."""
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self.queue.put_nowait, ("text", text))

    def start(self, submit: Callable[[Exchange], Future[Any]]) -> None:
        """Admit the request (QueueFullError when full) and queue its job; `submit` starts the job."""
        self.loop = asyncio.get_running_loop()
        self.service.admit()
        try:
            self.ticket = self.service.engine.reserve_reply()
            future = submit(self)
        except BaseException:
            self.service.release()
            raise
        self.future = future
        loop = self.loop

        def done(f: Future[Any]) -> None:
            self.service.release()
            if self.abandoned:
                self._record_abandoned(f)
            loop.call_soon_threadsafe(self.queue.put_nowait, ("done", f))

        future.add_done_callback(done)

    def cancel(self) -> None:
        """End this request's reply (running or still queued) within one graph node."""
        if self.ticket is not None and self.future is not None and not self.future.done():
            self.service.engine.cancel(self.ticket)

    def abandon(self) -> None:
        """The client went away: cancel its reply; the log line follows when the engine is free."""
        if self._recorded:
            return
        self.abandoned = True
        self.cancel()
        if self.future is None or self.future.done():
            self._record_abandoned(self.future)

    def _record_abandoned(self, future: Future[Any] | None) -> None:
        reply = None
        if future is not None and not future.cancelled() and future.exception() is None:
            result = future.result()
            reply = getattr(result, "reply", result)
        stats = getattr(reply, "stats", None)
        if stats is not None:
            self.prompt_tokens = stats.prompt_tokens
            self.completion_tokens = stats.completion_tokens
            self.stop_reason = stats.stop_reason
        self.finish(499, "the client disconnected")

    def finish(self, status: int, error: str | None = None) -> None:
        if self._recorded:
            return
        self._recorded = True
        seconds = time.perf_counter() - self.started
        rate = self.completion_tokens / seconds if self.completion_tokens and seconds > 0 else None
        self.service.record(RequestRecord(
            at=self.at, method=self.method, route=self.route, model=self.model,
            prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens, tokens_per_s=rate,
            status=status, seconds=seconds, error=error, stop_reason=self.stop_reason))

    async def next_event(self, receive: Receive | None) -> tuple[str, Any]:
        """The next ("text", str) or ("done", Future); ("gone", None) when the client disconnected first."""
        if receive is None:
            return await self.queue.get()
        getter = asyncio.ensure_future(self.queue.get())
        watcher = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            done, _ = await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (getter, watcher):
                if not task.done():
                    task.cancel()
        if getter in done:
            return getter.result()
        return ("gone", None)

    async def result(self, receive: Receive) -> Any:
        """Wait for the job, texts ignored; cancels it if the client disconnects (then raises Disconnected)."""
        while True:
            kind, value = await self.next_event(receive)
            if kind == "gone":
                self.abandon()
                raise Disconnected
            if kind == "done":
                return value.result()


class Disconnected(Exception):
    """The client closed the connection before its answer was ready."""


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def stream_events(exchange: Exchange, first: tuple[str, Any],
                        render: Callable[[str, Any], list[bytes]]) -> AsyncIterator[bytes]:
    """Bytes for a streaming response: `render(kind, value)` per event, from `first` to the job's end.

    If the client goes away (Starlette cancels this generator), the reply is cancelled.
    """
    finished = False
    try:
        event = first
        while True:
            for chunk in render(*event):
                yield chunk
            if event[0] == "done":
                finished = True
                return
            event = await exchange.queue.get()
    finally:
        if not finished:
            exchange.abandon()
