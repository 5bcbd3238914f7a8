"""Versions of a turn: edits and regenerations keep the old text, and the v1 -> v2 migration keeps every message."""

from __future__ import annotations

import json
import sqlite3

from app import paths
from app.core.chat.chats import ChatStore, _migration_1


def test_edit_keeps_the_old_turn_and_its_reply_and_the_switcher_follows() -> None:
    with ChatStore() as store:
        conv = store.create_conversation()
        q1 = store.add_message(conv.id, "user", "first question")
        a1 = store.add_message(conv.id, "assistant", "first answer")
        q2 = store.add_message(conv.id, "user", "second question")
        store.add_message(conv.id, "assistant", "second answer")

        edited = store.edit_message(q2.id, "second question, edited")
        store.add_message(conv.id, "assistant", "answer to the edit")
        now = store.conversation(conv.id)
        assert [m.content for m in now.messages] == ["first question", "first answer",
                                                     "second question, edited", "answer to the edit"]
        assert now.messages[2].versions == (q2.id, edited.id) and now.messages[2].version == 2
        assert now.messages[0].versions == (q1.id,) and now.messages[1].id == a1.id
        # The prompt the engine sees follows the chosen version only.
        assert [m["content"] for m in now.chat_messages()][-2:] == ["second question, edited",
                                                                   "answer to the edit"]

        back = store.choose_version(q2.id)
        assert [m.content for m in back.messages][2:] == ["second question", "second answer"]
        assert back.messages[2].version == 1
    # The choice is stored: a reopened store reads the same branch.
    with ChatStore() as again:
        reopened = again.conversation(conv.id)
        assert [m.content for m in reopened.messages][2:] == ["second question", "second answer"]
        forward = again.choose_version(edited.id)
        assert [m.content for m in forward.messages][2:] == ["second question, edited", "answer to the edit"]


def test_regenerate_keeps_the_old_reply_as_a_version() -> None:
    with ChatStore() as store:
        conv = store.create_conversation()
        store.add_message(conv.id, "user", "hi")
        old = store.add_message(conv.id, "assistant", "old reply")
        store.rewind_to_before(old.id)
        assert [m.content for m in store.conversation(conv.id).messages] == ["hi"]
        writer = store.begin_reply(conv.id)
        writer.append("new reply")
        new = writer.finish()
        messages = store.conversation(conv.id).messages
        assert [m.content for m in messages] == ["hi", "new reply"]
        assert messages[1].versions == (old.id, new.id)
        assert store.message(old.id).content == "old reply"
        assert store.choose_version(old.id).messages[1].content == "old reply"
        # Exports follow the chosen version and say how many there are.
        exported = store.export_json(conv.id)["messages"]
        assert exported[1]["content"] == "old reply" and exported[1]["versions"] == 2


def test_migration_from_schema_1_keeps_every_message() -> None:
    """A database made by schema 1 (the released one), with two conversations, opens with everything in order."""
    path = paths.chats_db_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN")
    _migration_1(db)
    db.execute("PRAGMA user_version = 1")
    db.execute("COMMIT")
    rows = []
    for conv_id, title in ((1, "Poem"), (2, "Empty")):
        db.execute("INSERT INTO conversations (id, title, created_at, updated_at) VALUES (?, ?, 1, 1)",
                   (conv_id, title))
    for n in range(6):
        role = "user" if n % 2 == 0 else "assistant"
        text = f"line {n}\nsecond line {n}"
        stats = json.dumps({"completion_tokens": n}) if role == "assistant" else None
        state = "stopped" if n == 5 else "complete"
        db.execute("INSERT INTO messages (conversation_id, role, content, stats, state, created_at, updated_at)"
                   " VALUES (1, ?, ?, ?, ?, ?, ?)", (role, text, stats, state, 10 + n, 10 + n))
        rows.append((role, text, state))
    db.close()

    with ChatStore() as store:
        assert store.notice is None and store.schema_version() == 2
        conv = store.conversation(1)
        assert [(m.role, m.content, m.state) for m in conv.messages] == rows
        assert conv.messages[1].stats == {"completion_tokens": 1}
        assert all(m.versions == (m.id,) for m in conv.messages)
        assert store.conversation(2).messages == ()
        # And new messages go after the old ones, on the same branch.
        store.add_message(1, "user", "after the upgrade")
        assert store.conversation(1).messages[-1].parent_id == conv.messages[-1].id
    raw = sqlite3.connect(path)
    assert raw.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 7
    raw.close()
