"""Tool (function) calling: which syntax a model writes, and its reply parsed back into calls.

Requests carry OpenAI-style `tools`; the prompt is rendered by the model's own
chat template, and the model answers in the syntax it was trained on. This
module is the pure-Python half of that: no llama.cpp, no server, no Qt.

- `detect_format(template, architecture)` names the syntax from markers in the
  chat template (the GGUF architecture breaks ties when the template says nothing);
- `parse_tool_calls(text, fmt)` turns a whole reply into content + `ToolCall`s;
- `ToolCallStream(fmt)` does the same while the reply streams in, emitting only
  text that cannot be the start of a call;
- `tools_system_prompt(tools)` teaches the generic syntax to a model whose
  template has no tool support, and `forced_call_schema(tools, name)` is the
  JSON schema of exactly one call (tool_choice "required" or a named tool);
- `validate_tools(tools)` normalises OpenAI, Anthropic and Ollama tool lists.

Model output is untrusted text: parsing never raises, never evaluates code
(pythonic calls are read with `ast`, literals only), and leaves malformed
markup in the content, where a person can see it.

The syntaxes, by format name (`FORMATS`):

- ``hermes``: ``<tool_call>{"name": .., "arguments": {..}}</tool_call>`` (Qwen2.5,
  Qwen3, Qwen3-2507, Qwen3-Next, SmolLM3, Granite, Hermes);
- ``qwen3_coder``: ``<tool_call><function=NAME><parameter=KEY>value</parameter>
  </function></tool_call>`` (Qwen3-Coder, Qwen3.5, Qwen3.6, Nemotron 3 Nano);
- ``llama3``: bare ``{"name": .., "parameters": {..}}``, possibly after
  ``<|python_tag|>`` (Llama 3.1/3.2/3.3);
- ``mistral``: ``[TOOL_CALLS][{"name": .., "arguments": {..}}]`` (Mistral 7B v0.3,
  Nemo, Small 3) and ``[TOOL_CALLS]NAME[ARGS]{..}`` (Mistral Small 3.2 adds
  ``[CALL_ID]id``; Ministral 3, Devstral Small 2);
- ``harmony``: gpt-oss, ``<|channel|>commentary to=functions.NAME <|constrain|>json
  <|message|>{..}<|call|>``;
- ``phi4``: ``<|tool_call|>[..]<|/tool_call|>`` (Phi-4-mini; ``functools[..]`` too);
- ``glm45``: ``<tool_call>NAME<arg_key>k</arg_key><arg_value>v</arg_value></tool_call>``
  (GLM-4.5, GLM-4.7; with or without newlines);
- ``lfm2``: ``<|tool_call_start|>[f(a=1, b="x")]<|tool_call_end|>`` (LFM2, LFM2.5;
  a JSON list inside is read too);
- ``nemotron``: ``<TOOLCALL>[{..}]</TOOLCALL>`` (Nemotron Nano 2);
- ``deepseek``: ``<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{..}
  <｜tool▁call▁end｜><｜tool▁calls▁end｜>`` (DeepSeek V3.1; the V3/R1 form
  ``function<｜tool▁sep｜>NAME`` + a fenced json block too);
- ``generic``: the ``hermes`` syntax, for templates without tool support (taught
  by `tools_system_prompt`).

Special tokens (``<|python_tag|>``, ``<|tool_call_start|>``, ``[TOOL_CALLS]``, the
harmony and DeepSeek markers) must be rendered into the text given here; a
closing marker that is an end-of-generation token (``<|call|>``, ``<|eom_id|>``)
may be missing, and the end of the text closes the call.
"""

from __future__ import annotations

import ast
import copy
import json
import re
import secrets
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.core.errors import UsageError

HERMES = "hermes"
QWEN3_CODER = "qwen3_coder"
LLAMA3 = "llama3"
MISTRAL = "mistral"
HARMONY = "harmony"
PHI4 = "phi4"
GLM45 = "glm45"
LFM2 = "lfm2"
NEMOTRON = "nemotron"
DEEPSEEK = "deepseek"
GENERIC = "generic"

#: Every name `detect_format` can return.
FORMATS: tuple[str, ...] = (
    HERMES, QWEN3_CODER, LLAMA3, MISTRAL, HARMONY, PHI4, GLM45, LFM2, NEMOTRON, DEEPSEEK, GENERIC,
)

#: The most tools one request may carry.
MAX_TOOLS = 128
_TOOL_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_ID_ALPHABET = string.ascii_letters + string.digits


def new_call_id() -> str:
    """An OpenAI-style tool call id: "call_" and 24 random letters and digits."""
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


@dataclass
class ToolCall:
    """One call the model asked for."""

    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=new_call_id)

    def arguments_json(self) -> str:
        return json.dumps(self.arguments, ensure_ascii=False)

    def to_openai(self) -> dict[str, Any]:
        """The call as an OpenAI chat-completions `tool_calls` entry (arguments as a JSON string)."""
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": self.arguments_json()}}


@dataclass
class ParsedReply:
    """A reply split into its text and its tool calls."""

    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)


# --------------------------------------------------------------------------- detection

#: The identifier `tools` in template code (not `message.tools`, not a string).
_TOOLS_IDENT = re.compile(r"(?<![\w.])tools\b")
_XML_TOOLS_IDENT = re.compile(r"(?<![\w.])xml_tools\b")
_JINJA_CODE = re.compile(r"\{[{%](.*?)[}%]\}", re.DOTALL)
_STRING_LITERAL = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", re.DOTALL)

#: Formats told by the GGUF architecture alone (where an architecture has one family).
_ARCH_FORMATS = {
    "qwen2": HERMES, "qwen3": HERMES, "qwen3moe": HERMES, "qwen3next": HERMES,
    "qwen35": QWEN3_CODER, "qwen35moe": QWEN3_CODER,
    "smollm3": HERMES, "granite": HERMES, "granitemoe": HERMES, "granitehybrid": HERMES,
    "gpt-oss": HARMONY, "lfm2": LFM2, "lfm2moe": LFM2, "glm4moe": GLM45,
    "mistral3": MISTRAL, "nemotron_h": NEMOTRON, "nemotron_h_moe": QWEN3_CODER,
}


def _template_code(source: str) -> str:
    """The Jinja code of a template (inside {{ }} and {% %}) with its string literals removed."""
    return " ".join(_STRING_LITERAL.sub("''", block) for block in _JINJA_CODE.findall(source))


def tools_variable(source: str | None) -> str | None:
    """The variable a template reads its tools from: "tools", "xml_tools" (SmolLM3), or None.

    Phi-4-mini's official template reads them from the system message's "tools" key
    instead, which is not a variable: None there.
    """
    if not source:
        return None
    code = _template_code(source)
    if _TOOLS_IDENT.search(code):
        return "tools"
    if _XML_TOOLS_IDENT.search(code):
        return "xml_tools"
    return None


def template_supports_tools(source: str | None) -> bool:
    """Whether a chat template renders the tools it is given (references a `tools` variable)."""
    return tools_variable(source) is not None


def _format_from_markers(source: str) -> str | None:
    s = source
    if "tool▁calls▁begin" in s or "tool▁call▁begin" in s:
        return DEEPSEEK
    if "<|channel|>" in s and ("to=functions" in s or "<|call|>" in s or "<|constrain|>" in s):
        return HARMONY
    if "<|tool_call_start|>" in s or "<|tool_list_start|>" in s:
        return LFM2
    if "<arg_key>" in s:
        return GLM45
    if "<function=" in s and "<parameter=" in s:
        return QWEN3_CODER
    if "<TOOLCALL>" in s:
        return NEMOTRON
    if "[TOOL_CALLS]" in s:
        return MISTRAL
    if "<|tool_call|>" in s or ("<|tool|>" in s and "<|/tool|>" in s):
        return PHI4
    if "<tool_call>" in s:
        return HERMES
    if "<|python_tag|>" in s or ("<|start_header_id|>" in s and (
            "ipython" in s or '"parameters"' in s)):
        return LLAMA3
    return None


def detect_format(template_source: str | None, architecture: str | None = None) -> str:
    """The tool-call syntax a model writes (one of `FORMATS`), from its chat template.

    Markers in the template decide; when it has none, the GGUF architecture does
    (for architectures that hold one family); otherwise "generic".
    """
    if template_source:
        found = _format_from_markers(template_source)
        if found:
            return found
    if architecture:
        return _ARCH_FORMATS.get(architecture.lower(), GENERIC)
    return GENERIC


# --------------------------------------------------------------------------- value helpers

_DECODE_ERRORS = (ValueError, RecursionError, TypeError, MemoryError, OverflowError)


def _loads(text: str) -> Any:
    """json.loads, or a sentinel `_FAIL` when the text is not JSON."""
    try:
        return json.loads(text)
    except _DECODE_ERRORS:
        return _FAIL


_FAIL = object()
_DECODER = json.JSONDecoder()


def _raw_decode(text: str, pos: int) -> tuple[Any, int] | None:
    """One JSON value at text[pos:] (after whitespace): (value, end) or None."""
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    try:
        return _DECODER.raw_decode(text, pos)
    except _DECODE_ERRORS:
        return None


def _as_arguments(value: Any) -> dict[str, Any] | None:
    """Call arguments as a dict: a dict, a JSON string holding an object, or nothing (empty)."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        if not value.strip():
            return {}
        decoded = _loads(value)
        if isinstance(decoded, dict):
            return decoded
    return None


def _call_from_object(obj: Any, need_args: bool = False) -> ToolCall | None:
    """A call from {"name", "arguments"|"parameters"}, also wrapped as {"function": {...}}.

    `need_args`: the arguments key must be there (for bare JSON, which could be any object).
    """
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict):
        obj = obj["function"]
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        return None
    if need_args and "arguments" not in obj and "parameters" not in obj:
        return None
    if "arguments" in obj:
        args = _as_arguments(obj["arguments"])
    else:
        args = _as_arguments(obj.get("parameters"))
    if args is None:
        return None
    return ToolCall(name.strip(), args)


def _calls_from_json(value: Any, need_args: bool = False) -> list[ToolCall] | None:
    """One call object or a non-empty list of them; None when any item is not a call."""
    items = value if isinstance(value, list) else [value]
    if not items:
        return None
    calls = [_call_from_object(item, need_args) for item in items]
    if any(c is None for c in calls):
        return None
    return [c for c in calls if c is not None]


def _xml_value(raw: str) -> Any:
    """A parameter value written as text: JSON when it parses (numbers, booleans, objects), else text."""
    value = raw[1:] if raw.startswith("\n") else raw
    value = value[:-1] if value.endswith("\n") else value
    stripped = value.strip()
    if stripped:
        decoded = _loads(stripped)
        if decoded is not _FAIL:
            return decoded
    return value


# --------------------------------------------------------------------------- block parsers
#
# Each format has opener patterns and a parser that reads the call markup starting
# at an opener: (end of the markup, calls), or None when it is malformed (left as content).

Block = tuple[int, list[ToolCall]]


def _find_close(text: str, start: int, closers: Sequence[str]) -> tuple[int, int]:
    """(inner end, markup end) of the first closer at or after start, or the end of the text."""
    best: tuple[int, int] | None = None
    for closer in closers:
        at = text.find(closer, start)
        if at >= 0 and (best is None or at < best[0]):
            best = (at, at + len(closer))
    return best if best else (len(text), len(text))


_FUNCTION_XML = re.compile(r"<function=([^>\n]+)>")
_PARAMETER_XML = re.compile(r"<parameter=([^>\n]+)>")


def _parse_function_xml(inner: str) -> list[ToolCall] | None:
    """<function=NAME><parameter=K>v</parameter>...</function>, one or more, and nothing else."""
    calls: list[ToolCall] = []
    pos = 0
    while True:
        while pos < len(inner) and inner[pos].isspace():
            pos += 1
        if pos >= len(inner):
            break
        m = _FUNCTION_XML.match(inner, pos)
        if not m:
            return None
        end = inner.find("</function>", m.end())
        body = inner[m.end():end if end >= 0 else len(inner)]
        pos = end + len("</function>") if end >= 0 else len(inner)
        args: dict[str, Any] = {}
        params = list(_PARAMETER_XML.finditer(body))
        if body[:params[0].start() if params else len(body)].strip():
            return None
        for i, p in enumerate(params):
            stop = params[i + 1].start() if i + 1 < len(params) else len(body)
            chunk = body[p.end():stop]
            close = chunk.rfind("</parameter>")
            if close >= 0:
                if chunk[close + len("</parameter>"):].strip():
                    return None
                chunk = chunk[:close]
            args[p.group(1).strip()] = _xml_value(chunk)
        name = m.group(1).strip()
        if not name:
            return None
        calls.append(ToolCall(name, args))
    return calls or None


def _parse_inner_json_or_xml(inner: str) -> list[ToolCall] | None:
    value = _loads(inner.strip())
    if value is not _FAIL:
        return _calls_from_json(value)
    if inner.lstrip().startswith("<function="):
        return _parse_function_xml(inner)
    return None


def _block_tool_call_tag(text: str, m: re.Match[str]) -> Block | None:
    """<tool_call> JSON (or function XML) </tool_call>; a bare <function=...> block too."""
    if m.group(0).startswith("<function="):
        inner_end, end = _find_close(text, m.start(), ["</function>"])
        if inner_end == len(text):
            calls = _parse_function_xml(text[m.start():])
        else:
            calls = _parse_function_xml(text[m.start():end])
            if end < len(text):  # a stray </tool_call> right after is part of the markup
                rest = text[end:]
                trimmed = rest.lstrip()
                if trimmed.startswith("</tool_call>"):
                    end += len(rest) - len(trimmed) + len("</tool_call>")
        return (end, calls) if calls else None
    inner_end, end = _find_close(text, m.end(), ["</tool_call>"])
    calls = _parse_inner_json_or_xml(text[m.end():inner_end])
    return (end, calls) if calls else None


def _block_glm(text: str, m: re.Match[str]) -> Block | None:
    """<tool_call>NAME<arg_key>k</arg_key><arg_value>v</arg_value>...</tool_call>."""
    inner_end, end = _find_close(text, m.end(), ["</tool_call>"])
    inner = text[m.end():inner_end]
    first = inner.find("<arg_key>")
    head = inner if first < 0 else inner[:first]
    if head.strip().startswith(("{", "[", "<function=")):
        calls = _parse_inner_json_or_xml(inner)
        return (end, calls) if calls else None
    name = head.strip()
    if not name or "<" in name or "\n" in name:
        return None
    args: dict[str, Any] = {}
    rest = "" if first < 0 else inner[first:]
    pair = re.compile(r"\s*<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.DOTALL)
    pos = 0
    while pos < len(rest):
        p = pair.match(rest, pos)
        if not p:
            if rest[pos:].strip():
                return None
            break
        args[p.group(1).strip()] = _xml_value(p.group(2))
        pos = p.end()
    return end, [ToolCall(name, args)]


def _json_calls(text: str, pos: int) -> tuple[list[ToolCall], int]:
    """Call objects one after another from pos, separated by whitespace or ";": (calls, end)."""
    calls: list[ToolCall] = []
    end = pos
    while True:
        got = _raw_decode(text, end)
        found = _calls_from_json(got[0], need_args=True) if got else None
        if got is None or found is None:
            break
        calls.extend(found)
        end = got[1]
        look = end
        while look < len(text) and text[look] in " \t\r\n":
            look += 1
        if look < len(text) and text[look] == ";":
            end = look + 1
    return calls, end


def _block_llama3(text: str, m: re.Match[str]) -> Block | None:
    """{"name": .., "parameters": {..}} (one or more, ";"-separated), after <|python_tag|> or bare."""
    tagged = m.group(0) == "<|python_tag|>"
    start = m.end() if tagged else m.start()
    calls, end = _json_calls(text, start)
    if not calls:
        if not tagged:
            return None
        inner_end, end = _find_close(text, start, ["<|eom_id|>", "<|eot_id|>"])
        pythonic = _parse_pythonic(text[start:inner_end])
        return (end, pythonic) if pythonic else None
    if tagged:
        rest = text[end:].lstrip()
        if rest.startswith("<|eom_id|>"):
            end = len(text) - len(rest) + len("<|eom_id|>")
    return end, calls


_MISTRAL_NAME = re.compile(r"\s*([A-Za-z0-9_.\-]+)\s*(?:\[CALL_ID\]\s*([A-Za-z0-9_\-]*))?\s*(?:\[ARGS\])?")


def _block_mistral(text: str, m: re.Match[str]) -> Block | None:
    """[TOOL_CALLS][{..}, ..], or [TOOL_CALLS]NAME[CALL_ID]id[ARGS]{..} (CALL_ID and ARGS optional)."""
    pos = m.end()
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    if pos < len(text) and text[pos] in "[{" and not text.startswith("[ARGS]", pos) \
            and not text.startswith("[CALL_ID]", pos):
        got = _raw_decode(text, pos)
        if got is None:
            return None
        calls = _calls_from_json(got[0])
        return (got[1], calls) if calls else None
    n = _MISTRAL_NAME.match(text, pos)
    if not n:
        return None
    got = _raw_decode(text, n.end())
    if got is None:
        return None
    args = _as_arguments(got[0])
    if args is None:
        return None
    return got[1], [ToolCall(n.group(1), args)]


_HARMONY_REST = re.compile(
    r"(?P<name>[A-Za-z0-9_.\-]+)(?P<meta>[^<]{0,40}(?:<\|channel\|>[^<]{0,40})?"
    r"(?:<\|constrain\|>[^<]{0,40})?)<\|message\|>")


def _block_harmony(text: str, m: re.Match[str]) -> Block | None:
    """[<|start|>assistant][<|channel|>commentary ]to=functions.NAME ... <|message|>{json}<|call|>."""
    r = _HARMONY_REST.match(text, m.end())
    if not r:
        return None
    name = r.group("name").rstrip(".")
    inner_end, end = _find_close(text, r.end(), ["<|call|>", "<|end|>", "<|return|>", "<|start|>"])
    if text.startswith("<|start|>", inner_end):
        end = inner_end  # the next message starts here: not part of this call
    args = _as_arguments(_loads(text[r.end():inner_end].strip()))
    if args is None or not name:
        return None
    return end, [ToolCall(name, args)]


def _block_phi4(text: str, m: re.Match[str]) -> Block | None:
    """<|tool_call|>[..]<|/tool_call|> (or one object), or functools[..]."""
    if m.group(0) == "functools[":
        got = _raw_decode(text, m.end() - 1)
        if got is None:
            return None
        calls = _calls_from_json(got[0])
        return (got[1], calls) if calls else None
    inner_end, end = _find_close(text, m.end(), ["<|/tool_call|>"])
    inner = text[m.end():inner_end].strip()
    inner = inner.removeprefix("functools")
    value = _loads(inner)
    calls = None if value is _FAIL else _calls_from_json(value)
    return (end, calls) if calls else None


def _block_nemotron(text: str, m: re.Match[str]) -> Block | None:
    """<TOOLCALL>[{"name": .., "arguments": ..}, ..]</TOOLCALL>."""
    inner_end, end = _find_close(text, m.end(), ["</TOOLCALL>"])
    value = _loads(text[m.end():inner_end].strip())
    calls = None if value is _FAIL else _calls_from_json(value)
    return (end, calls) if calls else None


def _literal(node: ast.expr) -> Any:
    """A Python literal (or true/false/null) from an AST node; ValueError for anything else."""
    if isinstance(node, ast.Name):
        names = {"true": True, "false": False, "null": None, "none": None}
        if node.id.lower() in names:
            return names[node.id.lower()]
        raise ValueError(f"not a literal: {node.id}")
    return ast.literal_eval(node)


def _dotted_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted_name(node.value)
        if head is None:
            return None
        return head if node.attr == "call" else f"{head}.{node.attr}"  # Llama's brave_search.call()
    return None


def _parse_pythonic(inner: str) -> list[ToolCall] | None:
    """[f(a=1, b="x"), g()] or f(a=1), read with ast: keyword arguments of literals only."""
    source = inner.strip()
    if not source or len(source) > 1_000_000:
        return None
    try:
        tree = ast.parse(source, mode="eval")
        body = tree.body
        nodes = body.elts if isinstance(body, ast.List | ast.Tuple) else [body]
        calls: list[ToolCall] = []
        for node in nodes:
            if not isinstance(node, ast.Call) or node.args:
                return None
            name = _dotted_name(node.func)
            if not name:
                return None
            args: dict[str, Any] = {}
            for kw in node.keywords:
                if kw.arg is None:
                    return None
                args[kw.arg] = _literal(kw.value)
            calls.append(ToolCall(name, args))
        return calls or None
    except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError):
        return None


def _block_lfm2(text: str, m: re.Match[str]) -> Block | None:
    """<|tool_call_start|>[f(a=1)]<|tool_call_end|> (pythonic), or a JSON list inside."""
    inner_end, end = _find_close(text, m.end(), ["<|tool_call_end|>"])
    inner = text[m.end():inner_end]
    value = _loads(inner.strip())
    calls = _calls_from_json(value) if value is not _FAIL else _parse_pythonic(inner)
    return (end, calls) if calls else None


_DS_CALLS_BEGIN = "<｜tool▁calls▁begin｜>"
_DS_CALLS_END = "<｜tool▁calls▁end｜>"
_DS_CALL_BEGIN = "<｜tool▁call▁begin｜>"
_DS_CALL_END = "<｜tool▁call▁end｜>"
_DS_SEP = "<｜tool▁sep｜>"
_FENCED_JSON = re.compile(r"\s*([^\n]*?)\s*\n?```(?:json)?\s*\n?(.*?)\n?```\s*$", re.DOTALL)


def _deepseek_call(chunk: str) -> ToolCall | None:
    left, sep, right = chunk.partition(_DS_SEP)
    if not sep:
        return None
    if left.strip() == "function":  # V3 / R1: function<sep>NAME\n```json\n{..}\n```
        f = _FENCED_JSON.match(right)
        if not f:
            return None
        name, raw = f.group(1).strip(), f.group(2)
    else:  # V3.1: NAME<sep>{..}
        name, raw = left.strip(), right
    args = _as_arguments(_loads(raw.strip()))
    if not name or args is None:
        return None
    return ToolCall(name, args)


def _block_deepseek(text: str, m: re.Match[str]) -> Block | None:
    """<｜tool▁calls▁begin｜>(<｜tool▁call▁begin｜>..<｜tool▁call▁end｜>)+<｜tool▁calls▁end｜>."""
    if m.group(0) == _DS_CALLS_BEGIN:
        inner_end, end = _find_close(text, m.end(), [_DS_CALLS_END])
        inner = text[m.end():inner_end]
    else:  # a lone call without the calls wrapper
        inner_end, end = _find_close(text, m.end(), [_DS_CALL_END])
        inner = text[m.start():end]
        rest = text[end:].lstrip()
        if rest.startswith(_DS_CALLS_END):
            end = len(text) - len(rest) + len(_DS_CALLS_END)
    calls: list[ToolCall] = []
    pos = 0
    while True:
        while pos < len(inner) and inner[pos].isspace():
            pos += 1
        if pos >= len(inner):
            break
        if not inner.startswith(_DS_CALL_BEGIN, pos):
            return None
        stop = inner.find(_DS_CALL_END, pos)
        chunk = inner[pos + len(_DS_CALL_BEGIN):stop if stop >= 0 else len(inner)]
        call = _deepseek_call(chunk)
        if call is None:
            return None
        calls.append(call)
        pos = stop + len(_DS_CALL_END) if stop >= 0 else len(inner)
    return (end, calls) if calls else None


# --------------------------------------------------------------------------- format table


def _prefixes(literal: str) -> str:
    """A regex matching every prefix of `literal` (the empty one included)."""
    out = ""
    for ch in reversed(literal):
        out = f"(?:{re.escape(ch)}{out})?"
    return out


def _literal_opener(literal: str) -> tuple[str, str]:
    return re.escape(literal), _prefixes(literal)


_WS = r"[ \t\r\n]{0,16}"
_LLAMA_KEYS = ('"name"', '"type"', '"function"')
_LLAMA_JSON_OPENER = (
    r"\{" + _WS + "(?:" + "|".join(re.escape(k) for k in _LLAMA_KEYS) + ")",
    r"\{" + _WS + "(?:" + "|".join(_prefixes(k) for k in _LLAMA_KEYS) + ")",
)
_H_START = r"<\|start\|>assistant {0,4}"
_H_CHANNEL = r"<\|channel\|>(?:commentary|analysis) {0,4}"
_HARMONY_OPENER = (
    rf"(?:{_H_START})?(?:{_H_CHANNEL})?to=functions\.",
    "|".join((
        _prefixes("<|start|>assistant"),
        rf"(?:{_H_START})?(?:{_prefixes('<|channel|>commentary')}|{_prefixes('<|channel|>analysis')})",
        rf"(?:{_H_START})?(?:{_H_CHANNEL})?{_prefixes('to=functions.')}",
    )),
)


@dataclass(frozen=True)
class _Format:
    openers: tuple[tuple[str, str], ...]
    block: Callable[[str, re.Match[str]], Block | None]

    @property
    def opener_re(self) -> re.Pattern[str]:
        return re.compile("|".join(f"(?:{full})" for full, _ in self.openers))

    @property
    def partial_re(self) -> re.Pattern[str]:
        return re.compile("|".join(f"(?:{part})" for _, part in self.openers))


_TOOL_CALL = _literal_opener("<tool_call>")
_SPECS: dict[str, _Format] = {
    HERMES: _Format((_TOOL_CALL,), _block_tool_call_tag),
    GENERIC: _Format((_TOOL_CALL,), _block_tool_call_tag),
    QWEN3_CODER: _Format((_TOOL_CALL, _literal_opener("<function=")), _block_tool_call_tag),
    GLM45: _Format((_TOOL_CALL,), _block_glm),
    LLAMA3: _Format((_literal_opener("<|python_tag|>"), _LLAMA_JSON_OPENER), _block_llama3),
    MISTRAL: _Format((_literal_opener("[TOOL_CALLS]"),), _block_mistral),
    HARMONY: _Format((_HARMONY_OPENER,), _block_harmony),
    PHI4: _Format((_literal_opener("<|tool_call|>"), _literal_opener("functools[")), _block_phi4),
    NEMOTRON: _Format((_literal_opener("<TOOLCALL>"),), _block_nemotron),
    LFM2: _Format((_literal_opener("<|tool_call_start|>"),), _block_lfm2),
    DEEPSEEK: _Format((_literal_opener(_DS_CALLS_BEGIN), _literal_opener(_DS_CALL_BEGIN)),
                      _block_deepseek),
}
_OPENER_RE = {name: spec.opener_re for name, spec in _SPECS.items()}
_PARTIAL_RE = {name: spec.partial_re for name, spec in _SPECS.items()}
#: The longest text a partial opener can span (a bound for the streaming look-back).
_MAX_PARTIAL = 96


def _spec(fmt: str) -> _Format:
    try:
        return _SPECS[fmt]
    except KeyError:
        raise UsageError(f"Unknown tool-call format {fmt!r}.",
                         f"Use one of: {', '.join(FORMATS)}.") from None


def _safe_block(spec: _Format, text: str, m: re.Match[str]) -> Block | None:
    try:
        got = spec.block(text, m)
    except Exception:  # model output never raises: whatever went wrong, it stays content
        return None
    if got is None or got[0] <= m.start():
        return None
    return got


def parse_tool_calls(text: str, fmt: str) -> ParsedReply:
    """A whole reply split into content (the text outside call markup, stripped) and calls.

    Malformed markup stays in the content; nothing here raises on model output.
    """
    spec = _spec(fmt)
    opener = _OPENER_RE[fmt]
    content: list[str] = []
    calls: list[ToolCall] = []
    pos = 0
    while pos < len(text):
        m = opener.search(text, pos)
        if not m:
            break
        content.append(text[pos:m.start()])
        got = _safe_block(spec, text, m)
        if got is None:
            skip = max(m.end(), m.start() + 1)
            content.append(text[m.start():skip])
            pos = skip
            continue
        pos, found = got
        calls.extend(found)
    content.append(text[pos:])
    return ParsedReply("".join(content).strip(), calls)


def parse_forced_call(text: str) -> ToolCall | None:
    """The one call a reply constrained by `forced_call_schema` holds, or None when it holds none."""
    value = _loads(text.strip())
    return _call_from_object(value, need_args=True) if value is not _FAIL else None


class ToolCallStream:
    """Tool-call parsing while a reply streams in.

    `feed(piece)` returns the text safe to show now as content: it holds back
    whatever could be the start of a call marker and, once a marker opened,
    everything after it. `finish()` parses the whole reply; `unsent` is then
    the content `feed` did not return (the emitted text is always a prefix of
    the final content, which is stripped).
    """

    def __init__(self, fmt: str) -> None:
        _spec(fmt)
        self.fmt = fmt
        self._opener = _OPENER_RE[fmt]
        self._partial = _PARTIAL_RE[fmt]
        self._pieces: list[str] = []
        self._tail = ""  # text not yet decided: it may start a marker
        self._opened = False
        self._shown: list[str] = []
        self._shown_len = 0
        self._ws = ""  # decided whitespace not yet shown: shown once text follows it
        self._reply: ParsedReply | None = None

    @property
    def emitted(self) -> str:
        """All the content returned by `feed` so far."""
        return "".join(self._shown)

    @property
    def opened(self) -> bool:
        """Whether a call marker has opened (everything after it is held until `finish`)."""
        return self._opened

    @property
    def unsent(self) -> str:
        """After `finish`: the part of the final content that `feed` has not returned."""
        if self._reply is None:
            return ""
        return self._reply.content[self._shown_len:]

    def feed(self, piece: str) -> str:
        if self._reply is not None:
            raise RuntimeError("ToolCallStream.feed after finish")
        if not piece:
            return ""
        self._pieces.append(piece)
        if self._opened:
            return ""
        tail = self._tail + piece
        m = self._opener.search(tail)
        if m:
            self._opened = True
            cut = m.start()
        else:
            cut = len(tail)
            for i in range(max(0, len(tail) - _MAX_PARTIAL), len(tail)):
                if self._partial.fullmatch(tail, i):
                    cut = i
                    break
        decided, self._tail = tail[:cut], tail[cut:]
        # The final content is stripped: never show leading whitespace, and show
        # whitespace only once something follows it.
        combined = self._ws + decided
        if not self._shown_len:
            combined = combined.lstrip()
        out = combined.rstrip()
        self._ws = combined[len(out):]
        if out:
            self._shown.append(out)
            self._shown_len += len(out)
        return out

    def finish(self) -> ParsedReply:
        """The whole reply parsed: the same as `parse_tool_calls(all the text, fmt)`."""
        if self._reply is None:
            self._reply = parse_tool_calls("".join(self._pieces), self.fmt)
        return self._reply


# --------------------------------------------------------------------------- tools in, prompts and schemas out


def _bad(message: str) -> UsageError:
    return UsageError(message, "Send tools as a list of {\"type\": \"function\", \"function\": "
                      "{\"name\", \"description\", \"parameters\"}} (OpenAI/Ollama) or "
                      "{\"name\", \"description\", \"input_schema\"} (Anthropic).")


def _normalise_tool(tool: Any, index: int) -> dict[str, Any]:
    where = f"Tool {index + 1}"
    if not isinstance(tool, dict):
        raise _bad(f"{where} is a {type(tool).__name__}, not an object.")
    kind = tool.get("type", "function")
    if "function" in tool:
        if kind != "function":
            raise _bad(f"{where} has type {kind!r}: only function tools are supported.")
        body = tool["function"]
        if not isinstance(body, dict):
            raise _bad(f"{where} has a \"function\" that is not an object.")
        params_key = "parameters"
    elif "input_schema" in tool:  # Anthropic
        if kind not in ("function", "custom"):
            raise _bad(f"{where} has type {kind!r}: only client (custom) tools are supported.")
        body, params_key = tool, "input_schema"
    else:  # the flat shape: {"type": "function", "name", "parameters"}
        if kind != "function":
            raise _bad(f"{where} has type {kind!r}: only function tools are supported.")
        body, params_key = tool, "parameters"
    name = body.get("name")
    if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
        shown = repr(name)[:80]
        raise _bad(f"{where} has the name {shown}: a tool name is 1 to 64 letters, digits, "
                   "\"_\", \".\" or \"-\".")
    where = f"Tool {name!r}"
    description = body.get("description")
    if description is None:
        description = ""
    if not isinstance(description, str):
        raise _bad(f"{where} has a description that is not a string.")
    params = body.get(params_key)
    if params is None:
        params = {"type": "object", "properties": {}}
    if not isinstance(params, dict):
        raise _bad(f"{where} has {params_key} that are not a JSON schema object.")
    if params.get("type", "object") != "object":
        raise _bad(f"{where} has {params_key} of type {params.get('type')!r}: a tool's "
                   "parameters are a JSON schema of type \"object\".")
    return {"type": "function",
            "function": {"name": name, "description": description,
                         "parameters": copy.deepcopy(params)}}


def validate_tools(tools: Any) -> list[dict[str, Any]]:
    """OpenAI, Ollama or Anthropic tools, checked and normalised to the OpenAI shape.

    Returns [{"type": "function", "function": {"name", "description", "parameters"}}];
    None is no tools. Raises UsageError for anything else, with a sentence saying what.
    """
    if tools is None:
        return []
    if not isinstance(tools, list | tuple):
        raise _bad(f"\"tools\" is a {type(tools).__name__}, not a list.")
    if len(tools) > MAX_TOOLS:
        raise _bad(f"{len(tools)} tools were sent: at most {MAX_TOOLS} are allowed.")
    out = [_normalise_tool(tool, i) for i, tool in enumerate(tools)]
    seen: set[str] = set()
    for tool in out:
        name = tool["function"]["name"]
        if name in seen:
            raise _bad(f"Two tools are named {name!r}: tool names must be unique.")
        seen.add(name)
    return out


def tools_system_prompt(tools: list[dict[str, Any]]) -> str:
    """System-prompt text for a template without tool support: the functions and the generic syntax."""
    listed = []
    for tool in validate_tools(tools):
        fn = tool["function"]
        listed.append(json.dumps({"name": fn["name"], "description": fn["description"],
                                  "parameters": fn["parameters"]}, ensure_ascii=False))
    return (
        "You can call functions to help you answer. The functions, one JSON object each:\n"
        "<tools>\n" + "\n".join(listed) + "\n</tools>\n\n"
        "To call a function, answer with exactly this, one block per call:\n"
        "<tool_call>\n"
        '{"name": "<function name>", "arguments": {<the arguments as a JSON object>}}\n'
        "</tool_call>\n"
        "Use only the functions listed and the parameters they define. After a call, wait "
        "for its result. When no function is needed, answer normally, without <tool_call>."
    )


def forced_call_schema(tools: list[dict[str, Any]], name: str | None = None) -> dict[str, Any]:
    """The JSON schema of exactly one call {"name": <tool>, "arguments": <its parameters>}.

    For llama.cpp's json-schema-to-grammar: any of the tools when `name` is None
    (tool_choice "required"), only that tool when named. Raises UsageError when
    there are no tools or `name` is not one of them.
    """
    normalised = validate_tools(tools)
    if not normalised:
        raise UsageError("A tool call was required, but the request has no tools.",
                         "Send \"tools\" with the request, or set tool_choice to \"auto\".")
    names = [t["function"]["name"] for t in normalised]
    if name is not None and name not in names:
        raise UsageError(f"tool_choice names the tool {name!r}, which the request does not have.",
                         f"Available tools: {', '.join(names)}.")
    branches = []
    for tool in normalised:
        fn = tool["function"]
        if name is not None and fn["name"] != name:
            continue
        params = fn["parameters"]
        if not params.get("properties") and "additionalProperties" not in params:
            params = {**params, "properties": params.get("properties") or {},
                      "additionalProperties": False}
        branches.append({
            "type": "object",
            "properties": {"name": {"const": fn["name"]}, "arguments": params},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        })
    return branches[0] if len(branches) == 1 else {"anyOf": branches}
