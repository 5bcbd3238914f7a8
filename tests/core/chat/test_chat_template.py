"""Chat templates as hostile input: every bound of `ChatTemplate`, without a model.

Each hostile template must end as a ChatTemplateError that names the model,
within a size bound on the memory it allocated (tracemalloc's peak: a size, not
a timing); a real template must render exactly as llama-cpp-python renders it.
"""

from __future__ import annotations

import threading
import tracemalloc
from pathlib import Path

import pytest

from app.core.chat.chat_template import (
    ChatTemplate,
    RenderStopped,
    TemplateLimits,
    TemplateRejected,
)
from app.core.chat.engine import FALLBACK_TEMPLATE
from app.core.errors import ChatTemplateError

MODEL = "Hostile-7B.Q4_K_M.gguf"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
#: No hostile render may allocate more than this (the limit on output is ~256 KiB here).
PEAK_BYTES = 48 * 2**20
#: Loops that would run for hours are cut by the time limit (short here to keep the test fast).
FAST = TemplateLimits(time_s=0.5)

HOSTILE = {
    # time
    "nested ranges": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x",
    "nested string loops": "{% set s = 'x' * 1000 %}{% for a in s %}{% for b in s %}{% for c in s %}"
                           "{% endfor %}{% endfor %}{% endfor %}x",
    # output size
    "20 MB of output": "{% for i in range(100000) %}{{ 'y' * 200 }}{% endfor %}",
    # values built before they are written
    "string times a billion": "{{ 'x' * 1000000000 }}",
    "list times a billion": "{{ ([1] * 1000000000)|length }}",
    "huge power": "{{ 2 ** 100000000 }}",
    "doubling with ~": "{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}"
                       "{% endfor %}{{ ns.s|length }}",
    "doubling with +": "{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}"
                       "{% endfor %}{{ ns.s|length }}",
    "doubling macro": "{% macro d(s, n) %}{% if n %}{{ d(s ~ s, n - 1) }}{% else %}{{ s|length }}{% endif %}"
                      "{% endmacro %}{{ d('x', 60) }}",
    "center filter": "{{ 'x'|center(1000000000) }}",
    "indent filter": "{{ 'a\nb'|indent(100000000) }}",
    "tojson indent": "{{ [1]|tojson(indent=1000000000) }}",
    "ljust method": "{{ 'x'.ljust(1000000000) }}",
    "percent width": "{{ '%1000000000s' % 'x' }}",
    "format width": "{{ '{:>1000000000}'.format('x') }}",
    "format width argument": "{{ '{0:{1}}'.format('x', 1000000000) }}",
    "replace amplifier": "{{ ('x' * 100000)|replace('', 'y' * 100000) }}",
    "replace method": "{{ ('x' * 100000).replace('x', 'y' * 100000) }}",
    "join amplifier": "{{ ('y' * 100000).join(range(100000)|list) }}",
    # failures of other kinds
    "endless recursion": "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "empty prompt": "{% if false %}x{% endif %}",
    "only whitespace": "{{ '   ' }}",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_template_is_a_typed_error_within_bounds(name: str) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(ChatTemplateError) as caught:
            ChatTemplate(HOSTILE[name], bos_token="", eos_token="", model=MODEL, limits=FAST).render(MESSAGES)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = caught.value.message
    assert message.startswith(f"The chat template of {MODEL} ") and message.endswith(".")
    assert message.count(". ") == 0  # one sentence; the fix is apart
    assert caught.value.fix and len(str(caught.value)) < 400
    assert peak < PEAK_BYTES, f"{name}: {peak / 2**20:.0f} MiB allocated"


def test_invalid_jinja_is_a_typed_error_naming_the_model() -> None:
    with pytest.raises(ChatTemplateError, match=f"The chat template of {MODEL} is not valid Jinja"):
        ChatTemplate("{% for m in messages %}{{ m", bos_token="", eos_token="", model=MODEL)


def test_constant_output_is_bounded_while_compiling() -> None:
    """Jinja's compiler evaluates constant filters itself; that runs under the limits too."""
    tracemalloc.start()
    try:
        template = ChatTemplate("{{ 'x'|center(100000000) }}{{ messages[0]['content'] }}", bos_token="",
                                eos_token="", model=MODEL, limits=FAST)
        peak = tracemalloc.get_traced_memory()[1]
        with pytest.raises(ChatTemplateError):
            template.render(MESSAGES)
    finally:
        tracemalloc.stop()
    assert peak < PEAK_BYTES


def test_stop_ends_a_render_that_would_run_for_hours() -> None:
    template = ChatTemplate(HOSTILE["nested ranges"], bos_token="", eos_token="", model=MODEL,
                            limits=TemplateLimits(time_s=3600))
    stop = threading.Event()
    timer = threading.Timer(0.2, stop.set)
    timer.start()
    try:
        with pytest.raises(RenderStopped):
            template.render(MESSAGES, stop=stop)
    finally:
        timer.cancel()


def test_the_templates_own_refusal_is_told_apart() -> None:
    template = ChatTemplate("{{ raise_exception('System role not supported') }}", bos_token="", eos_token="",
                            model=MODEL)
    with pytest.raises(TemplateRejected, match="System role not supported"):
        template.render(MESSAGES)
    with pytest.raises(TemplateRejected):
        ChatTemplate("{{ messages[5]['content'] + 1 }}", bos_token="", eos_token="", model=MODEL).render(MESSAGES)


def test_a_long_conversation_is_within_the_size_limit() -> None:
    """The output limit grows with the conversation: a legitimately long chat is never refused."""
    long = [{"role": "user" if i % 2 == 0 else "assistant", "content": "word " * 20_000} for i in range(41)]
    prompt = ChatTemplate(FALLBACK_TEMPLATE, bos_token="", eos_token="", model=MODEL).render(long)
    assert len(prompt) > 4_000_000


def _gguf_template(path: Path) -> str:
    from gguf import GGUFReader

    field = GGUFReader(path).fields["tokenizer.chat_template"]
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def test_real_templates_render_as_llama_cpp_python_renders_them(starter_model: Path) -> None:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    tool_style = ("{{ bos_token }}{% for m in messages %}{% if loop.first and m['role'] == 'system' %}"
                  "{{ '<<SYS>>' ~ m['content']|trim ~ '<</SYS>>' }}{% else %}{{ m['role']|upper }}: "
                  "{{ m['content']|tojson }}{% endif %}{% if not loop.last %}{{ '\n' }}{% endif %}{% endfor %}"
                  "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}"
                  "{{ ' (' ~ ns.n ~ ' messages, %d%%)' % 100 }}{{ eos_token }}"
                  "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}")
    conversation = [*MESSAGES, {"role": "assistant", "content": "Hi! \"quoted\" ünïcode 🐫"},
                    {"role": "user", "content": "  And now?  "}]
    for source in (_gguf_template(starter_model), FALLBACK_TEMPLATE, tool_style):
        theirs = Jinja2ChatFormatter(template=source, eos_token="</s>", bos_token="<s>")(
            messages=conversation).prompt
        mine = ChatTemplate(source, bos_token="<s>", eos_token="</s>", model=MODEL).render(conversation)
        assert mine == theirs
