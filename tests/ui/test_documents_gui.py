"""Chat with your documents in the window: attachments, citations and their side panel, the Documents page.

Real files, the real starter chat model and the real all-MiniLM-L6-v2 embedding model, on the
window's engine thread. Screenshots (light and dark) go to /tmp/camelid-docs-*.png.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from app import paths
from app.core.chat.chats import ChatStore
from app.core.settings import Settings
from app.ui import theme
from app.ui.chat_view import ChatView
from app.ui.docs_view import EMBEDDING_SETTING, DocsView
from app.ui.main_window import MainWindow
from tests.fixtures import ui
from tests.fixtures.ui import close_window

pytestmark = pytest.mark.slow

SHOTS = Path("/tmp")

LLAMAS = """# Llamas

Llamas are domesticated South American camelids, kept in the Andes for their wool and as pack animals.

## Food

Llamas eat grass, hay and shrubs. A grown llama needs about two percent of its body weight in hay each day.

## Herds

Llamas live in herds and hum to one another.
"""


@pytest.fixture
def embedder_setting(embedding_model: Path) -> Path:
    """The embedding_model setting saved in this test's CAMELID_HOME, as a user would set it."""
    settings = Settings()
    settings.set(EMBEDDING_SETTING, str(embedding_model))
    settings.save()
    return embedding_model


@pytest.fixture
def installed_model(starter_model: Path) -> Path:
    dest = paths.models_dir() / starter_model.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(starter_model, dest)
    return dest


def open_window(qtbot) -> MainWindow:
    window = ui.open_window(qtbot, "desktop-16gb-cpu", context_length=2048)
    window.resize(1280, 800)
    return window


def shoot(widget, name: str) -> list[Path]:
    """The widget grabbed in the light and the dark look."""
    app = QApplication.instance()
    saved = []
    for look in ("light", "dark"):
        theme.apply_theme(app, look)
        for _ in range(5):
            app.processEvents()
        path = SHOTS / f"camelid-docs-{name}-{look}.png"
        assert widget.grab().save(str(path))
        saved.append(path)
    theme.apply_theme(app, "light")
    return saved


def wait_indexed(qtbot, progress, timeout: int = 120_000):
    qtbot.waitUntil(lambda: not progress.running and progress.report is not None, timeout=timeout)
    return progress.report


def test_attach_files_ask_and_open_a_citation(qtbot, tmp_path: Path, installed_model: Path,
                                              embedder_setting: Path) -> None:
    notes = tmp_path / "llamas.md"
    notes.write_text(LLAMAS, encoding="utf-8")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    window = open_window(qtbot)
    chat: ChatView = window.pages["Chat"]
    assert chat.attach_button.isEnabled()

    # The slot the Attach button's file dialog calls, with a conversation created first.
    chat.attach_paths([str(notes), str(empty)])
    report = wait_indexed(qtbot, chat.attach_progress)
    assert chat.conversation is not None
    assert report.collection == f"chat-{chat.conversation.id}"
    assert report.added == [str(notes.resolve())] and not report.lexical_only
    assert report.embedder == embedder_setting.name.removesuffix(".gguf")
    assert [Path(p).name for p, _s in report.failed] == ["empty.txt"]
    qtbot.waitUntil(lambda: any("llamas.md" in name for name in chat.chip_names()), timeout=10_000)
    assert any("empty.txt" in name for name in chat.chip_names())
    # The 0-byte file is a sentence on the page; the rest was indexed.
    assert chat.attach_notice.isVisible() and "empty.txt is empty (0 bytes)" in chat.attach_notice.text()
    assert "1 added" in chat.attach_progress.label.text()

    # Ask with the starter model loaded: the reply draws on the attachment.
    qtbot.waitUntil(lambda: chat.model_picker.findData(str(installed_model)) >= 0, timeout=10_000)
    chat.model_picker.setCurrentIndex(chat.model_picker.findData(str(installed_model)))
    chat.load_button.click()
    qtbot.waitUntil(lambda: chat.host.engine.loaded and chat.load_job is None, timeout=120_000)
    choose = chat.sampling
    chat.sampling = lambda: choose().with_(max_tokens=24)
    assert chat.document_names() == [f"chat-{chat.conversation.id}"]
    chat.input.setPlainText("What do llamas eat?")
    qtbot.keyClick(chat.input, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: chat.reply_job is not None, timeout=5000)
    qtbot.waitUntil(lambda: chat.reply_job is None, timeout=180_000)
    assert [b.role for b in chat.bubbles] == ["user", "assistant"]
    conv_id = chat.conversation.id
    with ChatStore() as store:
        stored = store.conversation(conv_id).messages[-1]
    stats = stored.stats
    assert stats["docs_mode"] in ("whole", "retrieval")
    assert stats["passages"] and all(Path(p["source"]).name == "llamas.md" for p in stats["passages"])
    assert "citations" in stats
    # The stored user turn stays as typed (the passages are only what the model read).
    row = chat.bubbles[-1].sources_row
    assert row is not None
    assert "Read the documents whole" in chat.notice.text() or "Searched the documents" in chat.notice.text()
    if stats["citations"]:
        assert "Sources" in [w.text() for w in row.findChildren(type(row.mode))]
    else:
        # Passages given, folded until asked for.
        assert row.toggle is not None and row.links.isHidden()
        row.toggle.click()
        assert not row.links.isHidden() and "llamas.md" in row.links.text()

    # More than fits beside the question in a 2,048-token context: the best passages are searched for.
    farm = tmp_path / "farm.md"
    farm.write_text("\n\n".join(f"## Field {i}\n\n" + f"Field {i} grows barley, clover and rye for the herd. " * 12
                                 for i in range(40)), encoding="utf-8")
    chat.attach_paths([str(farm)])
    wait_indexed(qtbot, chat.attach_progress)
    qtbot.waitUntil(lambda: any("farm.md" in name for name in chat.chip_names()), timeout=10_000)
    chat.input.setPlainText("What grows in field 7?")
    qtbot.keyClick(chat.input, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: chat.reply_job is not None, timeout=5000)
    qtbot.waitUntil(lambda: chat.reply_job is None, timeout=180_000)
    with ChatStore() as store:
        searched = store.conversation(conv_id).messages[-1].stats
    assert searched["docs_mode"] == "retrieval" and 1 <= len(searched["passages"]) <= 8
    assert "Searched the documents: the" in chat.notice.text() and "tokens" in chat.notice.text()
    assert chat.bubbles[-1].sources_row is not None

    # A stored reply with citations (the tiny model rarely cites): its links open the side panel.
    passage = stats["passages"][0]
    cited = {**passage, "n": 1}
    with ChatStore() as store:
        store.add_message(conv_id, "user", "And how much hay?")
        store.add_message(conv_id, "assistant", "About two percent of its weight each day [1].",
                          stats={"docs_mode": "whole", "passages": [cited], "citations": [cited],
                                 "completion_tokens": 12})
    chat.open_conversation(conv_id)
    qtbot.waitUntil(lambda: len(chat.bubbles) == 6, timeout=10_000)
    row = chat.bubbles[-1].sources_row
    assert row is not None and row.toggle is None
    assert "[1] llamas.md" in row.links.text()
    assert not chat.source_panel.isVisible()
    row.links.linkActivated.emit("cite:0")
    panel = chat.source_panel
    assert panel.isVisible() and panel.width() >= 250
    assert panel.file_label.text() == "llamas.md"
    assert panel.text.toPlainText() == passage["text"]
    assert panel.path_label.text() == passage["source"]
    if passage.get("heading"):
        assert passage["heading"] in panel.where_label.text()
    assert "Read the documents whole" in row.mode.text()
    for _ in range(5):
        QApplication.processEvents()
    shoot(window, "chat")
    panel.close_button.click()
    assert not panel.isVisible()

    # Detaching a chip forgets the file's passages; the file stays.
    chat.detach(str(empty.resolve()))
    qtbot.waitUntil(lambda: not any("empty.txt" in n for n in chat.chip_names()), timeout=10_000)
    assert empty.exists()
    close_window(window)


def test_documents_page_adds_lists_and_removes_a_folder(qtbot, tmp_path: Path, embedder_setting: Path) -> None:
    folder = tmp_path / "handbook"
    (folder / "sub").mkdir(parents=True)
    (folder / "llamas.md").write_text(LLAMAS, encoding="utf-8")
    (folder / "alpacas.txt").write_text("Alpacas are smaller than llamas and are kept for their fleece.\n")
    (folder / "sub" / "guide.html").write_text("<html><body><h1>Guide</h1><p>Brush the fleece weekly.</p>"
                                               "</body></html>")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 not really a pdf")
    window = open_window(qtbot)
    docs: DocsView = window.pages["Documents"]
    chat: ChatView = window.pages["Chat"]
    assert window.show_page("Documents")
    assert not docs.embed_note.isVisible()  # the embedding model is set

    job = docs.add_paths_to("handbook", [str(folder)])
    assert job is not None and not docs.add_folder_button.isEnabled()
    report = wait_indexed(qtbot, docs.progress)
    assert not report.cancelled and len(report.added) == 3
    assert [Path(p).name for p, _s in report.failed] == ["broken.pdf"]
    last = docs.progress.last_progress
    assert last.files_done == last.files_total == 4
    assert docs.progress.bar.value() == docs.progress.bar.maximum()
    assert "3 added" in docs.progress.label.text()
    assert "broken.pdf" in docs.problems.text() and docs.problems.isVisible()
    qtbot.waitUntil(lambda: docs.list.count() == 1 and docs.table.rowCount() == 4, timeout=10_000)
    item = docs.list.item(0).text()
    assert item.startswith("handbook\n4 documents") and "all-MiniLM-L6-v2-F16" in item
    names = [docs.table.item(r, 0).text() for r in range(docs.table.rowCount())]
    assert sorted(names) == ["alpacas.txt", "broken.pdf", "guide.html", "llamas.md"]
    states = {docs.table.item(r, 0).text(): docs.table.item(r, 3).text() for r in range(4)}
    assert states["llamas.md"].startswith("Indexed") and "broken.pdf" in states["broken.pdf"]
    assert docs.update_button.isEnabled() and docs.remove_button.isEnabled()
    # The chat's picker offers the new collection; the choice is kept with the conversation.
    qtbot.waitUntil(lambda: "handbook" in chat.collection_names, timeout=10_000)
    for _ in range(5):
        QApplication.processEvents()
    shoot(window, "page")

    # Update: nothing changed, so nothing is read again.
    docs.update_selected()
    report = wait_indexed(qtbot, docs.progress)
    assert len(report.unchanged) == 3 and not report.added

    with ChatStore() as store:
        conv = store.create_conversation(title="Handbook questions")
    chat.open_conversation(conv.id)
    qtbot.waitUntil(lambda: chat.conversation is not None and chat.conversation.id == conv.id, timeout=5000)
    chat._fill_docs_menu()
    action = next(a for a in chat.docs_menu.actions() if a.text() == "handbook")
    action.setChecked(True)
    assert chat.document_names() == ["handbook"] and "handbook" in chat.docs_button.text()

    def kept() -> bool:
        with ChatStore() as store:
            return store.conversation(conv.id).settings.get("documents") == ["handbook"]
    qtbot.waitUntil(kept, timeout=5000)

    docs.remove_selected(confirm=False)
    qtbot.waitUntil(lambda: docs.list.count() == 0 and docs.table.rowCount() == 0, timeout=10_000)
    assert docs.empty_hint.isVisible() and not docs.remove_button.isEnabled()
    assert (folder / "llamas.md").exists()
    qtbot.waitUntil(lambda: "handbook" not in chat.collection_names, timeout=10_000)
    close_window(window)


def test_cancel_stops_a_long_index(qtbot, tmp_path: Path, embedder_setting: Path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(400):
        (folder / f"note-{i:03d}.md").write_text(f"# Note {i}\n\n" + f"Paragraph {i} about llamas and hay. " * 40,
                                                 encoding="utf-8")
    window = open_window(qtbot)
    docs: DocsView = window.pages["Documents"]
    assert window.show_page("Documents")
    docs.add_paths_to("many", [str(folder)])
    progress = docs.progress
    qtbot.waitUntil(lambda: progress.last_progress is not None and progress.last_progress.files_done >= 3,
                    timeout=120_000)
    assert progress.running and progress.cancel_button.isVisible()
    progress.cancel_button.click()
    report = wait_indexed(qtbot, progress, timeout=30_000)
    assert report.cancelled
    done = len(report.added)
    assert 3 <= done < 400
    assert "Cancelled" in progress.label.text()
    qtbot.waitUntil(lambda: docs.table.rowCount() == done, timeout=10_000)
    assert docs.add_folder_button.isEnabled()
    close_window(window)


def test_documents_page_says_when_no_embedding_model_is_set(qtbot, tmp_path: Path, embedding_model: Path) -> None:
    (tmp_path / "a.md").write_text("# A\n\nWords only.\n")
    window = open_window(qtbot)
    docs: DocsView = window.pages["Documents"]
    assert window.show_page("Documents")
    assert docs.embed_note.isVisible() and EMBEDDING_SETTING in docs.embed_note.text()
    docs.add_paths_to("plain", [str(tmp_path / "a.md")])
    report = wait_indexed(qtbot, docs.progress)
    assert report.lexical_only and "word search only" in docs.progress.label.text()
    qtbot.waitUntil(lambda: docs.list.count() == 1, timeout=10_000)
    assert "words only" in docs.list.item(0).text()

    # Setting the model on the page saves the setting; the next collection is searched by meaning too.
    docs.embed_edit.setText(str(embedding_model))
    docs.embed_save.click()
    assert Settings()[EMBEDDING_SETTING] == str(embedding_model)
    assert not docs.embed_note.isVisible()
    docs.add_paths_to("meaning", [str(tmp_path / "a.md")])
    report = wait_indexed(qtbot, docs.progress)
    assert not report.lexical_only and report.embedder == embedding_model.name.removesuffix(".gguf")
    close_window(window)


def test_dropping_files_on_the_chat_attaches_them(qtbot, tmp_path: Path) -> None:
    from PySide6.QtCore import QMimeData, QPointF, QUrl
    from PySide6.QtGui import QDropEvent

    from app.core.docs.store import DocIndex

    notes = tmp_path / "notes.md"
    notes.write_text("# Notes\n\nHay is dried grass.\n", encoding="utf-8")
    folder = tmp_path / "papers"
    folder.mkdir()
    (folder / "one.txt").write_text("Camelids chew cud.\n")
    window = open_window(qtbot)
    chat: ChatView = window.pages["Chat"]

    # Onto the input box: attached, not pasted as a file:// line.
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(notes))])
    assert chat.input.canInsertFromMimeData(mime)
    chat.input.insertFromMimeData(mime)
    assert chat.input.toPlainText() == ""
    wait_indexed(qtbot, chat.attach_progress)
    qtbot.waitUntil(lambda: chat.chip_names() == ["notes.md"], timeout=10_000)
    conv_id = chat.conversation.id

    # Onto the page: a folder.
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(folder))])
    drop = QDropEvent(QPointF(20, 20), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                      Qt.KeyboardModifier.NoModifier)
    chat.dropEvent(drop)
    report = wait_indexed(qtbot, chat.attach_progress)
    assert [Path(p).name for p in report.added] == ["one.txt"]
    qtbot.waitUntil(lambda: sorted(chat.chip_names()) == ["notes.md", "papers"], timeout=10_000)
    assert chat.document_names() == [f"chat-{conv_id}"]

    # Deleting the conversation forgets its attachments (the files stay).
    chat.delete_current(confirm=False)

    def gone() -> bool:
        with DocIndex() as index:
            return all(c.name != f"chat-{conv_id}" for c in index.collections(private=True))
    qtbot.waitUntil(gone, timeout=10_000)
    assert notes.exists() and chat.chip_names() == []
    close_window(window)


def test_screenshot_of_the_documents_page(tmp_path: Path, camelid_home: Path) -> None:
    import subprocess
    import sys

    from PySide6.QtGui import QImage

    from app.ui.screenshot import SIZE

    out = tmp_path / "documents.png"
    result = subprocess.run([sys.executable, "-m", "app", "gui", "--screenshot", str(out), "--page", "documents"],
                            capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr
    image = QImage(str(out))
    assert (image.width(), image.height()) == SIZE
    # Demo state never opens the user's document index.
    assert not (paths.data_dir() / "docs.sqlite3").exists()
