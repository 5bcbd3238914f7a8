"""Documents end to end with real files and real models: a folder of documents no one here wrote, a PDF,
a Chinese note, a damaged PDF and an empty file; indexed with the real embedding model, searched, kept
current, and answered from with the real chat model.

Retrieval is asserted (the passage that holds the answer is found); the 135M chat model's words and
whether it writes [n] are not (they round differently per CPU): only the structure of its answer is.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from app.core.docs.answer import DocumentChat, cited, gather, prompt_messages
from app.core.docs.indexer import EmbedderModel, add_paths, refresh
from app.core.docs.store import DocIndex
from app.core.embed import Embedder

pytestmark = pytest.mark.slow

SITE = Path(np.__file__).resolve().parent.parent
REPO = Path(__file__).resolve().parents[3]
#: (question, source file, a phrase of the passage that answers it)
QUESTIONS = [
    ("How do I build llama-cpp-python with CUDA support?", "llama-cpp-python.md", "GGML_CUDA=on"),
    ("Who wrote the maskedarray package for numpy?", "numpy-ma.rst", "Gerard-Marchant"),
    ("Must vendored libraries come with their license files?", "pip-vendor.rst", "LICENSE files"),
    ("When did the Zephyr bridge over the Alna open?", "bridges.pdf", "opened in 1931"),
    ("这份文件的作者是谁？", "骆驼.md", "王小明"),
]


def _pdf(path: Path) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    pages = [["Bridges of the north", "This survey lists old river crossings and their builders."],
             ["The Zephyr bridge", "The Zephyr bridge over the river Alna opened in 1931 after six years "
                                   "of work. It carries a railway and a footpath."],
             ["Ferries", "Before the bridges, ferries crossed the river every hour in summer."]]
    for heading, text in pages:
        pdf.add_page()
        pdf.set_font("helvetica", "B", 18)
        pdf.multi_cell(0, 10, heading, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("helvetica", size=12)
        pdf.multi_cell(0, 8, text, new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    shutil.copyfile(SITE / "llama_cpp_python-0.3.36.dist-info" / "METADATA", folder / "llama-cpp-python.md")
    shutil.copyfile(SITE / "numpy" / "ma" / "README.rst", folder / "numpy-ma.rst")
    shutil.copyfile(SITE / "pip" / "_vendor" / "README.rst", folder / "pip-vendor.rst")
    _pdf(folder / "bridges.pdf")
    (folder / "骆驼.md").write_text("# 骆驼的故事\n\n骆驼是沙漠中的重要动物。它们的驼峰储存的是脂肪，而不是水。\n\n"
                                  "## 作者\n\n这份文件的作者是王小明，写于二零二六年十二月。\n", encoding="utf-8")
    (folder / "broken.pdf").write_bytes((folder / "bridges.pdf").read_bytes()[:300])
    (folder / "empty.txt").write_bytes(b"")
    return folder


@pytest.fixture(scope="module")
def embedding(embedding_model: Path):  # type: ignore[no-untyped-def]
    embedder = Embedder()
    embedder.load(embedding_model)
    yield EmbedderModel(embedder, str(embedding_model))
    embedder.unload()


@pytest.fixture
def index(tmp_path: Path):  # type: ignore[no-untyped-def]
    with DocIndex(tmp_path / "docs.sqlite3") as idx:
        yield idx


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, corpus: Path, embedding):  # type: ignore[no-untyped-def]
    """The corpus indexed once for the module: (index, report, progress seen)."""
    seen: list = []
    with DocIndex(tmp_path_factory.mktemp("index") / "docs.sqlite3") as idx:
        report = add_paths(idx, "library", [corpus], embedding=embedding, progress=seen.append)
        yield idx, report, seen


def _phrase_present(source: Path, phrase: str) -> bool:
    """Unpinned packages' READMEs may change: a question is asked only while its phrase is there."""
    return source.suffix == ".pdf" or phrase in source.read_text(encoding="utf-8", errors="replace")


def test_a_folder_is_indexed_and_bad_files_do_not_stop_it(indexed, embedding) -> None:  # type: ignore[no-untyped-def]
    index, report, seen = indexed
    assert sorted(Path(p).name for p in report.added) == sorted(
        ["llama-cpp-python.md", "numpy-ma.rst", "pip-vendor.rst", "bridges.pdf", "骆驼.md"])
    problems = {Path(p).name: s for p, s in report.failed}
    assert set(problems) == {"broken.pdf", "empty.txt"}
    assert "not a readable PDF" in problems["broken.pdf"] and "empty (0 bytes)" in problems["empty.txt"]
    assert report.chunks > 20 and report.pages == 3 and not report.lexical_only
    assert seen and seen[-1].files_done == seen[-1].files_total == 7
    collection = index.collection("library")
    assert collection.embedder == embedding.name and collection.dims == 384
    listed = {Path(d.path).name: d for d in index.documents(collection)}
    assert listed["broken.pdf"].problem and listed["bridges.pdf"].pages == 3


@pytest.mark.parametrize("question,source,phrase", QUESTIONS)
def test_the_passage_with_the_answer_is_found(indexed, corpus: Path, embedding, question: str,  # type: ignore[no-untyped-def]
                                              source: str, phrase: str) -> None:
    if not _phrase_present(corpus / source, phrase):
        pytest.skip(f"{source} no longer says {phrase!r}")
    index = indexed[0]
    collection = index.collection("library")
    hits = index.search(collection, question, vector=embedding.embed_query(question), top=5)
    found = [h for h in hits if Path(h.source).name == source and phrase in h.text]
    assert found, [(Path(h.source).name, h.text[:60]) for h in hits]
    if source == "bridges.pdf":
        assert found[0].page == 2 and found[0].heading == "The Zephyr bridge"


def test_changed_files_are_reindexed_and_deleted_ones_dropped(index: DocIndex, corpus: Path, embedding,  # type: ignore[no-untyped-def]
                                                              tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    shutil.copytree(corpus, folder)
    add_paths(index, "notes", [folder], embedding=embedding)
    c = index.collection("notes")
    note = folder / "骆驼.md"
    note.write_text("# 骆驼\n\n这份文件的作者后来改成了李华。\n", encoding="utf-8")
    (folder / "pip-vendor.rst").unlink()
    os.utime(folder / "numpy-ma.rst")  # touched, not changed: kept as it is
    report = refresh(index, "notes", embedding=embedding)
    assert [Path(p).name for p in report.updated] == ["骆驼.md"]
    assert [Path(p).name for p in report.removed] == ["pip-vendor.rst"]
    assert any(Path(p).name == "numpy-ma.rst" for p in report.unchanged)
    hits = index.search(c, "作者是谁", vector=embedding.embed_query("作者是谁"), top=3)
    assert "李华" in hits[0].text and not any("王小明" in h.text for h in hits)
    assert not any(Path(d.path).name == "pip-vendor.rst" for d in index.documents(c))


def test_without_an_embedding_model_search_is_lexical_and_says_so(index: DocIndex, corpus: Path) -> None:
    report = add_paths(index, "words", [corpus / "llama-cpp-python.md"])
    assert report.lexical_only and report.chunks > 5
    hits = index.search(index.collection("words"), "GGML_CUDA", top=3)
    assert hits and "GGML_CUDA" in hits[0].text and hits[0].dense_rank is None


def test_cancel_stops_between_files_and_keeps_what_was_stored(index: DocIndex, corpus: Path, embedding) -> None:  # type: ignore[no-untyped-def]
    cancel = threading.Event()

    def progress(p) -> None:  # type: ignore[no-untyped-def]
        if p.files_done >= 1:
            cancel.set()

    report = add_paths(index, "part", [corpus], embedding=embedding, progress=progress, cancel=cancel)
    assert report.cancelled and 1 <= len(report.added) < 5
    assert len(index.documents(index.collection("part"))) == len(report.added) + len(report.failed)


def test_answers_read_small_documents_whole_and_search_big_ones(indexed, corpus: Path, embedding,  # type: ignore[no-untyped-def]
                                                                 starter_model: Path) -> None:
    from app.core.chat import Engine, SamplingSettings

    index = indexed[0]
    add_paths(index, "small", [corpus / "bridges.pdf"], embedding=embedding)
    engine = Engine()
    engine.load(starter_model)
    try:
        question = "When did the Zephyr bridge open?"
        small = gather(index, [index.collection("small")], question, count_tokens=engine.count_text,
                       budget=2000, query_vector=embedding.embed_query(question))
        assert small.mode == "whole" and len(small.passages) >= 3
        assert [c.page for c in small.passages] == sorted(c.page for c in small.passages)
        big = gather(index, [index.collection("library")], question, count_tokens=engine.count_text, budget=1500,
                     query_vector=embedding.embed_query(question))
        assert big.mode == "retrieval" and any("opened in 1931" in c.text for c in big.passages)
        assert "searched them" in big.notices[0]
        assert sum(engine.count_text(c.text) for c in big.passages) <= 1500
        messages = prompt_messages(question, big)
        assert "[1] (" in messages[-1]["content"] and messages[-1]["content"].endswith(question)
        reply = engine.chat(messages, SamplingSettings(max_tokens=30, seed=1))
        assert all(c in big.passages for c in cited(reply.text, big))
        # Citations are read from the answer's [n] marks, whatever model writes them.
        assert [c.n for c in cited("It opened in 1931 [2], see also [1][2] and 【9】.", big)] == [2, 1]
        # Through the chat path: the stored reply carries the passages it was given.
        from app.core.chat import ChatStore, send_message

        with ChatStore(index.path.parent / "chats.sqlite3") as store:
            conv = store.create_conversation(model=starter_model.name)
            chat = DocumentChat(index, ["library"], engine, embedding=embedding)
            _reply, message = send_message(engine, store, conv.id, question,
                                           SamplingSettings(max_tokens=20, seed=1), augment=chat)
            assert message.stats is not None and message.stats["docs_mode"] == "retrieval"
            assert any("opened in 1931" in p["text"] for p in message.stats["passages"])
            assert store.conversation(conv.id).messages[0].content == question  # stored as typed
    finally:
        engine.unload()


def test_cli_search_and_ask_json(corpus: Path, embedding_model: Path, starter_model: Path, tmp_path: Path) -> None:
    env = {**os.environ, "CAMELID_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)}

    def camelid(*args: str) -> dict:
        out = subprocess.run([sys.executable, "-m", "app", *args], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=600)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    added = camelid("docs", "add", str(corpus), "--embedder", str(embedding_model), "--json")
    assert len(added["added"]) == 5 and len(added["failed"]) == 2
    found = camelid("docs", "search", "When did the Zephyr bridge open?", "--top", "3", "--json")
    passage = found["passages"][0]
    assert set(passage) >= {"text", "source", "page", "score"} and passage["page"] == 2
    answer = camelid("docs", "ask", "When did the Zephyr bridge open?", "--model", str(starter_model),
                     "--max-tokens", "24", "--seed", "1", "--json")
    assert isinstance(answer["answer"], str) and answer["mode"] in ("whole", "retrieval")
    for c in answer["citations"]:
        assert set(c) >= {"n", "source", "page", "text"}
    assert any("opened in 1931" in p["text"] for p in answer["passages"])
    listed = camelid("docs", "list", "--json")
    assert listed["collections"][0]["name"] == "default" and listed["collections"][0]["documents"] == 7
