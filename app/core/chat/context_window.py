"""What of a conversation the model sees when it does not all fit the context window.

The rule: the system prompt always stays; whole turns (a user message and the
replies after it) are dropped oldest first; the message being answered is
kept, and only if it alone is too long is its beginning cut. Nothing is cut
silently: `WindowFit.notices()` says exactly what was left out. Pure logic:
token counting is passed in, so this is tested without a model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from app.core.errors import ContextOverflowError

ChatMessages = list[dict[str, str]]
#: Tokens the rendered prompt of these messages takes.
CountTokens = Callable[[ChatMessages], int]
#: `text` without its first `n` tokens.
CutHead = Callable[[str, int], str]

#: Extra tokens cut from an over-long message, so one re-count usually suffices
#: (tokens at the cut may merge differently once re-tokenized).
CUT_MARGIN = 8


@dataclass(frozen=True)
class DroppedMessage:
    #: Position in the conversation passed in (0 = first message, system included).
    index: int
    role: str
    preview: str


@dataclass
class WindowFit:
    """The messages to send and what was left out to make them fit."""

    messages: ChatMessages
    prompt_tokens: int
    budget: int
    #: Tokens of the whole conversation before anything was dropped.
    original_tokens: int
    dropped: list[DroppedMessage] = field(default_factory=list)
    #: Tokens cut from the beginning of the last user message.
    cut_tokens: int = 0

    @property
    def trimmed(self) -> bool:
        return bool(self.dropped or self.cut_tokens)

    def notices(self) -> list[str]:
        """Sentences for the user; empty when everything fit."""
        out: list[str] = []
        if self.dropped:
            users = sum(1 for d in self.dropped if d.role == "user")
            others = len(self.dropped) - users
            parts = [f"{users} user" if users else "", f"{others} assistant" if others else ""]
            kinds = " and ".join(p for p in parts if p)
            out.append(
                f"The conversation ({self.original_tokens} tokens) is longer than the context "
                f"window allows for a prompt ({self.budget} tokens): the {len(self.dropped)} oldest "
                f"messages ({kinds}; numbers {', '.join(str(d.index + 1) for d in self.dropped)}) "
                "were left out of what the model sees. They stay in the chat.")
        if self.cut_tokens:
            out.append(
                f"The last message is longer than the context window allows: its first "
                f"{self.cut_tokens} tokens were left out and the model sees only the rest.")
        return out


def fit_to_window(messages: Sequence[dict[str, str]], *, budget: int, count: CountTokens,
                  cut_head: CutHead) -> WindowFit:
    """Drop the oldest turns (and, last resort, the head of the last message) to fit `budget` tokens."""
    msgs = [dict(m) for m in messages]
    original = count(msgs)
    fit = WindowFit(messages=msgs, prompt_tokens=original, budget=budget, original_tokens=original)
    if original <= budget:
        return fit
    head = 1 if msgs and msgs[0]["role"] == "system" else 0
    body = list(enumerate(msgs))[head:]
    system = msgs[:head]
    last_user = max((i for i, (_, m) in enumerate(body) if m["role"] == "user"), default=len(body) - 1)
    # Cut points are user messages: dropping everything before one removes whole
    # turns, so roles still alternate (some templates insist on it).
    cut_points = [i for i, (_, m) in enumerate(body) if m["role"] == "user" and 0 < i <= last_user]
    cut_from = 0
    tokens = original
    for point in cut_points:
        if tokens <= budget:
            break
        cut_from = point
        tokens = count(system + [m for _, m in body[cut_from:]])
    fit.dropped = [DroppedMessage(index, m["role"], _preview(m["content"])) for index, m in body[:cut_from]]
    kept = system + [dict(m) for _, m in body[cut_from:]]
    fit.messages, fit.prompt_tokens = kept, tokens
    if tokens <= budget:
        return fit
    # Only the last message (and the system prompt) remain: cut its beginning.
    target = next((i for i in range(len(kept) - 1, -1, -1) if kept[i]["role"] == "user"), None)
    if target is None or target < head:
        raise _overflow(tokens, budget)
    text = kept[target]["content"]
    cut_total = 0
    for _ in range(8):
        excess = tokens - budget
        if excess <= 0:
            break
        step = excess + CUT_MARGIN
        text = cut_head(text, step)
        cut_total += step
        kept[target] = {**kept[target], "content": text}
        tokens = count(kept)
        if not text:
            break
    if tokens > budget:
        raise _overflow(tokens, budget)
    fit.cut_tokens, fit.prompt_tokens, fit.messages = cut_total, tokens, kept
    return fit


def reply_reserve(n_ctx: int, max_tokens: int | None) -> int:
    """Tokens kept free for the reply: the max-tokens setting, at most a quarter of the window."""
    quarter = max(n_ctx // 4, 1)
    return quarter if max_tokens is None else max(1, min(max_tokens, quarter))


def _overflow(tokens: int, budget: int) -> ContextOverflowError:
    return ContextOverflowError(
        f"The system prompt alone takes more of the context window than a prompt may "
        f"({tokens} tokens for {budget}).",
        "Shorten the system prompt, or load the model with a longer context.")


def _preview(text: str, limit: int = 40) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
