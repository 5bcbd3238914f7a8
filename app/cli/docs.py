"""`camelid docs`: collections of documents to search and ask, offline, with citations.

  camelid docs add PATH... [--collection NAME] [--embedder MODEL]
  camelid docs list [NAME]            camelid docs remove NAME [PATH...]
  camelid docs update [NAME]          re-scan: changed files re-indexed, deleted ones dropped
  camelid docs search QUERY [--top K] [--json]
  camelid docs ask QUESTION [--model M] [--json]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

from app.cli.common import add_json_flag, at_least, print_json
from app.core.errors import UsageError

DEFAULT_COLLECTION = "default"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "docs", help="index documents and ask them questions (offline, with citations)",
        description="Index PDF, Word, Markdown, text, HTML and source files into collections, then search "
                    "them or ask questions answered from them with citations. Everything stays on this "
                    "machine.")
    sub = parser.add_subparsers(dest="docs_command", metavar="ACTION", required=True)

    add = sub.add_parser("add", help="add files or folders to a collection (re-indexes what changed)")
    add.add_argument("paths", nargs="+", metavar="PATH")
    _collection_flag(add)
    _embedder_flag(add)
    add_json_flag(add)
    add.set_defaults(run=run_add)

    listing = sub.add_parser("list", help="collections, or the documents of one")
    listing.add_argument("name", nargs="?", metavar="NAME")
    add_json_flag(listing)
    listing.set_defaults(run=run_list)

    remove = sub.add_parser("remove", help="remove a collection, or some of its files and folders")
    remove.add_argument("name", metavar="NAME")
    remove.add_argument("paths", nargs="*", metavar="PATH")
    add_json_flag(remove)
    remove.set_defaults(run=run_remove)

    update = sub.add_parser("update", help="re-scan a collection's files and folders (all collections by default)")
    update.add_argument("name", nargs="?", metavar="NAME")
    _embedder_flag(update)
    add_json_flag(update)
    update.set_defaults(run=run_update)

    search = sub.add_parser("search", help="the passages that best match a query (no language model)")
    search.add_argument("query", metavar="QUERY")
    _collection_flag(search)
    search.add_argument("--top", type=at_least(1), default=5, metavar="K", help="passages to show (default 5)")
    search.add_argument("--mode", choices=("hybrid", "lexical", "dense"), default="hybrid",
                        help="words (BM25), meaning (embeddings), or both fused (default)")
    _embedder_flag(search)
    add_json_flag(search)
    search.set_defaults(run=run_search)

    ask = sub.add_parser("ask", help="answer a question from a collection, citing the passages used")
    ask.add_argument("question", metavar="QUESTION")
    _collection_flag(ask)
    ask.add_argument("--model", metavar="M", default="starter",
                     help="the chat model (a library name, .gguf path or `starter`)")
    ask.add_argument("--max-tokens", type=at_least(1), default=512, metavar="N", help="longest answer")
    ask.add_argument("--seed", type=int, metavar="S")
    _embedder_flag(ask)
    add_json_flag(ask)
    ask.set_defaults(run=run_ask)


def _collection_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--collection", "-c", default=DEFAULT_COLLECTION, metavar="NAME",
                        help=f"collection name (default {DEFAULT_COLLECTION!r})")


def _embedder_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--embedder", metavar="MODEL",
                        help="embedding model: a .gguf path or library name (default: the embedding_model "
                             "setting; `none` searches by words only)")


# -- the embedding model --------------------------------------------------------------
def embedding_path(choice: str | None, *, collection_embedder: str | None = None,
                   quiet: bool = False) -> tuple[Path, str] | None:
    """(file, identity) of the embedding model to use, or None for words-only search (said once)."""
    from app.core.settings import Settings

    name = choice if choice is not None else (collection_embedder or Settings()["embedding_model"] or None)
    if not name or name.lower() == "none":
        if choice is None and not quiet:
            print("No embedding model is set, so documents are searched by words only. Choose one with "
                  "`camelid settings embedding_model NAME` (e.g. after `camelid download "
                  "Qwen/Qwen3-Embedding-0.6B-GGUF:Q8_0`).", file=sys.stderr)
        return None
    from app.cli.chat import looks_like_path, resolve_model

    path = resolve_model(name)
    # The collection remembers the model by library name, or by full path for a file outside the library.
    ident = str(path.resolve()) if looks_like_path(name) or Path(name).expanduser().exists() else name
    return path, ident


def open_embedding(found: tuple[Path, str] | None) -> Any:
    """Load the embedding model (on this thread) as an `indexer.EmbedderModel`; None stays None."""
    if found is None:
        return None
    from app.core.docs.indexer import EmbedderModel
    from app.core.embed import Embedder

    embedder = Embedder()
    embedder.load(found[0])
    return EmbedderModel(embedder, found[1])


def load_embedding(choice: str | None, *, collection_embedder: str | None = None, quiet: bool = False) -> Any:
    """The embedding model to use (an `indexer.EmbedderModel`), or None for words-only search."""
    return open_embedding(embedding_path(choice, collection_embedder=collection_embedder, quiet=quiet))


def _index() -> Any:
    from app.core.docs.store import DocIndex

    index = DocIndex()
    if index.notice:
        print(index.notice, file=sys.stderr)
    return index


class IndexBar:
    """Files, passages and time left on one stderr line while indexing."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.last = 0.0
        self.shown = False

    def __call__(self, p: Any) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last < 0.2 and p.files_done < p.files_total):
            return
        self.last = now
        eta = f"{int(p.eta_s) // 60:02d}:{int(p.eta_s) % 60:02d}" if p.eta_s is not None else "--:--"
        line = f"\r{p.files_done}/{p.files_total} files, {p.chunks} passages, ETA {eta}  {p.current[:40]}"
        sys.stderr.write(line.ljust(90))
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _run_indexing(fn: Any, *, json_out: bool) -> Any:
    """Run an indexing call; Ctrl-C cancels it between files (what is stored so far stays)."""
    cancel = threading.Event()
    bar = IndexBar(enabled=not json_out and sys.stderr.isatty())
    try:
        return fn(progress=bar, cancel=cancel)
    except KeyboardInterrupt:
        cancel.set()
        raise
    finally:
        bar.close()


def _print_report(report: Any, *, json_out: bool) -> None:
    if json_out:
        print_json(report.to_dict())
        return
    parts = [f"{len(report.added)} added", f"{len(report.updated)} updated", f"{len(report.unchanged)} unchanged"]
    if report.removed:
        parts.append(f"{len(report.removed)} removed")
    print(f"{report.collection}: {', '.join(parts)}; {report.chunks:,} passages in {report.seconds:.1f} s"
          + (" (cancelled)" if report.cancelled else "") + ".")
    for path, problem in report.failed:
        print(f"  skipped {path}: {problem}")
    for path, warning in report.warnings:
        print(f"  note {Path(path).name}: {warning}")
    if report.lexical_only:
        print("  Indexed for word search only (no embedding model).")


# -- commands ---------------------------------------------------------------------------
def run_add(args: argparse.Namespace) -> int:
    from app.core.docs.indexer import add_paths

    missing = next((p for p in args.paths if not Path(p).expanduser().exists()), None)
    if missing is not None:  # before loading any model
        raise UsageError(f"There is no file or folder at {Path(missing).expanduser()}.", "Check the path.")
    with _index() as index:
        existing = next((c for c in index.collections() if c.name.lower() == args.collection.lower()), None)
        embedding = load_embedding(args.embedder, collection_embedder=existing.embedder if existing else None,
                                   quiet=args.json)
        report = _run_indexing(lambda progress, cancel: add_paths(
            index, args.collection, args.paths, embedding=embedding, progress=progress, cancel=cancel),
            json_out=args.json)
    _print_report(report, json_out=args.json)
    return 1 if report.failed and not (report.added or report.updated or report.unchanged) else 0


def run_update(args: argparse.Namespace) -> int:
    from app.core.docs.indexer import refresh

    with _index() as index:
        names = [args.name] if args.name else [c.name for c in index.collections()]
        reports = []
        for name in names:
            collection = index.collection(name)
            embedding = load_embedding(args.embedder, collection_embedder=collection.embedder, quiet=True)
            reports.append(_run_indexing(lambda progress, cancel, name=name, embedding=embedding: refresh(
                index, name, embedding=embedding, progress=progress, cancel=cancel), json_out=args.json))
    if args.json:
        print_json({"collections": [r.to_dict() for r in reports]})
    else:
        for report in reports:
            _print_report(report, json_out=False)
        if not reports:
            print("There are no collections yet: add documents with `camelid docs add PATH`.")
    return 0


def run_list(args: argparse.Namespace) -> int:
    with _index() as index:
        if args.name:
            collection = index.collection(args.name)
            docs = index.documents(collection)
            if args.json:
                print_json({"collection": collection.to_dict(), "documents": [d.to_dict() for d in docs]})
                return 0
            print(f"{collection.name}: {len(docs)} documents, {collection.chunks:,} passages, "
                  f"{'embedder ' + collection.embedder if collection.embedder else 'words only'}")
            for d in docs:
                pages = f"{d.pages} pages, " if d.pages else ""
                state = f"  NOT INDEXED: {d.problem}" if d.problem else f"  {pages}{d.chunks} passages"
                print(f"  {d.path}{state}")
            return 0
        collections = index.collections()
    if args.json:
        print_json({"collections": [c.to_dict() for c in collections]})
        return 0
    if not collections:
        print("There are no collections yet: add documents with `camelid docs add PATH`.")
        return 0
    for c in collections:
        print(f"{c.name}: {c.documents} documents, {c.chunks:,} passages "
              f"({c.embedder or 'words only'})")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    with _index() as index:
        collection = index.collection(args.name)
        if not args.paths:
            index.remove_collection(args.name)
            message = f"Removed the collection {collection.name} ({collection.documents} documents)."
            removed = collection.documents
        else:
            removed = sum(index.remove_source(collection, str(Path(p).expanduser().resolve())) for p in args.paths)
            message = f"Removed {removed} documents from {collection.name}."
    if args.json:
        print_json({"collection": collection.name, "removed": removed})
    else:
        print(message + " The files themselves are untouched.")
    return 0


def run_search(args: argparse.Namespace) -> int:
    import numpy as np

    with _index() as index:
        collection = index.collection(args.collection)
        embedding = None
        if args.mode != "lexical":
            embedding = load_embedding(args.embedder, collection_embedder=collection.embedder, quiet=True)
        if args.mode == "dense" and embedding is None:
            raise UsageError("Search by meaning needs an embedding model.",
                             "Pass --embedder MODEL, or search with --mode lexical.")
        vector = embedding.embed_query(args.query) if embedding is not None else None
        passages = index.search(collection, args.query, vector=np.asarray(vector) if vector is not None else None,
                                top=args.top, mode=args.mode if embedding is not None else "lexical")
    if args.json:
        print_json({"query": args.query, "mode": args.mode if embedding is not None else "lexical",
                    "passages": [p.to_dict() for p in passages]})
        return 0
    if not passages:
        print("No passage matches.")
    for i, p in enumerate(passages, start=1):
        where = Path(p.source).name + (f", page {p.page}" if p.page else "") + (f" — {p.heading}" if p.heading
                                                                                 else "")
        text = " ".join(p.text.split())
        print(f"[{i}] {where}  (score {p.score:.4f})\n    {text[:400]}{'…' if len(text) > 400 else ''}")
    return 0


def run_ask(args: argparse.Namespace) -> int:
    from app.cli.chat import resolve_model
    from app.core.chat import Engine, SamplingSettings
    from app.core.docs.answer import (
        OVERHEAD_TOKENS,
        cited,
        gather,
        longer_context_note,
        prompt_messages,
    )
    from app.core.fit import LoadChoices

    with _index() as index:
        collection = index.collection(args.collection)
        found = embedding_path(args.embedder, collection_embedder=collection.embedder, quiet=True)
        chat_path = resolve_model(args.model)
        choices = LoadChoices.current()
        engine = Engine()
        if found is not None:
            # Both models must fit together: plan the chat model with the embedding model's memory taken.
            from app.core.chat.engine import LoadParams
            from app.core.errors import WontFitError
            from app.core.fit import plan_beside, read_gguf

            plan, embed_plan = plan_beside(read_gguf(chat_path), read_gguf(found[0]), None, choices,
                                           improvements=False)
            if not plan.fits:
                from app.core.units import human_bytes

                raise WontFitError(
                    f"{chat_path.name} and the embedding model do not fit together here: they need about "
                    f"{human_bytes(plan.total_bytes + embed_plan.total_bytes)}.",
                    "Choose a smaller chat model, or a shorter context (`camelid plan MODEL --embedder E`).")
            embedding = open_embedding(found)
            engine.load(chat_path, LoadParams.from_plan(plan, n_threads=choices.threads or None), plan=plan)
        else:
            embedding = None
            engine.load(chat_path, choices=choices)
        try:
            count = engine.count_text
            budget = engine.n_ctx - args.max_tokens - OVERHEAD_TOKENS - count(args.question)
            vector = embedding.embed_query(args.question) if embedding is not None else None
            context = gather(index, [collection], args.question, count_tokens=count, budget=budget,
                             query_vector=vector, longer_context=longer_context_note(engine))
            sampling = SamplingSettings(temperature=0.2, top_p=0.9, top_k=20, min_p=0.1, repeat_penalty=1.05,
                                        max_tokens=args.max_tokens, seed=args.seed)
            streaming = not args.json and sys.stdout.isatty()
            reply = engine.chat(prompt_messages(args.question, context), sampling,
                                on_text=(lambda t: print(t, end="", flush=True)) if streaming else None)
        finally:
            engine.unload()
    citations = cited(reply.text, context)
    if args.json:
        print_json({"answer": reply.text, "mode": context.mode,
                    "citations": [c.to_dict() for c in citations],
                    "passages": [c.to_dict() for c in context.passages],
                    "notices": context.notices + reply.notices, "stats": reply.stats.to_dict()})
        return 0
    if not streaming:
        print(reply.text, end="")
    print()
    for notice in context.notices:
        print(f"({notice})")
    shown = citations or context.passages
    if shown:
        print("\nSources used:" if citations else "\nPassages given (the answer cites none):")
        for c in shown:
            print(f"  [{c.n}] {c.label}")
    return 0
