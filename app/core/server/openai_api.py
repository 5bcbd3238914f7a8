"""OpenAI's API: /v1/chat/completions, /v1/completions, /v1/models, /v1/embeddings.

Field names and shapes follow OpenAI's reference, so the official `openai`
client (and the editors and tools built on it) work unchanged. Camelid's
extensions are llama.cpp's own sampling fields (top_k, min_p, repeat_penalty).
Log-probabilities of a streamed reply arrive with its last chunk.
"""

from __future__ import annotations

import base64
import json
import struct
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from app.core.chat import tool_calls as tc
from app.core.chat.engine import GenerateOptions, Reply, TokenLogprob
from app.core.errors import UsageError
from app.core.server.generation import (
    FINISH,
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
from app.core.server.service import ModelService

router = APIRouter()


class _Loose(BaseModel):
    # Clients send fields Camelid does not use (user, metadata, store...): ignored, not refused.
    model_config = ConfigDict(extra="ignore")


class ChatMessage(_Loose):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class StreamOptions(_Loose):
    include_usage: bool = False


class _Generating(_Loose):
    """The fields every generating request shares: the model, streaming, and sampling."""

    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    min_p: float | None = Field(default=None, ge=0, lt=1)
    repeat_penalty: float | None = Field(default=None, gt=0)
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2)
    presence_penalty: float = Field(default=0.0, ge=-2, le=2)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = 1


class ChatRequest(_Generating):
    messages: list[ChatMessage] = Field(min_length=1, max_length=10_000)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128)
    tool_choice: str | dict[str, Any] | None = None


class CompletionRequest(_Generating):
    prompt: str | list[str]
    max_tokens: int | None = Field(default=16, ge=1)
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=5)
    suffix: str | None = None


class EmbeddingRequest(_Loose):
    model: str | None = None
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None


# -- conversions -----------------------------------------------------------------------
def text_of(content: str | list[dict[str, Any]] | None, *, where: str = "A message") -> str:
    """A message's text: a string, or text parts joined. Images and audio are refused in words."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        kind = part.get("type")
        if kind in ("text", "input_text"):
            parts.append(str(part.get("text") or ""))
        else:
            raise UsageError(f"{where} has a {kind!r} part; Camelid's models here read text only.",
                             "Send the text alone.")
    return "".join(parts)


def _messages(request: ChatRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in request.messages:
        role = "system" if m.role == "developer" else "tool" if m.role == "function" else m.role
        message: dict[str, Any] = {"role": role, "content": text_of(m.content)}
        if m.tool_calls:
            calls = []
            for call in m.tool_calls:
                function = call.get("function") or {}
                if not isinstance(function.get("name"), str):
                    raise UsageError("A tool call in the conversation has no function name.",
                                     "Send tool calls as the API returned them.")
                calls.append({"id": call.get("id") or tc.new_call_id(), "name": function["name"],
                              "arguments": parse_arguments(function.get("arguments") or {})})
            message["tool_calls"] = calls
        if m.tool_call_id:
            message["tool_call_id"] = m.tool_call_id
        if m.name and role == "tool":
            message["name"] = m.name
        out.append(message)
    return out


def _tool_choice(value: str | dict[str, Any] | None) -> str:
    if value is None:
        return "auto"
    if isinstance(value, str):
        if value not in ("none", "auto", "required"):
            raise UsageError(f"tool_choice {value!r} is not one of none, auto, required.",
                             "Use one of those, or {\"type\": \"function\", \"function\": {\"name\": ...}}.")
        return value
    name = (value.get("function") or {}).get("name")
    if not isinstance(name, str):
        raise UsageError("tool_choice names no function.", "Give tool_choice.function.name.")
    return name


def chat_work(request: ChatRequest) -> ChatWork:
    if request.n != 1:
        raise UsageError("Camelid writes one reply per request (n must be 1).", "Send n=1, or several requests.")
    grammar = None
    fmt = request.response_format or {}
    kind = fmt.get("type", "text")
    if kind == "json_object":
        grammar = json_object_grammar()
    elif kind == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        grammar = schema_grammar(schema if schema is not None else {"type": "object"})
    elif kind != "text":
        raise UsageError(f"response_format type {kind!r} is not known.", "Use text, json_object or json_schema.")
    top = request.top_logprobs if request.top_logprobs is not None else 0
    options = GenerateOptions(stop=stop_list(request.stop), grammar=grammar,
                              logprobs=top if request.logprobs else None, trim=False,
                              frequency_penalty=request.frequency_penalty,
                              presence_penalty=request.presence_penalty)
    sampling = sampling_from(base=default_sampling(), temperature=request.temperature, top_p=request.top_p,
                             top_k=request.top_k, min_p=request.min_p, repeat_penalty=request.repeat_penalty,
                             max_tokens=request.max_completion_tokens or request.max_tokens, seed=request.seed)
    tools = tc.validate_tools(request.tools) if request.tools else []
    choice = _tool_choice(request.tool_choice)
    if choice not in ("none", "auto", "required") and choice not in {t["function"]["name"] for t in tools}:
        raise UsageError(f"tool_choice names {choice!r}, which is not among the tools.",
                         "Name one of the tools sent.")
    return ChatWork(messages=_messages(request), sampling=sampling, options=options, tools=tools,
                    tool_choice=choice)


def _logprobs_json(items: list[TokenLogprob] | None) -> dict[str, Any] | None:
    if items is None:
        return None

    def one(text: str, raw: bytes, logprob: float) -> dict[str, Any]:
        return {"token": text, "logprob": logprob, "bytes": list(raw)}

    return {"content": [{**one(t.text, t.raw, t.logprob), "top_logprobs": [one(*x) for x in t.top]}
                        for t in items], "refusal": None}


def _calls_json(calls: list[tc.ToolCall], *, indexed: bool = False) -> list[dict[str, Any]]:
    return [{**({"index": i} if indexed else {}), "id": c.id, "type": "function",
             "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}}
            for i, c in enumerate(calls)]


def _usage(reply: Reply) -> dict[str, int]:
    p, c = reply.stats.prompt_tokens, reply.stats.completion_tokens
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _sse(data: dict[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n".encode()


def _service(request: Request) -> ModelService:
    return request.app.state.service


async def _run(request: Request, route: str, model: str | None, stream: bool,
               job: Callable[[Exchange], Any], render: Callable[[Exchange], Callable[[str, Any], list[bytes]]],
               answer: Callable[[Exchange, Any], dict[str, Any]], *, embed: bool = False) -> Response:
    """The request/engine/response cycle every generating route shares (and the log line)."""
    from app.core.server.http import Disconnected, stream_events

    service = _service(request)
    exchange = Exchange(service, request.method, route, model=model)
    try:
        if embed:
            exchange.start(lambda ex: service.run_embed(model, lambda e: job(ex)(e)))
        else:
            exchange.start(lambda ex: service.run_chat(model, lambda e: job(ex)(e)))
        if not stream:
            result = await exchange.result(request.receive)
            body = answer(exchange, result)
            exchange.finish(200)
            return JSONResponse(body)
        first = await exchange.next_event(request.receive)
        if first[0] == "gone":
            exchange.abandon()
            return Response(status_code=499)
        if first[0] == "done" and first[1].exception() is not None:
            raise first[1].exception()
    except Disconnected:
        return Response(status_code=499)
    except Exception as exc:
        exchange.finish(status_of(exc), describe(exc))
        raise
    return StreamingResponse(stream_events(exchange, first, render(exchange)), media_type="text/event-stream",
                             headers={"cache-control": "no-cache", "x-accel-buffering": "no"})


# -- routes ------------------------------------------------------------------------------
@router.post("/v1/chat/completions")
async def chat_completions(body: ChatRequest, request: Request) -> Response:
    work = chat_work(body)
    cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    name = body.model

    def job(ex: Exchange) -> Callable[[Any], ChatResult]:
        return lambda engine: work.run(engine, ex.on_text if body.stream else None, ex.ticket)

    def message(result: ChatResult) -> dict[str, Any]:
        msg: dict[str, Any] = {"role": "assistant", "content": result.content or None, "refusal": None}
        if result.tool_calls:
            msg["tool_calls"] = _calls_json(result.tool_calls)
        elif msg["content"] is None:
            msg["content"] = ""
        return msg

    def answer(ex: Exchange, result: ChatResult) -> dict[str, Any]:
        _count(ex, result.reply)
        return {"id": cid, "object": "chat.completion", "created": created, "model": name or ex.model,
                "system_fingerprint": "camelid",
                "choices": [{"index": 0, "message": message(result),
                             "logprobs": _logprobs_json(result.reply.logprobs),
                             "finish_reason": result.finish}],
                "usage": _usage(result.reply)}

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        return _sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": name,
                     "system_fingerprint": "camelid",
                     "choices": [{"index": 0, "delta": delta, "logprobs": extra.get("logprobs"),
                                  "finish_reason": finish}]})

    def render(ex: Exchange) -> Callable[[str, Any], list[bytes]]:
        opened = [False]

        def events(kind: str, value: Any) -> list[bytes]:
            out = []
            if not opened[0]:
                opened[0] = True
                out.append(chunk({"role": "assistant", "content": ""}))
            if kind == "text":
                out.append(chunk({"content": value}))
                return out
            try:
                result: ChatResult = value.result()
            except Exception as exc:
                ex.finish(status_of(exc), describe(exc))
                return [*out, _sse({"error": {"message": describe(exc), "type": "server_error"}}),
                        _sse("[DONE]")]
            _count(ex, result.reply)
            if result.tail:
                out.append(chunk({"content": result.tail}))
            if result.tool_calls:
                out.append(chunk({"tool_calls": _calls_json(result.tool_calls, indexed=True)}))
            out.append(chunk({}, result.finish, logprobs=_logprobs_json(result.reply.logprobs)))
            if body.stream_options is not None and body.stream_options.include_usage:
                out.append(_sse({"id": cid, "object": "chat.completion.chunk", "created": created,
                                 "model": name, "choices": [], "usage": _usage(result.reply)}))
            out.append(_sse("[DONE]"))
            ex.finish(200)
            return out

        return events

    return await _run(request, "/v1/chat/completions", name, body.stream, job, render, answer)


def _count(ex: Exchange, reply: Reply) -> None:
    ex.prompt_tokens = reply.stats.prompt_tokens
    ex.completion_tokens = reply.stats.completion_tokens
    ex.stop_reason = reply.stats.stop_reason


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request) -> Response:
    if body.n != 1:
        raise UsageError("Camelid writes one completion per request (n must be 1).", "Send n=1.")
    if body.suffix:
        raise UsageError("Camelid does not fill in the middle (suffix).", "Send the prompt without a suffix.")
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
        raise UsageError("Send one prompt per request.", "Split a list of prompts into several requests.")
    prompt = prompts[0]
    options = GenerateOptions(stop=stop_list(body.stop), logprobs=body.logprobs, trim=False,
                              frequency_penalty=body.frequency_penalty, presence_penalty=body.presence_penalty)
    sampling = sampling_from(base=default_sampling(), temperature=body.temperature, top_p=body.top_p,
                             top_k=body.top_k, min_p=body.min_p, repeat_penalty=body.repeat_penalty,
                             max_tokens=body.max_tokens, seed=body.seed)
    cid = f"cmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())

    def job(ex: Exchange) -> Callable[[Any], Reply]:
        return lambda engine: engine.complete(prompt, sampling, on_text=ex.on_text if body.stream else None,
                                              ticket=ex.ticket, options=options)

    def legacy_logprobs(reply: Reply) -> dict[str, Any] | None:
        if reply.logprobs is None:
            return None
        offsets, at = [], len(prompt) if body.echo else 0
        for t in reply.logprobs:
            offsets.append(at)
            at += len(t.text)
        return {"tokens": [t.text for t in reply.logprobs], "token_logprobs": [t.logprob for t in reply.logprobs],
                "top_logprobs": [{x[0]: x[2] for x in t.top} for t in reply.logprobs], "text_offset": offsets}

    def answer(ex: Exchange, reply: Reply) -> dict[str, Any]:
        _count(ex, reply)
        text = (prompt if body.echo else "") + reply.text
        return {"id": cid, "object": "text_completion", "created": created, "model": body.model,
                "system_fingerprint": "camelid",
                "choices": [{"index": 0, "text": text, "logprobs": legacy_logprobs(reply),
                             "finish_reason": FINISH.get(reply.stats.stop_reason, "stop")}],
                "usage": _usage(reply)}

    def chunk(text: str, finish: str | None = None, logprobs: Any = None) -> bytes:
        return _sse({"id": cid, "object": "text_completion", "created": created, "model": body.model,
                     "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}]})

    def render(ex: Exchange) -> Callable[[str, Any], list[bytes]]:
        echoed = [not body.echo]

        def events(kind: str, value: Any) -> list[bytes]:
            out = []
            if not echoed[0]:
                echoed[0] = True
                out.append(chunk(prompt))
            if kind == "text":
                return [*out, chunk(value)]
            try:
                reply: Reply = value.result()
            except Exception as exc:
                ex.finish(status_of(exc), describe(exc))
                return [*out, _sse({"error": {"message": describe(exc), "type": "server_error"}}),
                        _sse("[DONE]")]
            _count(ex, reply)
            out.append(chunk("", FINISH.get(reply.stats.stop_reason, "stop"), legacy_logprobs(reply)))
            if body.stream_options is not None and body.stream_options.include_usage:
                out.append(_sse({"id": cid, "object": "text_completion", "created": created,
                                 "model": body.model, "choices": [], "usage": _usage(reply)}))
            out.append(_sse("[DONE]"))
            ex.finish(200)
            return out

        return events

    return await _run(request, "/v1/completions", body.model, body.stream, job, render, answer)


def model_card(model: Any) -> dict[str, Any]:
    try:
        created = int(model.path.stat().st_mtime)
    except OSError:
        created = 0
    return {"id": model.name, "object": "model", "created": created,
            "owned_by": model.repo_id.split("/")[0] if model.repo_id else model.source}


@router.get("/v1/models")
async def list_models(request: Request) -> JSONResponse:
    from starlette.concurrency import run_in_threadpool

    models = await run_in_threadpool(_service(request).library)
    return JSONResponse({"object": "list", "data": [model_card(m) for m in models]})


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> JSONResponse:
    from starlette.concurrency import run_in_threadpool

    model = await run_in_threadpool(_service(request).resolve, model_id)
    return JSONResponse(model_card(model))


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
    texts = body.input if isinstance(body.input, list) else [body.input]
    if not texts or not all(isinstance(t, str) for t in texts):
        raise UsageError("Camelid embeds text: send a string or a list of strings as input.",
                         "Send text rather than token ids.")
    strings = [str(t) for t in texts]

    def job(ex: Exchange) -> Callable[[Any], Any]:
        return lambda embedder: embedder.embed(strings, normalize=True, truncate=False)

    def answer(ex: Exchange, result: Any) -> dict[str, Any]:
        if body.dimensions is not None and result.vectors and body.dimensions != len(result.vectors[0]):
            raise UsageError(f"This embedding model gives {len(result.vectors[0])} dimensions, not "
                             f"{body.dimensions}.", "Leave out dimensions, or ask for that many.")
        ex.prompt_tokens = result.tokens
        data = []
        for i, vector in enumerate(result.vectors):
            value: Any = vector
            if body.encoding_format == "base64":
                value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": value})
        return {"object": "list", "data": data, "model": body.model,
                "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens}}

    def render(ex: Exchange) -> Callable[[str, Any], list[bytes]]:
        raise AssertionError("embeddings do not stream")

    return await _run(request, "/v1/embeddings", body.model, False, job, render, answer, embed=True)
