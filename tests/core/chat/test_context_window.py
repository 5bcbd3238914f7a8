"""Context-window policy, with words standing in for tokens (no model needed)."""

from __future__ import annotations

from itertools import pairwise

import pytest

from app.core.chat.context_window import fit_to_window, reply_reserve
from app.core.errors import ContextOverflowError


def count_words(messages: list[dict[str, str]]) -> int:
    # Two tokens of template overhead per message, like a real chat template.
    return sum(len(m["content"].split()) + 2 for m in messages)


def cut_words(text: str, n: int) -> str:
    return " ".join(text.split()[n:])


def conversation(turns: int, words: int = 10, system: str | None = "be kind") -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": system}] if system else []
    for i in range(turns):
        msgs.append({"role": "user", "content": " ".join([f"q{i}"] * words)})
        msgs.append({"role": "assistant", "content": " ".join([f"a{i}"] * words)})
    msgs.append({"role": "user", "content": "last question"})
    return msgs


def test_everything_fits_untouched() -> None:
    msgs = conversation(2)
    fit = fit_to_window(msgs, budget=1000, count=count_words, cut_head=cut_words)
    assert fit.messages == msgs and not fit.trimmed and fit.notices() == []


def test_oldest_turns_dropped_whole_system_kept() -> None:
    msgs = conversation(5)  # system 4 + 5 turns of 24 + last 4 = 128
    fit = fit_to_window(msgs, budget=60, count=count_words, cut_head=cut_words)
    assert fit.messages[0] == msgs[0]
    assert fit.messages[-1] == msgs[-1]
    assert fit.prompt_tokens <= 60
    # Whole turns go: roles still alternate after the system prompt.
    roles = [m["role"] for m in fit.messages[1:]]
    assert roles[0] == "user" and all(a != b for a, b in pairwise(roles))
    assert [d.index for d in fit.dropped] == list(range(1, 1 + len(fit.dropped)))
    assert len(fit.dropped) % 2 == 0
    (notice,) = fit.notices()
    assert f"{len(fit.dropped)} oldest messages" in notice and "128 tokens" in notice


def test_overlong_last_message_is_cut_at_the_head_and_reported() -> None:
    msgs = [{"role": "system", "content": "sys"},
            {"role": "user", "content": " ".join(f"w{i}" for i in range(200)) + " final question"}]
    fit = fit_to_window(msgs, budget=50, count=count_words, cut_head=cut_words)
    assert fit.prompt_tokens <= 50
    assert fit.messages[-1]["content"].endswith("final question")
    assert fit.cut_tokens > 0
    assert any("first" in n and "tokens were left out" in n for n in fit.notices())


def test_history_dropped_then_last_message_cut() -> None:
    msgs = conversation(3, system=None)
    msgs[-1] = {"role": "user", "content": "x " * 100}
    fit = fit_to_window(msgs, budget=40, count=count_words, cut_head=cut_words)
    assert len(fit.dropped) == 6 and fit.cut_tokens > 0 and len(fit.notices()) == 2
    assert [m["role"] for m in fit.messages] == ["user"]


def test_system_prompt_alone_too_long_is_an_error() -> None:
    msgs = [{"role": "system", "content": "s " * 100}, {"role": "user", "content": "hi"}]
    with pytest.raises(ContextOverflowError) as err:
        fit_to_window(msgs, budget=50, count=count_words, cut_head=cut_words)
    assert "system prompt" in str(err.value)


def test_reply_reserve() -> None:
    assert reply_reserve(4096, 512) == 512
    assert reply_reserve(4096, 8000) == 1024
    assert reply_reserve(4096, None) == 1024
    assert reply_reserve(512, 64) == 64


# -- max_chars: what cannot fit is left out before it is counted -----------------------------
class Counting:
    """count_words that remembers the biggest text it was asked to count."""

    def __init__(self) -> None:
        self.largest = 0

    def __call__(self, messages: list[dict[str, str]]) -> int:
        self.largest = max(self.largest, sum(len(m["content"]) for m in messages))
        return count_words(messages)


def test_a_huge_last_message_is_cut_by_characters_before_counting() -> None:
    count = Counting()
    msgs = [{"role": "system", "content": "be kind"}, {"role": "user", "content": "w " * 10_000_000}]
    # Words here are at most 2 characters ("w "), so 60 tokens can never hold more than 120.
    fit = fit_to_window(msgs, budget=60, count=count, cut_head=cut_words, max_chars=120)
    assert count.largest <= 120 + len("be kind")  # the 20 MB were never counted
    assert fit.cut_chars == 20_000_000 - 120 and fit.prompt_tokens <= 60
    assert fit.messages[0]["content"] == "be kind" and fit.original_tokens is not None
    (notice,) = fit.notices()
    assert "its first 19,999,880 characters" in notice and "left out" in notice


def test_old_turns_too_long_to_fit_are_dropped_without_counting_them() -> None:
    count = Counting()
    msgs = [{"role": "system", "content": "be kind"},
            {"role": "user", "content": "old " * 5_000_000}, {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "recent question"}, {"role": "assistant", "content": "recent answer"},
            {"role": "user", "content": "last question"}]
    fit = fit_to_window(msgs, budget=40, count=count, cut_head=cut_words, max_chars=200)
    assert count.largest < 200
    assert [d.index for d in fit.dropped] == [1, 2]
    assert fit.messages == [msgs[0], *msgs[3:]] and fit.cut_chars == 0
    assert fit.original_tokens is None
    (notice,) = fit.notices()
    assert "(20,000,050 characters)" in notice and "the 2 oldest messages" in notice


def test_a_system_prompt_too_long_to_fit_is_refused_without_counting() -> None:
    count = Counting()
    msgs = [{"role": "system", "content": "rule " * 4_000_000}, {"role": "user", "content": "hi"}]
    with pytest.raises(ContextOverflowError, match="system prompt alone"):
        fit_to_window(msgs, budget=40, count=count, cut_head=cut_words, max_chars=200)
    assert count.largest == 0


def test_a_long_fixed_template_text_is_not_blamed_on_the_system_prompt() -> None:
    def with_preamble(messages: list[dict[str, str]]) -> int:
        return 100 + count_words(messages)  # the template's own text: 100 tokens

    msgs = [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hello there"}]
    with pytest.raises(ContextOverflowError, match="chat template's own fixed text"):
        fit_to_window(msgs, budget=50, count=with_preamble, cut_head=cut_words)
