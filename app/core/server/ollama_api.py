"""Ollama's API under /api: chat, generate, tags, show, ps, version, embed (and the old embeddings).

Shapes follow Ollama's reference, so the official `ollama` client, Open WebUI
and the editors that speak Ollama work unchanged. As in Ollama, `stream`
defaults to true and a stream is newline-delimited JSON (application/x-ndjson),
one object per line, the last with `done: true` and the timings in nanoseconds.

How Camelid differs:

- Names: the library's names with Ollama's ":latest" tag (a request may leave
  the tag off). `digest` is the SHA-256 of the file's path, size and
  modification time, not of its bytes (hashing a 40 GB file per listing is not
  cheap); it changes when the file does.
- `options.num_ctx` loads the model again with that context when it differs
  from the loaded one; a context that does not fit is refused (507) with the
  plan's reason. Load options (num_gpu, num_thread...) and mirostat are ignored:
  Camelid plans those itself.
- `keep_alive` 0 (or "0s") unloads what the server loaded (the chat and the
  embedding model; never the model loaded in the window) once the request is
  answered; other values are accepted and the server's idle timer applies.
  An empty prompt (or no messages) loads the model, or with keep_alive 0
  unloads it, as Ollama does.
- /api/show lists the "tools" capability when the model's chat template
  writes tools itself; other models accept tools too (they are taught a
  generic call syntax in the system prompt), but call them less reliably.
- Ollama's model management (pull, push, create, copy, delete) answers 501:
  Camelid's library and commands do that.
- A prompt longer than the context is refused with a 400, never silently cut.
- Images, `suffix` (fill in the middle), a custom `template` and `context`
  are refused with a 400 sentence (`context` is ignored when empty); `think`
  is ignored.
- `template` in /api/show is the GGUF's Jinja chat template, not a Go template.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from app import __version__
from app.core.chat import tool_calls as tc
from app.core.chat.engine import GenerateOptions, Reply
from app.core.errors import UsageError
from app.core.models.library import LibraryModel
from app.core.server.generation import (
    ChatResult,
    ChatWork,
    default_sampling,
    json_object_grammar,
    parse_arguments,
    sampling_from,
    schema_grammar,
    stop_list,
)
from app.core.server.http import Exchange, describe, status_of
from app.core.server.openai_api import _run
from app.core.server.service import ModelService

router = APIRouter()

TAG = ":latest"
#: expires_at of a model the server never unloads by itself (the one loaded in the window);
#: Ollama shows a model kept forever (keep_alive -1) the same way.
FOREVER = "2318-01-01T00:00:00Z"


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Options(_Loose):
    """The `options` Camelid uses; the rest of Ollama's (num_gpu, mirostat...) are ignored."""

    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    min_p: float | None = Field(default=None, ge=0, lt=1)
    num_predict: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    repeat_penalty: float | None = Field(default=None, gt=0)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    num_ctx: int | None = Field(default=None, ge=1)


class OllamaMessage(_Loose):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    images: list[Any] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_name: str | None = None
    name: str | None = None
    tool_call_id: str | None = None


class _Generating(_Loose):
    model: str = Field(min_length=1)
    stream: bool = True
    format: str | dict[str, Any] | None = None
    options: Options | None = None
    keep_alive: float | str | None = None
    think: bool | str | None = None


class ChatRequest(_Generating):
    messages: list[OllamaMessage] | None = Field(default=None, max_length=10_000)
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128)


class GenerateRequest(_Generating):
    prompt: str | None = None
    system: str | None = None
    raw: bool = False
    suffix: str | None = None
    template: str | None = None
    context: list[int] | None = None
    images: list[Any] | None = None


class EmbedRequest(_Loose):
    model: str = Field(min_length=1)
    input: str | list[str]
    truncate: bool = True
    dimensions: int | None = None
    options: dict[str, Any] | None = None
    keep_alive: float | str | None = None


class EmbeddingsRequest(_Loose):
    model: str = Field(min_length=1)
    prompt: str = ""
    options: dict[str, Any] | None = None
    keep_alive: float | str | None = None


class ShowRequest(_Loose):
    model: str | None = None
    name: str | None = None  # the field's name before Ollama 0.2
    verbose: bool = False


# -- helpers -----------------------------------------------------------------------------
def _service(request: Request) -> ModelService:
    return request.app.state.service


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).isoformat().replace("+00:00", "Z")


def tagged(name: str) -> str:
    return name if ":" in name else name + TAG


_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h)?\s*$")


def keep_alive_zero(value: float | str | None) -> bool:
    """Whether keep_alive asks for the model to be unloaded right after the request (0, "0", "0s", "0m")."""
    if value is None:
        return False
    if isinstance(value, int | float):
        return value == 0
    m = _DURATION.match(value)
    return m is not None and float(m.group(1)) == 0


def _format_grammar(fmt: str | dict[str, Any] | None) -> str | None:
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return json_object_grammar()
    if isinstance(fmt, dict):
        return schema_grammar(fmt)
    raise UsageError(f"format {fmt!r} is not known.", "Send \"json\" or a JSON schema object.")


def _options(body: _Generating) -> tuple[Any, GenerateOptions, int | None]:
    """(sampling, generate options, num_ctx) from a request's options and format."""
    o = body.options or Options()
    max_tokens = o.num_predict
    if max_tokens is not None:
        if max_tokens == 0:
            raise UsageError("options.num_predict is 0, which asks for no text.",
                             "Leave it out (or -1) for no limit, or ask for one token or more.")
        if max_tokens < 0:  # -1: no limit; -2: until the context is full
            max_tokens = None
    sampling = sampling_from(base=default_sampling(), temperature=o.temperature, top_p=o.top_p, top_k=o.top_k,
                             min_p=o.min_p, repeat_penalty=o.repeat_penalty, max_tokens=max_tokens,
                             seed=o.seed if o.seed is None or o.seed >= 0 else None)
    options = GenerateOptions(stop=stop_list(o.stop), grammar=_format_grammar(body.format), trim=False,
                              frequency_penalty=o.frequency_penalty or 0.0,
                              presence_penalty=o.presence_penalty or 0.0)
    return sampling, options, o.num_ctx


def _ns(seconds: float | None) -> int:
    return max(0, int((seconds or 0.0) * 1e9))


def _timings(ex: Exchange, reply: Reply | None, work_started: float | None) -> dict[str, Any]:
    """Ollama's counts and durations (nanoseconds) of one request."""
    total = time.perf_counter() - ex.started
    load = (work_started - ex.started) if work_started is not None else 0.0
    out: dict[str, Any] = {"total_duration": _ns(total), "load_duration": _ns(load)}
    if reply is None:
        return out
    s = reply.stats
    if s.prompt_tokens_evaluated and s.prompt_tokens_per_s:
        prompt_s: float | None = s.prompt_tokens_evaluated / s.prompt_tokens_per_s
    else:
        prompt_s = s.ttft_s
    if s.completion_tokens and s.tokens_per_s:
        eval_s = s.completion_tokens / s.tokens_per_s
    else:
        eval_s = max(s.total_s - (s.ttft_s or 0.0), 0.0)
    out.update(prompt_eval_count=s.prompt_tokens, prompt_eval_duration=_ns(prompt_s),
               eval_count=s.completion_tokens, eval_duration=_ns(eval_s))
    return out


def _done_reason(reply: Reply) -> str:
    return "length" if reply.stats.stop_reason in ("length", "context") else "stop"


def _count(ex: Exchange, reply: Reply) -> None:
    ex.prompt_tokens = reply.stats.prompt_tokens
    ex.completion_tokens = reply.stats.completion_tokens


def _line(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, ensure_ascii=False) + "\n").encode()


def _ndjson(response: Response) -> Response:
    """_run streams as text/event-stream; Ollama's streams are application/x-ndjson."""
    if isinstance(response, StreamingResponse):
        response.media_type = "application/x-ndjson"
        response.headers["content-type"] = "application/x-ndjson"
    return response


def _unload_after(service: ModelService, keep_alive: float | str | None) -> None:
    """keep_alive 0: unload what the server loaded, queued after this request on the owner thread."""
    if keep_alive_zero(keep_alive):
        service.runner.call(service.unload_idle)


def _refuse_images(images: list[Any] | None, where: str) -> None:
    if images:
        raise UsageError(f"{where} has images; Camelid's local models here read text only.",
                         "Send the text without images.")


def _messages(body: ChatRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, m in enumerate(body.messages or []):
        _refuse_images(m.images, f"Message {i + 1} ({m.role})")
        message: dict[str, Any] = {"role": m.role, "content": m.content or ""}
        if m.tool_calls and m.role == "assistant":
            calls = []
            for call in m.tool_calls:
                function = call.get("function") or {}
                if not isinstance(function.get("name"), str):
                    raise UsageError("A tool call in the conversation has no function name.",
                                     "Send tool calls as the API returned them.")
                calls.append({"id": call.get("id") or tc.new_call_id(), "name": function["name"],
                              "arguments": parse_arguments(function.get("arguments") or {})})
            message["tool_calls"] = calls
        if m.role == "tool":
            if m.tool_name or m.name:
                message["name"] = m.tool_name or m.name
            if m.tool_call_id:
                message["tool_call_id"] = m.tool_call_id
        out.append(message)
    return out


async def _load_only(request: Request, route: str, body: _Generating, shape: Callable[[str], dict[str, Any]],
                     num_ctx: int | None) -> Response:
    """An empty prompt: load the model (done_reason "load"), or with keep_alive 0 unload it ("unload")."""
    service = _service(request)
    if keep_alive_zero(body.keep_alive):
        from starlette.concurrency import run_in_threadpool

        await run_in_threadpool(service.resolve, body.model)  # an unknown name is still a 404
        await asyncio.wrap_future(service.runner.call(service.unload_idle))
        return JSONResponse({"model": body.model, "created_at": now_iso(), **shape(""), "done": True,
                             "done_reason": "unload"})
    marks: dict[str, float] = {}

    def job(ex: Exchange) -> Callable[[Any], None]:
        def work(engine: Any) -> None:
            marks["work"] = time.perf_counter()

        return work

    def answer(ex: Exchange, _result: None) -> dict[str, Any]:
        return {"model": body.model, "created_at": now_iso(), **shape(""), "done": True, "done_reason": "load",
                **_timings(ex, None, marks.get("work"))}

    def render(ex: Exchange) -> Callable[[str, Any], list[bytes]]:
        raise AssertionError("a load does not stream")

    return await _run_chat(request, route, body.model, False, job, render, answer, num_ctx)


async def _run_chat(request: Request, route: str, model: str, stream: bool, job: Callable[[Exchange], Any],
                    render: Callable[[Exchange], Callable[[str, Any], list[bytes]]],
                    answer: Callable[[Exchange, Any], dict[str, Any]], num_ctx: int | None) -> Response:
    """_run, with the model loaded at `num_ctx` tokens of context when the request sets one."""
    if num_ctx is not None:
        # _run calls service.run_chat(model, work); for this request that call passes num_ctx. The
        # service is shared, so _run gets a request whose app state holds a per-request view of it.
        view = _ServiceView(_service(request), num_ctx)
        scope = {**request.scope, "app": SimpleNamespace(state=SimpleNamespace(service=view))}
        request = Request(scope, request.receive)
    return _ndjson(await _run(request, route, model, stream, job, render, answer))


class _ServiceView:
    """The ModelService, with run_chat loading the model at one request's num_ctx."""

    def __init__(self, service: ModelService, num_ctx: int) -> None:
        self._service = service
        self._num_ctx = num_ctx

    def run_chat(self, name: str | None, work: Callable[[Any], Any], *, n_ctx: int | None = None) -> Any:
        return self._service.run_chat(name, work, n_ctx=self._num_ctx)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._service, name)


# -- generation routes ----------------------------------------------------------------------
@router.post("/api/chat")
async def chat(body: ChatRequest, request: Request) -> Response:
    sampling, options, num_ctx = _options(body)
    if not body.messages:
        return await _load_only(request, "/api/chat", body,
                                lambda text: {"message": {"role": "assistant", "content": text}}, num_ctx)
    messages = _messages(body)
    tools = tc.validate_tools(body.tools) if body.tools else []
    work = ChatWork(messages=messages, sampling=sampling, options=options, tools=tools)
    service = _service(request)
    marks: dict[str, float] = {}

    def job(ex: Exchange) -> Callable[[Any], ChatResult]:
        def run(engine: Any) -> ChatResult:
            marks["work"] = time.perf_counter()
            return work.run(engine, ex.on_text if body.stream else None, ex.ticket)

        return run

    def message(content: str, calls: list[tc.ToolCall] | None = None) -> dict[str, Any]:
        msg: dict[str, Any] = {"role": "assistant", "content": content}
        if calls:
            msg["tool_calls"] = [{"id": c.id, "function": {"name": c.name, "arguments": c.arguments}}
                                 for c in calls]
        return msg

    def answer(ex: Exchange, result: ChatResult) -> dict[str, Any]:
        _count(ex, result.reply)
        _unload_after(service, body.keep_alive)
        return {"model": body.model, "created_at": now_iso(), "message": message(result.content, result.tool_calls),
                "done": True, "done_reason": _done_reason(result.reply),
                **_timings(ex, result.reply, marks.get("work"))}

    def render(ex: Exchange) -> Callable[[str, Any], list[bytes]]:
        emitted: list[str] = []

        def events(kind: str, value: Any) -> list[bytes]:
            if kind == "text":
                emitted.append(value)
                return [_line({"model": body.model, "created_at": now_iso(), "message": message(value),
                               "done": False})]
            try:
                result: ChatResult = value.result()
            except Exception as exc:
                ex.finish(status_of(exc), describe(exc))
                return [_line({"error": describe(exc)})]
            _count(ex, result.reply)
            out = []
            rest = _rest(result.content, "".join(emitted))
            if rest or result.tool_calls:
                out.append(_line({"model": body.model, "created_at": now_iso(),
                                  "message": message(rest, result.tool_calls), "done": False}))
            out.append(_line({"model": body.model, "created_at": now_iso(), "message": message(""), "done": True,
                              "done_reason": _done_reason(result.reply),
                              **_timings(ex, result.reply, marks.get("work"))}))
            ex.finish(200)
            _unload_after(service, body.keep_alive)
            return out

        return events

    return await _run_chat(request, "/api/chat", body.model, body.stream, job, render, answer, num_ctx)


def _rest(content: str, emitted: str) -> str:
    """Content the stream has not sent yet (text held back while it might have been a tool call)."""
    if content.startswith(emitted):
        return content[len(emitted):]
    stripped = content.strip()
    if stripped.startswith(emitted):
        return stripped[len(emitted):]
    return ""


@router.post("/api/generate")
async def generate(body: GenerateRequest, request: Request) -> Response:
    _refuse_images(body.images, "The request")
    if body.suffix:
        raise UsageError("Camelid does not fill in the middle (suffix).", "Send the prompt without a suffix.")
    if body.template:
        raise UsageError("Camelid renders prompts with the model's own chat template; a custom template "
                         "is not supported.", "Leave out template, or send raw=true with the prompt as text.")
    if body.context:
        raise UsageError("Camelid does not continue from a context of token ids (it is deprecated in Ollama).",
                         "Send the conversation to /api/chat instead.")
    sampling, options, num_ctx = _options(body)
    if not body.prompt:
        return await _load_only(request, "/api/generate", body, lambda text: {"response": text}, num_ctx)
    prompt = body.prompt
    service = _service(request)
    marks: dict[str, float] = {}
    work: ChatWork | None = None
    if not body.raw:
        messages = ([{"role": "system", "content": body.system}] if body.system else []) + \
            [{"role": "user", "content": prompt}]
        work = ChatWork(messages=messages, sampling=sampling, options=options)

    def job(ex: Exchange) -> Callable[[Any], Reply]:
        on_text = ex.on_text if body.stream else None

        def run(engine: Any) -> Reply:
            marks["work"] = time.perf_counter()
            if work is None:
                return engine.complete(prompt, sampling, on_text=on_text, ticket=ex.ticket, options=options)
            return work.run(engine, on_text, ex.ticket).reply

        return run

    def answer(ex: Exchange, reply: Reply) -> dict[str, Any]:
        _count(ex, reply)
        _unload_after(service, body.keep_alive)
        return {"model": body.model, "created_at": now_iso(), "response": reply.text, "done": True,
                "done_reason": _done_reason(reply), **_timings(ex, reply, marks.get("work"))}

    def render(ex: Exchange) -> Callable[[str, Any], list[bytes]]:
        def events(kind: str, value: Any) -> list[bytes]:
            if kind == "text":
                return [_line({"model": body.model, "created_at": now_iso(), "response": value, "done": False})]
            try:
                reply: Reply = value.result()
            except Exception as exc:
                ex.finish(status_of(exc), describe(exc))
                return [_line({"error": describe(exc)})]
            _count(ex, reply)
            out = [_line({"model": body.model, "created_at": now_iso(), "response": "", "done": True,
                          "done_reason": _done_reason(reply), **_timings(ex, reply, marks.get("work"))})]
            ex.finish(200)
            _unload_after(service, body.keep_alive)
            return out

        return events

    return await _run_chat(request, "/api/generate", body.model, body.stream, job, render, answer, num_ctx)


# -- embeddings ------------------------------------------------------------------------------
@router.post("/api/embed")
async def embed(body: EmbedRequest, request: Request) -> Response:
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    service = _service(request)
    marks: dict[str, float] = {}

    def job(ex: Exchange) -> Callable[[Any], Any]:
        def run(embedder: Any) -> Any:
            marks["work"] = time.perf_counter()
            return embedder.embed(texts, normalize=True, truncate=body.truncate)

        return run

    def answer(ex: Exchange, result: Any) -> dict[str, Any]:
        if body.dimensions is not None and result.vectors and body.dimensions != len(result.vectors[0]):
            raise UsageError(f"This embedding model gives {len(result.vectors[0])} dimensions, not "
                             f"{body.dimensions}.", "Leave out dimensions, or ask for that many.")
        ex.prompt_tokens = result.tokens
        _unload_after(service, body.keep_alive)
        return {"model": body.model, "embeddings": result.vectors, **_timings(ex, None, marks.get("work")),
                "prompt_eval_count": result.tokens}

    def render(ex: Exchange) -> Callable[[str, Any], list[bytes]]:
        raise AssertionError("embeddings do not stream")

    return await _run(request, "/api/embed", body.model, False, job, render, answer, embed=True)


@router.post("/api/embeddings")
async def embeddings(body: EmbeddingsRequest, request: Request) -> Response:
    """The old route: one prompt, one vector, not normalised (as Ollama's was)."""
    service = _service(request)

    def job(ex: Exchange) -> Callable[[Any], Any]:
        return lambda embedder: embedder.embed([body.prompt or " "], normalize=False, truncate=True)

    def answer(ex: Exchange, result: Any) -> dict[str, Any]:
        ex.prompt_tokens = result.tokens
        _unload_after(service, body.keep_alive)
        return {"embedding": result.vectors[0]}

    def render(ex: Exchange) -> Callable[[str, Any], list[bytes]]:
        raise AssertionError("embeddings do not stream")

    return await _run(request, "/api/embeddings", body.model, False, job, render, answer, embed=True)


# -- the library -------------------------------------------------------------------------------
_headers: dict[str, tuple[str, dict[str, Any] | None]] = {}
_headers_lock = threading.Lock()


def _file_key(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:
        return f"{path}|missing"
    return f"{path}|{st.st_size}|{st.st_mtime_ns}"


def digest(model: LibraryModel) -> str:
    """SHA-256 of the path, size and modification time (not of the bytes: see the module docstring)."""
    return hashlib.sha256(_file_key(model.path).encode()).hexdigest()


def header_summary(model: LibraryModel) -> dict[str, Any] | None:
    """The model's header summary (architecture, parameters, quantization), read once per file version."""
    if model.meta is not None:
        return model.meta
    key = _file_key(model.path)
    with _headers_lock:
        cached = _headers.get(str(model.path))
    if cached is not None and cached[0] == key:
        return cached[1]
    from app.core.fit import read_gguf
    from app.core.models.library import summarize_meta

    try:
        summary: dict[str, Any] | None = summarize_meta(read_gguf(model.path))
    except Exception:  # an unreadable header leaves the details empty, never a failed listing
        summary = None
    with _headers_lock:
        _headers[str(model.path)] = (key, summary)
    return summary


def _parameter_size(summary: dict[str, Any]) -> str:
    n = summary.get("n_params")
    if isinstance(n, int | float) and n > 0:
        for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
            if n >= size:
                return f"{n / size:.1f}{unit}" if unit != "M" else f"{n / size:.2f}{unit}"
        return str(int(n))
    label = summary.get("size_label")
    return str(label) if label else ""


def details(model: LibraryModel) -> dict[str, Any]:
    summary = header_summary(model) or {}
    family = str(summary.get("architecture") or "")
    return {"parent_model": "", "format": "gguf", "family": family, "families": [family] if family else None,
            "parameter_size": _parameter_size(summary),
            "quantization_level": str(model.quant or summary.get("quant") or "")}


def _modified(model: LibraryModel) -> str:
    try:
        return _iso(model.path.stat().st_mtime)
    except OSError:
        return _iso(0)


def tag_entry(model: LibraryModel) -> dict[str, Any]:
    name = tagged(model.name)
    return {"name": name, "model": name, "modified_at": _modified(model), "size": model.size_bytes,
            "digest": digest(model), "details": details(model)}


def show_body(model: LibraryModel) -> dict[str, Any]:
    from app.core.embed import is_embedding_model
    from app.core.fit import read_gguf

    meta = read_gguf(model.path)

    arch = meta.architecture
    info: dict[str, Any] = {}
    for key, value in meta.metadata.items():
        if key.startswith("tokenizer."):
            continue  # the vocabulary and merges (Ollama leaves them out too)
        if isinstance(value, str | int | float | bool) or (isinstance(value, list) and len(value) <= 16):
            info[key] = value
    info["general.architecture"] = arch
    summary = header_summary(model) or {}
    if summary.get("n_params"):
        info["general.parameter_count"] = summary["n_params"]
    info[f"{arch}.context_length"] = meta.n_ctx_train
    if is_embedding_model(meta):
        capabilities = ["embedding"]
    else:
        capabilities = ["completion"]
        if tc.template_supports_tools(meta.chat_template):
            capabilities.append("tools")
    s = default_sampling()
    parameters = "\n".join(f"{k:<15} {v}" for k, v in (
        ("temperature", s.temperature), ("top_k", s.top_k), ("top_p", s.top_p), ("min_p", s.min_p),
        ("repeat_penalty", s.repeat_penalty)))
    license_text = meta.metadata.get("general.license")
    return {"modelfile": f"# Camelid serves this GGUF as it is\nFROM {model.path}\n",
            "parameters": parameters, "template": meta.chat_template or "",
            "license": str(license_text) if license_text else "",
            "details": details(model), "model_info": info, "capabilities": capabilities,
            "modified_at": _modified(model)}


@router.get("/api/tags")
async def tags(request: Request) -> JSONResponse:
    from starlette.concurrency import run_in_threadpool

    service = _service(request)

    def listing() -> list[dict[str, Any]]:
        return [tag_entry(m) for m in service.library()]

    return JSONResponse({"models": await run_in_threadpool(listing)})


@router.post("/api/show")
async def show(body: ShowRequest, request: Request) -> JSONResponse:
    from starlette.concurrency import run_in_threadpool

    name = body.model or body.name
    if not name:
        raise UsageError("The request names no model.", "Send {\"model\": NAME}.")
    service = _service(request)

    def describe_model() -> dict[str, Any]:
        return show_body(service.resolve(name))

    return JSONResponse(await run_in_threadpool(describe_model))


@router.get("/api/ps")
async def ps(request: Request) -> JSONResponse:
    from starlette.concurrency import run_in_threadpool

    service = _service(request)

    def running() -> list[dict[str, Any]]:
        status = service.status()
        by_path = {str(m.path): m for m in service.library()}
        out = []
        for kind in ("chat", "embedding"):
            entry = status.get(kind)
            if not entry:
                continue
            model = by_path.get(entry["path"]) or LibraryModel(
                name=entry["name"], path=Path(entry["path"]), files=(Path(entry["path"]),),
                size_bytes=entry.get("size_bytes") or 0, source="path")
            name = tagged(model.name)
            expires = entry.get("expires_at")
            if kind == "embedding" and expires is None and service.idle_unload_s > 0:
                expires = time.time() + service.idle_unload_s  # the server always loads this one itself
            out.append({"name": name, "model": name, "size": max(model.size_bytes, entry.get("gpu_bytes") or 0),
                        "digest": digest(model), "details": details(model),
                        "expires_at": _iso(expires) if expires else FOREVER,
                        "size_vram": entry.get("gpu_bytes") or 0,
                        "context_length": entry.get("n_ctx") or (header_summary(model) or {}).get("n_ctx_train")})
        return out

    return JSONResponse({"models": await run_in_threadpool(running)})


@router.get("/api/version")
async def version() -> dict[str, str]:
    return {"version": __version__}


_MANAGEMENT = ("pull", "push", "create", "copy", "delete")


async def _management(request: Request) -> JSONResponse:
    """Ollama's model management: Camelid's own library and commands do that."""
    action = request.url.path.rsplit("/", 1)[-1]
    return JSONResponse({"error": f"Camelid's server does not {action} models through the Ollama API. "
                                  "Use Camelid's library (`camelid download`, `camelid models`) instead."}, 501)


for _action in _MANAGEMENT:
    router.add_api_route(f"/api/{_action}", _management, methods=["DELETE"] if _action == "delete" else ["POST"])
