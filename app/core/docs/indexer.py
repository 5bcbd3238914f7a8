"""Adding files and folders to a collection: read, cut into passages, embed, store; and keeping it current.

A file is re-read only when its content hash changed (a file that was only
touched keeps its passages); a file that is gone from a folder is dropped;
a file that cannot be read (a damaged PDF, a 0-byte file, a scan without a
text layer) gets its sentence in the report and in `docs list`, and the
rest of the folder goes on. Progress (files, passages, ETA) is reported
after each file and each batch of embeddings; `cancel` stops between them,
and what was stored so far stays stored.

Without an embedding model the passages are indexed for lexical search only,
and the report says so.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from app.core.docs.chunking import DEFAULT_OVERLAP, DEFAULT_TOKENS, Piece, chunk, estimate_tokens
from app.core.docs.store import Collection, DocIndex
from app.core.errors import CamelidError, UsageError

#: Most files one add may walk (a home folder by mistake is a sentence, not an hour).
MAX_FILES = 50_000
#: Passages per embedding call.
BATCH = 16
#: Folders never walked into.
SKIP_DIRS = frozenset({".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv", ".tox",
                       ".mypy_cache", ".pytest_cache", ".idea", ".cache"})


class Embedding(Protocol):
    """What indexing and search need of an embedding model (`EmbedderModel` wraps Camelid's Embedder)."""

    name: str
    #: The longest passage the model reads whole, in its own tokens.
    max_tokens: int

    def count_tokens(self, text: str) -> int: ...

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...


@dataclass(frozen=True)
class Prefixes:
    """Text some embedding models expect before a query or a passage (from their model cards)."""

    query: str = ""
    passage: str = ""


def prefixes_for(name: str) -> Prefixes:
    """E5 wants "query: "/"passage: ", nomic "search_query: "/"search_document: ", Qwen3-Embedding an
    instruction before the query; MiniLM and bge-m3 none."""
    low = name.lower()
    if "e5" in low and "qwen" not in low:
        return Prefixes("query: ", "passage: ")
    if "nomic-embed" in low:
        return Prefixes("search_query: ", "search_document: ")
    if "qwen3-embedding" in low or "qwen3_embedding" in low:
        return Prefixes("Instruct: Given a question, retrieve passages that answer it\nQuery:", "")
    return Prefixes()


class EmbedderModel:
    """`Embedding` over Camelid's Embedder (which must be called from the thread that loaded it)."""

    def __init__(self, embedder: Any, name: str) -> None:
        self.embedder = embedder
        self.name = name
        self.prefixes = prefixes_for(name)
        n_ctx = int(embedder.report.n_ctx) if embedder.report is not None else 512
        margin = embedder.count_tokens(self.prefixes.passage) + 8 if self.prefixes.passage else 8
        self.max_tokens = max(16, n_ctx - margin)
        self.dims = int(embedder.report.dimensions) if embedder.report is not None else 0

    def count_tokens(self, text: str) -> int:
        return int(self.embedder.count_tokens(text))

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        result = self.embedder.embed([self.prefixes.passage + t for t in texts], normalize=True, truncate=True)
        return np.asarray(result.vectors, dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        result = self.embedder.embed([self.prefixes.query + text], normalize=True, truncate=True)
        return np.asarray(result.vectors[0], dtype=np.float32)


@dataclass
class Progress:
    files_done: int
    files_total: int
    chunks: int
    current: str
    eta_s: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"files_done": self.files_done, "files_total": self.files_total, "chunks": self.chunks,
                "current": self.current, "eta_s": self.eta_s}


@dataclass
class IndexReport:
    collection: str
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    #: (path, sentence) for files that could not be read.
    failed: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    chunks: int = 0
    pages: int = 0
    seconds: float = 0.0
    cancelled: bool = False
    lexical_only: bool = False
    embedder: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"collection": self.collection, "added": self.added, "updated": self.updated,
                "unchanged": len(self.unchanged), "removed": self.removed,
                "failed": [{"path": p, "problem": s} for p, s in self.failed],
                "warnings": [{"path": p, "warning": s} for p, s in self.warnings],
                "chunks": self.chunks, "pages": self.pages, "seconds": round(self.seconds, 3),
                "cancelled": self.cancelled, "lexical_only": self.lexical_only, "embedder": self.embedder}


OnProgress = Callable[[Progress], None]


def iter_files(root: Path, *, limit: int = MAX_FILES) -> Iterator[Path]:
    """Readable documents under `root` (or `root` itself), skipping hidden and tool folders, no symlink loops."""
    from app.core.docs.extract import kind_of

    if root.is_file():
        yield root
        return
    seen = 0
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(files):
            path = Path(folder) / name
            if name.startswith(".") or kind_of(path) is None or not path.is_file():
                continue
            seen += 1
            if seen > limit:
                raise UsageError(f"{root} holds more than {limit:,} documents.",
                                 "Add a smaller folder, or its subfolders one by one.")
            yield path


def file_hash(path: Path, *, max_bytes: int, cancel: threading.Event | None = None) -> str:
    h = hashlib.sha256()
    read = 0
    with path.open("rb") as f:
        while chunk_ := f.read(1 << 20):
            read += len(chunk_)
            if read > max_bytes:
                break
            if cancel is not None and cancel.is_set():
                raise _Cancelled
            h.update(chunk_)
    return h.hexdigest()


class _Cancelled(Exception):
    pass


def add_paths(index: DocIndex, collection_name: str, paths: Sequence[Path | str], *,
              embedding: Embedding | None = None, progress: OnProgress | None = None,
              cancel: threading.Event | None = None, private: bool = False,
              passage_tokens: int = DEFAULT_TOKENS, overlap: int = DEFAULT_OVERLAP) -> IndexReport:
    """Add files and folders to the collection (created if new) and index what is new or changed."""
    roots = []
    for p in paths:
        path = Path(p).expanduser()
        if not path.exists():
            raise UsageError(f"There is no file or folder at {path}.", "Check the path.")
        roots.append(path.resolve())
    collection = index.collection(collection_name, create=True, private=private)
    _check_embedder(index, collection, embedding)
    sources = [(root, index.add_source(collection, str(root))) for root in roots]
    return _index(index, collection, sources, embedding, progress, cancel, passage_tokens, overlap)


def refresh(index: DocIndex, collection_name: str, *, embedding: Embedding | None = None,
            progress: OnProgress | None = None, cancel: threading.Event | None = None) -> IndexReport:
    """Re-scan every file and folder of the collection: changed files re-indexed, deleted ones dropped."""
    collection = index.collection(collection_name)
    _check_embedder(index, collection, embedding)
    sources = [(Path(path), source_id) for path, source_id in index.sources(collection)]
    return _index(index, collection, sources, embedding, progress, cancel, DEFAULT_TOKENS, DEFAULT_OVERLAP)


def _check_embedder(index: DocIndex, collection: Collection, embedding: Embedding | None) -> None:
    if embedding is None:
        return
    if collection.embedder and collection.embedder != embedding.name and collection.chunks:
        raise UsageError(f"The collection {collection.name!r} was indexed with {collection.embedder}; its "
                         f"passages cannot be mixed with {embedding.name}'s.",
                         f"Use --embedder {collection.embedder}, or remove the collection and add its files "
                         "again with the new model.")


def _index(index: DocIndex, collection: Collection, sources: list[tuple[Path, int]], embedding: Embedding | None,
           progress: OnProgress | None, cancel: threading.Event | None, passage_tokens: int,
           overlap: int) -> IndexReport:
    from app.core.docs.extract import DocumentError, Limits, extract

    started = time.perf_counter()
    report = IndexReport(collection=collection.name, lexical_only=embedding is None,
                         embedder=embedding.name if embedding is not None else None)
    limits = Limits()
    files: list[tuple[Path, int]] = []
    for root, source_id in sources:
        if not root.exists():
            gone = [d.path for d in index.documents(collection) if _under(Path(d.path), root)]
            index.remove_source(collection, str(root))
            report.removed += gone
            continue
        found = list(iter_files(root))
        files += [(f, source_id) for f in found]
        # Files of this folder that the index has and the folder no longer does.
        present = {str(f) for f in found}
        gone = [d.path for d in index.documents(collection) if _under(Path(d.path), root) and d.path not in present]
        if gone:
            index.drop_documents(collection, gone)
            report.removed += gone
    if embedding is not None and not collection.embedder:
        index.set_embedder(collection, embedding.name, getattr(embedding, "dims", None))
    size = min(passage_tokens, embedding.max_tokens) if embedding is not None else passage_tokens
    count = embedding.count_tokens if embedding is not None else estimate_tokens
    known = {d.path: d for d in index.documents(collection)}
    done_chunks, embed_seconds = 0, 0.0
    todo_estimate = max(1, len(files))

    def tell(i: int, current: str) -> None:
        if progress is None:
            return
        elapsed = time.perf_counter() - started
        eta = elapsed / i * (todo_estimate - i) if i else None
        progress(Progress(files_done=i, files_total=len(files), chunks=done_chunks, current=current, eta_s=eta))

    try:
        for i, (path, source_id) in enumerate(files):
            if cancel is not None and cancel.is_set():
                raise _Cancelled
            tell(i, path.name)
            key = str(path)
            try:
                stat = path.stat()
            except OSError as exc:
                report.failed.append((key, f"{path.name} could not be read ({exc.strerror or exc})."))
                continue
            old = known.get(key)
            if old is not None and old.size == stat.st_size and old.mtime == stat.st_mtime and not old.problem:
                report.unchanged.append(key)
                continue
            try:
                digest = file_hash(path, max_bytes=limits.max_file_bytes, cancel=cancel)
            except OSError as exc:
                report.failed.append((key, f"{path.name} could not be read ({exc.strerror or exc})."))
                continue
            if old is not None and old.sha256 == digest and not old.problem:
                # Touched, not changed: keep its passages, remember the new time.
                index.touch(old.id, stat.st_mtime)
                report.unchanged.append(key)
                continue
            try:
                doc = extract(path, cancel=cancel, limits=limits)
            except DocumentError as exc:
                if cancel is not None and cancel.is_set():
                    raise _Cancelled from exc
                report.failed.append((key, str(exc)))
                index.put_document(collection, path=key, source_id=source_id, sha256=digest, size=stat.st_size,
                                   mtime=stat.st_mtime, kind=None, pages=None, chars=0, warnings=[], chunks=[],
                                   vectors=None, problem=str(exc))
                continue
            pieces = [Piece(u.text, u.page, u.heading, u.start) for u in doc.units]
            chunks = chunk(pieces, count=count, size=size, overlap=overlap)
            vectors = None
            if embedding is not None and chunks:
                parts = []
                t0 = time.perf_counter()
                for b in range(0, len(chunks), BATCH):
                    if cancel is not None and cancel.is_set():
                        raise _Cancelled
                    parts.append(embedding.embed_passages([c.text for c in chunks[b:b + BATCH]]))
                    done_chunks += len(chunks[b:b + BATCH])
                    tell(i, f"{path.name} ({min(b + BATCH, len(chunks))}/{len(chunks)} passages)")
                embed_seconds += time.perf_counter() - t0
                vectors = np.concatenate(parts) if parts else None
            else:
                done_chunks += len(chunks)
            index.put_document(collection, path=key, source_id=source_id, sha256=digest, size=stat.st_size,
                               mtime=stat.st_mtime, kind=doc.kind, pages=doc.pages, chars=doc.chars,
                               warnings=doc.warnings, chunks=chunks, vectors=vectors)
            (report.updated if old is not None else report.added).append(key)
            report.warnings += [(key, w) for w in doc.warnings]
            report.chunks += len(chunks)
            report.pages += doc.pages or 0
        tell(len(files), "")
    except _Cancelled:
        report.cancelled = True
    report.seconds = time.perf_counter() - started
    return report


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def ensure_error(exc: BaseException) -> CamelidError:
    """Any failure during indexing as a sentence (the CLI and the GUI show it)."""
    if isinstance(exc, CamelidError):
        return exc
    return CamelidError(f"Indexing stopped: {exc}.", "Try again; Camelid's log has the details.")
