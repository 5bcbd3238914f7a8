"""The document index on real SQLite: lexical (trigram BM25, CJK), dense (exact cosine), RRF fusion, upkeep."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.core.docs.chunking import Chunk
from app.core.docs.store import DocIndex, query_terms
from app.core.errors import UsageError

TEXTS = [
    "The camel stores fat in its hump, not water.",
    "Dromedaries cross the Sahara desert in caravans.",
    "Photosynthesis turns sunlight into chemical energy.",
    "这份报告的作者是王小明，完成于二零二四年。",
    "北京是中国的首都，上海是最大的城市。",
]


def _chunk(text: str, i: int) -> Chunk:
    return Chunk(text=text, page=i + 1, page_end=i + 1, heading=f"Part {i}", start=i * 100,
                 end=i * 100 + len(text), tokens=len(text.split()))


def _vectors(n: int, dims: int = 8, seed: int = 0) -> np.ndarray:
    m = np.random.default_rng(seed).normal(size=(n, dims)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


@pytest.fixture
def index(tmp_path: Path):  # type: ignore[no-untyped-def]
    with DocIndex(tmp_path / "docs.sqlite3") as idx:
        yield idx


def _fill(index: DocIndex, vectors: np.ndarray | None = None) -> object:
    c = index.collection("notes", create=True)
    index.put_document(c, path="/docs/a.md", source_id=None, sha256="a" * 64, size=10, mtime=1.0, kind="markdown",
                       pages=None, chars=100, warnings=[], chunks=[_chunk(t, i) for i, t in enumerate(TEXTS)],
                       vectors=vectors)
    return index.collection("notes")


def test_lexical_search_in_english_and_chinese(index: DocIndex) -> None:
    c = _fill(index)
    assert index.search(c, "Where does the camel keep its fat?", mode="lexical")[0].text == TEXTS[0]
    assert index.search(c, "这份报告的作者是谁？", mode="lexical")[0].text == TEXTS[3]
    # A two-character word is shorter than a trigram: matched by substring.
    hits = index.search(c, "首都", mode="lexical")
    assert hits and hits[0].text == TEXTS[4]
    assert index.search(c, "quantum chromodynamics", mode="lexical") == []


def test_query_terms_make_trigrams_of_cjk_runs_and_skip_short_words() -> None:
    terms = query_terms('北京在哪 and "fat" camel')
    assert '"北京在"' in terms.match and '"京在哪"' in terms.match and '"camel"' in terms.match
    assert '"fat"' in terms.match and '"and"' not in terms.match  # a stop word
    assert query_terms("Which was the one?").match == '"which" OR "was" OR "the" OR "one"'  # only stop words
    assert query_terms("首都").short == ["首都"] and query_terms("首都").match == ""


def test_dense_search_is_exact_cosine_and_fusion_ranks_by_both(index: DocIndex) -> None:
    vectors = _vectors(len(TEXTS))
    c = _fill(index, vectors)
    hits = index.dense(c, vectors[2])
    assert hits[0][0] and abs(hits[0][1] - 1.0) < 1e-5
    assert index.search(c, "anything", vector=vectors[2], mode="dense")[0].text == TEXTS[2]
    # Hybrid: the passage first in both lists is first; each hit carries both ranks.
    fused = index.search(c, "Photosynthesis sunlight", vector=vectors[2], top=3)
    assert fused[0].text == TEXTS[2] and fused[0].lexical_rank == 1 and fused[0].dense_rank == 1
    assert fused[0].score == pytest.approx(2 / 61)
    assert fused[0].page == 3 and fused[0].heading == "Part 2" and fused[0].source == "/docs/a.md"


def test_dimension_mismatch_is_a_sentence(index: DocIndex) -> None:
    c = _fill(index, _vectors(len(TEXTS), dims=8))
    with pytest.raises(UsageError, match="8-dimension"):
        index.dense(c, np.ones(16, dtype=np.float32))


def test_replacing_and_removing_documents_updates_search(index: DocIndex) -> None:
    c = _fill(index, _vectors(len(TEXTS)))
    index.put_document(c, path="/docs/a.md", source_id=None, sha256="b" * 64, size=10, mtime=2.0, kind="markdown",
                       pages=None, chars=10, warnings=[], chunks=[_chunk("Only llamas now.", 0)],
                       vectors=_vectors(1, seed=5))
    assert index.search(c, "camel hump", mode="lexical") == []
    assert index.search(c, "llamas", mode="lexical")[0].text == "Only llamas now."
    assert len(index.dense(c, _vectors(1, seed=5)[0])) == 1  # the cached matrix was refreshed
    assert index.drop_documents(c, ["/docs/a.md"]) == 1
    assert index.search(c, "llamas", mode="lexical") == []
    index.remove_collection("notes")
    with pytest.raises(UsageError, match="no document collection called 'notes'"):
        index.collection("notes")


def test_bad_collection_names_are_refused(index: DocIndex) -> None:
    for bad in ("", " ", "a/b", "x" * 80, "../up"):
        with pytest.raises(UsageError):
            index.collection(bad, create=True)
    assert index.collection("Mes notes 2026", create=True).name == "Mes notes 2026"


def test_a_damaged_index_is_set_aside_with_a_sentence(tmp_path: Path) -> None:
    path = tmp_path / "docs.sqlite3"
    path.write_bytes(b"this is not a database at all" * 100)
    with DocIndex(path) as idx:
        assert idx.notice is not None and "damaged" in idx.notice and "Add your documents again" in idx.notice
        assert idx.collections() == []
    assert any(p.name.startswith("docs.sqlite3.damaged-") for p in tmp_path.iterdir())
