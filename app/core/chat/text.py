"""Text from outside (argv, stdin, a paste, an API call) made safe for UTF-8: the store, the tokenizer, templates.

Python decodes argv (and, in some locales, stdin) with `surrogateescape`, so
one invalid byte becomes a lone surrogate that no UTF-8 encoder accepts.
"""

from __future__ import annotations

REPLACEMENT = "\ufffd"


def clean_text(text: str) -> tuple[str, int]:
    """`text` with every invalid byte or lone surrogate replaced by U+FFFD, and how many were replaced."""
    try:
        text.encode("utf-8")
        return text, 0
    except UnicodeEncodeError:
        pass
    before = text.count(REPLACEMENT)
    try:
        # Bytes escaped by surrogateescape become bytes again, so valid sequences around them survive.
        cleaned = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        # Other lone surrogates (from JSON, a paste): each is one character.
        cleaned = "".join(REPLACEMENT if "\ud800" <= c <= "\udfff" else c for c in text)
    return cleaned, max(cleaned.count(REPLACEMENT) - before, 1)


def invalid_text_notice(replaced: int, where: str = "Your message") -> str:
    """The sentence that says invalid bytes were replaced."""
    what = "byte that is" if replaced == 1 else "bytes that are"
    return (f"{where} had {replaced} {what} not valid UTF-8 text; "
            f"{'it was' if replaced == 1 else 'they were'} replaced with {REPLACEMENT}.")
