"""Passages cut from document units: sizes, overlap, offsets back into the full text, CJK."""

from __future__ import annotations

from itertools import pairwise

import pytest

from app.core.docs.chunking import Piece, chunk, estimate_tokens


def _units(texts: list[str], page: int | None = None, heading: str | None = None) -> tuple[list[Piece], str]:
    pieces, at = [], 0
    for t in texts:
        pieces.append(Piece(t, page, heading, at))
        at += len(t) + 2
    return pieces, "\n\n".join(texts)


def _words(text: str) -> int:
    return len(text.split())


def test_passages_respect_the_size_and_map_back_to_the_text() -> None:
    paragraphs = [" ".join(f"w{p}_{i}." for i in range(n)) for p, n in enumerate([5, 40, 3, 120, 7, 60])]
    pieces, full = _units(paragraphs)
    chunks = chunk(pieces, count=_words, size=50, overlap=10)
    assert all(c.tokens <= 50 for c in chunks)
    for c in chunks:
        assert full[c.start:c.end] == c.text
    # Every word is in some passage, in order.
    covered = " ".join(c.text for c in chunks).split()
    assert set(full.split()) <= set(covered)
    assert [c.start for c in chunks] == sorted(c.start for c in chunks)


def test_overlap_repeats_the_tail_of_the_previous_passage() -> None:
    sentences = [f"Sentence number {i} ends here." for i in range(60)]
    pieces, full = _units(sentences)
    chunks = chunk(pieces, count=_words, size=30, overlap=10)
    assert len(chunks) > 3
    for a, b in pairwise(chunks):
        assert b.start < a.end  # they overlap
        assert a.text.endswith(full[b.start:a.end])


def test_a_long_sentence_is_cut_by_characters_and_cjk_stays_whole() -> None:
    text = "这是一个很长的句子" * 200  # no sentence end at all
    pieces, full = _units([text], page=3, heading="第一章")
    chunks = chunk(pieces, count=estimate_tokens, size=64, overlap=0)
    assert len(chunks) > 10
    assert all(c.tokens <= 64 and c.page == 3 and c.heading == "第一章" for c in chunks)
    assert "".join(c.text for c in chunks) == full


def test_pages_and_headings_follow_the_units() -> None:
    pieces = [Piece("Intro text here.", 1, "Intro", 0), Piece("More on page two.", 2, "Intro", 18),
              Piece("Methods begin.", 2, "Methods", 37)]
    chunks = chunk(pieces, count=_words, size=100)
    assert len(chunks) == 2 and chunks[0].page == 1 and chunks[1].page == chunks[1].page_end == 2
    assert chunks[0].heading == "Intro"


def test_estimate_counts_cjk_characters() -> None:
    assert estimate_tokens("中文测试") == 4
    assert 2 <= estimate_tokens("hello world") <= 4
    with pytest.raises(ValueError):
        chunk([Piece("x", None, None, 0)], size=4)


def test_a_passage_never_spans_two_pages() -> None:
    pieces = [Piece(f"Short paragraph {i} on its page.", i // 2 + 1, None, i * 40) for i in range(8)]
    chunks = chunk(pieces, count=_words, size=100, overlap=5)
    assert [c.page for c in chunks] == [1, 2, 3, 4]
    assert all(c.page == c.page_end for c in chunks)
