"""Anthropic's Messages API: POST /v1/messages (streaming too) and /v1/messages/count_tokens.

Field names, content blocks, stop reasons and the server-sent event sequence
follow Anthropic's reference, so the official `anthropic` client works
unchanged (`messages.create`, `create(stream=True)`, and the `messages.stream`
helper with `text_stream` and `get_final_message()`).

Differences a client may notice:

- Models read text only: image and document blocks are refused with a 400.
- A conversation must end with a user turn (a tool_result counts): Camelid
  cannot continue a prefilled assistant turn.
- A streamed reply's `message_start` carries input_tokens 0: the prompt is
  counted while the reply is written, and the true count arrives in
  `message_delta`'s usage (the client's final message has it).
- Tool calls are reported once the reply is complete (each tool_use block's
  input arrives as one `input_json_delta`), not while the model writes them.
- temperature, top_p and top_k (which newer clients send through extra_body) are honoured;
  output_config.format (a JSON schema) constrains the reply with a grammar.
- metadata, thinking, service_tier, output_config.effort and cache_control are accepted and ignored.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from app.core.chat import tool_calls as tc
from app.core.chat.engine import Engine, GenerateOptions
from app.core.errors import UsageError
from app.core.server.generation import (
    ChatResult,
    ChatWork,
    _messages_for,
    _with_system,
    default_sampling,
    sampling_from,
    schema_grammar,
    stop_list,
)
from app.core.server.http import Exchange, describe, status_of
from app.core.server.openai_api import _run

router = APIRouter()


class _Loose(BaseModel):
    # Clients send fields Camelid does not use (metadata, service_tier, cache_control...): ignored.
    model_config = ConfigDict(extra="ignore")


class AnthropicMessage(_Loose):
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class _Base(_Loose):
    model: str
    messages: list[AnthropicMessage] = Field(min_length=1, max_length=10_000)
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128)
    tool_choice: dict[str, Any] | None = None


class MessagesRequest(_Base):
    max_tokens: int = Field(ge=1)
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    stream: bool = False
    metadata: dict[str, Any] | None = None
    #: Structured outputs: {"format": {"type": "json_schema", "schema": {...}}} (effort is ignored).
    output_config: dict[str, Any] | None = None


class CountTokensRequest(_Base):
    pass


# -- conversions -----------------------------------------------------------------------
_REFUSED = {"image": "an image", "document": "a document", "search_result": "a search result",
            "container_upload": "a file"}


def _refuse(kind: Any, where: str) -> UsageError:
    what = _REFUSED.get(str(kind), f"a {kind!r}")
    return UsageError(f"{where} has {what} block; Camelid's local models here read text only.",
                      "Send the text alone (text, tool_use and tool_result blocks work).")


def _text_blocks(content: Any, where: str) -> str:
    """A string, or text blocks joined (the system prompt, a tool_result's content)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise UsageError(f"{where} is neither a string nor a list of blocks.", "Send text blocks.")
    parts = []
    for block in content:
        if not isinstance(block, dict):
            raise UsageError(f"{where} has a block that is not an object.", "Send text blocks.")
        if block.get("type") != "text":
            raise _refuse(block.get("type"), where)
        parts.append(str(block.get("text") or ""))
    return "\n".join(parts) if len(parts) > 1 else "".join(parts)


def _messages(body: _Base) -> list[dict[str, Any]]:
    """Anthropic's turns as the engine's messages: tool_use blocks become calls, tool_result blocks tool turns."""
    out: list[dict[str, Any]] = []
    system = _text_blocks(body.system, "The system prompt")
    if system:
        out.append({"role": "system", "content": system})
    names: dict[str, str] = {}  # tool_use id -> tool name, for the tool turns that answer them
    for i, m in enumerate(body.messages):
        where = f"Message {i + 1} ({m.role})"
        if isinstance(m.content, str):
            out.append({"role": m.role, "content": m.content})
            continue
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        results: list[dict[str, Any]] = []
        for block in m.content:
            kind = block.get("type")
            if kind == "text":
                texts.append(str(block.get("text") or ""))
            elif kind == "tool_use" and m.role == "assistant":
                name, args = block.get("name"), block.get("input")
                if not isinstance(name, str) or not isinstance(args, dict):
                    raise UsageError(f"{where} has a tool_use block without a name and an input object.",
                                     "Send tool_use blocks as the API returned them.")
                call_id = str(block.get("id") or "toolu_" + uuid.uuid4().hex[:24])
                names[call_id] = name
                calls.append({"id": call_id, "name": name, "arguments": args})
            elif kind == "tool_result" and m.role == "user":
                call_id = str(block.get("tool_use_id") or "")
                text = _text_blocks(block.get("content"), f"{where}'s tool_result")
                if block.get("is_error"):
                    text = f"Error: {text}"
                result: dict[str, Any] = {"role": "tool", "content": text, "tool_call_id": call_id}
                if call_id in names:
                    result["name"] = names[call_id]
                results.append(result)
            elif kind in ("thinking", "redacted_thinking"):
                continue  # Camelid's models do not read earlier reasoning back
            elif kind in ("tool_use", "tool_result"):
                raise UsageError(f"{where} has a {kind} block, which belongs in "
                                 f"{'an assistant' if kind == 'tool_use' else 'a user'} turn.",
                                 "Send tool_use in assistant turns and tool_result in user turns.")
            else:
                raise _refuse(kind, where)
        out.extend(results)
        text = "".join(texts)
        if m.role == "assistant":
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if calls:
                message["tool_calls"] = calls
            out.append(message)
        elif text or not results:
            out.append({"role": "user", "content": text})
    return out


def _tool_choice(choice: dict[str, Any] | None, tools: list[dict[str, Any]]) -> str:
    """Anthropic's tool_choice as ChatWork's: none | auto | required | a tool name."""
    if not choice:
        return "auto"
    kind = choice.get("type")
    if kind in ("auto", "none"):
        return str(kind)
    if kind == "any":
        return "required"
    if kind == "tool":
        name = choice.get("name")
        if name not in {t["function"]["name"] for t in tools}:
            raise UsageError(f"tool_choice names the tool {name!r}, which is not among the tools.",
                             "Name one of the tools sent.")
        return str(name)
    raise UsageError(f"tool_choice type {kind!r} is not known.", "Use auto, any, tool or none.")


def _format_grammar(config: dict[str, Any] | None) -> str | None:
    """output_config.format json_schema as a grammar the reply must follow."""
    fmt = (config or {}).get("format")
    if not fmt:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise UsageError("output_config.format must be {\"type\": \"json_schema\", \"schema\": {...}}.",
                         "Send a JSON schema, or leave out the format.")
    return schema_grammar(fmt.get("schema") if fmt.get("schema") is not None else {"type": "object"})


def message_work(body: MessagesRequest) -> ChatWork:
    messages = _messages(body)
    if messages[-1]["role"] not in ("user", "tool"):
        raise UsageError("The conversation ends with an assistant turn; Camelid cannot continue a prefilled "
                         "assistant message.", "End the messages with a user turn.")
    tools = tc.validate_tools(body.tools) if body.tools else []
    options = GenerateOptions(stop=stop_list(body.stop_sequences), grammar=_format_grammar(body.output_config),
                              trim=False)
    sampling = sampling_from(base=default_sampling(), temperature=body.temperature, top_p=body.top_p,
                             top_k=body.top_k, max_tokens=body.max_tokens)
    return ChatWork(messages=messages, sampling=sampling, options=options, tools=tools,
                    tool_choice=_tool_choice(body.tool_choice, tools) if tools else "auto")


def tool_use_id(call: tc.ToolCall) -> str:
    """Anthropic's id for a call: "toolu_" and the call's own random part."""
    return "toolu_" + call.id.removeprefix("call_")


def stop_reason(result: ChatResult) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) in Anthropic's words."""
    if result.tool_calls:
        return "tool_use", None
    if result.reply.stop_sequence is not None:
        return "stop_sequence", result.reply.stop_sequence
    if result.reply.stats.stop_reason in ("length", "context"):
        return "max_tokens", None
    return "end_turn", None


def _usage(result: ChatResult) -> dict[str, int]:
    return {"input_tokens": result.reply.stats.prompt_tokens, "output_tokens": result.reply.stats.completion_tokens,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def _rest(content: str, emitted: str) -> str:
    """Content the stream has not sent yet (text held back while it might have been a tool call)."""
    if content.startswith(emitted):
        return content[len(emitted):]
    stripped = content.strip()
    if stripped.startswith(emitted):
        return stripped[len(emitted):]
    return ""


def _count(ex: Exchange, result: ChatResult) -> None:
    ex.prompt_tokens = result.reply.stats.prompt_tokens
    ex.completion_tokens = result.reply.stats.completion_tokens


# -- routes ------------------------------------------------------------------------------
@router.post("/v1/messages")
async def messages(body: MessagesRequest, request: Request) -> Response:
    work = message_work(body)
    mid = f"msg_{uuid.uuid4().hex[:24]}"
    name = body.model

    def job(ex: Exchange) -> Callable[[Any], ChatResult]:
        return lambda engine: work.run(engine, ex.on_text if body.stream else None, ex.ticket)

    def answer(ex: Exchange, result: ChatResult) -> dict[str, Any]:
        _count(ex, result)
        content: list[dict[str, Any]] = []
        if result.content or not result.tool_calls:
            content.append({"type": "text", "text": result.content})
        content += [{"type": "tool_use", "id": tool_use_id(c), "name": c.name, "input": c.arguments}
                    for c in result.tool_calls]
        reason, sequence = stop_reason(result)
        return {"id": mid, "type": "message", "role": "assistant", "model": name, "content": content,
                "stop_reason": reason, "stop_sequence": sequence, "usage": _usage(result)}

    def render(ex: Exchange) -> Callable[[str, Any], list[bytes]]:
        state = {"started": False, "pinged": False, "text_open": False, "index": 0}
        emitted: list[str] = []

        def block_start(block: dict[str, Any]) -> list[bytes]:
            out = [_event("content_block_start", {"type": "content_block_start", "index": state["index"],
                                                  "content_block": block})]
            if not state["pinged"]:
                state["pinged"] = True
                out.append(_event("ping", {"type": "ping"}))
            return out

        def delta(payload: dict[str, Any]) -> bytes:
            return _event("content_block_delta", {"type": "content_block_delta", "index": state["index"],
                                                  "delta": payload})

        def block_stop() -> bytes:
            index = state["index"]
            state["index"] = index + 1
            return _event("content_block_stop", {"type": "content_block_stop", "index": index})

        def text(value: str) -> list[bytes]:
            out = []
            if not state["text_open"]:
                state["text_open"] = True
                out += block_start({"type": "text", "text": ""})
            emitted.append(value)
            out.append(delta({"type": "text_delta", "text": value}))
            return out

        def events(kind: str, value: Any) -> list[bytes]:
            out: list[bytes] = []
            if not state["started"]:
                state["started"] = True
                out.append(_event("message_start", {"type": "message_start", "message": {
                    "id": mid, "type": "message", "role": "assistant", "model": name, "content": [],
                    "stop_reason": None, "stop_sequence": None,
                    "usage": {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
                              "cache_read_input_tokens": 0}}}))
            if kind == "text":
                return out + text(value) if value else out
            try:
                result: ChatResult = value.result()
            except Exception as exc:
                ex.finish(status_of(exc), describe(exc))
                return [*out, _event("error", {"type": "error", "error": {"type": "api_error",
                                                                          "message": describe(exc)}})]
            _count(ex, result)
            rest = _rest(result.content, "".join(emitted))
            if rest:
                out += text(rest)
            if state["text_open"]:
                out.append(block_stop())
            elif not result.tool_calls:
                out += [*block_start({"type": "text", "text": ""}), block_stop()]
            for call in result.tool_calls:
                out += block_start({"type": "tool_use", "id": tool_use_id(call), "name": call.name, "input": {}})
                out.append(delta({"type": "input_json_delta",
                                  "partial_json": json.dumps(call.arguments, ensure_ascii=False)}))
                out.append(block_stop())
            reason, sequence = stop_reason(result)
            usage = _usage(result)
            out.append(_event("message_delta", {"type": "message_delta",
                                                "delta": {"stop_reason": reason, "stop_sequence": sequence},
                                                "usage": {"output_tokens": usage["output_tokens"],
                                                          "input_tokens": usage["input_tokens"]}}))
            out.append(_event("message_stop", {"type": "message_stop"}))
            ex.finish(200)
            return out

        return events

    return await _run(request, "/v1/messages", name, body.stream, job, render, answer)


@router.post("/v1/messages/count_tokens")
async def count_tokens(body: CountTokensRequest, request: Request) -> Response:
    """The prompt's tokens with the loaded model's template (the model is loaded if it is not)."""
    messages = _messages(body)
    tools = tc.validate_tools(body.tools) if body.tools else []
    choice = _tool_choice(body.tool_choice, tools) if tools else "auto"

    def count(engine: Engine) -> int:
        # The prompt ChatWork.run renders: tools through the template, or in the system prompt.
        msgs, native_tools = messages, None
        if tools and choice != "none":
            native = tc.template_supports_tools(engine.template_source or "")
            msgs = _messages_for(msgs, native=native)
            if native:
                native_tools = tools
            else:
                msgs = _with_system(msgs, tc.tools_system_prompt(tools))
        else:
            msgs = _messages_for(msgs, native=False)
        return len(engine.tokenize_prompt(msgs, tools=native_tools))

    def job(ex: Exchange) -> Callable[[Any], int]:
        return count

    def answer(ex: Exchange, n: int) -> dict[str, Any]:
        ex.prompt_tokens = n
        return {"input_tokens": n}

    def render(ex: Exchange) -> Callable[[str, Any], list[bytes]]:
        raise AssertionError("count_tokens does not stream")

    return await _run(request, "/v1/messages/count_tokens", body.model, False, job, render, answer)
