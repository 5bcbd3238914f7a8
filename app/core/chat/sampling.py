"""Sampling settings for a reply, and the named presets (precise, balanced, creative)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from app.core.errors import UsageError


@dataclass(frozen=True)
class SamplingSettings:
    """How the next token is picked. `seed=None` draws a fresh seed per reply.

    A fixed `seed` promises a repeatable reply: the same seed, conversation,
    settings and load parameters give the same reply within a session and in a
    new process, on the same machine and llama.cpp build (the engine then
    evaluates the whole prompt afresh instead of reusing the cached prefix).
    """

    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    seed: int | None = None
    #: Longest reply in tokens; None: until the model stops or the context is full.
    max_tokens: int | None = 1024

    def __post_init__(self) -> None:
        problems = []
        if self.temperature < 0:
            problems.append("temperature must be 0 or more")
        if not 0 < self.top_p <= 1:
            problems.append("top_p must be above 0 and at most 1")
        if self.top_k < 0:
            problems.append("top_k must be 0 (off) or more")
        if not 0 <= self.min_p < 1:
            problems.append("min_p must be from 0 to below 1")
        if self.repeat_penalty <= 0:
            problems.append("repeat_penalty must be above 0 (1 is off)")
        if self.max_tokens is not None and self.max_tokens < 1:
            problems.append("max_tokens must be at least 1")
        if problems:
            raise UsageError(f"Invalid sampling settings: {'; '.join(problems)}.",
                             "Use values in the ranges given, or a preset.")

    def with_(self, **changes: Any) -> SamplingSettings:
        """A copy with some values changed; None values are ignored (handy for CLI flags)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplingSettings:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


#: Presets named in the `sampling_preset` setting. Precise is for facts and
#: code (near-greedy), creative for stories (flatter distribution, no min_p cut
#: of rare words beyond 2%).
PRESETS: dict[str, SamplingSettings] = {
    "precise": SamplingSettings(temperature=0.2, top_p=0.9, top_k=20, min_p=0.1, repeat_penalty=1.05),
    "balanced": SamplingSettings(),
    "creative": SamplingSettings(temperature=1.0, top_p=0.95, top_k=100, min_p=0.02,
                                 repeat_penalty=1.1),
}


def preset(name: str) -> SamplingSettings:
    """The preset called `name`, or UsageError naming the choices."""
    try:
        return PRESETS[name]
    except KeyError:
        raise UsageError(f"There is no sampling preset called {name!r}.",
                         f"Choose one of {', '.join(PRESETS)}.") from None
