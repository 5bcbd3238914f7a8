"""The document index: collections, their files and passages, in one SQLite file (WAL) in the data dir.

Search is hybrid, as the field does it: BM25 over an FTS5 table and exact
cosine similarity over the passages' embedding vectors, fused by reciprocal
rank (RRF, k = 60). FTS5's `unicode61` tokenizer does not split Chinese, so
the table uses the `trigram` tokenizer: a query matches any passage sharing
its three-character pieces, in any script. Two-character words (common in
Chinese) are too short for trigrams and are matched with a bounded LIKE scan.
Vectors are float32 blobs; a collection's matrix is loaded into numpy once per
change and searched exactly (docs/BENCHMARKS.md measures where an ANN index
would start to pay).

The index is derived data: a damaged file is set aside and a fresh one
started, with a sentence saying the documents must be added again.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.core.docs.chunking import Chunk
from app.core.errors import CamelidError, UsageError

_log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
RRF_K = 60
#: Candidates each of the two searches contributes to the fusion.
CANDIDATES = 50
_NAME = re.compile(r"^[\w][\w .@+-]{0,63}$", re.UNICODE)
_CJK_RUN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]+")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
#: English words too common to search by: in an OR of trigrams they match most passages, which made
#: lexical search 1.6x slower at 100k passages and ranked worse (bench/bench_docs.py). Dropped from
#: the MATCH unless the question has nothing else.
STOP_WORDS = frozenset({
    "the", "and", "for", "are", "but", "not", "you", "all", "any", "can", "had", "her", "was",
    "one", "our", "out", "has", "his", "how", "its", "may", "who", "did", "yes", "get", "got",
    "him", "she", "too", "use", "what", "which", "when", "where", "why", "with", "that", "this",
    "these", "those", "does", "from", "have", "into", "than", "then", "there", "their", "they",
    "them", "were", "will", "would", "should", "could", "about", "also", "been", "being", "each",
    "only", "other", "some", "such", "your", "more", "most", "very", "just", "over", "after",
    "before", "between", "both", "same", "while", "here", "whom", "because", "doing", "done",
    "make", "many", "much", "must", "like", "want", "need", "tell", "give", "show"
})

_SCHEMA = (
    """CREATE TABLE collections(
        id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE COLLATE NOCASE, created REAL NOT NULL,
        embedder TEXT, dims INTEGER, version INTEGER NOT NULL DEFAULT 0, private INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE sources(
        id INTEGER PRIMARY KEY, collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
        path TEXT NOT NULL, UNIQUE(collection_id, path))""",
    """CREATE TABLE documents(
        id INTEGER PRIMARY KEY, collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
        source_id INTEGER REFERENCES sources(id) ON DELETE CASCADE,
        path TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL, mtime REAL NOT NULL, kind TEXT,
        pages INTEGER, chars INTEGER NOT NULL DEFAULT 0, tokens INTEGER NOT NULL DEFAULT 0,
        indexed_at REAL NOT NULL, warnings TEXT NOT NULL DEFAULT '[]', problem TEXT,
        UNIQUE(collection_id, path))""",
    """CREATE TABLE chunks(
        id INTEGER PRIMARY KEY, document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
        ord INTEGER NOT NULL, text TEXT NOT NULL, page INTEGER, page_end INTEGER, heading TEXT,
        start INTEGER NOT NULL, end_ INTEGER NOT NULL, tokens INTEGER NOT NULL, vector BLOB)""",
    "CREATE INDEX chunks_by_document ON chunks(document_id, ord)",
    """CREATE VIRTUAL TABLE chunks_fts USING fts5(text, heading, content='chunks', content_rowid='id',
        tokenize='trigram')""",
    """CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN
        INSERT INTO chunks_fts(rowid, text, heading) VALUES (new.id, new.text, coalesce(new.heading, ''));
    END""",
    """CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN
        INSERT INTO chunks_fts(chunks_fts, rowid, text, heading)
        VALUES ('delete', old.id, old.text, coalesce(old.heading, ''));
    END""",
)


class DocIndexError(CamelidError):
    code = "doc_index"


@dataclass(frozen=True)
class Collection:
    id: int
    name: str
    embedder: str | None
    dims: int | None
    documents: int = 0
    chunks: int = 0
    private: bool = False
    sources: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "embedder": self.embedder, "dims": self.dims, "documents": self.documents,
                "chunks": self.chunks, "sources": list(self.sources)}


@dataclass(frozen=True)
class Document:
    id: int
    path: str
    sha256: str
    size: int
    mtime: float
    kind: str | None
    pages: int | None
    chars: int
    tokens: int
    chunks: int
    warnings: tuple[str, ...] = ()
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "pages": self.pages, "chars": self.chars,
                "tokens": self.tokens, "chunks": self.chunks, "size": self.size, "sha256": self.sha256,
                "warnings": list(self.warnings), "problem": self.problem}


@dataclass
class Passage:
    """One search hit: a passage, where it is, and how it ranked."""

    chunk_id: int
    text: str
    source: str
    page: int | None
    page_end: int | None
    heading: str | None
    start: int
    end: int
    score: float = 0.0
    lexical_rank: int | None = None
    dense_rank: int | None = None
    collection: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "source": self.source, "page": self.page, "page_end": self.page_end,
                "heading": self.heading, "start": self.start, "end": self.end, "score": round(self.score, 6),
                "lexical_rank": self.lexical_rank, "dense_rank": self.dense_rank,
                "collection": self.collection}


def check_name(name: str) -> str:
    name = name.strip()
    if not _NAME.match(name):
        raise UsageError(f"{name!r} cannot be a collection name.",
                         "Use up to 64 letters, digits, spaces, dots, dashes or underscores.")
    return name


def default_path() -> Path:
    from app.paths import data_dir

    return data_dir() / "docs.sqlite3"


class DocIndex:
    """The index file. Thread-safe: one connection, one lock (indexing and searching take turns)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()
        self.notice: str | None = None
        self._lock = threading.RLock()
        self._matrices: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}
        self._db = self._open()

    # -- opening --------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                db = self._connect()
                try:
                    self._migrate(db)
                except BaseException:
                    db.close()
                    raise
            except sqlite3.DatabaseError as exc:
                if not _damaged(exc):
                    raise
                kept = self._set_aside()
                self.notice = (f"The document index was damaged ({exc}); it was moved to {kept.name} and a new "
                               "one started. Add your documents again.")
                db = self._connect()
                self._migrate(db)
            return db
        except (sqlite3.Error, OSError) as exc:
            raise DocIndexError(f"The document index {self.path} could not be opened ({exc}).",
                                "Check that the folder is writable and the disk is not full.") from exc

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        return db

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise DocIndexError(f"The document index {self.path} was written by a newer Camelid.",
                                "Update Camelid, or move that file away to start a new index.")
        if version == SCHEMA_VERSION:
            db.execute("PRAGMA quick_check").fetchall()
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _set_aside(self) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        kept = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        os.replace(self.path, kept)
        for suffix in ("-wal", "-shm"):
            side = Path(f"{self.path}{suffix}")
            if side.exists():
                os.replace(side, Path(f"{kept}{suffix}"))
        return kept

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> DocIndex:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- collections ------------------------------------------------------------------
    def collection(self, name: str, *, create: bool = False, private: bool = False) -> Collection:
        name = check_name(name)
        with self._lock:
            row = self._db.execute("SELECT * FROM collections WHERE name = ?", (name,)).fetchone()
            if row is None:
                if not create:
                    known = ", ".join(c.name for c in self.collections()) or "none yet"
                    raise UsageError(f"There is no document collection called {name!r} (collections: {known}).",
                                     "Add files to it first: camelid docs add PATH --collection NAME.")
                self._db.execute("INSERT INTO collections(name, created, private) VALUES (?, ?, ?)",
                                 (name, time.time(), int(private)))
                row = self._db.execute("SELECT * FROM collections WHERE name = ?", (name,)).fetchone()
            return self._collection(row)

    def _collection(self, row: sqlite3.Row) -> Collection:
        docs, chunks = self._db.execute(
            "SELECT count(DISTINCT d.id), count(c.id) FROM documents d LEFT JOIN chunks c ON c.document_id = d.id "
            "WHERE d.collection_id = ?", (row["id"],)).fetchone()
        sources = tuple(r[0] for r in self._db.execute(
            "SELECT path FROM sources WHERE collection_id = ? ORDER BY path", (row["id"],)))
        return Collection(id=row["id"], name=row["name"], embedder=row["embedder"], dims=row["dims"],
                          documents=docs, chunks=chunks, private=bool(row["private"]), sources=sources)

    def collections(self, *, private: bool = False) -> list[Collection]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM collections WHERE private <= ? ORDER BY name",
                                    (int(private),)).fetchall()
            return [self._collection(r) for r in rows]

    def remove_collection(self, name: str) -> Collection:
        found = self.collection(name)
        with self._lock:
            self._db.execute("DELETE FROM collections WHERE id = ?", (found.id,))
            self._matrices.pop(found.id, None)
        return found

    def set_embedder(self, collection: Collection, embedder: str | None, dims: int | None) -> None:
        with self._lock:
            self._db.execute("UPDATE collections SET embedder = ?, dims = ?, version = version + 1 WHERE id = ?",
                             (embedder, dims, collection.id))

    def add_source(self, collection: Collection, path: str) -> int:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO sources(collection_id, path) VALUES (?, ?)",
                             (collection.id, path))
            return int(self._db.execute("SELECT id FROM sources WHERE collection_id = ? AND path = ?",
                                        (collection.id, path)).fetchone()[0])

    def sources(self, collection: Collection) -> list[tuple[str, int]]:
        """(path, id) of the files and folders added to the collection."""
        with self._lock:
            rows = self._db.execute("SELECT path, id FROM sources WHERE collection_id = ? ORDER BY path",
                                    (collection.id,)).fetchall()
        return [(str(r[0]), int(r[1])) for r in rows]

    def touch(self, document_id: int, mtime: float) -> None:
        """A file whose time changed and whose content did not."""
        with self._lock:
            self._db.execute("UPDATE documents SET mtime = ? WHERE id = ?", (mtime, document_id))

    def remove_source(self, collection: Collection, path: str) -> int:
        """Forget a file or folder and its documents; how many documents went."""
        with self._lock:
            row = self._db.execute("SELECT id FROM sources WHERE collection_id = ? AND path = ?",
                                   (collection.id, path)).fetchone()
            if row is None:
                n = self._db.execute("DELETE FROM documents WHERE collection_id = ? AND path = ?",
                                     (collection.id, path)).rowcount
            else:
                n = self._db.execute("SELECT count(*) FROM documents WHERE source_id = ?", (row[0],)).fetchone()[0]
                self._db.execute("DELETE FROM sources WHERE id = ?", (row[0],))
            self._bump(collection.id)
            return int(n)

    # -- documents ----------------------------------------------------------------------
    def documents(self, collection: Collection) -> list[Document]:
        with self._lock:
            rows = self._db.execute(
                "SELECT d.*, (SELECT count(*) FROM chunks c WHERE c.document_id = d.id) AS n "
                "FROM documents d WHERE d.collection_id = ? ORDER BY d.path", (collection.id,)).fetchall()
        return [Document(id=r["id"], path=r["path"], sha256=r["sha256"], size=r["size"], mtime=r["mtime"],
                         kind=r["kind"], pages=r["pages"], chars=r["chars"], tokens=r["tokens"], chunks=r["n"],
                         warnings=tuple(json.loads(r["warnings"] or "[]")), problem=r["problem"]) for r in rows]

    def document(self, collection: Collection, path: str) -> Document | None:
        return next((d for d in self.documents(collection) if d.path == path), None)

    def put_document(self, collection: Collection, *, path: str, source_id: int | None, sha256: str, size: int,
                     mtime: float, kind: str | None, pages: int | None, chars: int, warnings: Sequence[str],
                     chunks: Sequence[Chunk], vectors: np.ndarray | None, problem: str | None = None) -> None:
        """Replace one document and all its passages in one transaction."""
        if vectors is not None and len(vectors) != len(chunks):
            raise ValueError("one vector per chunk")
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM documents WHERE collection_id = ? AND path = ?", (collection.id, path))
                cur = db.execute(
                    "INSERT INTO documents(collection_id, source_id, path, sha256, size, mtime, kind, pages, chars, "
                    "tokens, indexed_at, warnings, problem) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (collection.id, source_id, path, sha256, size, mtime, kind, pages, chars,
                     sum(c.tokens for c in chunks), time.time(), json.dumps(list(warnings)), problem))
                doc_id = cur.lastrowid
                rows = []
                for i, c in enumerate(chunks):
                    blob = vectors[i].astype("<f4").tobytes() if vectors is not None else None
                    rows.append((doc_id, i, c.text, c.page, c.page_end, c.heading, c.start, c.end, c.tokens, blob))
                db.executemany("INSERT INTO chunks(document_id, ord, text, page, page_end, heading, start, end_, "
                               "tokens, vector) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
                db.execute("UPDATE collections SET version = version + 1 WHERE id = ?", (collection.id,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def drop_documents(self, collection: Collection, paths: Iterable[str]) -> int:
        with self._lock:
            n = 0
            for path in paths:
                n += self._db.execute("DELETE FROM documents WHERE collection_id = ? AND path = ?",
                                      (collection.id, path)).rowcount
            self._bump(collection.id)
            return n

    def _bump(self, collection_id: int) -> None:
        self._db.execute("UPDATE collections SET version = version + 1 WHERE id = ?", (collection_id,))

    def chunk(self, chunk_id: int) -> Passage | None:
        with self._lock:
            row = self._db.execute(_PASSAGE_SQL + " WHERE c.id = ?", (chunk_id,)).fetchone()
        return _passage(row) if row is not None else None

    def chunks_of(self, collection: Collection, path: str) -> list[Passage]:
        with self._lock:
            rows = self._db.execute(_PASSAGE_SQL + " WHERE d.collection_id = ? AND d.path = ? ORDER BY c.ord",
                                    (collection.id, path)).fetchall()
        return [_passage(r) for r in rows]

    # -- search ---------------------------------------------------------------------------
    def lexical(self, collection: Collection, query: str, *, limit: int = CANDIDATES,
                keep_stop_words: bool = False) -> list[tuple[int, float]]:
        """(chunk id, BM25 score) best first; trigram MATCH, plus a LIKE scan for 2-character CJK words.

        `keep_stop_words` searches every word (how it was before stop words were dropped; benchmarks)."""
        terms = query_terms(query, keep_stop_words=keep_stop_words)
        hits: dict[int, float] = {}
        with self._lock:
            if terms.match:
                rows = self._db.execute(
                    "SELECT c.id, bm25(chunks_fts) AS score FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid "
                    "JOIN documents d ON d.id = c.document_id WHERE chunks_fts MATCH ? AND d.collection_id = ? "
                    "ORDER BY score LIMIT ?", (terms.match, collection.id, limit)).fetchall()
                hits.update({int(r[0]): -float(r[1]) for r in rows})
            for short in terms.short[:8]:
                rows = self._db.execute(
                    "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id "
                    "WHERE d.collection_id = ? AND instr(c.text, ?) > 0 LIMIT ?",
                    (collection.id, short, limit)).fetchall()
                for r in rows:
                    hits[int(r[0])] = hits.get(int(r[0]), 0.0) + 1.0
        return sorted(hits.items(), key=lambda kv: -kv[1])[:limit]

    def dense(self, collection: Collection, vector: np.ndarray, *, limit: int = CANDIDATES) -> list[tuple[int, float]]:
        """(chunk id, cosine) best first, exact over the collection's vectors."""
        ids, matrix = self._matrix(collection)
        if not len(ids):
            return []
        if matrix.shape[1] != vector.shape[0]:
            raise UsageError(f"The collection {collection.name!r} was indexed with {matrix.shape[1]}-dimension "
                             f"vectors, but the embedding model gives {vector.shape[0]}.",
                             f"Search it with {collection.embedder}, or add its files again with this model.")
        scores = matrix @ vector.astype(np.float32)
        k = min(limit, len(ids))
        best = np.argpartition(-scores, k - 1)[:k]
        best = best[np.argsort(-scores[best])]
        return [(int(ids[i]), float(scores[i])) for i in best]

    def _matrix(self, collection: Collection) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            version = int(self._db.execute("SELECT version FROM collections WHERE id = ?",
                                           (collection.id,)).fetchone()[0])
            cached = self._matrices.get(collection.id)
            if cached is not None and cached[0] == version:
                return cached[1], cached[2]
            rows = self._db.execute(
                "SELECT c.id, c.vector FROM chunks c JOIN documents d ON d.id = c.document_id "
                "WHERE d.collection_id = ? AND c.vector IS NOT NULL ORDER BY c.id", (collection.id,)).fetchall()
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            dims = len(rows[0][1]) // 4 if rows else 0
            matrix = np.empty((len(rows), dims), dtype=np.float32)
            for i, r in enumerate(rows):
                matrix[i] = np.frombuffer(r[1], dtype="<f4")
            self._matrices[collection.id] = (version, ids, matrix)
            return ids, matrix

    def search(self, collection: Collection, query: str, *, vector: np.ndarray | None = None, top: int = 5,
               mode: str = "hybrid") -> list[Passage]:
        """The `top` passages for `query`: lexical, dense (needs `vector`), or both fused by RRF."""
        if mode not in ("hybrid", "lexical", "dense"):
            raise UsageError(f"Unknown search mode {mode!r}.", "Use hybrid, lexical or dense.")
        lexical = self.lexical(collection, query) if mode != "dense" else []
        dense = self.dense(collection, vector) if vector is not None and mode != "lexical" else []
        scores: dict[int, float] = {}
        ranks: dict[int, dict[str, int]] = {}
        for name, hits in (("lexical", lexical), ("dense", dense)):
            for rank, (chunk_id, _score) in enumerate(hits, start=1):
                scores[chunk_id] = scores.get(chunk_id, 0.0) + 1.0 / (RRF_K + rank)
                ranks.setdefault(chunk_id, {})[name] = rank
        best = sorted(scores, key=lambda c: -scores[c])[:top]
        out = []
        with self._lock:
            for chunk_id in best:
                row = self._db.execute(_PASSAGE_SQL + " WHERE c.id = ?", (chunk_id,)).fetchone()
                if row is None:
                    continue
                p = _passage(row)
                p.score = scores[chunk_id]
                p.lexical_rank = ranks[chunk_id].get("lexical")
                p.dense_rank = ranks[chunk_id].get("dense")
                out.append(p)
        return out


_PASSAGE_SQL = ("SELECT c.id, c.text, c.page, c.page_end, c.heading, c.start, c.end_, d.path, k.name AS collection "
                "FROM chunks c JOIN documents d ON d.id = c.document_id JOIN collections k ON k.id = d.collection_id")


def _passage(row: sqlite3.Row) -> Passage:
    return Passage(chunk_id=row["id"], text=row["text"], source=row["path"], page=row["page"],
                   page_end=row["page_end"], heading=row["heading"], start=row["start"], end=row["end_"],
                   collection=row["collection"])


@dataclass(frozen=True)
class QueryTerms:
    #: An FTS5 MATCH expression over trigram-sized terms ("" when none).
    match: str
    #: Terms too short for trigrams (two-character CJK words), matched by substring.
    short: list[str]


def query_terms(query: str, *, keep_stop_words: bool = False) -> QueryTerms:
    """A question as FTS5 terms: words of 3+ characters less stop words, and each CJK run's trigrams (or
    itself if 2 long)."""
    terms: list[str] = []
    short: list[str] = []
    for run in _CJK_RUN.findall(query):
        if len(run) >= 3:
            terms += [run[i:i + 3] for i in range(len(run) - 2)]
        elif len(run) == 2:
            short.append(run)
    rest = _CJK_RUN.sub(" ", query)
    words = [w for w in _WORD.findall(rest) if len(w) >= 3]
    kept = words if keep_stop_words else [w for w in words if w.lower() not in STOP_WORDS]
    terms += kept or words
    unique = list(dict.fromkeys(t.lower() for t in terms))[:64]
    match = " OR ".join('"' + t.replace('"', '""') + '"' for t in unique)
    return QueryTerms(match=match, short=short)


def _damaged(exc: BaseException) -> bool:
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in str(exc) \
        or "not a database" in str(exc)
