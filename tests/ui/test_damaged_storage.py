"""The window with a damaged settings file, a damaged chat database, and storage it cannot write (real widgets)."""

from __future__ import annotations

from app import paths
from app.core.machine.simulate import preset_profile
from app.core.settings import Settings
from app.ui.chat_view import ChatView
from app.ui.main_window import create_window
from app.ui.state import AppState
from tests.fixtures.ui import close_window, open_window


def test_a_damaged_settings_file_is_said_in_the_status_bar_and_kept_on_save(qtbot) -> None:
    path = paths.settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[" * 100_000)
    window = create_window(AppState(Settings(), preset_profile("desktop-16gb-cpu")),
                           startup_problems=["The folder /x could not be created (Read-only file system)."])
    qtbot.addWidget(window)
    shown = window.statusBar().currentMessage()
    assert "cannot be used" in shown and "nests more than" in shown and "/x could not be created" in shown
    window.set_theme("dark")
    (kept,) = path.parent.glob("settings.json.damaged-*")
    assert kept.read_text() == "[" * 100_000 and str(kept) in window.statusBar().currentMessage()
    close_window(window)


def test_a_damaged_chat_database_is_said_on_the_chat_page(qtbot) -> None:
    db = paths.chats_db_path()
    db.parent.mkdir(parents=True, exist_ok=True)
    db.write_bytes(b"not a database " * 500)
    window = open_window(qtbot)
    chat: ChatView = window.pages["Chat"]
    qtbot.waitUntil(lambda: "kept, unchanged" in chat.notice.text(), timeout=10_000)
    assert "new, empty history" in chat.notice.text() and not chat.error.text()
    assert len(list(db.parent.glob("chats.sqlite3.damaged-*"))) == 1
    close_window(window)


def test_a_chat_store_that_cannot_save_is_said_on_the_chat_page(qtbot) -> None:
    db = paths.chats_db_path()
    db.mkdir(parents=True)  # a folder where the database file must be: SQLite cannot open it
    window = open_window(qtbot)
    chat: ChatView = window.pages["Chat"]
    qtbot.waitUntil(lambda: "nothing is saved" in chat.notice.text(), timeout=10_000)
    assert db.is_dir() and not any(db.iterdir())
    close_window(window)
