"""Tool calls: detection from real chat templates, parsing of each family's real syntax, streaming.

Every sample reply below is written in the syntax its model's own chat template
renders for an assistant tool call (or states in its system prompt); the comment
on each names where that syntax comes from. Template fixtures are short excerpts
(the marker lines) of the real templates: the catalog's GGUF headers
(resources/catalog_headers.json.gz) hold no `tokenizer.chat_template`, only the
architecture, which is tested as the tiebreak.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import pytest

from app.core.chat.tool_calls import (
    FORMATS,
    ParsedReply,
    ToolCall,
    ToolCallStream,
    detect_format,
    forced_call_schema,
    new_call_id,
    parse_forced_call,
    parse_tool_calls,
    template_supports_tools,
    tools_system_prompt,
    tools_variable,
    validate_tools,
)
from app.core.errors import UsageError

REPO = Path(__file__).resolve().parents[3]
W = '{"city": "Paris"}'

# --------------------------------------------------------------------------- template excerpts
# Marker lines of the real templates (llama.cpp's models/templates/ copies of the Hub templates,
# unless said otherwise).

TEMPLATES: dict[str, str] = {
    # Qwen3 (Qwen-Qwen3-0.6B.jinja); Qwen2.5 and Qwen3-2507 render the same lines.
    "qwen3": (
        "{%- if tools %}{{- \"# Tools\\n\\nYou may call one or more functions to assist with the "
        "user query.\\n\\nYou are provided with function signatures within <tools></tools> XML "
        "tags:\\n<tools>\" }}{%- for tool in tools %}{{- tool | tojson }}{%- endfor %}"
        "{{- '<tool_call>\\n{\"name\": \"' }}{{- tool_call.name }}{{- '\", \"arguments\": ' }}"
        "{{- '}\\n</tool_call>' }}{%- endif %}"
    ),
    # Qwen3-Coder (Qwen3-Coder.jinja); Qwen3.5/3.6 use the same <function=>/<parameter=> lines.
    "qwen3-coder": (
        "{%- if tools is iterable and tools | length > 0 %}{{- \"<tools>\" }}"
        "{{- '\\n<parameter>' }}{{- '\\n<name>' ~ param_name ~ '</name>' }}"
        "{{- '\\n<tool_call>\\n<function=' + tool_call.name + '>\\n' }}"
        "{{- '<parameter=' + args_name + '>\\n' }}{{- '\\n</parameter>\\n' }}"
        "{{- '</function>\\n</tool_call>' }}{%- endif %}"
    ),
    # NVIDIA Nemotron 3 Nano 30B-A3B (NVIDIA-Nemotron-3-Nano-30B-A3B-BF16.jinja).
    "nemotron-3-nano": (
        "{%- if not tools is defined %}{%- set tools = [] %}{%- endif %}"
        "{{- '<tool_call>\\n<function=' ~ tool_call.name ~ '>\\n' -}}"
        "{{- '<parameter=' ~ args_name ~ '>\\n' -}}{{- '</function>\\n</tool_call>\\n' -}}"
    ),
    # Llama 3.3 70B (meta-llama-Llama-3.3-70B-Instruct.jinja); 3.1 has the same lines.
    "llama-3.3": (
        "{%- if not tools is defined %}{%- set tools = none %}{%- endif %}"
        "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}"
        "{%- if builtin_tools is defined or tools is not none %}{{- \"Environment: ipython\\n\" }}"
        "{%- endif %}{{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary "
        "of argument name and its value}.' }}{{- \"<|python_tag|>\" + tool_call.name + \".call(\" }}"
    ),
    # Llama 3.2 3B (meta-llama-Llama-3.2-3B-Instruct.jinja): no builtin python_tag line.
    "llama-3.2": (
        "{%- if not tools is defined %}{%- set tools = none %}{%- endif %}"
        "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}"
        "{%- if tools is not none %}{{- \"Environment: ipython\\n\" }}{%- endif %}"
        "{{- '{\"name\": \"' + tool_call.name + '\", ' }}{{- '\"parameters\": ' }}"
    ),
    # Mistral Nemo 2407 (mistralai-Mistral-Nemo-Instruct-2407.jinja); Mistral 7B v0.3 alike.
    "mistral-nemo": (
        "{%- if tools is not none and (message == user_messages[-1]) %}"
        "{{- \"[AVAILABLE_TOOLS][\" }}{{- \"[/AVAILABLE_TOOLS]\" }}{%- endif %}"
        "{{- \"[TOOL_CALLS][\" }}{%- set out = tool_call.function|tojson %}"
    ),
    # Mistral Small 3.2 (Mistral-Small-3.2-24B-Instruct-2506.jinja).
    "mistral-small-3.2": (
        "{{- '[AVAILABLE_TOOLS]' + tools|tojson + '[/AVAILABLE_TOOLS]' }}"
        "{{- '[TOOL_CALLS]' + tool_call.function.name }}{{- '[CALL_ID]' + tool_call.id }}"
        "{{- '[ARGS]' + tool_call['function']['arguments']|tojson }}"
    ),
    # Ministral 3 / Devstral Small 2 (their chat_template.jinja, Dec 2025).
    "ministral-3": (
        "{%- if tools is defined and tools %}{{- '[AVAILABLE_TOOLS]' + tools|tojson }}{%- endif %}"
        "{{- '[TOOL_CALLS]' + tool['function']['name'] + '[ARGS]' + arguments }}"
    ),
    # gpt-oss (openai-gpt-oss-120b.jinja).
    "gpt-oss": (
        "{%- if tools -%}{{- \"\\nCalls to these tools must go to the commentary channel: "
        "'functions'.\" }}{%- endif -%}{{- \"<|start|>assistant to=\" }}"
        "{{- \"functions.\" + tool_call.name + \"<|channel|>commentary \" }}"
        "{{- (tool_call.content_type if tool_call.content_type is defined else \"json\") + "
        "\"<|message|>\" }}{{- tool_call.arguments|tojson }}{{- \"<|call|>\" }}"
    ),
    # Phi-4-mini, llama.cpp's fixed template (llama-cpp-microsoft-Phi-4-mini-instruct.jinja).
    "phi-4-mini-llamacpp": (
        "{%- if tools is defined -%}{% for tool in tools %}"
        "{{- '<|tool|>' + (tool['function'] | tojson) + '<|/tool|>' -}}{% endfor %}"
        "{{- 'To use a tool, respond in this format: <|tool_call|>{\"name\": \"foo\", "
        "\"arguments\": {\"a\": 1}}<|/tool_call|>' -}}{%- endif -%}"
    ),
    # Phi-4-mini, the Hub's own template: tools come in the system message's "tools" key.
    "phi-4-mini": (
        "{% for message in messages %}{% if message['role'] == 'system' and 'tools' in message "
        "and message['tools'] is not none %}{{ '<|' + message['role'] + '|>' + message['content'] "
        "+ '<|tool|>' + message['tools'] + '<|/tool|>' + '<|end|>' }}{% endif %}{% endfor %}"
    ),
    # GLM-4.5 (glm_4_5.jinja).
    "glm-4.5": (
        "{%- if tools -%}<|system|>\n# Tools\n\nFor each function call, output the function name "
        "and arguments within the following XML format:\n<tool_call>{function-name}\n"
        "<arg_key>{arg-key-1}</arg_key>\n<arg_value>{arg-value-1}</arg_value>\n...\n</tool_call>"
        "{%- endif -%}"
    ),
    # GLM-4.7-Flash (GLM-4.7-Flash.jinja): the same, without the newlines.
    "glm-4.7": (
        "{%- if tools -%}<|system|>\n<tool_call>{function-name}<arg_key>{arg-key-1}</arg_key>"
        "<arg_value>{arg-value-1}</arg_value>...</tool_call>{%- endif -%}"
    ),
    # LFM2 (llama.cpp's llama-cpp-lfm2.jinja; the Hub template has the same tool markers).
    "lfm2": (
        "{%- if tools -%}{%- set ns.system_prompt = ns.system_prompt + \"List of tools: "
        "<|tool_list_start|>[\" -%}{%- endif -%}"
        "{%- set content = \"<|tool_call_start|>[\" + ns_tc.result + \"]<|tool_call_end|>\" + "
        "content -%}"
    ),
    # NVIDIA Nemotron Nano 2 (NVIDIA-Nemotron-Nano-v2.jinja).
    "nemotron-nano-2": (
        "{%- if tools -%}{{- '<TOOLCALL>[{{\"name\": \"tool_name1\", \"arguments\": "
        "\"tool_args1\"}}]</TOOLCALL>\\n\\n' -}}{%- endif -%}{{- '<TOOLCALL>[' -}}"
    ),
    # DeepSeek V3.1 (deepseek-ai-DeepSeek-V3.1.jinja).
    "deepseek-v3.1": (
        "{%- for tool in message['tool_calls'] %}{{'<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>'+ "
        "tool['function']['name'] + '<｜tool▁sep｜>' + tool['function']['arguments'] + "
        "'<｜tool▁call▁end｜>'}}{%- endfor %}{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}"
    ),
    # Granite 4.0 (ibm-granite-granite-4.0.jinja).
    "granite-4.0": (
        "{%- set tools_system_message_suffix = '\\n</tools>\\n\\nFor each tool call, return a json "
        "object with function name and arguments within <tool_call></tool_call> XML tags' %}"
        "{%- if available_tools is defined and available_tools %}{%- set tools = available_tools %}"
        "{%- endif %}{{- '<tool_call>\\n{\"name\": \"' }}"
    ),
    # SmolLM3 (the Hub's chat_template): tools are given as `xml_tools`.
    "smollm3": (
        "{%- if xml_tools or python_tools -%}{%- if xml_tools -%}{%- set ns = "
        "namespace(xml_tool_string=\"You may call one or more functions\") -%}"
        "{%- for tool in xml_tools[:] -%}{%- endfor -%}{%- set xml_tool_string = "
        "ns.xml_tool_string + \"For each function call, return a json object with function name "
        "and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\" -%}{%- endif -%}"
        "{%- endif -%}"
    ),
    # Gemma 3 (no tool support): the turn markers only.
    "gemma-3": (
        "{{ bos_token }}{%- for message in loop_messages -%}{{ '<start_of_turn>' + role + '\\n' }}"
        "{{ '<end_of_turn>\\n' }}{%- endfor -%}{%- if add_generation_prompt -%}"
        "{{'<start_of_turn>model\\n'}}{%- endif -%}"
    ),
    # A template whose prose says "tools" but whose code never reads them.
    "prose-only": "{{ '<|im_start|>system\\nYou have no tools.<|im_end|>' }}",
}

EXPECTED_FORMAT = {
    "qwen3": "hermes", "qwen3-coder": "qwen3_coder", "nemotron-3-nano": "qwen3_coder",
    "llama-3.3": "llama3", "llama-3.2": "llama3", "mistral-nemo": "mistral",
    "mistral-small-3.2": "mistral", "ministral-3": "mistral", "gpt-oss": "harmony",
    "phi-4-mini-llamacpp": "phi4", "phi-4-mini": "phi4", "glm-4.5": "glm45", "glm-4.7": "glm45",
    "lfm2": "lfm2", "nemotron-nano-2": "nemotron", "deepseek-v3.1": "deepseek",
    "granite-4.0": "hermes", "smollm3": "hermes", "gemma-3": "generic", "prose-only": "generic",
}


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_detect_format_from_real_template_markers(name: str) -> None:
    assert detect_format(TEMPLATES[name]) == EXPECTED_FORMAT[name]
    # A template's own markers beat an architecture that would say otherwise.
    assert detect_format(TEMPLATES[name], "llama") == EXPECTED_FORMAT[name]


def test_template_supports_tools() -> None:
    supported = {name for name in TEMPLATES if template_supports_tools(TEMPLATES[name])}
    # DeepSeek V3.1's template renders tool calls in history but never lists the tools.
    assert supported == set(TEMPLATES) - {"gemma-3", "prose-only", "phi-4-mini", "deepseek-v3.1"}
    assert tools_variable(TEMPLATES["smollm3"]) == "xml_tools"
    assert tools_variable(TEMPLATES["qwen3"]) == "tools"
    # Phi-4-mini's Hub template reads message['tools'] (a key), not the `tools` variable.
    assert tools_variable(TEMPLATES["phi-4-mini"]) is None
    assert not template_supports_tools(None)
    assert not template_supports_tools("")


def test_detect_format_without_a_template() -> None:
    assert detect_format(None) == "generic"
    assert detect_format("", None) == "generic"
    assert detect_format(None, "gpt-oss") == "harmony"
    # Architectures that several families share (llama: Llama, Mistral 7B, SmolLM2) say nothing.
    assert detect_format(None, "llama") == "generic"
    assert detect_format(None, "deepseek2") == "generic"  # GLM-4.7-Flash is deepseek2 too
    assert set(EXPECTED_FORMAT.values()) <= set(FORMATS)


#: The family of each catalog entry with a stored GGUF header, and the syntax it writes.
CATALOG_ARCH_FORMAT = {
    "devstral-small-2-24b": "mistral", "ministral-3-3b": "mistral", "ministral-3-8b": "mistral",
    "ministral-3-14b": "mistral", "glm-4.5-air": "glm45", "gpt-oss-20b": "harmony",
    "gpt-oss-120b": "harmony", "granite-4.0-h-micro": "hermes", "granite-4.0-h-small": "hermes",
    "granite-4.0-h-tiny": "hermes", "lfm2-350m": "lfm2", "lfm2-700m": "lfm2", "lfm2-1.2b": "lfm2",
    "lfm2-8b-a1b": "lfm2", "nemotron-3-nano-30b-a3b": "qwen3_coder",
    "qwen3-next-80b-a3b": "hermes", "smollm3-3b": "hermes",
    # glm-4.7-flash is a deepseek2 GGUF: only its template can tell.
    "glm-4.7-flash": "generic",
}


def test_detect_format_from_catalog_architectures() -> None:
    with gzip.open(REPO / "resources" / "catalog_headers.json.gz", "rt", encoding="utf-8") as f:
        headers = json.load(f)
    checked = 0
    for key, header in headers.items():
        metadata = header["metadata"]
        assert "tokenizer.chat_template" not in metadata  # so templates are excerpts above
        arch = metadata["general.architecture"]
        expected = "qwen3_coder" if key.startswith("qwen3.") else CATALOG_ARCH_FORMAT.get(key)
        if expected is None:
            continue
        assert detect_format(None, arch) == expected, (key, arch)
        checked += 1
    assert checked >= 25


# --------------------------------------------------------------------------- parsing samples
# (format, reply text, expected content, expected calls as (name, arguments))

Calls = list[tuple[str, dict[str, Any]]]
SAMPLES: list[tuple[str, str, str, Calls]] = [
    # Qwen3 template: '<tool_call>\n{"name": "', name, '", "arguments": ', args, '}\n</tool_call>'.
    ("hermes", f'<tool_call>\n{{"name": "get_weather", "arguments": {W}}}\n</tool_call>',
     "", [("get_weather", {"city": "Paris"})]),
    # Qwen3 thinking first, then two calls (the template joins calls with "\n").
    ("hermes", "<think>\nThe user wants two cities.\n</think>\n\nLet me check both.\n"
     f'<tool_call>\n{{"name": "get_weather", "arguments": {W}}}\n</tool_call>\n'
     '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich"}}\n</tool_call>',
     "<think>\nThe user wants two cities.\n</think>\n\nLet me check both.",
     [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Zürich"})]),
    # Granite 4.0 template: the same syntax; arguments as a JSON string are decoded.
    ("hermes", '<tool_call>\n{"name": "search", "arguments": "{\\"q\\": \\"東京 天気\\"}"}\n'
     "</tool_call>", "", [("search", {"q": "東京 天気"})]),
    # Generic: what tools_system_prompt teaches.
    ("generic", 'Sure.\n<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>\nDone?',
     "Sure.\n\nDone?", [("now", {})]),
    # Qwen3-Coder template ('<tool_call>\n<function=' + name + '>\n<parameter=' ...).
    ("qwen3_coder", "I'll look it up.\n\n<tool_call>\n<function=get_weather>\n"
     "<parameter=city>\nSão Paulo\n</parameter>\n<parameter=days>\n3\n</parameter>\n"
     "<parameter=metric>\ntrue\n</parameter>\n<parameter=opts>\n{\"hourly\": false}\n"
     "</parameter>\n</function>\n</tool_call>",
     "I'll look it up.",
     [("get_weather", {"city": "São Paulo", "days": 3, "metric": True,
                       "opts": {"hourly": False}})]),
    # Qwen3-Coder: a multi-line code value stays text; two calls.
    ("qwen3_coder", "<tool_call>\n<function=write_file>\n<parameter=path>\na.py\n</parameter>\n"
     "<parameter=content>\ndef f():\n    return 1\n</parameter>\n</function>\n</tool_call>\n"
     "<tool_call>\n<function=run>\n</function>\n</tool_call>", "",
     [("write_file", {"path": "a.py", "content": "def f():\n    return 1"}), ("run", {})]),
    # Qwen3-Coder sometimes drops </parameter> (vLLM's qwen3coder parser reads that too).
    ("qwen3_coder", "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n"
     "<parameter=days>\n2\n</function>\n</tool_call>", "",
     [("get_weather", {"city": "Paris", "days": 2})]),
    # Llama 3.3 template: {"name": name, "parameters": args}.
    ("llama3", f'{{"name": "get_weather", "parameters": {W}}}', "",
     [("get_weather", {"city": "Paris"})]),
    # Llama 3.1 after <|python_tag|>, two calls separated by ";", and <|eom_id|>.
    ("llama3", f'<|python_tag|>{{"name": "get_weather", "parameters": {W}}}; '
     '{"name": "get_time", "parameters": {"tz": "Europe/Paris"}}<|eom_id|>', "",
     [("get_weather", {"city": "Paris"}), ("get_time", {"tz": "Europe/Paris"})]),
    # Llama 3.1 builtin tool: <|python_tag|>brave_search.call(query="...").
    ("llama3", '<|python_tag|>brave_search.call(query="weather in Paris")', "",
     [("brave_search", {"query": "weather in Paris"})]),
    # Llama 3.2 small models write "type": "function" too.
    ("llama3", '{"type": "function", "name": "get_weather", "parameters": {"city": "Köln"}}', "",
     [("get_weather", {"city": "Köln"})]),
    # A plain JSON answer is not a call (no parameters/arguments key).
    ("llama3", 'Here: {"name": "Ada", "born": 1815}', 'Here: {"name": "Ada", "born": 1815}', []),
    # Mistral Nemo template: [TOOL_CALLS][{..., "id": "<9 chars>"}].
    ("mistral", f'[TOOL_CALLS][{{"name": "get_weather", "arguments": {W}, "id": "a1b2c3d4e"}}, '
     '{"name": "get_time", "arguments": {}, "id": "f5g6h7i8j"}]', "",
     [("get_weather", {"city": "Paris"}), ("get_time", {})]),
    # Mistral Small 3.2 template: [TOOL_CALLS]name[CALL_ID]id[ARGS]args.
    ("mistral", f"Checking.[TOOL_CALLS]get_weather[CALL_ID]a1b2c3d4e[ARGS]{W}", "Checking.",
     [("get_weather", {"city": "Paris"})]),
    # Ministral 3 / Devstral Small 2 template: [TOOL_CALLS]name[ARGS]args, one per call.
    ("mistral", f"[TOOL_CALLS]get_weather[ARGS]{W}[TOOL_CALLS]get_time[ARGS]{{}}", "",
     [("get_weather", {"city": "Paris"}), ("get_time", {})]),
    # gpt-oss: analysis, then a commentary call to functions.NAME (harmony format doc / template).
    ("harmony", "<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant"
     f"<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{W}<|call|>",
     "<|channel|>analysis<|message|>Need the weather.<|end|>",
     [("get_weather", {"city": "Paris"})]),
    # gpt-oss template's own rendering: to= in the role header; <|call|> cut as a stop token.
    ("harmony", "<|start|>assistant to=functions.lookup<|channel|>commentary json<|message|>"
     '{"q": "naïve café"}', "", [("lookup", {"q": "naïve café"})]),
    # gpt-oss reply that starts at <|channel|> (the prompt ended with <|start|>assistant).
    ("harmony", f"<|channel|>commentary to=functions.get_weather<|message|>{W}<|call|>", "",
     [("get_weather", {"city": "Paris"})]),
    # Phi-4-mini (llama.cpp template's instruction): <|tool_call|>{..}<|/tool_call|>.
    ("phi4", 'Okay.<|tool_call|>{"name": "foo", "arguments": {"a": 1}}<|/tool_call|>', "Okay.",
     [("foo", {"a": 1})]),
    # Phi-4-mini list form, and the functools[...] form vLLM's phi4_mini_json parser reads.
    ("phi4", '<|tool_call|>[{"name": "foo", "arguments": {"a": 1}}, {"name": "bar", '
     '"parameters": {}}]<|/tool_call|>', "", [("foo", {"a": 1}), ("bar", {})]),
    ("phi4", 'functools[{"name": "foo", "arguments": {"a": 2}}]', "", [("foo", {"a": 2})]),
    # GLM-4.5 template: name, newline, arg_key/arg_value pairs on their own lines.
    ("glm45", "<think></think>\n<tool_call>get_weather\n<arg_key>city</arg_key>\n"
     "<arg_value>北京</arg_value>\n<arg_key>days</arg_key>\n<arg_value>2</arg_value>\n"
     "</tool_call>", "<think></think>", [("get_weather", {"city": "北京", "days": 2})]),
    # GLM-4.7-Flash template: no newlines; two calls.
    ("glm45", "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value>"
     "</tool_call><tool_call>get_time<arg_key>tz</arg_key><arg_value>UTC</arg_value></tool_call>",
     "", [("get_weather", {"city": "Paris"}), ("get_time", {"tz": "UTC"})]),
    # LFM2 model card: pythonic calls inside <|tool_call_start|>[...]<|tool_call_end|>.
    ("lfm2", '<|tool_call_start|>[get_weather(city="Paris", days=3), '
     "get_time(tz='UTC', exact=True)]<|tool_call_end|>Checking both.", "Checking both.",
     [("get_weather", {"city": "Paris", "days": 3}), ("get_time", {"tz": "UTC", "exact": True})]),
    # llama.cpp's LFM2 template renders JSON inside the same markers.
    ("lfm2", f'<|tool_call_start|>[{{"name": "get_weather", "arguments": {W}}}]<|tool_call_end|>',
     "", [("get_weather", {"city": "Paris"})]),
    # Nemotron Nano 2 template: <TOOLCALL>[{"name": .., "arguments": ..}]</TOOLCALL>.
    ("nemotron", f'<think>\nok\n</think>\n<TOOLCALL>[{{"name": "get_weather", "arguments": {W}}},'
     ' {"name": "get_time", "arguments": "{\\"tz\\": \\"UTC\\"}"}]</TOOLCALL>',
     "<think>\nok\n</think>", [("get_weather", {"city": "Paris"}), ("get_time", {"tz": "UTC"})]),
    # DeepSeek V3.1 template: NAME<｜tool▁sep｜>ARGS.
    ("deepseek", f"Let me check.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{W}"
     '<｜tool▁call▁end｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{"tz": "UTC"}<｜tool▁call▁end｜>'
     "<｜tool▁calls▁end｜>", "Let me check.",
     [("get_weather", {"city": "Paris"}), ("get_time", {"tz": "UTC"})]),
    # DeepSeek V3 / R1: function<｜tool▁sep｜>NAME and a fenced json block.
    ("deepseek", "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n"
     f"```json\n{W}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>", "",
     [("get_weather", {"city": "Paris"})]),
]

# Malformed markup stays content, and nothing raises.
MALFORMED: list[tuple[str, str]] = [
    ("hermes", '<tool_call>\n{"name": "get_weather", "arguments": {"city": </tool_call>'),
    ("hermes", "<tool_call>not json</tool_call> and text"),
    ("hermes", '<tool_call>{"arguments": {}}</tool_call>'),  # no name
    ("hermes", '<tool_call>{"name": "x", "arguments": "not an object"}</tool_call>'),
    ("hermes", "<tool_call>" + "[" * 100_000 + "</tool_call>"),  # deeper than json recursion
    ("qwen3_coder", "<tool_call>\n<function=f>\n<parameter=a>\n1\n</parameter>junk\n</function>"),
    ("llama3", '{"name": "f", "parameters": {"a": 1'),
    ("llama3", "<|python_tag|>print(open('/etc/passwd').read())"),
    ("mistral", "[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {]"),
    ("mistral", "[TOOL_CALLS]f[ARGS]not json"),
    ("harmony", "<|channel|>commentary to=functions.f <|constrain|>json<|message|>{oops<|call|>"),
    ("phi4", "<|tool_call|>[{\"name\": 1}]<|/tool_call|>"),
    ("glm45", "<tool_call>f<arg_key>a</arg_key>oops</tool_call>"),
    ("lfm2", "<|tool_call_start|>[__import__('os').system('echo hacked')]<|tool_call_end|>"),
    ("lfm2", "<|tool_call_start|>[f(x=open('a'))]<|tool_call_end|>"),
    ("lfm2", "<|tool_call_start|>[f(1, 2)]<|tool_call_end|>"),
    ("nemotron", "<TOOLCALL>[{\"name\": \"f\", \"arguments\": {}]</TOOLCALL>"),
    ("deepseek", "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f<｜tool▁sep｜>{bad<｜tool▁call▁end｜>"),
]


def _calls(reply: ParsedReply) -> Calls:
    return [(c.name, c.arguments) for c in reply.tool_calls]


@pytest.mark.parametrize(("fmt", "text", "content", "calls"), SAMPLES)
def test_parse_real_format_samples(fmt: str, text: str, content: str, calls: Calls) -> None:
    reply = parse_tool_calls(text, fmt)
    assert reply.content == content
    assert _calls(reply) == calls
    for call in reply.tool_calls:
        assert re.fullmatch(r"call_[A-Za-z0-9]{24}", call.id)
    assert len({c.id for c in reply.tool_calls}) == len(reply.tool_calls)


@pytest.mark.parametrize(("fmt", "text"), MALFORMED)
def test_malformed_calls_stay_content(fmt: str, text: str, capfd: pytest.CaptureFixture[str]) -> None:
    reply = parse_tool_calls(text, fmt)
    assert reply.tool_calls == []
    assert reply.content == text.strip()
    assert "hacked" not in capfd.readouterr().out  # never evaluated


def test_a_malformed_call_does_not_hide_a_good_one() -> None:
    text = ('<tool_call>{"name": broken}</tool_call>\n'
            '<tool_call>{"name": "ok", "arguments": {"n": 1}}</tool_call>')
    reply = parse_tool_calls(text, "hermes")
    assert _calls(reply) == [("ok", {"n": 1})]
    assert reply.content == '<tool_call>{"name": broken}</tool_call>'


def test_text_without_calls_is_all_content() -> None:
    for fmt in FORMATS:
        text = "  Hello! 1 < 2 and [x] {y} — to be, or not; functools.partial is fine.  "
        reply = parse_tool_calls(text, fmt)
        assert reply == ParsedReply(text.strip(), [])


def test_unclosed_call_at_the_end_of_the_reply_is_read() -> None:
    # The model stopped before </tool_call> (a stop string, or max tokens right after the JSON).
    reply = parse_tool_calls(f'<tool_call>\n{{"name": "get_weather", "arguments": {W}}}', "hermes")
    assert _calls(reply) == [("get_weather", {"city": "Paris"})]


def test_hermes_reply_in_the_xml_style_is_read() -> None:
    # Qwen3 models sometimes answer a JSON-style template in the XML style.
    text = "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>"
    assert _calls(parse_tool_calls(text, "hermes")) == [("get_weather", {"city": "Paris"})]


def test_unknown_format_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="Unknown tool-call format"):
        parse_tool_calls("x", "klingon")
    with pytest.raises(UsageError):
        ToolCallStream("klingon")


def test_tool_call_helpers() -> None:
    call = ToolCall("f", {"city": "Zürich"})
    assert re.fullmatch(r"call_[A-Za-z0-9]{24}", call.id)
    assert call.to_openai() == {"id": call.id, "type": "function",
                                "function": {"name": "f", "arguments": '{"city": "Zürich"}'}}
    assert new_call_id() != new_call_id()
    forced = parse_forced_call(' {"name": "f", "arguments": {"a": [1, 2]}} ')
    assert forced is not None and (forced.name, forced.arguments) == ("f", {"a": [1, 2]})
    assert parse_forced_call("nope") is None


# --------------------------------------------------------------------------- streaming


def _stream(fmt: str, pieces: list[str]) -> tuple[str, ToolCallStream]:
    stream = ToolCallStream(fmt)
    emitted = "".join(stream.feed(p) for p in pieces)
    return emitted, stream


def _check_stream(fmt: str, text: str, pieces: list[str]) -> None:
    expected = parse_tool_calls(text, fmt)
    emitted, stream = _stream(fmt, pieces)
    reply = stream.finish()
    assert reply.content == expected.content
    assert _calls(reply) == _calls(expected)
    assert emitted == stream.emitted
    assert expected.content.startswith(emitted)
    assert emitted + stream.unsent == expected.content


STREAM_TEXTS = [(fmt, text) for fmt, text, _, _ in SAMPLES] + MALFORMED[:4] + [
    ("hermes", "No calls here, just <b>text</b> and a < sign."),
    ("harmony", "<|channel|>final<|message|>The weather is nice today.<|return|>"),
    ("llama3", 'I think {"name": "get_weather", "parameters": {"city": "Paris"}} works.'),
]


@pytest.mark.parametrize(("fmt", "text"), STREAM_TEXTS)
def test_streaming_matches_parsing_at_every_split_point(fmt: str, text: str) -> None:
    if len(text) > 2000:
        text = text[:2000]
    for k in range(len(text) + 1):
        _check_stream(fmt, text, [text[:k], text[k:]])
    _check_stream(fmt, text, list(text))  # one character at a time


def test_streaming_emits_content_before_the_call_and_holds_the_call() -> None:
    stream = ToolCallStream("hermes")
    assert stream.feed("  Let me check") == "Let me check"
    assert stream.feed(" the weather. <tool") == " the weather."  # "<tool" could open a call
    assert not stream.opened
    assert stream.feed("_call>\n{\"name\": \"get_weather\", ") == ""
    assert stream.opened
    assert stream.feed(f'"arguments": {W}}}\n</tool_call>\nAnything after.') == ""
    reply = stream.finish()
    assert _calls(reply) == [("get_weather", {"city": "Paris"})]
    assert reply.content == "Let me check the weather. \nAnything after."
    assert stream.unsent == " \nAnything after."


def test_streaming_releases_text_that_was_not_a_marker() -> None:
    stream = ToolCallStream("hermes")
    assert stream.feed("a <to") == "a"
    assert stream.feed("ol> b") == " <tool> b"
    stream = ToolCallStream("mistral")
    assert stream.feed("see [1") == "see [1"
    assert stream.feed("] ok [TOOL") == "] ok"


def test_streaming_long_reply_is_linear_enough() -> None:
    stream = ToolCallStream("llama3")
    out = "".join(stream.feed("word { and } more [x] ") for _ in range(5000))
    assert stream.finish().content.startswith(out)
    assert len(out) > 100_000


# --------------------------------------------------------------------------- tools in


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "array", "items": {"type": "integer", "minimum": 1}},
                "where": {"type": "object", "properties": {
                    "lat": {"type": "number"}, "lon": {"type": "number"}},
                    "required": ["lat", "lon"]},
            },
            "required": ["city"],
        },
    },
}
NOW = {"type": "function", "function": {"name": "now", "description": "The time."}}
ANTHROPIC = {"name": "search.docs", "description": "Search the docs.",
             "input_schema": {"type": "object", "properties": {"q": {"type": "string"}},
                              "required": ["q"]}}


def test_validate_tools_normalises_openai_ollama_and_anthropic() -> None:
    out = validate_tools([WEATHER, NOW, ANTHROPIC])
    assert out[0] == WEATHER and out[0] is not WEATHER
    assert out[1] == {"type": "function", "function": {
        "name": "now", "description": "The time.",
        "parameters": {"type": "object", "properties": {}}}}
    assert out[2] == {"type": "function", "function": {
        "name": "search.docs", "description": "Search the docs.",
        "parameters": ANTHROPIC["input_schema"]}}
    flat = {"type": "function", "name": "now", "parameters": {"type": "object"}}
    assert validate_tools([flat])[0]["function"]["name"] == "now"
    assert validate_tools(None) == []


@pytest.mark.parametrize(("tools", "words"), [
    ("get_weather", "not a list"),
    ([1], "not an object"),
    ([{"type": "function", "function": {"name": "bad name!"}}], "1 to 64 letters"),
    ([{"type": "function", "function": {"name": "x" * 65}}], "1 to 64 letters"),
    ([{"type": "function", "function": {}}], "has the name None"),
    ([{"type": "web_search_20250305", "name": "web_search"}], "only function tools"),
    ([{"type": "function", "function": {"name": "f", "parameters": "x"}}], "not a JSON schema"),
    ([{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}],
     'type "object"'),
    ([{"type": "function", "function": {"name": "f", "description": 3}}], "description"),
    ([NOW, NOW], "must be unique"),
    ([{"type": "function", "function": {"name": f"t{i}"}} for i in range(129)], "at most 128"),
])
def test_validate_tools_rejects_bad_input(tools: Any, words: str) -> None:
    with pytest.raises(UsageError) as err:
        validate_tools(tools)
    assert words in err.value.message
    assert err.value.fix


def test_tools_system_prompt_lists_functions_and_the_generic_syntax() -> None:
    text = tools_system_prompt([WEATHER, ANTHROPIC])
    assert '"name": "get_weather"' in text and '"name": "search.docs"' in text
    assert '"enum": ["celsius", "fahrenheit"]' in text
    assert "<tool_call>\n{\"name\": \"<function name>\", \"arguments\":" in text
    # What the prompt teaches is what the generic parser reads.
    reply = parse_tool_calls('<tool_call>\n{"name": "search.docs", "arguments": {"q": "x"}}\n'
                             "</tool_call>", "generic")
    assert _calls(reply) == [("search.docs", {"q": "x"})]


def test_forced_call_schema_shapes() -> None:
    one = forced_call_schema([WEATHER, NOW], "get_weather")
    assert one["properties"]["name"] == {"const": "get_weather"}
    assert one["properties"]["arguments"] == WEATHER["function"]["parameters"]
    assert one["required"] == ["name", "arguments"]
    both = forced_call_schema([WEATHER, NOW, ANTHROPIC], None)
    assert [b["properties"]["name"]["const"] for b in both["anyOf"]] == [
        "get_weather", "now", "search.docs"]
    assert both["anyOf"][1]["properties"]["arguments"]["additionalProperties"] is False
    with pytest.raises(UsageError) as err:
        forced_call_schema([WEATHER, NOW], "get_time")
    assert "get_time" in err.value.message and "get_weather, now" in (err.value.fix or "")
    with pytest.raises(UsageError):
        forced_call_schema([], None)


_RULE = re.compile(r"^([A-Za-z0-9-]+) ::=", re.MULTILINE)


def _referenced_rules(gbnf: str) -> set[str]:
    out: set[str] = set()
    for line in gbnf.splitlines():
        if "::=" not in line:
            continue
        rhs = line.split("::=", 1)[1]
        rhs = re.sub(r'"(?:[^"\\]|\\.)*"', " ", rhs)  # string literals
        rhs = re.sub(r"\[(?:[^\]\\]|\\.)*\]", " ", rhs)  # character classes
        out.update(re.findall(r"[A-Za-z][A-Za-z0-9-]*", rhs))
    return out


@pytest.fixture(scope="module")
def grammar_tools() -> Any:
    """json_schema_to_gbnf, and llama.cpp's grammar parser on a real vocabulary when there is one."""
    try:
        from app.core.machine import llama_cpp_module

        llama_cpp = llama_cpp_module()
        from llama_cpp.llama_grammar import json_schema_to_gbnf
    except ImportError as exc:  # pragma: no cover - llama.cpp missing
        pytest.skip(f"llama_cpp unavailable: {exc}")
    vocab = None
    model = REPO / ".cache" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    llm = None
    if model.is_file():
        llm = llama_cpp.Llama(str(model), vocab_only=True, verbose=False)
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
    yield llama_cpp, json_schema_to_gbnf, vocab
    if llm is not None:
        llm.close()


@pytest.mark.parametrize("name", [None, "get_weather", "now", "search.docs"])
def test_forced_call_schema_converts_to_a_grammar(grammar_tools: Any, name: str | None) -> None:
    llama_cpp, to_gbnf, vocab = grammar_tools
    tricky = {"type": "function", "function": {"name": "book", "parameters": {
        "type": "object", "title": "Booking", "$schema": "http://json-schema.org/draft-07/schema#",
        "properties": {
            "guests": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name"]}},
            "room": {"enum": ["single", "double", 3]},
            "note": {"type": ["string", "null"]},
            "when": {"anyOf": [{"type": "string"}, {"type": "number"}]},
        },
        "required": ["guests", "room"], "additionalProperties": False}}}
    schema = forced_call_schema([WEATHER, NOW, ANTHROPIC, tricky], name)
    gbnf = to_gbnf(json.dumps(schema))
    defined = set(_RULE.findall(gbnf))
    assert "root" in defined
    assert _referenced_rules(gbnf) <= defined
    for tool in ("get_weather", "now", "search.docs", "book"):
        assert (f'\\"{tool}\\"' in gbnf) == (name is None or name == tool)
    if vocab is not None:
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
        assert sampler, gbnf
        llama_cpp.llama_sampler_free(sampler)
