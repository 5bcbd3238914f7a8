"""What of a conversation the model sees when it does not all fit the context window.

The rule: the system prompt always stays; whole turns (a user message and the
replies after it) are dropped oldest first; the message being answered is
kept, and only if it alone is too long is its beginning cut. Nothing is cut
silently: `WindowFit.notices()` says exactly what was left out. Pure logic:
token counting is passed in, so this is tested without a model.

Counting renders and tokenizes the whole prompt, so a 20 MB paste would be
counted again and again. `max_chars` bounds that: a text of more characters
than the budget's tokens could ever hold (tokens x the longest token) cannot
fit, so turns that old are dropped and the last message's head is cut by
characters before anything is counted.
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
    #: Tokens of the whole conversation before anything was dropped (None: too long to count, see max_chars).
    original_tokens: int | None
    dropped: list[DroppedMessage] = field(default_factory=list)
    #: Tokens cut from the beginning of the last user message.
    cut_tokens: int = 0
    #: Characters cut from its beginning before counting (it was longer than max_chars).
    cut_chars: int = 0
    #: Characters of the whole conversation's messages.
    original_chars: int = 0

    @property
    def trimmed(self) -> bool:
        return bool(self.dropped or self.cut_tokens or self.cut_chars)

    def notices(self) -> list[str]:
        """Sentences for the user; empty when everything fit."""
        out: list[str] = []
        if self.dropped:
            users = sum(1 for d in self.dropped if d.role == "user")
            others = len(self.dropped) - users
            parts = [f"{users} user" if users else "", f"{others} assistant" if others else ""]
            kinds = " and ".join(p for p in parts if p)
            size = (f"{self.original_tokens} tokens" if self.original_tokens is not None
                    else f"{self.original_chars:,} characters")
            out.append(
                f"The conversation ({size}) is longer than the context "
                f"window allows for a prompt ({self.budget} tokens): the {len(self.dropped)} oldest "
                f"messages ({kinds}; numbers {', '.join(str(d.index + 1) for d in self.dropped)}) "
                "were left out of what the model sees. They stay in the chat.")
        if self.cut_chars:
            tokens = f", then {self.cut_tokens} more tokens," if self.cut_tokens else ""
            out.append(
                f"The last message is longer than the context window allows: its first "
                f"{self.cut_chars:,} characters{tokens} were left out and the model sees only the rest.")
        elif self.cut_tokens:
            out.append(
                f"The last message is longer than the context window allows: its first "
                f"{self.cut_tokens} tokens were left out and the model sees only the rest.")
        return out


def fit_to_window(messages: Sequence[dict[str, str]], *, budget: int, count: CountTokens,
                  cut_head: CutHead, max_chars: int | None = None) -> WindowFit:
    """Drop the oldest turns (and, last resort, the head of the last message) to fit `budget` tokens.

    `max_chars`: no text of more characters fits `budget` tokens (budget x the longest token's bytes);
    what is beyond it is left out before counting, so the cost of counting stays bounded.
    """
    msgs = [dict(m) for m in messages]
    head = 1 if msgs and msgs[0]["role"] == "system" else 0
    chars = sum(len(m["content"]) for m in msgs)
    cut_chars, min_cut = 0, 0
    if max_chars is not None:
        msgs, cut_chars, min_cut = _bound_chars(msgs, head, max_chars, budget)
    body = list(enumerate(msgs))[head:]
    system = msgs[:head]
    if min_cut:
        original: int | None = None
        tokens = count(system + [m for _, m in body[min_cut:]])
    else:
        original = tokens = count(msgs)
    fit = WindowFit(messages=msgs, prompt_tokens=tokens, budget=budget, original_tokens=original,
                    original_chars=chars, cut_chars=cut_chars)
    if tokens <= budget and not min_cut:
        return fit
    last_user = max((i for i, (_, m) in enumerate(body) if m["role"] == "user"), default=len(body) - 1)
    # Cut points are user messages: dropping everything before one removes whole
    # turns, so roles still alternate (some templates insist on it).
    cut_points = [i for i, (_, m) in enumerate(body) if m["role"] == "user" and 0 < i <= last_user]
    cut_from = min_cut
    for point in cut_points:
        if tokens <= budget:
            break
        if point <= cut_from:
            continue
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
        raise _overflow(tokens, budget, kept, head, count)
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
        raise _overflow(tokens, budget, kept, head, count)
    fit.cut_tokens, fit.prompt_tokens, fit.messages = cut_total, tokens, kept
    return fit


def _bound_chars(msgs: ChatMessages, head: int, max_chars: int,
                 budget: int) -> tuple[ChatMessages, int, int]:
    """(messages with the last user message cut to max_chars, characters cut, first body index that can fit)."""
    system_chars = len(msgs[0]["content"]) if head else 0
    if system_chars > max_chars:
        raise ContextOverflowError(
            f"The system prompt alone ({system_chars:,} characters) is longer than the context window can hold "
            f"as a prompt ({budget} tokens).",
            "Shorten the system prompt, or load the model with a longer context.")
    body = msgs[head:]
    last_user = max((i for i, m in enumerate(body) if m["role"] == "user"), default=None)
    cut_chars = 0
    if last_user is not None and len(body[last_user]["content"]) > max_chars:
        text = body[last_user]["content"]
        cut_chars = len(text) - max_chars
        body[last_user] = {**body[last_user], "content": text[cut_chars:]}
    total, beyond = system_chars, None
    for i in range(len(body) - 1, -1, -1):
        total += len(body[i]["content"])
        if total > max_chars:
            beyond = i
            break
    min_cut = 0
    if beyond is not None and last_user is not None:
        later = [i for i, m in enumerate(body) if m["role"] == "user" and beyond < i <= last_user]
        min_cut = later[0] if later else last_user
    return msgs[:head] + body, cut_chars, min_cut


def reply_reserve(n_ctx: int, max_tokens: int | None) -> int:
    """Tokens kept free for the reply: the max-tokens setting, at most a quarter of the window."""
    quarter = max(n_ctx // 4, 1)
    return quarter if max_tokens is None else max(1, min(max_tokens, quarter))


def _overflow(tokens: int, budget: int, kept: ChatMessages, head: int,
              count: CountTokens) -> ContextOverflowError:
    # With every message emptied, what is left is the template's own fixed text.
    try:
        fixed = count([{**m, "content": ""} for m in kept])
    except Exception:  # a template may refuse empty messages; then the system prompt is the suspect
        fixed = 0
    if fixed > budget or not head:
        return ContextOverflowError(
            f"The chat template's own fixed text takes more of the context window than a prompt may "
            f"({fixed} tokens for {budget}, with every message empty).",
            "Load the model with a longer context, or give it a shorter chat template.")
    return ContextOverflowError(
        f"The system prompt alone takes more of the context window than a prompt may "
        f"({tokens} tokens for {budget}).",
        "Shorten the system prompt, or load the model with a longer context.")


def _preview(text: str, limit: int = 40) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
