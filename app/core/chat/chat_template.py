"""A model's chat template (Jinja, from the GGUF), rendered with bounds on time and size, and stoppable.

Any GGUF from the Hub carries its own template, so the template is hostile
input. Jinja's immutable sandbox already blocks escapes and caps `range()`;
this adds what it lacks:

- a time limit, and Stop: a line tracer on the template's own compiled code
  (and every sandbox hook) checks the clock and the stop flag, so even an empty
  nested loop ends;
- a size limit: the output is collected chunk by chunk and refused past a
  bound, and every value the template builds through an operator, a call, a
  filter, `~` or an attribute is checked, with the amplifiers (`*`, `**`, `%`
  widths, `replace`, `join`, padding widths) checked *before* they allocate.

Overruns are `ChatTemplateError`s that name the model. Stop raises
`RenderStopped`, which the engine turns into a cancelled reply.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import CodeType, FrameType
from typing import Any

from app.core.errors import ChatTemplateError

#: Filename Jinja gives the code it compiles from a string.
_TEMPLATE_FILE = "<template>"
#: Line events between two looks at the clock and the stop flag.
_CHECK_EVERY = 64
#: A %-format or str.format width of 7+ digits (a megabyte of padding from a few characters).
_BIG_WIDTH = re.compile(r"\d{7,}")


@dataclass(frozen=True)
class TemplateLimits:
    """How long a render may take and how much it may write."""

    #: Seconds for one render (real templates take milliseconds).
    time_s: float = 5.0
    #: Output allowed beyond the conversation's own text: `ratio` x the messages' characters + `overhead_chars`.
    ratio: int = 2
    overhead_chars: int = 256 * 1024

    def max_chars(self, messages: Sequence[dict[str, Any]],
                  tools: Sequence[dict[str, Any]] | None = None) -> int:
        text = sum(len(str(m.get("content") or "")) + len(str(m.get("tool_calls") or ""))
                   for m in messages)
        text += sum(len(str(t)) for t in tools or ())
        return self.ratio * text + self.overhead_chars


class RenderStopped(Exception):
    """Stop was pressed while the template was rendering."""


class TemplateRejected(Exception):
    """The template itself raised (raise_exception, a missing key, a type error): it refuses the conversation."""


class _Overrun(Exception):
    """A limit was passed; `what` says which, for the sentence."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class _Budget:
    """The limits of one render, checked from the tracer and the sandbox hooks."""

    def __init__(self, deadline: float, max_chars: int, stop: threading.Event | None,
                 time_s: float) -> None:
        self.deadline = deadline
        self.max_chars = max_chars
        self.stop = stop
        self.time_s = time_s
        self.lines = 0

    def tick(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise RenderStopped
        if time.monotonic() > self.deadline:
            raise _Overrun(f"took longer than {self.time_s:g} s")

    def size(self, n: int) -> None:
        if n > self.max_chars:
            raise _Overrun(f"built a value of more than {self.max_chars:,} characters")

    def value(self, value: Any) -> Any:
        if isinstance(value, (str, bytes, list, tuple, dict)):
            self.size(len(value))
        elif isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 4096:
            raise _Overrun("built a number of more than 4096 bits")
        return value

    def arguments(self, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        for arg in (*args, *kwargs.values()):
            if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > self.max_chars:
                raise _Overrun(f"asked for a size of {arg:,} (more than {self.max_chars:,} characters)")

    def binop(self, operator: str, left: Any, right: Any) -> None:
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
                    self.size(len(seq) * max(n, 0))
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0 and \
                    max(left.bit_length(), 1) * right > 4096:
                raise _Overrun("raised a number to a power of more than 4096 bits")
        elif operator == "%" and isinstance(left, str):
            if _BIG_WIDTH.search(left) or "*" in left:
                raise _Overrun("used a format width of millions of characters")
        elif operator == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
            self.size(len(left) + len(right))


_current = threading.local()


def _budget() -> _Budget | None:
    return getattr(_current, "budget", None)


def _check_replace(budget: _Budget, text: Any, old: Any, new: Any, count: Any = -1) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
        hits = len(text) + 1 if old == "" else text.count(old)
        if isinstance(count, int) and count >= 0:
            hits = min(hits, count)
        budget.size(len(text) + hits * max(len(new) - len(old), 0))


def _check_join(budget: _Budget, sep: Any, items: Any) -> None:
    if isinstance(sep, str) and isinstance(items, (list, tuple)):
        budget.size(len(sep) * max(len(items) - 1, 0) + sum(len(str(i)) for i in items[:100_000]))


def _environment() -> Any:
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class IgnoreGenerationTags(jinja2.ext.Extension):
        """Pass-through for Hugging Face's ``{% generation %}`` tag (as llama-cpp-python and Transformers)."""

        tags = {"generation"}  # noqa: RUF012 (jinja2.ext.Extension declares it an instance attribute)

        def parse(self, parser: Any) -> Any:
            parser.stream.skip(1)
            return parser.parse_statements(("name:endgeneration",), drop_needle=True)

    class BoundedSandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**", "%", "+"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            budget = _budget()
            if budget is None:
                return super().call_binop(context, operator, left, right)
            budget.tick()
            budget.binop(operator, left, right)
            return budget.value(super().call_binop(context, operator, left, right))

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
            budget = _budget()
            if budget is not None:
                budget.tick()
                budget.arguments(args, kwargs)
                # The sandbox hands out str.format wrapped (update_wrapper keeps the method as __wrapped__).
                target = getattr(__obj, "__wrapped__", __obj)
                name = getattr(target, "__name__", "")
                owner = getattr(target, "__self__", None)
                if name == "replace" and isinstance(owner, str):
                    _check_replace(budget, owner, *args[:3])
                elif name == "join" and isinstance(owner, str) and args:
                    _check_join(budget, owner, list(args[0]) if isinstance(args[0], range) else args[0])
                elif isinstance(owner, str) and name in ("format", "format_map") and _BIG_WIDTH.search(owner):
                    raise _Overrun("used a format width of millions of characters")
            result = super().call(__context, __obj, *args, **kwargs)
            return budget.value(result) if budget is not None else result

        def getattr(self, obj: Any, attribute: str) -> Any:
            budget = _budget()
            result = super().getattr(obj, attribute)
            if budget is not None:
                budget.tick()
                budget.value(result)
            return result

        def getitem(self, obj: Any, argument: Any) -> Any:
            budget = _budget()
            result = super().getitem(obj, argument)
            if budget is not None:
                budget.tick()
                budget.value(result)
            return result

    # optimized=False: Jinja's optimizer would run filters on constant arguments while compiling,
    # outside any render's limits (the compiler's own constant output is compiled under a budget).
    env = BoundedSandbox(loader=jinja2.BaseLoader(), trim_blocks=True, lstrip_blocks=True, optimized=False,
                         extensions=[IgnoreGenerationTags, jinja2.ext.loopcontrols])
    # Transformers' tojson: no HTML escaping, keyword arguments of json.dumps.
    env.filters["tojson"] = _tojson
    for name, fn in list(env.filters.items()):
        env.filters[name] = _bounded_filter(name, fn)
    env.globals.pop("lipsum", None)  # n paragraphs of lorem ipsum: no chat template needs it
    env.globals["range"] = _bounded_range
    return env


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _bounded_filter(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    import functools

    @functools.wraps(fn)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        if budget is None:
            return fn(*args, **kwargs)
        budget.tick()
        # Jinja passes the environment or context first to some filters; only plain values are checked.
        values = [a for a in args if not _is_jinja_internal(a)]
        # The first value is the one filtered (data); the rest are the filter's parameters.
        budget.arguments(values[1:], kwargs)
        if name == "format" and values and isinstance(values[0], str) and \
                (_BIG_WIDTH.search(values[0]) or "*" in values[0]):
            raise _Overrun("used a format width of millions of characters")
        if name == "replace" and len(values) >= 3:
            _check_replace(budget, *values[:4])
        elif name == "join" and values:
            seq = values[0]
            sep = values[1] if len(values) > 1 else kwargs.get("d", "")
            _check_join(budget, sep, list(seq) if isinstance(seq, range) else seq)
        return budget.value(fn(*args, **kwargs))

    return bounded


def _is_jinja_internal(value: Any) -> bool:
    from jinja2 import Environment
    from jinja2.nodes import EvalContext
    from jinja2.runtime import Context

    return isinstance(value, (Environment, EvalContext, Context))


def _bounded_range(*args: int) -> Any:
    from jinja2.sandbox import safe_range

    rng = safe_range(*args)

    def iterate() -> Any:
        budget = _budget()
        for i, value in enumerate(rng):
            if budget is not None and i % _CHECK_EVERY == 0:
                budget.tick()
            yield value

    return iterate()


def _bounded_str_join(seq: Any) -> str:
    """Jinja's `~` (compiled as str_join((a, b))), refused before it allocates past the limit."""
    parts = [str(v) for v in seq]
    budget = _budget()
    if budget is not None:
        budget.size(sum(len(p) for p in parts))
    return "".join(parts)


def _template_codes(code: CodeType) -> set[CodeType]:
    found = {code}
    for const in code.co_consts:
        if isinstance(const, CodeType):
            found |= _template_codes(const)
    return found


class ChatTemplate:
    """One compiled chat template of one model."""

    def __init__(self, source: str, *, bos_token: str, eos_token: str, model: str,
                 limits: TemplateLimits | None = None) -> None:
        """Compile `source`; ChatTemplateError (naming `model`) when it is not valid Jinja."""
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.model = model
        self.limits = limits or TemplateLimits()
        # Jinja's compiler evaluates constant output (`{{ 'x'|center(10**9) }}`) itself: under a budget too.
        _current.budget = _Budget(time.monotonic() + self.limits.time_s, self.limits.overhead_chars, None,
                                  self.limits.time_s)
        try:
            self._template = _environment().from_string(source)
        except Exception as exc:  # TemplateSyntaxError, and anything a broken template trips in the compiler
            raise ChatTemplateError(
                f"The chat template of {model} is not valid Jinja ({_short(exc)}).",
                "Use a different model, or give it a chat template of your own.") from exc
        finally:
            _current.budget = None
        # `a ~ b` compiles to str_join((a, b)) looked up in the template's module namespace.
        namespace = self._template.root_render_func.__globals__
        if "str_join" in namespace:
            namespace["str_join"] = _bounded_str_join
        self._codes = _template_codes(self._template.root_render_func.__code__)
        for block in self._template.blocks.values():
            self._codes |= _template_codes(block.__code__)

    def render(self, messages: Sequence[dict[str, Any]], *, add_generation_prompt: bool = True,
               stop: threading.Event | None = None, deadline: float | None = None,
               tools: Sequence[dict[str, Any]] | None = None) -> str:
        """The prompt text. Raises ChatTemplateError past a limit, RenderStopped on stop, TemplateRejected
        when the template itself refuses the messages.

        `deadline` (time.monotonic()) lets several renders for one reply share one time limit.
        `tools` (OpenAI-style function definitions) reach the template as its `tools` variable, the
        way Hugging Face's apply_chat_template passes them.
        """
        limits = self.limits
        max_chars = limits.max_chars(messages, tools)
        if deadline is None:
            deadline = time.monotonic() + limits.time_s
        budget = _Budget(deadline, max_chars, stop, limits.time_s)

        def raise_exception(message: str) -> None:
            raise TemplateRejected(str(message))

        def strftime_now(fmt: str) -> str:
            return datetime.now().strftime(fmt)

        codes = self._codes

        def line_check(frame: FrameType, event: str, _arg: Any) -> Any:
            if event == "line":
                budget.lines += 1
                if budget.lines % _CHECK_EVERY == 0:
                    budget.tick()
            return line_check

        def on_call(frame: FrameType, event: str, _arg: Any) -> Any:
            # Only the template's compiled code is traced line by line; Jinja's runtime runs untraced.
            return line_check if frame.f_code in codes or frame.f_code.co_filename == _TEMPLATE_FILE else None

        previous = sys.gettrace()
        _current.budget = budget
        parts: list[str] = []
        written = 0
        sys.settrace(on_call)
        try:
            for chunk in self._template.generate(
                    messages=[dict(m) for m in messages], bos_token=self.bos_token, eos_token=self.eos_token,
                    add_generation_prompt=add_generation_prompt, raise_exception=raise_exception,
                    strftime_now=strftime_now, tools=[dict(t) for t in tools] if tools else None,
                    # SmolLM3's template reads its tools from `xml_tools`.
                    xml_tools=[dict(t) for t in tools] if tools else None,
                    functions=None, tool_choice=None,
                    function_call=None):
                written += len(chunk)
                if written > max_chars:
                    raise _Overrun(f"wrote more than {max_chars:,} characters")
                parts.append(chunk)
                budget.tick()
        except (RenderStopped, TemplateRejected):
            raise
        except _Overrun as exc:
            raise ChatTemplateError(
                f"The chat template of {self.model} {exc.what} while formatting this conversation, so it "
                "was stopped.", "Use a different model, or give it a chat template of your own.") from None
        except MemoryError:
            parts.clear()
            raise ChatTemplateError(
                f"The chat template of {self.model} ran out of memory while formatting this conversation.",
                "Use a different model, or give it a chat template of your own.") from None
        except RecursionError:
            raise ChatTemplateError(
                f"The chat template of {self.model} called itself too deeply while formatting this "
                "conversation.", "Use a different model, or give it a chat template of your own.") from None
        except Exception as exc:  # jinja2 and template errors come in many types: the template refuses
            raise TemplateRejected(_short(exc)) from exc
        finally:
            sys.settrace(previous)
            _current.budget = None
        prompt = "".join(parts)
        if not prompt.strip():
            raise ChatTemplateError(
                f"The chat template of {self.model} wrote an empty prompt for this conversation.",
                "Use a different model, or give it a chat template of your own.")
        return prompt


def _short(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
