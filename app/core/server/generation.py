"""From an API request to the engine and back: sampling, JSON grammars, tools, the reply's parts.

The three APIs differ in their JSON, not in what they ask of the model; this
module is the part they share. `ChatWork` runs on the engine's owner thread
(it needs the loaded model's chat template to decide how tools are written).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from app.core.chat import tool_calls as tc
from app.core.chat.engine import Engine, GenerateOptions, Reply
from app.core.chat.sampling import PRESETS, SamplingSettings
from app.core.errors import UsageError

#: llama.cpp's stop reason -> the words each API uses.
FINISH = {"stop": "stop", "length": "length", "context": "length", "cancelled": "stop"}


def default_sampling() -> SamplingSettings:
    """The user's sampling preset (Settings), the base that request fields override."""
    try:
        from app.core.settings import Settings

        return PRESETS.get(str(Settings()["sampling_preset"]), PRESETS["balanced"])
    except Exception:  # unreadable settings: the documented default, never a failed request
        return PRESETS["balanced"]


def sampling_from(*, base: SamplingSettings, temperature: float | None = None, top_p: float | None = None,
                  top_k: int | None = None, min_p: float | None = None, repeat_penalty: float | None = None,
                  max_tokens: int | None = None, seed: int | None = None) -> SamplingSettings:
    """Request fields over `base`; None keeps the base's. max_tokens None: until the model stops."""
    if max_tokens is not None and max_tokens < 1:
        raise UsageError("max_tokens must be at least 1.", "Ask for one token or more.")
    if seed is not None:
        seed = int(seed) % (2**31 - 1)
    if top_p is not None and top_p <= 0:
        top_p = 1e-6  # OpenAI allows 0 (greedy); llama.cpp's top-p needs above 0
    chosen = base.with_(temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
                        repeat_penalty=repeat_penalty, seed=seed)
    return replace(chosen, max_tokens=max_tokens)


def stop_list(stop: str | Sequence[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,) if stop else ()
    return tuple(s for s in stop if isinstance(s, str) and s)


def schema_grammar(schema: Any) -> str:
    """GBNF for a JSON schema (llama.cpp's own converter); UsageError when it cannot convert it."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    if not isinstance(schema, dict):
        raise UsageError("The JSON schema must be an object.", "Send a JSON Schema object.")
    text = json.dumps(schema)
    if len(text) > 256 * 1024:
        raise UsageError("The JSON schema is over 256 KB.", "Send a smaller schema.")
    try:
        gbnf = json_schema_to_gbnf(text)
    except (ValueError, KeyError, TypeError, RecursionError, NotImplementedError) as exc:
        raise UsageError(f"Camelid cannot turn this JSON schema into a grammar ({exc}).",
                         "Simplify the schema (plain objects, arrays, enums and types work).") from exc
    # llama-cpp-python's converter lets raw control characters (a newline) into strings, which JSON
    # forbids (RFC 8259 section 7) and json.loads refuses; its own JSON grammar excludes them.
    return gbnf.replace('char ::= [^"\\\\]', 'char ::= [^"\\\\\\x7F\\x00-\\x1F]', 1)


def json_object_grammar() -> str:
    from llama_cpp.llama_grammar import JSON_GBNF

    return str(JSON_GBNF)


@dataclass
class ChatResult:
    """A reply as every API reports it."""

    reply: Reply
    content: str
    tool_calls: list[tc.ToolCall]
    finish: str  # stop | length | tool_calls
    #: Streaming with tools: content held back while it might have begun a tool call, and that
    #: turned out not to; send it before the end of the stream.
    tail: str = ""


@dataclass
class ChatWork:
    """One chat request, ready for the engine thread."""

    messages: list[dict[str, Any]]
    sampling: SamplingSettings
    options: GenerateOptions
    tools: list[dict[str, Any]] = field(default_factory=list)
    #: none | auto | required | a function name
    tool_choice: str = "auto"
    #: Filled on the engine thread: the model's tool-call syntax and whether its template writes tools.
    tool_format: str | None = None
    forced: bool = False

    def run(self, engine: Engine, on_text: Callable[[str], None] | None, ticket: int | None) -> ChatResult:
        """Render, generate and parse, on the owner thread. With tools, text that may be a call is held back."""
        messages, options = self.messages, self.options
        stream: tc.ToolCallStream | None = None
        use_tools = bool(self.tools) and self.tool_choice != "none"
        if use_tools:
            source = engine.template_source or ""
            self.tool_format = tc.detect_format(source, engine.architecture)
            native = tc.template_supports_tools(source)
            messages = _messages_for(messages, native=native)
            if not native:
                messages = _with_system(messages, tc.tools_system_prompt(self.tools))
            # Markers such as [TOOL_CALLS] or <|python_tag|> are special tokens: their text is needed.
            options = _replace(options, tools=tuple(self.tools) if native else None, special_text=native)
            if self.tool_choice == "auto":
                stream = tc.ToolCallStream(self.tool_format if native else "generic")
            else:
                self.forced = True
                name = None if self.tool_choice == "required" else self.tool_choice
                options = _replace(options, grammar=schema_grammar(tc.forced_call_schema(self.tools, name)))
        else:
            messages = _messages_for(messages, native=False)
        emit = on_text
        if stream is not None and on_text is not None:
            def emit(text: str) -> None:
                safe = stream.feed(text)
                if safe:
                    on_text(safe)
        elif self.forced:
            emit = None  # the call's JSON is not content
        reply = engine.chat(messages, self.sampling, on_text=emit, ticket=ticket, options=options)
        finish = FINISH.get(reply.stats.stop_reason, "stop")
        if self.forced:
            call = tc.parse_forced_call(reply.text)
            if call is not None:
                return ChatResult(reply, "", [call], "tool_calls")
            # Cut short (max_tokens) before the call's JSON closed: what there is, as text.
            return ChatResult(reply, reply.text, [], finish, tail=reply.text if on_text else "")
        if stream is not None:
            if on_text is None:
                stream.feed(reply.text)
            parsed = stream.finish()
            tail = stream.unsent if on_text is not None else ""
            if parsed.tool_calls:
                return ChatResult(reply, parsed.content, parsed.tool_calls, "tool_calls", tail=tail)
            return ChatResult(reply, parsed.content, [], finish, tail=tail)
        return ChatResult(reply, reply.text, [], finish)


def _replace(options: GenerateOptions, **changes: Any) -> GenerateOptions:
    return replace(options, **changes)


def _with_system(messages: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    if messages and messages[0].get("role") == "system":
        first = dict(messages[0])
        first["content"] = f"{first.get('content') or ''}\n\n{text}".strip()
        return [first, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def _messages_for(messages: list[dict[str, Any]], *, native: bool) -> list[dict[str, Any]]:
    """Messages as the template expects them: tool calls as structures (native) or as text (not)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        m = dict(m)
        calls = m.get("tool_calls") or []
        if m.get("role") == "assistant" and calls:
            if native:
                m["tool_calls"] = [{"type": "function", "id": c.get("id"),
                                    "function": {"name": c["name"], "arguments": c["arguments"]}}
                                   for c in calls]
            else:
                m.pop("tool_calls", None)
                text = "\n".join("<tool_call>" + json.dumps({"name": c["name"], "arguments": c["arguments"]},
                                                            ensure_ascii=False) + "</tool_call>" for c in calls)
                m["content"] = f"{m.get('content') or ''}\n{text}".strip()
        else:
            m.pop("tool_calls", None)
        if m.get("role") == "tool" and not native:
            m["content"] = f"<tool_response>\n{m.get('content') or ''}\n</tool_response>"
        m["content"] = m.get("content") or ""
        out.append(m)
    return out


def parse_arguments(value: Any) -> dict[str, Any]:
    """Tool-call arguments from a request: a JSON object, or a string holding one."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            data = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError:
            raise UsageError("A tool call's arguments are not valid JSON.",
                             "Send the arguments as a JSON object.") from None
        if isinstance(data, dict):
            return data
    raise UsageError("A tool call's arguments must be a JSON object.", "Send the arguments as an object.")
