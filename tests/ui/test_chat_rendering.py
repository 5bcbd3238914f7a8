"""The chat page without a model: line breaks, code blocks that scroll inside the bubble, versions, export, list."""

from __future__ import annotations

import json
import time
from pathlib import Path

from PySide6.QtGui import QTextDocument
from PySide6.QtWidgets import QApplication, QLabel

from app.core.chat.chats import ChatStore
from app.ui.chat_view import ChatView, when_text
from app.ui.widgets.markdown_view import CodeBlock, keep_line_breaks, split_code_blocks
from app.ui.widgets.message_bubble import MessageBubble, stats_text
from tests.fixtures import ui
from tests.fixtures.ui import close_window

POEM = "The sea is wide,\nthe sea is deep,\nit sings at night\nand does not sleep."
LONG_LINE = "return " + " + ".join(f"value_number_{n}" for n in range(80))


def _lines(markdown: str) -> list[str]:
    """The lines Qt's Markdown renderer draws (hard breaks are U+2028 in the document)."""
    doc = QTextDocument()
    doc.setMarkdown(markdown)
    return [line for line in doc.toPlainText().replace("\u2028", "\n").split("\n") if line.strip()]


def test_single_newlines_survive_rendering(qtbot) -> None:
    assert len(_lines(POEM)) == 1  # what Qt does on its own: one paragraph
    assert _lines(keep_line_breaks(POEM)) == POEM.split("\n")
    for role in ("assistant", "user"):
        bubble = MessageBubble(role, POEM)
        qtbot.addWidget(bubble)
        prose = [p for p in bubble.body.parts if isinstance(p, QLabel)]
        assert len(prose) == 1 and _lines(prose[0].text()) == POEM.split("\n")
    # Paragraphs, lists and headings keep their Markdown meaning.
    doc = QTextDocument()
    doc.setMarkdown(keep_line_breaks("# Title\n\n- one\n- two\n\nend"))
    assert doc.toPlainText().split("\n")[0] == "Title" and doc.blockCount() >= 4


def test_code_blocks_are_split_out_even_while_streaming() -> None:
    text = "Here:\n```python\nprint('a')\n\nprint('b')\n```\nDone.\n```sh\nls -l"
    segments = split_code_blocks(text)
    assert [(s.language, s.text) for s in segments] == [
        (None, "Here:"), ("python", "print('a')\n\nprint('b')"), (None, "Done."), ("sh", "ls -l")]


def test_a_long_code_line_does_not_widen_the_view(qtbot) -> None:
    window = ui.open_window(qtbot)
    window.resize(1366, 768)
    chat: ChatView = window.pages["Chat"]
    window.show_page("Chat") if hasattr(window, "show_page") else None
    chat._add_bubble("user", "Write a function.")
    chat._add_bubble("assistant", "Short answer first.")
    qtbot.wait(50)
    QApplication.processEvents()
    viewport = chat.scroll.viewport().width()
    before = [b.width() for b in chat.bubbles]
    reply = chat._add_bubble("assistant", f"Here it is:\n```python\ndef add(a, b):\n    {LONG_LINE}\n```\nThat is all.")
    qtbot.wait(50)
    QApplication.processEvents()
    assert chat.scroll.viewport().width() == viewport
    assert chat.messages_widget.width() <= viewport
    assert [b.width() for b in chat.bubbles[:2]] == before
    assert reply.width() <= viewport and reply.width() == before[1]
    (block,) = reply.body.code_blocks()
    assert isinstance(block, CodeBlock) and block.width() < reply.width()
    assert block.editor.horizontalScrollBar().maximum() > 0  # it scrolls inside its own box
    assert block.editor.font().fixedPitch() or "mono" in block.editor.font().family().lower() \
        or block.editor.fontInfo().fixedPitch()
    block.copy_button.click()
    assert QApplication.clipboard().text() == f"def add(a, b):\n    {LONG_LINE}"
    # The Copy and Edit buttons stay inside the bubble.
    assert reply.copy_button.geometry().right() <= reply.width()
    # The conversation ends where its last bubble ends (no empty scrolling past it).
    for n in range(6):
        chat._add_bubble("user", POEM + f" {n} " + "more words " * 40)
    qtbot.wait(50)
    QApplication.processEvents()
    last = chat.bubbles[-1].geometry().bottom()
    assert chat.messages_widget.height() > chat.scroll.viewport().height()
    assert chat.messages_widget.height() - last < 40
    close_window(window)


def test_versions_switch_and_persist_across_reopen(qtbot) -> None:
    with ChatStore() as store:
        conv = store.create_conversation()
        q = store.add_message(conv.id, "user", "Tell me a joke.")
        old = store.add_message(conv.id, "assistant", "Old joke.")
        store.edit_message(q.id, "Tell me a better joke.")
        store.add_message(conv.id, "assistant", "Better joke.")
    window = ui.open_window(qtbot)
    chat: ChatView = window.pages["Chat"]
    qtbot.waitUntil(lambda: chat.list.count() == 1, timeout=5000)
    chat._open_item(chat.list.item(0))
    qtbot.waitUntil(lambda: len(chat.bubbles) == 2, timeout=5000)
    user = chat.bubbles[0]
    assert user.text == "Tell me a better joke." and user.version_label.text() == "2/2"
    assert user.previous_button.isVisibleTo(user) and not user.next_button.isEnabled()
    assert not chat.bubbles[1].version_label.isVisibleTo(chat.bubbles[1])
    user.previous_button.click()
    qtbot.waitUntil(lambda: len(chat.bubbles) == 2 and chat.bubbles[0].text == "Tell me a joke.", timeout=5000)
    assert chat.bubbles[0].version_label.text() == "1/2" and chat.bubbles[1].text == "Old joke."
    assert chat.bubbles[1].message_id == old.id
    close_window(window)

    again = ui.open_window(qtbot)
    chat2: ChatView = again.pages["Chat"]
    qtbot.waitUntil(lambda: chat2.list.count() == 1, timeout=5000)
    chat2._open_item(chat2.list.item(0))
    qtbot.waitUntil(lambda: len(chat2.bubbles) == 2, timeout=5000)
    assert [b.text for b in chat2.bubbles] == ["Tell me a joke.", "Old joke."]
    chat2.bubbles[0].next_button.click()
    qtbot.waitUntil(lambda: chat2.bubbles and chat2.bubbles[0].version_label.text() == "2/2", timeout=5000)
    assert chat2.bubbles[1].text == "Better joke."
    close_window(again)


def test_edit_in_place_cancel_changes_nothing(qtbot) -> None:
    bubble = MessageBubble("user", "hello")
    qtbot.addWidget(bubble)
    seen: list[str] = []
    bubble.edit_saved.connect(seen.append)
    bubble.edit_button.click()
    assert bubble.editing and bubble.editor.toPlainText() == "hello"
    bubble.editor.setPlainText("changed")
    bubble.cancel_edit_button.click()
    assert not bubble.editing and bubble.text == "hello" and seen == []
    bubble.edit_button.click()
    bubble.editor.setPlainText("changed")
    bubble.save_edit_button.click()
    assert seen == ["changed"] and not bubble.editing


def test_stop_reason_is_said_under_the_reply() -> None:
    assert stats_text({"completion_tokens": 458, "stop_reason": "context"}).endswith(
        "stopped: the context is full")
    assert "length limit" in stats_text({"completion_tokens": 9, "stop_reason": "length"})
    assert stats_text({"completion_tokens": 9, "stop_reason": "cancelled"}, "stopped").endswith("stopped")
    assert "stopped" not in stats_text({"completion_tokens": 9, "stop_reason": "stop"})


def test_list_titles_elide_and_show_dates_and_export(qtbot, tmp_path: Path) -> None:
    with ChatStore() as store:
        conv = store.create_conversation()
        store.add_message(conv.id, "user", "word " * 30)
        store.add_message(conv.id, "assistant", POEM)
    window = ui.open_window(qtbot)
    chat: ChatView = window.pages["Chat"]
    qtbot.waitUntil(lambda: chat.list.count() == 1, timeout=5000)
    item = chat.list.item(0)
    assert item.text().split("\n")[1].startswith("Today ")
    assert chat.list.horizontalScrollBar().maximum() == 0
    chat._open_item(item)
    qtbot.waitUntil(lambda: len(chat.bubbles) == 2, timeout=5000)
    chat.export_current(tmp_path / "chat.md")
    qtbot.waitUntil(lambda: (tmp_path / "chat.md").exists(), timeout=5000)
    assert POEM in (tmp_path / "chat.md").read_text(encoding="utf-8")
    chat.export_current(tmp_path / "chat.json")
    qtbot.waitUntil(lambda: (tmp_path / "chat.json").exists(), timeout=5000)
    data = json.loads((tmp_path / "chat.json").read_text(encoding="utf-8"))
    assert [m["role"] for m in data["messages"]] == ["user", "assistant"]
    qtbot.waitUntil(lambda: "Saved to" in chat.notice.text(), timeout=5000)
    close_window(window)


def test_when_text() -> None:
    now = time.mktime((2026, 12, 2, 15, 0, 0, 0, 0, -1))
    assert when_text(now - 60, now).startswith("Today ")
    assert when_text(now - 86400, now) == "Yesterday"
    assert when_text(now - 3 * 86400, now) == "Sunday"
    assert when_text(now - 40 * 86400, now) == "23 Oct"
    assert when_text(now - 400 * 86400, now).endswith("2025")


def test_streaming_updates_the_same_widgets_in_place(qtbot) -> None:
    bubble = MessageBubble("assistant", "")
    qtbot.addWidget(bubble)
    bubble.set_text("Here:\n```py\nprint(1)")
    (block,) = bubble.body.code_blocks()
    bubble.set_text("Here:\n```py\nprint(1)\nprint(2)")
    assert bubble.body.code_blocks() == [block] and block.code == "print(1)\nprint(2)"
    bubble.set_text("Here:\n```py\nprint(1)\nprint(2)\n```\nDone.")
    assert bubble.body.code_blocks() == [block] and len(bubble.body.parts) == 3
