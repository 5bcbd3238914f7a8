"""Core sentences as the window says them: a hint written for the terminal becomes the window's own action.

Core errors end with a fix for whoever reads them, and the CLI is one reader: "Check the name with
`camelid search`". In the window the same fix is a place to click, so the views pass core sentences
through `window_sentence` before showing them (issue: the GUI never sends users to the CLI).
"""

from __future__ import annotations

import re

#: (pattern, replacement) in order; patterns match the fixes core writes (app/core/errors and callers).
_HINTS: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p), r) for p, r in (
    (r"Pick a smaller quant \(see `camelid files`\), or download anyway with --force\.",
     "Choose a smaller quant, or press “Download anyway…” to fetch it all the same."),
    (r"Check the name with `camelid search`", "Check the name with a search in Models › Discover"),
    (r"List the files with `camelid files [^`]*`\.?", "Open the repository in Models › Discover to see its files."),
    (r"with `camelid models`", "in Models › Installed"),
    (r"\(camelid catalog --refresh\)", "(Models › Check for new models)"),
    (r"See the list with `camelid catalog`\.?", "The wizard (Help menu) lists what the catalog holds."),
))


def window_sentence(sentence: str) -> str:
    """`sentence` with the terminal hints it carries replaced by where the window offers the same."""
    for pattern, replacement in _HINTS:
        sentence = pattern.sub(replacement, sentence)
    return sentence
