"""Chat with your documents: indexing throughput, search latency at 1k-100k passages, retrieval quality.

Corpus: real documents nobody here wrote, the long descriptions (the body after the headers of
`*.dist-info/METADATA`) of the packages in `CORPUS_PACKAGES` as installed in the venv, saved as .md
(Markdown) or .rst (reStructuredText, read as text); `numpy/ma/README.rst` and
`pip/_vendor/README.rst`; and one PDF that fpdf2 writes from psutil's description (DejaVu Sans, one
multi_cell per paragraph, reST headings set larger), so the PDF path (PDFium, paragraphs, pages) is in it.
The files are copied into a temporary folder and indexed with Camelid's `add_paths` and the embedding
model all-MiniLM-L6-v2 (F16 GGUF, 384 dimensions), on the CPU.

1. Indexing, `ROUNDS` rounds (medians), each round starting with the next of the three:
   - Camelid end to end: `add_paths` into a fresh index (extract + chunk + embed + store), its
     embedding part timed inside `EmbedderModel.embed_passages` (Camelid's `Embedder.embed`, batches
     of 16 passages as the indexer sends them), its extract + chunk and store parts timed by calling
     `extract`, `chunk` (the model's token counter) and `put_document` the same way again;
   - bare llama-cpp-python, `Llama(path, embedding=True, n_ctx=512, n_batch=512, n_ubatch=512)`
     `.embed(texts, normalize=True)` on exactly the passage texts the index holds (read back from it),
     once with llama-cpp-python's default threads, once with the threads Camelid gives its Embedder.
   The ratio is bare embedding time / Camelid embedding time of the same list (>= 1 means Camelid
   is faster; target >= 0.9). CPU seconds per wall second of each run are reported: the machine is
   shared, and a 2-thread run is only fast when it gets both cores.
2. Search latency: synthetic collections grown to 1k, 10k and 100k passages in one index file (text:
   5-9 sentences drawn at random from the corpus, about a real passage's length; vectors: random unit
   vectors of 384 dims), inserted with `put_document` in documents of 1,000 passages. Median and p95 of
   `search(collection, question, vector=random unit vector, top=5)` per mode over `QUERIES` queries
   (`QUERIES_LARGEST` at 100k) cycling through the question file, modes interleaved; also
   `DocIndex.lexical(keep_stop_words=True)`, every word of the question (how Camelid searched before
   it dropped English stop words: what dropping them saves); the one-off load of the vector matrix (the first dense search after the index is opened,
   less a warm one), the matrix's size and the RSS growth across the load.
3. Retrieval quality: the questions in `bench/data/docs_questions.json`, each with the file that
   answers it and a short phrase from the answering passage (checked first to be in a passage of that
   file). A hit at rank r: the r-th passage of `search(top=10)` comes from that file and contains the
   phrase (whitespace collapsed on both sides, since PDF extraction reflows lines). Recall@1, recall@5
   and MRR@10 per mode and per kind of question (keyword, paraphrase, plain), and for lexical search
   with the stop words kept.

Run: .venv/bin/python bench/bench_docs.py [EMBEDDING_MODEL.gguf]   (writes its section of docs/BENCHMARKS.md)
"""

from __future__ import annotations

import email
import gc
import json
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bench.report import machine_line, table, update_section

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / ".cache" / "models" / "all-MiniLM-L6-v2-F16.gguf"
QUESTIONS = Path(__file__).resolve().parent / "data" / "docs_questions.json"
SITE = Path(np.__file__).resolve().parent.parent
#: Distributions whose long description is a corpus file (as .md or .rst, by its content type).
CORPUS_PACKAGES = ("llama_cpp_python", "fastapi", "httpx", "uvicorn", "starlette", "tokenizers",
                   "huggingface_hub")
#: Other files of the venv taken as they are: (path under site-packages, name in the corpus).
CORPUS_FILES = (("numpy/ma/README.rst", "numpy-ma-README.rst"), ("pip/_vendor/README.rst", "pip-vendor-README.rst"))
#: The distribution whose description becomes the PDF (and is not in the corpus as text).
PDF_PACKAGE = "psutil"
ROUNDS = 3
SIZES = (1_000, 10_000, 100_000)
QUERIES = 50
#: Queries at the largest size (lexical search there takes long).
QUERIES_LARGEST = 20
PER_DOCUMENT = 1_000
DIMS = 384
TOP_K = 10


# -- corpus -------------------------------------------------------------------------------
def dist_info(name: str) -> Path:
    found = sorted(SITE.glob(f"{name}-*.dist-info"))
    if len(found) != 1:
        raise SystemExit(f"expected one {name}-*.dist-info in {SITE}, found {len(found)}")
    return found[0]


def description(name: str) -> tuple[str, str, str]:
    """(version, content type, long description) of an installed distribution."""
    folder = dist_info(name)
    msg = email.message_from_string((folder / "METADATA").read_text(encoding="utf-8"))
    body = msg.get_payload()
    assert isinstance(body, str) and body.strip(), folder
    return str(msg["Version"]), str(msg.get("Description-Content-Type", "")), body


def write_pdf(text: str, path: Path) -> None:
    """The reST text as a PDF: paragraphs as multi_cells, underlined titles as larger bold lines."""
    from fpdf import FPDF

    fonts = Path("/usr/share/fonts/truetype/dejavu")
    pdf = FPDF()
    pdf.set_auto_page_break(True, margin=15)
    pdf.add_font("dejavu", "", str(fonts / "DejaVuSans.ttf"))
    pdf.add_font("dejavu", "B", str(fonts / "DejaVuSans-Bold.ttf"))
    pdf.add_font("mono", "", str(fonts / "DejaVuSansMono.ttf"))
    pdf.add_page()
    for block in re.split(r"\n\s*\n", text):
        lines = [line.rstrip() for line in block.strip("\n").splitlines()]
        if not lines or not any(lines):
            continue
        if len(lines) >= 2 and re.fullmatch(r"([=\-~^*#])\1{2,}", lines[1].strip()):
            pdf.set_font("dejavu", "B", 15)
            pdf.multi_cell(0, 9, lines[0].strip())
            pdf.ln(2)
            lines = lines[2:]
            if not lines:
                continue
        if lines[0].startswith((" ", "\t")):
            pdf.set_font("mono", "", 9)
            pdf.multi_cell(0, 5, "\n".join(line.strip() for line in lines))
        else:
            pdf.set_font("dejavu", "", 11)
            pdf.multi_cell(0, 6, " ".join(line.strip() for line in lines))
        pdf.ln(4)
    pdf.output(str(path))


def build_corpus(folder: Path) -> list[dict[str, Any]]:
    """Write the corpus files into `folder`; what each is and where it came from."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for name in CORPUS_PACKAGES:
        version, kind, body = description(name)
        suffix = ".rst" if "rst" in kind else ".md"
        target = folder / f"{name}-{version}{suffix}"
        target.write_text(body, encoding="utf-8")
        files.append({"file": target.name, "from": f"{dist_info(name).name}/METADATA (long description)"})
    for rel, corpus_name in CORPUS_FILES:
        shutil.copyfile(SITE / rel, folder / corpus_name)
        owner = rel.split("/")[0]
        files.append({"file": corpus_name, "from": f"{rel} of {owner} {description(owner)[0]}"})
    version, _kind, body = description(PDF_PACKAGE)
    target = folder / f"{PDF_PACKAGE}-{version}.pdf"
    write_pdf(body, target)
    files.append({"file": target.name, "from": f"{dist_info(PDF_PACKAGE).name}/METADATA, "
                                              "written as a PDF by fpdf2"})
    for f in files:
        f["bytes"] = (folder / f["file"]).stat().st_size
    return files


def norm(text: str) -> str:
    return " ".join(text.split())


# -- 1. indexing --------------------------------------------------------------------------
class TimedEmbedding:
    """Camelid's EmbedderModel, with the time spent in its embed_passages (Embedder.embed) added up."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.max_tokens = inner.max_tokens
        self.dims = inner.dims
        self.seconds = 0.0
        self.cpu = 0.0

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def embed_passages(self, texts: Any) -> np.ndarray:
        started, cpu = time.perf_counter(), time.process_time()
        try:
            return self.inner.embed_passages(texts)
        finally:
            self.seconds += time.perf_counter() - started
            self.cpu += time.process_time() - cpu

    def embed_query(self, text: str) -> np.ndarray:
        return self.inner.embed_query(text)


def camelid_round(corpus: Path, folder: Path, model: Any, tag: str) -> dict[str, Any]:
    from app.core.docs.chunking import DEFAULT_OVERLAP, DEFAULT_TOKENS, Piece, chunk
    from app.core.docs.extract import extract
    from app.core.docs.indexer import add_paths
    from app.core.docs.store import DocIndex

    timed = TimedEmbedding(model)
    index = DocIndex(folder / f"index-{tag}.sqlite3")
    started = time.perf_counter()
    report = add_paths(index, "corpus", [corpus], embedding=timed)
    total = time.perf_counter() - started
    assert not report.failed, report.failed
    # The parts, by calling what the indexer calls: extract + chunk, then store into a fresh index.
    started = time.perf_counter()
    docs = []
    for path in sorted(corpus.iterdir()):
        doc = extract(path)
        pieces = [Piece(u.text, u.page, u.heading, u.start) for u in doc.units]
        docs.append((path, doc, chunk(pieces, count=model.count_tokens, size=min(DEFAULT_TOKENS, model.max_tokens),
                                      overlap=DEFAULT_OVERLAP)))
    extract_chunk = time.perf_counter() - started
    collection = index.collection("corpus")
    by_path = {Path(d.path).name: index.chunks_of(collection, d.path) for d in index.documents(collection)}
    store_index = DocIndex(folder / f"store-{tag}.sqlite3")
    store_collection = store_index.collection("corpus", create=True)
    rng = np.random.default_rng(0)
    store = 0.0
    for path, doc, chunks in docs:
        v = rng.standard_normal((len(chunks), model.dims)).astype(np.float32)  # same bytes as real ones
        started = time.perf_counter()
        store_index.put_document(store_collection, path=str(path), source_id=None, sha256="-",
                                 size=path.stat().st_size, mtime=path.stat().st_mtime, kind=doc.kind,
                                 pages=doc.pages, chars=doc.chars, warnings=doc.warnings, chunks=chunks, vectors=v)
        store += time.perf_counter() - started
    store_index.close()
    texts = [p.text for name in sorted(by_path) for p in by_path[name]]
    assert texts == [c.text for _path, _doc, chunks in docs for c in chunks], "index and chunk() disagree"
    chars = sum(doc.chars for _path, doc, _chunks in docs)
    return {"index": index, "report": report, "total": total, "embed": timed.seconds, "embed_cpu": timed.cpu,
            "extract_chunk": extract_chunk, "store": store, "texts": texts, "chars": chars,
            "pdf_pages": sum(doc.pages or 0 for _p, doc, _c in docs),
            "text_chars": sum(doc.chars for _p, doc, _c in docs if doc.pages is None),
            "tokens": sum(c.tokens for _p, _d, chunks in docs for c in chunks)}


def indexing(corpus: Path, folder: Path, model_path: Path, model: Any, threads: int) -> dict[str, Any]:
    from app.core.machine import llama_cpp_module

    llama_cpp = llama_cpp_module()
    bare_default = llama_cpp.Llama(str(model_path), embedding=True, n_ctx=512, n_batch=512, n_ubatch=512,
                                   verbose=False)
    bare_same = llama_cpp.Llama(str(model_path), embedding=True, n_ctx=512, n_batch=512, n_ubatch=512,
                                n_threads=threads, n_threads_batch=threads, verbose=False)
    default_threads = (bare_default.context_params.n_threads, bare_default.context_params.n_threads_batch)
    rounds: list[dict[str, Any]] = []
    texts: list[str] | None = None
    bare: dict[str, list[float]] = {"default": [], "same": []}
    bare_cpu: dict[str, list[float]] = {"default": [], "same": []}
    orders: list[str] = []
    agreement = 1.0
    # Warm-up: one pass of each over a few passages.
    model.embed_passages(["warm up"] * 4)
    bare_default.embed(["warm up"] * 4, normalize=True)
    bare_same.embed(["warm up"] * 4, normalize=True)
    for r in range(ROUNDS):
        # The three in turn, each round starting with the next one (the first round must index first).
        steps = ["camelid", "default", "same"]
        steps = steps[r % 3:] + steps[:r % 3]
        orders.append(", ".join(steps))
        for step in steps:
            if step == "camelid":
                gc.collect()
                result = camelid_round(corpus, folder, model, str(r))
                if rounds:
                    rounds[-1].pop("index").close()
                rounds.append(result)
                texts = texts or result["texts"]
                assert texts == result["texts"]
            else:
                assert texts is not None
                llm = bare_default if step == "default" else bare_same
                gc.collect()
                started, cpu = time.perf_counter(), time.process_time()
                out = llm.embed(texts, normalize=True)
                bare[step].append(time.perf_counter() - started)
                bare_cpu[step].append(time.process_time() - cpu)
                if step == "default" and r == 0:
                    ours = np.asarray(model.embed_passages(texts[:16]), dtype=np.float32)
                    theirs = np.asarray(out[:16], dtype=np.float32)
                    agreement = float(np.min(np.sum(ours * theirs, axis=1)))
        print(f"round {r + 1}: add_paths {rounds[-1]['total']:.1f} s (embed {rounds[-1]['embed']:.1f} s), "
              f"bare {bare['default'][-1]:.1f} s, same threads {bare['same'][-1]:.1f} s", flush=True)
    bare_default.close()
    bare_same.close()
    return {"rounds": rounds, "bare": bare, "bare_cpu": bare_cpu, "orders": orders, "agreement": agreement, "default_threads": default_threads,
            "threads": threads}


# -- 2. search latency --------------------------------------------------------------------
def corpus_sentences(corpus: Path) -> list[str]:
    from app.core.docs.extract import extract

    out: list[str] = []
    for path in sorted(corpus.iterdir()):
        for part in re.split(r"(?<=[.!?])\s+|\n\s*\n", extract(path).text):
            part = norm(part)
            if 40 <= len(part) <= 400:
                out.append(part)
    return out


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIMS)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def search_latency(folder: Path, sentences: list[str], questions: list[str]) -> list[dict[str, Any]]:
    from app.core.docs.chunking import Chunk
    from app.core.docs.store import DocIndex

    path = folder / "synthetic.sqlite3"
    rng = random.Random(7)
    vectors = np.random.default_rng(7)
    index = DocIndex(path)
    collection = index.collection("synthetic", create=True)
    have, built, out = 0, 0.0, []
    for size in SIZES:
        started = time.perf_counter()
        while have < size:
            n = min(PER_DOCUMENT, size - have)
            chunks = []
            for _ in range(n):
                text = " ".join(rng.choices(sentences, k=rng.randint(5, 9)))
                chunks.append(Chunk(text=text, page=None, page_end=None, heading=None, start=0, end=len(text),
                                    tokens=len(text) // 4))
            index.put_document(collection, path=f"/synthetic/{have // PER_DOCUMENT:05d}.txt", source_id=None,
                               sha256="-", size=0, mtime=0.0, kind="text", pages=None,
                               chars=sum(len(c.text) for c in chunks), warnings=[], chunks=chunks,
                               vectors=_unit(vectors, n))
            have += n
        built += time.perf_counter() - started
        index.close()
        gc.collect()
        # A fresh DocIndex: its first dense search loads the matrix.
        index = DocIndex(path)
        collection = index.collection("synthetic")
        queries = QUERIES if size < 100_000 else QUERIES_LARGEST
        qs = [questions[i % len(questions)] for i in range(queries)]
        qv = _unit(vectors, queries)
        rss = _rss()
        started = time.perf_counter()
        index.dense(collection, qv[0])
        first_dense = time.perf_counter() - started
        rss_growth = _rss() - rss
        times: dict[str, list[float]] = {"lexical": [], "dense": [], "hybrid": [], "nostop": []}
        index.search(collection, qs[0], vector=qv[0], top=5, mode="hybrid")  # warm-up
        for i, (q, v) in enumerate(zip(qs, qv, strict=True)):
            modes = list(times)
            for mode in modes[i % 3:] + modes[:i % 3]:
                started = time.perf_counter()
                if mode == "nostop":
                    hits = index.lexical(collection, q, keep_stop_words=True)
                else:
                    hits = index.search(collection, q, vector=v, top=5, mode=mode)
                times[mode].append(time.perf_counter() - started)
                assert hits or mode in ("lexical", "nostop")
        ids, matrix = index._matrix(collection)  # the cached matrix, to report its size
        row = {"size": size, "build_s": built, "queries": queries, "first_dense_s": first_dense,
               "load_s": first_dense - statistics.median(times["dense"]), "rss_growth": rss_growth,
               "matrix_bytes": matrix.nbytes + ids.nbytes, "db_bytes": path.stat().st_size,
               **{f"{m}_median": statistics.median(t) for m, t in times.items()},
               **{f"{m}_p95": _percentile(t, 0.95) for m, t in times.items()}}
        out.append(row)
        print(f"{size:>7,} passages: built {built:.0f} s; lexical {row['lexical_median'] * 1000:.1f} ms, "
              f"dense {row['dense_median'] * 1000:.1f} ms, hybrid {row['hybrid_median'] * 1000:.1f} ms, "
              f"matrix load {row['load_s'] * 1000:.0f} ms", flush=True)
    index.close()
    return out


# -- 3. retrieval quality -----------------------------------------------------------------
def check_questions(index: Any, questions: list[dict[str, Any]]) -> None:
    """Every expected phrase is in a passage of its source (else the question is wrong, not the search)."""
    collection = index.collection("corpus")
    passages = {Path(d.path).name: [norm(p.text) for p in index.chunks_of(collection, d.path)]
                for d in index.documents(collection)}
    bad = [q for q in questions if not any(norm(q["expect"]) in t for t in passages.get(q["source"], []))]
    if bad:
        raise SystemExit("expected phrases not found in their source's passages:\n" +
                         "\n".join(f"  {q['source']}: {q['expect']!r}" for q in bad))


def quality(index: Any, model: Any, questions: list[dict[str, Any]]) -> dict[str, Any]:
    collection = index.collection("corpus")
    ranks: dict[str, list[int | None]] = {"lexical": [], "dense": [], "hybrid": []}
    nostop: list[int | None] = []
    lexical_found, overlap = [], []
    for q in questions:
        vector = model.embed_query(q["question"])
        lexical = {cid for cid, _s in index.lexical(collection, q["question"])}
        lexical_found.append(len(lexical))
        overlap.append(len(lexical & {cid for cid, _s in index.dense(collection, vector)}))
        for mode in ranks:
            hits = index.search(collection, q["question"], vector=vector, top=TOP_K, mode=mode)
            rank = next((i for i, p in enumerate(hits, start=1)
                         if Path(p.source).name == q["source"] and norm(q["expect"]) in norm(p.text)), None)
            ranks[mode].append(rank)
        hits = [index.chunk(cid) for cid, _score in index.lexical(collection, q["question"], limit=TOP_K,
                                                                    keep_stop_words=True)]
        nostop.append(next((i for i, p in enumerate(hits, start=1) if p is not None and
                            Path(p.source).name == q["source"] and norm(q["expect"]) in norm(p.text)), None))
    return {"ranks": ranks, "nostop": nostop, "lexical_found": lexical_found, "overlap": overlap,
            "passages": collection.chunks}


def metrics(ranks: list[int | None]) -> tuple[float, float, float]:
    n = len(ranks)
    return (sum(r == 1 for r in ranks) / n, sum(r is not None and r <= 5 for r in ranks) / n,
            sum(1 / r for r in ranks if r is not None) / n)


# -- report -------------------------------------------------------------------------------
def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _mb(n: float) -> str:
    return f"{n / 1024**2:.0f} MiB" if n >= 10 * 1024**2 else f"{n / 1024**2:.1f} MiB"


def write(model_path: Path, files: list[dict[str, Any]], idx: dict[str, Any], search: list[dict[str, Any]],
          questions: list[dict[str, Any]], found: dict[str, Any], seconds: float, load: tuple[float, float]) -> str:
    from app.core.docs.store import CANDIDATES, RRF_K

    rounds = idx["rounds"]
    med = {k: statistics.median(r[k] for r in rounds) for k in ("total", "embed", "extract_chunk", "store")}
    first = rounds[0]
    passages = len(first["texts"])
    pages = first["pdf_pages"] + first["text_chars"] / 3000
    bare, bare_cpu = idx["bare"], idx["bare_cpu"]
    bare_default = statistics.median(bare["default"])
    bare_same = statistics.median(bare["same"])
    ratios_default = [b / r["embed"] for b, r in zip(bare["default"], rounds, strict=True)]
    ratios_same = [b / r["embed"] for b, r in zip(bare["same"], rounds, strict=True)]
    other = med["total"] - med["embed"] - med["extract_chunk"] - med["store"]
    index = rounds[-1]["index"]
    collection = index.collection("corpus")
    per_file = {Path(d.path).name: d.chunks for d in index.documents(collection)}
    corpus_rows = [[f"`{f['file']}`", f["from"], f"{f['bytes'] / 1024:.1f} KiB", per_file.get(f["file"], 0)]
                   for f in files]
    d_threads, d_batch = idx["default_threads"]
    t = idx["threads"]
    index_rows = [
        ["Camelid `add_paths` (extract + chunk + embed + store)", _ms(med["total"]),
         f"{passages / med['total']:.1f}", f"{pages / med['total']:.2f}"],
        ["  of which extract + chunk (model tokenizer)", _ms(med["extract_chunk"]), "", ""],
        ["  of which embed (`Embedder.embed`, batches of 16)", _ms(med["embed"]), f"{passages / med['embed']:.1f}", ""],
        ["  of which store (`put_document`, FTS5 + vectors)", _ms(med["store"]), "", ""],
        ["  of which the rest (walk, hash, bookkeeping)", _ms(max(0.0, other)), "", ""],
        [f"bare `Llama.embed(list)`, llama-cpp-python's default threads ({d_threads}, batch {d_batch})",
         _ms(bare_default), f"{passages / bare_default:.1f}", ""],
        [f"bare `Llama.embed(list)`, Camelid's threads ({t}, batch {t})", _ms(bare_same),
         f"{passages / bare_same:.1f}", ""],
    ]
    round_rows = []
    for i, r in enumerate(rounds):
        round_rows.append([i + 1, idx["orders"][i],
                           f"{r['embed']:.1f} s ({r['embed_cpu'] / r['embed']:.2f})",
                           f"{bare['default'][i]:.1f} s ({bare_cpu['default'][i] / bare['default'][i]:.2f})",
                           f"{bare['same'][i]:.1f} s ({bare_cpu['same'][i] / bare['same'][i]:.2f})",
                           f"{ratios_default[i]:.2f}", f"{ratios_same[i]:.2f}"])
    # Bare with 2 batch threads is only as fast as the CPU it gets: its best- and worst-served rounds.
    use = [c / w for c, w in zip(bare_cpu["default"], bare["default"], strict=True)]
    quiet = max(range(len(rounds)), key=lambda i: use[i])
    busy = min(range(len(rounds)), key=lambda i: use[i])
    search_rows = []
    for r in search:
        search_rows.append([f"{r['size']:,}", r["queries"],
                            f"{_ms(r['lexical_median'])} / {_ms(r['lexical_p95'])}",
                            f"{_ms(r['nostop_median'])} / {_ms(r['nostop_p95'])}",
                            f"{_ms(r['dense_median'])} / {_ms(r['dense_p95'])}",
                            f"{_ms(r['hybrid_median'])} / {_ms(r['hybrid_p95'])}",
                            _ms(max(0.0, r["load_s"])), _mb(r["matrix_bytes"]), _mb(max(0, r["rss_growth"])),
                            f"{r['build_s']:.0f} s", _mb(r["db_bytes"])])
    ranks = found["ranks"]
    quality_rows = []
    for mode, rs in ranks.items():
        r1, r5, mrr = metrics(rs)
        quality_rows.append([mode, f"{r1:.2f}", f"{r5:.2f}", f"{mrr:.3f}"])
    r1, r5, mrr = metrics(found["nostop"])
    quality_rows.append(["lexical, stop words kept (Camelid before dropping them)", f"{r1:.2f}",
                         f"{r5:.2f}", f"{mrr:.3f}"])
    kinds = sorted({q["kind"] for q in questions})
    kind_rows, by_kind = [], {}
    for kind in kinds:
        picked = [i for i, q in enumerate(questions) if q["kind"] == kind]
        row: list[Any] = [kind, len(picked)]
        for mode in ranks:
            k1, k5, kmrr = metrics([ranks[mode][i] for i in picked])
            by_kind[(kind, mode)] = (k5, kmrr)
            row.append(f"{k1:.2f} / {k5:.2f} / {kmrr:.2f}")
        kind_rows.append(row)
    misses = []
    for i, q in enumerate(questions):
        got = {m: ranks[m][i] for m in ranks}
        if got["hybrid"] is None or got["hybrid"] > 5:
            misses.append(f"- \"{q['question']}\" ({q['kind']}, `{q['source']}`): rank lexical "
                          f"{got['lexical'] or '-'}, dense {got['dense'] or '-'}, hybrid {got['hybrid'] or '-'}")
    n = len(questions)
    by_mode = {m: metrics(rs) for m, rs in ranks.items()}
    best = max(by_mode, key=lambda m: by_mode[m][2])
    top5 = {m: [r is not None and r <= 5 for r in rs] for m, rs in ranks.items()}
    dense_only = sum(top5["dense"][i] and not top5["lexical"][i] for i in range(n))
    lexical_only = sum(top5["lexical"][i] and not top5["dense"][i] for i in range(n))
    lost = sum((top5["dense"][i] or top5["lexical"][i]) and not top5["hybrid"][i] for i in range(n))
    either = sum(top5["dense"][i] or top5["lexical"][i] for i in range(n))
    largest = search[-1]
    dense_at = {r["size"]: r["dense_median"] for r in search}
    per_row = largest["dense_median"] / largest["size"]
    ann_rows = 0.075 / per_row if per_row > 0 else 0.0
    load_100k = next((r["load_s"] for r in search if r["size"] == 100_000), largest["load_s"])
    lex_100k = largest["lexical_median"]
    nostop_100k = largest["nostop_median"]
    kw_lex, kw_dense = by_kind.get(("keyword", "lexical"), (0, 0)), by_kind.get(("keyword", "dense"), (0, 0))
    pa_lex, pa_dense = by_kind.get(("paraphrase", "lexical"), (0, 0)), by_kind.get(("paraphrase", "dense"), (0, 0))
    pa_hyb = by_kind.get(("paraphrase", "hybrid"), (0, 0))
    below = " (below the target)" if statistics.median(ratios_default) < 0.9 else ""
    spread = (f"bare got {use[busy]:.2f} cores in its worst-served round (ratio {ratios_default[busy]:.2f}) and "
              f"{use[quiet]:.2f} in its best (ratio {ratios_default[quiet]:.2f})" if quiet != busy else
              f"bare got {use[quiet]:.2f} cores")
    if use[quiet] < 1.8:
        spread += (" (it never had both cores in this run, and its two threads waited for each other: this run "
                   "does not show what two threads give on an idle machine)")
    elif use[busy] >= 1.8:
        spread += " (it had both cores in every round: what an idle machine gives)"
    text = f"""`bench/bench_docs.py`: the documents core (`app/core/docs/`) on real files, embedding model \
{model_path.name} (384 dimensions) on the CPU, run in {seconds / 60:.1f} min. {machine_line()} Load average \
(1 min) {load[0]:.1f} at the start, {load[1]:.1f} at the end: the 2 cores were shared with other work, so single \
timings move by tens of percent (the CPU column below shows how much of a core each run got).

**Corpus**: the long descriptions (the body of `*.dist-info/METADATA`) of the stable or pinned packages \
below as installed in the venv, two READMEs shipped inside numpy and pip, and psutil's description written as a \
{first['pdf_pages']}-page PDF with fpdf2 (DejaVu Sans, a multi_cell per paragraph, reST titles larger; psutil's \
text is in the corpus only as this PDF), copied to a temporary folder and added with `add_paths`: {len(files)} \
files, {first['chars']:,} characters, {passages} passages of at most 256 model tokens ({first['tokens']:,} tokens).

{table(["file", "from", "size", "passages"], corpus_rows)}

### Indexing throughput

{ROUNDS} rounds (medians), each starting with the next of the three. Camelid's time is `add_paths` into a fresh \
index; its embed part is the time inside `EmbedderModel.embed_passages` (Camelid's `Embedder.embed`: passages \
grouped up to 256 tokens per llama.cpp call); the extract + chunk and store parts are timed by calling \
`extract`, `chunk` and `put_document` the same way again. The bare side is `Llama(path, embedding=True, \
n_ctx=512, n_batch=512, n_ubatch=512).embed(texts, normalize=True)` on exactly the {passages} passage texts the \
index holds (read back from it), model loaded before the clock starts; once with llama-cpp-python's default \
threads, once with the threads Camelid gives its embedder. A "page" is a PDF page or 3,000 characters of text \
({pages:.0f} pages in all).

{table(["path", "time", "passages/s", "pages/s"], index_rows)}

Embedding time per round (CPU seconds per wall second in brackets: 1.00 = one core all the time, 2.00 = both):

{table(["round", "order", "Camelid embed", "bare, default threads", "bare, Camelid's threads",
        "ratio (default)", "ratio (same threads)"], round_rows)}

**Embedding ratio (bare time / Camelid time, same passages; >= 1 means Camelid is faster; target >= 0.9): \
{statistics.median(ratios_same):.2f} at the same threads** (median of rounds): Camelid's grouping of passages \
up to 256 tokens per call beats llama-cpp-python's packing of a list into batches of up to n_batch tokens (two \
256-token passages per batch). **Against llama-cpp-python's default threads: {statistics.median(ratios_default):.2f}**{below} \
(rounds: {", ".join(f"{r:.2f}" for r in ratios_default)}). The difference from the same-threads ratio is \
the thread count: Camelid's `Embedder.load` passes `n_threads_batch=default_batch_threads()`, {t} on this \
2-core machine (Camelid leaves one of 2 cores to the rest of the machine, for prompts as for replies), \
while llama-cpp-python runs batches on every logical core ({d_batch}). Embedding is prompt processing, which \
scales with cores, but two threads only help when both cores are free: {spread}. More batch threads for the \
embedder would index faster on an idle machine, at the cost of a busier one while indexing. Camelid's and bare vectors of the same passages agree to a cosine of at least \
{idx['agreement']:.5f}. Embedding is {med['embed'] / med['total'] * 100:.1f}% of `add_paths`; reading, \
cutting and storing the whole corpus take {(med['extract_chunk'] + med['store']) * 1000:.0f} ms.

### Search latency

Synthetic collections grown to 1k, 10k and 100k passages in one index file (each passage 5-9 sentences drawn at \
random from the corpus, about the size of a real passage; vectors random unit vectors of 384 dims), inserted \
with `put_document` in documents of {PER_DOCUMENT:,} passages. Latency of `search(collection, question, \
vector=random unit vector, top=5)` over {QUERIES} queries ({QUERIES_LARGEST} at 100k) cycling through the \
questions of the quality set, median / p95, the modes interleaved. "BM25, stop words kept" is \
`DocIndex.lexical(keep_stop_words=True)`: every word of the question, as Camelid searched before it dropped \
common English words from the query. The index is opened fresh before each size, so its first dense search loads the matrix (the \
one-off load = that search less a warm one). RAM: the matrix and ids numpy hold, and the process's RSS growth \
across the load.

{table(["passages", "queries", "lexical (BM25, trigram)", "BM25, stop words kept", "dense (exact cosine)",
        "hybrid (RRF)", "matrix load (once)", "matrix in RAM", "RSS growth", "build (cumulative)", "index file"],
       search_rows)}

Exact dense search is one matrix-vector product: {_ms(dense_at.get(1_000, 0))} at 1k, \
{_ms(dense_at.get(10_000, 0))} at 10k, {_ms(dense_at.get(100_000, 0))} at 100k passages \
(~{per_row * 1e9:.0f} ns per passage). It would pass ~75 ms, where an ANN index (HNSW, IVF) starts to pay, \
near {ann_rows / 1e6:.1f} M passages, with {ann_rows * DIMS * 4 / 1024**3:.2f} GiB of float32 vectors in RAM \
(plus the one-off load, {load_100k:.1f} s at 100k, growing with it). Well before that, the cost that grows is \
lexical search: {_ms(lex_100k)} at 100k, because the MATCH is an OR of the question's words and their trigrams \
hit many passages; hybrid waits for it. An ANN index would not help that. Dropping common English words \
("the", "which", "how") from the MATCH, which Camelid now does, is the measured difference: \
{_ms(nostop_100k)} at 100k with them kept, and lexical MRR@10 {metrics(found["nostop"])[2]:.3f} with them \
against {metrics(found["ranks"]["lexical"])[2]:.3f} without.

### Retrieval quality

{n} questions in `bench/data/docs_questions.json` over the real corpus \
({', '.join(f'{sum(q["kind"] == k for q in questions)} {k}' for k in kinds)}): "keyword" ones name an \
identifier, flag or number from the text; "paraphrase" ones ask in other words, sharing few with the passage. \
A hit: a passage from the question's file that contains its expected phrase (whitespace collapsed); ranks are \
of `search(..., top=10)` with the question embedded by `EmbedderModel.embed_query`.

{table(["mode", "recall@1", "recall@5", "MRR@10"], quality_rows)}

Recall@1 / recall@5 / MRR@10 by kind of question:

{table(["kind", "questions", "lexical", "dense", "hybrid"], kind_rows)}

Best MRR@10 here: **{best}**. The two searches fail on different questions: dense has {dense_only} in its \
top 5 that lexical misses, lexical {lexical_only} that dense misses; hybrid keeps {either - lost} of the \
{either} that either has in its top 5 and loses {lost}. What it loses is RRF's blind spot: each list brings \
its top {CANDIDATES} passages; the lexical OR-query filled all {CANDIDATES} for \
{sum(k == CANDIDATES for k in found["lexical_found"])} of the {n} questions (this corpus has \
{found["passages"]} passages), and the two lists shared {statistics.median(found["overlap"]):.0f} passages \
(median); a passage first in one list and absent from the other scores \
1/({RRF_K}+1) = {1 / (RRF_K + 1):.4f}, less than one 20th in both (2/({RRF_K}+20) = {2 / (RRF_K + 20):.4f}). Keyword questions: lexical MRR \
{kw_lex[1]:.2f} against dense {kw_dense[1]:.2f}: identifiers, flags and numbers are exact strings that trigram \
BM25 matches and that a small model splits into word pieces. Paraphrases: dense recall@5 {pa_dense[0]:.2f} \
against lexical {pa_lex[0]:.2f} (hybrid {pa_hyb[0]:.2f}), and still low: all-MiniLM-L6-v2 is a 22M-parameter \
English model trained on short sentence pairs, mean-pooling a 256-token passage of README prose, code and URLs \
into one vector, so the one sentence that answers is diluted by the rest of its passage. Questions that hybrid \
does not put in its top 5:

{chr(10).join(misses) if misses else "- none"}
"""
    update_section("docs", "Documents: indexing, search, retrieval quality", text)
    return text


def main() -> None:
    from app.core.chat.engine import default_threads
    from app.core.docs.indexer import EmbedderModel
    from app.core.embed.embedder import Embedder

    began = time.perf_counter()
    load_start = os.getloadavg()[0]
    model_path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(os.environ.get("CAMELID_EMBED_MODEL",
                                                                                  DEFAULT_MODEL))
    questions = json.loads(QUESTIONS.read_text(encoding="utf-8"))["questions"]
    folder = Path(tempfile.mkdtemp(prefix="camelid-bench-docs-"))
    try:
        corpus = folder / "corpus"
        files = build_corpus(corpus)
        embedder = Embedder()
        embedder.load(model_path)
        model = EmbedderModel(embedder, model_path.stem)
        threads = default_threads()
        idx = indexing(corpus, folder, model_path, model, threads)
        index = idx["rounds"][-1]["index"]
        check_questions(index, questions)
        found = quality(index, model, questions)
        for mode, rs in {**found["ranks"], "lexical, stop words kept": found["nostop"]}.items():
            print(f"{mode}: recall@1 {metrics(rs)[0]:.2f}, recall@5 {metrics(rs)[1]:.2f}, MRR@10 {metrics(rs)[2]:.3f}",
                  flush=True)
        search = search_latency(folder, corpus_sentences(corpus), [q["question"] for q in questions])
        text = write(model_path, files, idx, search, questions, found, time.perf_counter() - began,
                     (load_start, os.getloadavg()[0]))
        index.close()
        embedder.unload()
        print(text)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
