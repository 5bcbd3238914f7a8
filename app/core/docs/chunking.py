"""Cutting a document's text units into passages of about N tokens, with overlap.

Tokens are the embedding model's (a passage must fit its context whole, or
llama.cpp would cut it silently); without an embedding model an estimate
stands in. A passage keeps where it came from: the page (and last page), the
heading above it, and its character offsets in the document's full text, so
a citation can point at the exact place. A passage never spans two pages.

Units are kept whole where they fit; a unit longer than a passage is split at
sentence ends (Latin and CJK punctuation), and a sentence longer than that at
a character boundary. The overlap repeats the last sentences of a passage at
the start of the next, so an answer that straddles a cut is found in one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

#: Tokens of `text` under the embedding model's tokenizer.
CountTokens = Callable[[str], int]

DEFAULT_TOKENS = 256
DEFAULT_OVERLAP = 32

_SENTENCE_END = re.compile(r"(?<=[.!?;:。！？；…])\s+|(?<=[。！？；])")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate: about 4 characters per token, 1 per CJK character."""
    cjk = len(_CJK.findall(text))
    return max(1, cjk + (len(text) - cjk + 3) // 4)


@dataclass(frozen=True)
class Piece:
    """Input: one unit of a document (extract.Unit has these fields)."""

    text: str
    page: int | None
    heading: str | None
    start: int


@dataclass(frozen=True)
class Chunk:
    text: str
    page: int | None
    page_end: int | None
    heading: str | None
    #: Character offsets of the passage in the document's full text: text == full[start:end]
    #: when the passage is one run of units (always for passages from one unit).
    start: int
    end: int
    tokens: int


@dataclass
class _Span:
    text: str
    page: int | None
    heading: str | None
    start: int
    tokens: int

    @property
    def end(self) -> int:
        return self.start + len(self.text)


def _split(piece: Piece, size: int, count: CountTokens) -> list[_Span]:
    """A unit as spans of at most `size` tokens: whole, else by sentences, else by characters."""
    n = count(piece.text)
    if n <= size:
        return [_Span(piece.text, piece.page, piece.heading, piece.start, n)]
    out: list[_Span] = []
    at = 0
    sentences: list[tuple[int, str]] = []
    for m in _SENTENCE_END.finditer(piece.text):
        if m.end() > at:
            sentences.append((at, piece.text[at:m.end()]))
            at = m.end()
    if at < len(piece.text):
        sentences.append((at, piece.text[at:]))
    for offset, sentence in sentences:
        tokens = count(sentence)
        if tokens <= size:
            out.append(_Span(sentence, piece.page, piece.heading, piece.start + offset, tokens))
            continue
        # One sentence longer than a passage: cut by characters, in proportion to its tokens.
        step = max(1, len(sentence) * size // (tokens + 1))
        i = 0
        while i < len(sentence):
            part = sentence[i:i + step]
            n_part = count(part)
            while n_part > size and len(part) > 1:
                part = part[:len(part) * 3 // 4]
                n_part = count(part)
            out.append(_Span(part, piece.page, piece.heading, piece.start + offset + i, n_part))
            i += len(part)
    return out


def chunk(pieces: Sequence[Piece], *, count: CountTokens = estimate_tokens, size: int = DEFAULT_TOKENS,
          overlap: int = DEFAULT_OVERLAP) -> list[Chunk]:
    """Passages of at most `size` tokens (joined units count the "\\n\\n" between them as one token)."""
    if size < 8:
        raise ValueError("a passage needs at least 8 tokens")
    overlap = max(0, min(overlap, size // 2))
    spans = [s for p in pieces if p.text.strip() for s in _split(p, size, count)]
    chunks: list[Chunk] = []
    i = 0
    while i < len(spans):
        group = [spans[i]]
        tokens = spans[i].tokens
        j = i + 1
        # A passage stays on one page, so a citation's page number is exact.
        while j < len(spans) and tokens + 1 + spans[j].tokens <= size and spans[j].page == spans[i].page:
            group.append(spans[j])
            tokens += 1 + spans[j].tokens
            j += 1
        chunks.append(_make(group, tokens))
        if j >= len(spans):
            break
        if spans[j].page != spans[j - 1].page:
            i = j  # a new page starts afresh: no overlap across pages
            continue
        # The next passage starts with the last spans of this one that fit in `overlap` tokens.
        back, carried = j, 0
        while back - 1 > i and carried + spans[back - 1].tokens <= overlap:
            back -= 1
            carried += spans[back].tokens
        i = back if back > i else j
    return chunks


def _make(group: list[_Span], tokens: int) -> Chunk:
    text = group[0].text
    for prev, span in pairwise(group):
        # Spans of one unit are contiguous; separate units were joined by "\n\n" in the full text.
        text += ("" if span.start == prev.end else "\n\n") + span.text
    pages = [s.page for s in group if s.page is not None]
    heading = next((s.heading for s in group if s.heading), None)
    return Chunk(text=text, page=pages[0] if pages else None, page_end=pages[-1] if pages else None,
                 heading=heading, start=group[0].start, end=group[-1].end, tokens=tokens)
