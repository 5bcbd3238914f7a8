"""Conversation store: real SQLite in CAMELID_HOME (no model needed)."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest

from app import paths
from app.core.chat.chats import (
    MIGRATIONS,
    SCHEMA_VERSION,
    ChatStore,
    derive_title,
)
from app.core.errors import ChatStoreError, ConversationNotFoundError


@pytest.fixture
def store() -> ChatStore:
    with ChatStore() as s:
        yield s


def test_file_lives_at_paths_and_uses_wal(store: ChatStore) -> None:
    assert store.path == paths.chats_db_path()
    assert store.schema_version() == SCHEMA_VERSION == len(MIGRATIONS)
    mode = sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_title_from_first_user_message_and_reopen(store: ChatStore) -> None:
    conv = store.create_conversation(model="m.gguf", system_prompt="Be brief.", settings={"seed": 1})
    assert conv.title == ""
    store.add_message(conv.id, "user", "  How   do camels\nstore water?  ")
    store.add_message(conv.id, "assistant", "In fat, not water.", stats={"completion_tokens": 5})
    store.add_message(conv.id, "user", "Really?")
    store.close()
    with ChatStore() as again:
        back = again.conversation(conv.id)
    assert back.title == "How do camels store water?"
    assert back.model == "m.gguf" and back.settings == {"seed": 1}
    assert [m.role for m in back.messages] == ["user", "assistant", "user"]
    assert back.messages[1].stats == {"completion_tokens": 5}
    assert back.chat_messages()[0] == {"role": "system", "content": "Be brief."}
    assert len(back.chat_messages()) == 4


def test_derive_title_cuts_at_a_word() -> None:
    title = derive_title("word " * 40)
    assert title.endswith("…") and len(title) <= 61 and "  " not in title
    assert derive_title("   ") == "New chat"


def test_rename_delete_and_missing(store: ChatStore) -> None:
    conv = store.create_conversation()
    store.add_message(conv.id, "user", "hello")
    assert store.rename(conv.id, "  My   chat ").title == "My chat"
    with pytest.raises(ChatStoreError):
        store.rename(conv.id, "   ")
    store.delete(conv.id)
    with pytest.raises(ConversationNotFoundError):
        store.conversation(conv.id)
    count = store._conn().execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    assert count == 0  # messages went with it (foreign key cascade)
    with pytest.raises(ConversationNotFoundError):
        store.delete(conv.id)


def test_list_most_recent_first(store: ChatStore) -> None:
    a = store.create_conversation(title="a")
    b = store.create_conversation(title="b")
    store.add_message(a.id, "user", "bump a")
    assert [c.id for c in store.list_conversations()] == [a.id, b.id]
    assert len(store.list_conversations(limit=1)) == 1


def test_search_titles_and_messages(store: ChatStore) -> None:
    a = store.create_conversation()
    store.add_message(a.id, "user", "Tell me about dromedaries")
    store.add_message(a.id, "assistant", "A dromedary has one hump; 100% true, with_underscore.")
    b = store.create_conversation(title="Llama facts")
    store.add_message(b.id, "user", "What do llamas eat?")
    hits = store.search("HUMP")
    assert [h.conversation_id for h in hits] == [a.id] and "hump" in hits[0].snippet
    assert hits[0].message_id is not None
    assert [h.conversation_id for h in store.search("llama")] == [b.id]
    # LIKE wildcards in the query are literal.
    assert [h.conversation_id for h in store.search("100%")] == [a.id]
    assert store.search("with_under") and not store.search("withXunder")
    assert store.search("  ") == []


def test_unicode_and_emoji_round_trip(store: ChatStore) -> None:
    text = "Ünïcødé 🐫🌵 日本語 — «quotes» \u200d👩‍💻"
    conv = store.create_conversation()
    store.add_message(conv.id, "user", text)
    assert store.conversation(conv.id).messages[0].content == text
    assert store.search("🐫")[0].conversation_id == conv.id


def test_export_markdown_and_json(store: ChatStore, tmp_path: Path) -> None:
    conv = store.create_conversation(model="m.gguf", system_prompt="Sys.")
    store.add_message(conv.id, "user", "Hi 🐫")
    writer = store.begin_reply(conv.id)
    writer.append("Hel")
    writer.finish(state="stopped", stats={"stop_reason": "cancelled"})
    md = store.export_markdown(conv.id)
    assert md.startswith("# Hi 🐫\n") and "## System\n\nSys." in md
    assert "## User\n\nHi 🐫" in md and "## Assistant (stopped)\n\nHel" in md
    data = store.export_json(conv.id)
    assert data["format"] == "camelid-conversation" and data["schema_version"] == SCHEMA_VERSION
    assert [m["content"] for m in data["messages"]] == ["Hi 🐫", "Hel"]
    out = store.export(conv.id, tmp_path / "c.json")
    assert json.loads(out.read_text(encoding="utf-8"))["title"] == "Hi 🐫"
    assert store.export(conv.id, tmp_path / "c.md").read_text(encoding="utf-8") == md


def test_reply_writer_flushes_while_streaming(store: ChatStore) -> None:
    conv = store.create_conversation()
    store.add_message(conv.id, "user", "q")
    slow = store.begin_reply(conv.id, flush_interval=3600)
    slow.append("a")
    slow.append("b")
    assert store.message(slow.message_id).content == ""  # not yet: interval not reached
    assert store.message(slow.message_id).state == "streaming"
    slow.flush()
    assert store.message(slow.message_id).content == "ab"
    eager = store.begin_reply(conv.id, flush_interval=0)
    eager.append("x")
    assert store.message(eager.message_id).content == "x"
    final = eager.finish(stats={"completion_tokens": 1})
    assert final.state == "complete" and final.stats == {"completion_tokens": 1}


def test_errored_replies_are_left_out_of_the_prompt(store: ChatStore) -> None:
    conv = store.create_conversation()
    store.add_message(conv.id, "user", "q")
    store.begin_reply(conv.id).finish(state="error")
    assert store.conversation(conv.id).chat_messages() == [{"role": "user", "content": "q"}]


def test_reader_thread_sees_writer_progress(store: ChatStore) -> None:
    conv = store.create_conversation()
    store.add_message(conv.id, "user", "q")
    seen: list[str] = []
    writer_done = threading.Event()

    def write() -> None:
        w = store.begin_reply(conv.id, flush_interval=0)
        for piece in ("one ", "two ", "three"):
            w.append(piece)
        w.finish()
        writer_done.set()

    t = threading.Thread(target=write)
    t.start()
    t.join()
    assert writer_done.is_set()
    seen.append(store.conversation(conv.id).messages[-1].content)
    assert seen == ["one two three"]


def test_migration_from_a_new_file_and_a_newer_schema_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)  # version 0: SQLite's header, no tables yet
    db.execute("VACUUM")
    db.close()
    with ChatStore(path) as s:
        assert s.schema_version() == SCHEMA_VERSION and s.notice is None
        s.create_conversation(title="kept")
    with ChatStore(path) as s:  # reopening does not re-run migrations
        assert [c.title for c in s.list_conversations()] == ["kept"]
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with ChatStore(path) as s:
        assert s.notice is not None and "newer Camelid" in s.notice and s.list_conversations() == []
    (kept,) = tmp_path.glob("old.sqlite3.newer-*")
    assert kept.name in s.notice
    db = sqlite3.connect(kept)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    assert db.execute("SELECT title FROM conversations").fetchall() == [("kept",)]
    db.close()


# --- F10: a damaged database is set aside, kept unchanged, and never written to --------------------------------------

def _history(path: Path, conversations: int = 60, messages: int = 20) -> bytes:
    """A real history (60 x 20 by default), checkpointed into the main file; its bytes."""
    with ChatStore(path) as s:
        for i in range(conversations):
            conv = s.create_conversation(title=f"chat {i}")
            for j in range(messages):
                s.add_message(conv.id, "user" if j % 2 == 0 else "assistant", f"message {i}.{j} " * 10)
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    for side in ("-wal", "-shm"):
        Path(f"{path}{side}").unlink(missing_ok=True)
    return path.read_bytes()


def _overwrite_pages(data: bytes, first: int, count: int) -> bytes:
    page = 4096
    junk = bytes((i * 131 + 7) % 256 for i in range(page * count))
    return data[:first * page] + junk + data[(first + count) * page:]


def _foreign(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE recipes (name TEXT)")
    db.commit()
    db.close()


def _missing_columns(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE conversations (id INTEGER PRIMARY KEY)")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()


def _newer(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    db.commit()
    db.close()


DAMAGE = {
    # name: (how to damage a 60 x 20 history, a fragment of the sentence, the copy's label)
    "garbage": (lambda p, d: p.write_bytes(bytes(range(256)) * 40), "is not an SQLite database", "damaged"),
    "zero bytes": (lambda p, d: p.write_bytes(b""), "was empty (0 bytes)", "damaged"),
    "truncated": (lambda p, d: p.write_bytes(d[:len(d) // 2]), "is damaged", "damaged"),
    "header wiped": (lambda p, d: p.write_bytes(b"\0" * 100 + d[100:]), "is not an SQLite database", "damaged"),
    "pages overwritten": (lambda p, d: p.write_bytes(_overwrite_pages(d, 3, 20)), "is damaged", "damaged"),
    "cut inside the header": (lambda p, d: p.write_bytes(d[:60]), "truncated", "damaged"),
    "foreign tables": (lambda p, d: (p.unlink(), _foreign(p)), "did not create", "damaged"),
    "missing columns": (lambda p, d: (p.unlink(), _missing_columns(p)), "tables and columns", "damaged"),
    "newer schema": (lambda p, d: _newer(p), "newer Camelid", "newer"),
}


@pytest.mark.parametrize("name", sorted(DAMAGE))
def test_a_damaged_database_is_kept_aside_and_a_new_history_started(name: str) -> None:
    path = paths.chats_db_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    damage, fragment, label = DAMAGE[name]
    damage(path, _history(path))
    before = path.read_bytes()
    with ChatStore() as store:
        assert store.notice is not None and fragment in store.notice and "new, empty history" in store.notice
        assert store.saving and store.list_conversations() == []
        conv = store.create_conversation(title="after")
        store.add_message(conv.id, "user", "still works")
    (kept,) = path.parent.glob(f"chats.sqlite3.{label}-*")
    assert kept.name in store.notice
    assert kept.read_bytes() == before  # kept exactly as found: never written to
    with ChatStore() as again:
        assert again.notice is None and [c.title for c in again.list_conversations()] == ["after"]


def test_the_wal_travels_with_the_copy() -> None:
    path = paths.chats_db_path()
    with ChatStore() as store:
        store.create_conversation(title="only in the WAL")
        wal = Path(f"{path}-wal")
        assert wal.stat().st_size > 0
        _newer(path)  # while the first connection keeps the WAL from being checkpointed
    with ChatStore() as store:
        assert store.notice and "newer" in store.notice
    (kept,) = path.parent.glob("chats.sqlite3.newer-*")
    db = sqlite3.connect(kept)
    assert db.execute("SELECT title FROM conversations").fetchall() == [("only in the WAL",)]
    db.close()


def test_damage_found_after_opening_is_a_sentence_and_stops_writes() -> None:
    path = paths.chats_db_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    _history(path)
    with ChatStore() as store:
        store.list_conversations()
        damaged = _overwrite_pages(path.read_bytes(), 1, 60)
        path.write_bytes(damaged)
        outcome: list[BaseException] = []

        def fresh_connection() -> None:  # a new thread reads through a connection with an empty cache
            try:
                store.search("message")
                store.list_conversations()
            except BaseException as exc:
                outcome.append(exc)
        t = threading.Thread(target=fresh_connection)
        t.start()
        t.join()
        assert outcome and isinstance(outcome[0], ChatStoreError), outcome
        assert "damaged" in str(outcome[0]) and "start Camelid again" in str(outcome[0])
        with pytest.raises(ChatStoreError, match="nothing more is written"):
            store.create_conversation(title="must not land in the damaged file")
    assert path.read_bytes() == damaged


def test_chat_list_on_a_damaged_database_is_a_note_not_a_traceback(camelid_home: Path) -> None:
    import subprocess
    import sys

    from tests.fixtures import REPO_ROOT

    path = paths.chats_db_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00garbage" * 1000)
    out = subprocess.run([sys.executable, "-m", "app", "chat", "--list"], capture_output=True, text=True,
                         cwd=REPO_ROOT, timeout=60)
    assert out.returncode == 0 and "Traceback" not in out.stderr
    assert "camelid: note: The conversation database" in out.stderr and "No saved conversations" in out.stdout
    assert len(list(camelid_home.glob("chats.sqlite3.damaged-*"))) == 1
