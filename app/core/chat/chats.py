"""Conversations in SQLite: create, stream replies into, reopen, rename, search, export.

The file is `paths.chats_db_path()` in WAL mode with `synchronous=NORMAL`: a
committed write survives the process being killed (it sits in the WAL, which
the OS already holds), and readers never wait for the writer. An assistant
reply is a row from its first token: `ReplyWriter` rewrites its text at most
every `flush_interval` seconds while tokens arrive and once more when the
reply ends, so a crash loses at most the last second of what was shown.

Threads: `ChatStore` keeps one SQLite connection per thread (opened on first
use in that thread), so the GUI thread can read while the engine's thread
writes, without a Python lock; SQLite's own locking (with a busy timeout)
serialises the writers. Objects returned are frozen snapshots, safe to pass
between threads. Call `close()` once, when no thread is using the store.

Schema changes go in `MIGRATIONS`: entry i moves a file from version i to
i + 1 (`PRAGMA user_version`).

Versions: messages form a tree (`parent_id`); an edit or a regeneration adds a
sibling instead of deleting anything, and `conversations.leaf_id` names the end
of the branch the person chose. `conversation()` returns that branch, each
message carrying the ids of its turn's versions (for a ‹ 2/3 › switcher).

Opening never writes into a file it cannot trust. A file that is not SQLite,
fails SQLite's quick check, holds tables Camelid did not make, or comes from a
newer Camelid is moved aside (with its -wal and -shm) as
`chats.sqlite3.damaged-<date>` or `.newer-<date>`, a new history is started,
and `notice` says so. Where the file or its folder cannot be written (read-only
storage, a full disk), the history is copied into a temporary database that is
deleted on close: chatting works, nothing is saved, and `notice` says that.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app import paths
from app.core.errors import ChatStoreError, ConversationNotFoundError

ROLES = ("system", "user", "assistant")
#: Message states: `streaming` is a reply being written (or one whose writer
#: died: the text is what had been shown); `stopped` was cut by the user.
STATES = ("complete", "streaming", "stopped", "error")
TITLE_LENGTH = 60
EXPORT_FORMAT = "camelid-conversation"


def _migration_1(db: sqlite3.Connection) -> None:
    # One statement at a time: executescript() would commit the migration's
    # transaction halfway.
    for statement in (
        """CREATE TABLE conversations (
            id            INTEGER PRIMARY KEY,
            title         TEXT NOT NULL DEFAULT '',
            model         TEXT,
            system_prompt TEXT NOT NULL DEFAULT '',
            settings      TEXT NOT NULL DEFAULT '{}',
            created_at    REAL NOT NULL,
            updated_at    REAL NOT NULL
        )""",
        """CREATE TABLE messages (
            id              INTEGER PRIMARY KEY,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            role            TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
            content         TEXT NOT NULL DEFAULT '',
            stats           TEXT,
            state           TEXT NOT NULL DEFAULT 'complete',
            created_at      REAL NOT NULL,
            updated_at      REAL NOT NULL
        )""",
        "CREATE INDEX messages_by_conversation ON messages(conversation_id, id)",
        "CREATE INDEX conversations_by_recent ON conversations(updated_at DESC)",
    ):
        db.execute(statement)


def _migration_2(db: sqlite3.Connection) -> None:
    # Versions of a turn: each message points at the one before it in its branch
    # (`parent_id`), so an edit or a regeneration is a sibling and nothing is
    # deleted; the conversation remembers the message its chosen branch ends at
    # (`leaf_id`). Existing conversations become one branch, in id order, so
    # every old message stays and reads as before.
    for statement in (
        "ALTER TABLE messages ADD COLUMN parent_id INTEGER REFERENCES messages(id) ON DELETE CASCADE",
        "ALTER TABLE conversations ADD COLUMN leaf_id INTEGER",
        """UPDATE messages SET parent_id = (
            SELECT MAX(p.id) FROM messages p
            WHERE p.conversation_id = messages.conversation_id AND p.id < messages.id)""",
        """UPDATE conversations SET leaf_id = (
            SELECT MAX(m.id) FROM messages m WHERE m.conversation_id = conversations.id)""",
        "CREATE INDEX messages_by_parent ON messages(conversation_id, parent_id, id)",
    ):
        db.execute(statement)


#: MIGRATIONS[i] upgrades a database from user_version i to i + 1.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_migration_1, _migration_2)
SCHEMA_VERSION = len(MIGRATIONS)

_SQLITE_MAGIC = b"SQLite format 3\x00"
#: SQLite result codes that mean the file's contents are bad (anything else is the storage or a lock).
_DAMAGE_CODES = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
#: ... and those that mean the storage cannot take writes: the store then runs without saving.
_UNWRITABLE_CODES = ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH", "SQLITE_IOERR",
                     "SQLITE_FULL")


def _code(exc: BaseException) -> str:
    return str(getattr(exc, "sqlite_errorname", "") or "")


def _is_damage(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.DatabaseError) and _code(exc).startswith(_DAMAGE_CODES)


def _is_unwritable(exc: BaseException | None) -> bool:
    if isinstance(exc, OSError):
        return True
    if isinstance(exc, sqlite3.Error):
        code = _code(exc)
        return code.startswith(_UNWRITABLE_CODES) or (not code and "readonly" in str(exc))
    return False


_expected_columns: dict[int, dict[str, set[str]]] = {}


def _schema_at(version: int) -> dict[str, set[str]]:
    """Tables and their columns after MIGRATIONS[:version], read from a scratch database."""
    if version not in _expected_columns:
        db = sqlite3.connect(":memory:")
        try:
            for step in range(version):
                MIGRATIONS[step](db)
            _expected_columns[version] = _columns(db)
        finally:
            db.close()
    return _expected_columns[version]


def _columns(db: sqlite3.Connection) -> dict[str, set[str]]:
    names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                                      " AND name NOT LIKE 'sqlite_%'")]
    return {name: {r[1] for r in db.execute(f'PRAGMA table_info("{name.replace(chr(34), chr(34) * 2)}")')} for name in names}


@dataclass(frozen=True)
class Message:
    id: int
    conversation_id: int
    role: str
    content: str
    state: str = "complete"
    stats: dict[str, Any] | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    parent_id: int | None = None
    #: Ids of every version of this turn (this message and its siblings), oldest first;
    #: filled by `ChatStore.conversation()`, empty elsewhere.
    versions: tuple[int, ...] = ()

    @property
    def version(self) -> int:
        """This message's place among its turn's versions, from 1 (1 when it has none)."""
        return self.versions.index(self.id) + 1 if self.id in self.versions else 1

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "role": self.role, "content": self.content, "state": self.state,
                "stats": self.stats, "created_at": self.created_at, "updated_at": self.updated_at,
                "version": self.version, "versions": len(self.versions) or 1}


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str
    model: str | None
    system_prompt: str
    settings: dict[str, Any]
    created_at: float
    updated_at: float
    #: Empty when listed; filled by `ChatStore.conversation()`: the chosen version of each turn, in order.
    messages: tuple[Message, ...] = field(default=())
    #: The last message of the chosen branch (None: no messages yet).
    leaf_id: int | None = None

    def chat_messages(self) -> list[dict[str, str]]:
        """The conversation as the engine takes it: system prompt first, then the turns.

        Replies that ended in an error are left out; stopped and interrupted
        replies stay, since the user saw them and may refer to them.
        """
        out: list[dict[str, str]] = []
        if self.system_prompt:
            out.append({"role": "system", "content": self.system_prompt})
        out.extend({"role": m.role, "content": m.content} for m in self.messages
                   if m.state != "error" and (m.content or m.role != "assistant"))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"format": EXPORT_FORMAT, "schema_version": SCHEMA_VERSION, "id": self.id,
                "title": self.title, "model": self.model, "system_prompt": self.system_prompt,
                "settings": self.settings, "created_at": self.created_at,
                "updated_at": self.updated_at, "messages": [m.to_dict() for m in self.messages]}


@dataclass(frozen=True)
class SearchHit:
    conversation_id: int
    title: str
    #: None when the title matched rather than a message.
    message_id: int | None
    snippet: str
    updated_at: float


def derive_title(text: str, limit: int = TITLE_LENGTH) -> str:
    """A title from the first message: one line, cut at a word boundary."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat or "New chat"
    cut = flat[:limit].rsplit(" ", 1)[0] if " " in flat[:limit] else flat[:limit]
    return cut.rstrip(" ,.;:") + "…"


class ChatStore:
    """The conversation database. Thread-safe: one SQLite connection per thread."""

    def __init__(self, path: Path | None = None, *, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path) if path else paths.chats_db_path()
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        #: A sentence for the person about how the file was opened (moved aside, not saving), or None.
        self.notice: str | None = None
        #: False when conversations live in a temporary copy that is deleted on close.
        self.saving = True
        #: The file actually used: `path`, or the temporary copy.
        self._db_path = self.path
        self._scratch: Path | None = None
        #: Set when damage shows up after opening: nothing more is written to the file.
        self._damage: str | None = None
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def opening_notice(self) -> str | None:
        """`notice`, as a call (for front doors that run store methods on a worker thread)."""
        return self.notice

    # -- opening -------------------------------------------------------------
    def _open(self) -> None:
        trouble = self._inspect()
        if trouble is not None:
            label, reason = trouble
            try:
                kept = self._set_aside(label)
            except OSError as exc:
                self._start_scratch(copy=False, why=(
                    f"The conversation database {self.path} {reason}, and it could not be moved aside "
                    f"({exc.strerror or exc}). Chats are not saved this time, and the file is left as it is."),
                    fix="Move it out of the way yourself (or free the folder) to start a new history.")
                return
            fix = " Update Camelid and put the copy back to see those chats again." if label == "newer" else ""
            self.notice = (f"The conversation database {self.path} {reason}. It was kept, unchanged, as "
                           f"{kept.name} in the same folder, and a new, empty history was started.{fix}")
        try:
            self._migrate(self._conn())
        except ChatStoreError as exc:
            if not _is_unwritable(exc.__cause__):
                raise
            self._close_connections()
            readable = self.path.is_file() and self.path.stat().st_size > 0
            self._start_scratch(copy=readable, why=(
                f"The conversation database {self.path} cannot be written "
                f"({_storage_reason(self.path.parent, exc.__cause__)}): "
                "chats work, but nothing is saved after Camelid closes."),
                fix=f"Make {self.path.parent} writable (or set CAMELID_HOME to a folder you can write to) "
                    "to keep new chats.")

    def _inspect(self) -> tuple[str, str] | None:
        """Why the file must not be used as it is, as (label, the rest of a sentence); None if usable."""
        path = self.path
        try:
            size = path.stat().st_size
            if path.is_dir() or (size > 0 and not path.is_file()):
                return None  # storage trouble, not damage: opening reports it
            with open(path, "rb") as f:
                head = f.read(100)
        except FileNotFoundError:
            return None
        except OSError:
            return None  # unreadable: the store will run without saving and say why
        if size == 0:
            wal = Path(f"{path}-wal")
            if not (wal.is_file() and wal.stat().st_size > 0):
                return ("damaged", "was empty (0 bytes): whatever it held was lost before Camelid opened it")
        elif not head.startswith(_SQLITE_MAGIC):
            return ("damaged", "is not an SQLite database (it may have been overwritten or damaged)")
        elif size < 100:
            return ("damaged", "is cut short (truncated)")
        try:
            db = sqlite3.connect(path, timeout=self._busy_timeout_s, isolation_level=None)
        except sqlite3.Error:
            return None
        try:
            rows = db.execute("PRAGMA quick_check").fetchall()
            if [tuple(r) for r in rows] != [("ok",)]:
                return ("damaged", f"is damaged (SQLite's check found: {str(rows[0][0])[:120]})")
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                return ("newer", f"was written by a newer Camelid (schema {version}; this version knows "
                                 f"{SCHEMA_VERSION})")
            found = _columns(db)
            if version < 0 or (version == 0 and found):
                return ("damaged", "holds tables that Camelid did not create")
            expected = _schema_at(version)
            missing = [t for t, cols in expected.items() if not cols <= found.get(t, set())]
            if missing:
                return ("damaged", f"does not have the tables and columns Camelid expects ({', '.join(missing)})")
        except sqlite3.Error as exc:
            if _is_damage(exc):
                return ("damaged", f"is damaged ({exc})")
            return None
        finally:
            db.close()
        return None

    def _set_aside(self, label: str) -> Path:
        """Move the file (and its -wal and -shm, which belong to it) to `<name>.<label>-<date>`."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        kept = self.path.with_name(f"{self.path.name}.{label}-{stamp}")
        n = 2
        while os.path.lexists(kept):
            kept = self.path.with_name(f"{self.path.name}.{label}-{stamp}-{n}")
            n += 1
        os.replace(self.path, kept)
        for suffix in ("-wal", "-shm"):
            side = Path(f"{self.path}{suffix}")
            if side.exists():
                os.replace(side, Path(f"{kept}{suffix}"))
        return kept

    def _start_scratch(self, *, copy: bool, why: str, fix: str) -> None:
        """Use a temporary database (deleted on close), holding a copy of the file's history if it reads."""
        try:
            self._scratch = Path(tempfile.mkdtemp(prefix="camelid-chats-"))
        except OSError as exc:
            raise ChatStoreError(f"{why} No temporary folder could be made either ({exc.strerror or exc}).",
                                 fix) from exc
        self._db_path = self._scratch / "chats.sqlite3"
        self.saving = False
        self.notice = f"{why} {fix}"
        if copy:
            self._copy_history_into(self._db_path)
        self._migrate(self._conn())

    def _copy_history_into(self, target: Path) -> None:
        # mode=ro still needs the -shm of a WAL file; immutable=1 is for media nobody writes to.
        for query in ("mode=ro", "immutable=1"):
            try:
                source = sqlite3.connect(f"{self.path.resolve().as_uri()}?{query}", uri=True)
            except sqlite3.Error:
                continue
            try:
                dest = sqlite3.connect(target)
                try:
                    source.backup(dest)
                    return
                finally:
                    dest.close()
            except sqlite3.Error:
                target.unlink(missing_ok=True)
            finally:
                source.close()

    # -- connections ---------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is not None:
            return db
        try:
            self._db_path.parent.mkdir(parents=True, exist_ok=True)
            # check_same_thread=False only so close() may close every thread's
            # connection; each connection is still used by its own thread only.
            db = sqlite3.connect(self._db_path, timeout=self._busy_timeout_s, isolation_level=None,
                                 check_same_thread=False)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute("PRAGMA foreign_keys=ON")
            except BaseException:
                db.close()
                raise
        except (sqlite3.Error, OSError) as exc:
            raise ChatStoreError(f"The conversation database {self.path} could not be opened ({_reason(exc)}).",
                                 "Check that the folder is writable and the disk is not full.") from exc
        db.row_factory = sqlite3.Row
        self._local.db = db
        with self._all_lock:
            self._all.append(db)
        return db

    def _write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run `fn` in one IMMEDIATE transaction (takes the write lock up front, no upgrade deadlock)."""
        if self._damage is not None:
            raise self._damaged_error()
        db = self._conn()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result
        except sqlite3.Error as exc:
            if _is_damage(exc):
                self._damage = str(exc)
                raise self._damaged_error() from exc
            raise ChatStoreError(f"The conversation database could not be written ({_reason(exc)}).",
                                 "Check free disk space; another program may hold the file.") from exc

    def _read(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run a query; SQLite's errors become a ChatStoreError (damage also stops further writes)."""
        db = self._conn()
        try:
            return fn(db)
        except sqlite3.Error as exc:
            if _is_damage(exc):
                self._damage = str(exc)
                raise self._damaged_error() from exc
            raise ChatStoreError(f"The conversation database {self.path} could not be read ({_reason(exc)}).",
                                 "Try again; another program may hold the file.") from exc

    def _damaged_error(self) -> ChatStoreError:
        return ChatStoreError(
            f"The conversation database {self.path} is damaged ({self._damage}); nothing more is written to it.",
            "Quit and start Camelid again: it keeps the damaged file as a copy and starts a new history.")

    def _migrate(self, db: sqlite3.Connection) -> None:
        def run(db: sqlite3.Connection) -> None:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:  # a newer Camelid wrote it since it was inspected
                raise ChatStoreError(
                    f"The conversation database {self.path} was written by a newer Camelid "
                    f"(schema {version}, this version knows {SCHEMA_VERSION}).",
                    "Update Camelid, or quit and start again to keep it aside and begin a new history.")
            for step in range(version, SCHEMA_VERSION):
                MIGRATIONS[step](db)
            if version != SCHEMA_VERSION:
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._write(run)

    def schema_version(self) -> int:
        return int(self._read(lambda db: db.execute("PRAGMA user_version").fetchone()[0]))

    def close(self) -> None:
        """Close every thread's connection (and delete a temporary copy); call when no thread is using it."""
        self._close_connections()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def _close_connections(self) -> None:
        with self._all_lock:
            connections, self._all = self._all, []
        for db in connections:
            db.close()
        self._local = threading.local()

    def __enter__(self) -> ChatStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- conversations -------------------------------------------------------
    def create_conversation(self, *, model: str | None = None, system_prompt: str = "",
                            settings: dict[str, Any] | None = None, title: str = "") -> Conversation:
        """A new, empty conversation; its title comes from the first user message unless given."""
        now = time.time()

        def run(db: sqlite3.Connection) -> int:
            cur = db.execute(
                "INSERT INTO conversations (title, model, system_prompt, settings, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (title, model, system_prompt, json.dumps(settings or {}), now, now))
            return _row_id(cur)
        return self.conversation(self._write(run), with_messages=False)

    def conversation(self, conversation_id: int, *, with_messages: bool = True) -> Conversation:
        """One conversation, with its messages in order unless `with_messages` is False."""
        def run(db: sqlite3.Connection) -> tuple[Any, list[Message]]:
            row = db.execute("SELECT * FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
            if row is None or not with_messages:
                return row, []
            rows = db.execute("SELECT * FROM messages WHERE conversation_id = ? ORDER BY id",
                              (conversation_id,)).fetchall()
            return row, _chosen_path(rows, row["leaf_id"])
        row, messages = self._read(run)
        if row is None:
            raise ConversationNotFoundError(f"There is no conversation {conversation_id}.",
                                            "List them with `camelid chat --list`.")
        return _conversation(row, tuple(messages))

    def list_conversations(self, *, limit: int | None = None) -> list[Conversation]:
        """Conversations, most recently active first, without their messages."""
        sql = "SELECT * FROM conversations ORDER BY updated_at DESC, id DESC"
        rows = self._read(lambda db: db.execute(sql + (" LIMIT ?" if limit else ""),
                                                (limit,) if limit else ()).fetchall())
        return [_conversation(r, ()) for r in rows]

    def update_conversation(self, conversation_id: int, *, model: str | None = None,
                            system_prompt: str | None = None,
                            settings: dict[str, Any] | None = None) -> Conversation:
        """Change the model, system prompt or settings; arguments left as None are kept."""
        updates: dict[str, Any] = {}
        if model is not None:
            updates["model"] = model
        if system_prompt is not None:
            updates["system_prompt"] = system_prompt
        if settings is not None:
            updates["settings"] = json.dumps(settings)
        if updates:
            self._touch(conversation_id, updates)
        return self.conversation(conversation_id)

    def rename(self, conversation_id: int, title: str) -> Conversation:
        title = " ".join(title.split())
        if not title:
            raise ChatStoreError("A conversation title cannot be empty.", "Type at least one character.")
        self._touch(conversation_id, {"title": title})
        return self.conversation(conversation_id, with_messages=False)

    def delete(self, conversation_id: int) -> None:
        """Delete a conversation and its messages."""
        def run(db: sqlite3.Connection) -> int:
            return db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,)).rowcount
        if not self._write(run):
            raise ConversationNotFoundError(f"There is no conversation {conversation_id}.")

    def _touch(self, conversation_id: int, updates: dict[str, Any]) -> None:
        columns = ", ".join(f"{name} = ?" for name in updates)

        def run(db: sqlite3.Connection) -> int:
            return db.execute(f"UPDATE conversations SET {columns}, updated_at = ? WHERE id = ?",
                              (*updates.values(), time.time(), conversation_id)).rowcount
        if not self._write(run):
            raise ConversationNotFoundError(f"There is no conversation {conversation_id}.")

    # -- messages ------------------------------------------------------------
    def add_message(self, conversation_id: int, role: str, content: str, *,
                    stats: dict[str, Any] | None = None, state: str = "complete") -> Message:
        """Append a message after the chosen branch's last one; the first user message also names an
        untitled conversation."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}, not {state!r}")
        now = time.time()

        def run(db: sqlite3.Connection) -> tuple[int, int | None]:
            conv = db.execute("SELECT title, leaf_id FROM conversations WHERE id = ?",
                              (conversation_id,)).fetchone()
            if conv is None:
                raise ConversationNotFoundError(f"There is no conversation {conversation_id}.")
            return _insert(db, conversation_id, conv["leaf_id"], role, content, stats, state, now,
                           title=conv["title"])
        message_id, parent_id = self._write(run)
        return Message(message_id, conversation_id, role, content, state, stats, now, now, parent_id)

    def edit_message(self, message_id: int, content: str) -> Message:
        """A new version of a user message (same place in the conversation); the old one and its
        replies stay as the previous version. The conversation follows the new one."""
        now = time.time()

        def run(db: sqlite3.Connection) -> tuple[int, int | None]:
            old = db.execute("SELECT conversation_id, role, parent_id FROM messages WHERE id = ?",
                             (message_id,)).fetchone()
            if old is None:
                raise ChatStoreError(f"There is no message {message_id}.")
            return _insert(db, old["conversation_id"], old["parent_id"], old["role"], content, None,
                           "complete", now)
        new_id, _parent = self._write(run)
        return self.message(new_id)

    def rewind_to_before(self, message_id: int) -> None:
        """Make the chosen branch end just before `message_id` (regenerate: the next reply becomes a
        new version of it, and it stays as the previous one)."""
        def run(db: sqlite3.Connection) -> int:
            return db.execute("UPDATE conversations SET leaf_id = (SELECT parent_id FROM messages WHERE id = ?),"
                              " updated_at = ? WHERE id = (SELECT conversation_id FROM messages WHERE id = ?)",
                              (message_id, time.time(), message_id)).rowcount
        if not self._write(run):
            raise ChatStoreError(f"There is no message {message_id}.")

    def choose_version(self, message_id: int) -> Conversation:
        """Follow `message_id` (one version of a turn) and, after it, the newest version of each later
        turn; returns the conversation as it now reads."""
        def run(db: sqlite3.Connection) -> int:
            row = db.execute("SELECT conversation_id FROM messages WHERE id = ?", (message_id,)).fetchone()
            if row is None:
                raise ChatStoreError(f"There is no message {message_id}.")
            leaf = message_id
            while True:
                child = db.execute("SELECT MAX(id) FROM messages WHERE parent_id = ?", (leaf,)).fetchone()[0]
                if child is None:
                    break
                leaf = int(child)
            db.execute("UPDATE conversations SET leaf_id = ? WHERE id = ?", (leaf, row[0]))
            return int(row[0])
        return self.conversation(self._write(run))

    def message(self, message_id: int) -> Message:
        row = self._read(lambda db: db.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone())
        if row is None:
            raise ChatStoreError(f"There is no message {message_id}.")
        return _message(row)

    def update_message(self, message_id: int, content: str, *, state: str | None = None,
                       stats: dict[str, Any] | None = None) -> None:
        """Rewrite a message's text (and optionally its state and stats)."""
        now = time.time()

        def run(db: sqlite3.Connection) -> None:
            db.execute("UPDATE messages SET content = ?, state = COALESCE(?, state),"
                       " stats = COALESCE(?, stats), updated_at = ? WHERE id = ?",
                       (content, state, _dumps(stats), now, message_id))
            db.execute("UPDATE conversations SET updated_at = ? WHERE id ="
                       " (SELECT conversation_id FROM messages WHERE id = ?)", (now, message_id))
        self._write(run)

    def delete_messages_from(self, message_id: int) -> None:
        """Delete a message and every later one in its conversation (all branches after it)."""
        def run(db: sqlite3.Connection) -> None:
            row = db.execute("SELECT conversation_id, parent_id FROM messages WHERE id = ?",
                             (message_id,)).fetchone()
            if row is not None:
                db.execute("DELETE FROM messages WHERE conversation_id = ? AND id >= ?",
                           (row[0], message_id))
                db.execute("UPDATE conversations SET leaf_id = ? WHERE id = ?", (row[1], row[0]))
        self._write(run)

    def begin_reply(self, conversation_id: int, *, flush_interval: float = 1.0) -> ReplyWriter:
        """Start an assistant message that is saved while it streams."""
        message = self.add_message(conversation_id, "assistant", "", state="streaming")
        return ReplyWriter(self, message.id, flush_interval=flush_interval)

    # -- search and export ---------------------------------------------------
    def search(self, text: str, *, limit: int = 50) -> list[SearchHit]:
        """Conversations whose title or messages contain `text` (case-insensitive for ASCII)."""
        needle = text.strip()
        if not needle:
            return []
        pattern = "%" + needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        def run(db: sqlite3.Connection) -> tuple[list[Any], list[Any]]:
            titles = db.execute("SELECT id, title, updated_at FROM conversations WHERE title LIKE ? ESCAPE '\\'"
                                " ORDER BY updated_at DESC LIMIT ?", (pattern, limit)).fetchall()
            bodies = db.execute(
                "SELECT m.id, m.conversation_id, m.content, c.title, c.updated_at FROM messages m"
                " JOIN conversations c ON c.id = m.conversation_id WHERE m.content LIKE ? ESCAPE '\\'"
                " ORDER BY c.updated_at DESC, m.id LIMIT ?", (pattern, limit * 4)).fetchall()
            return titles, bodies
        titles, rows = self._read(run)
        hits: list[SearchHit] = []
        seen: set[int] = set()
        for row in titles:
            hits.append(SearchHit(row["id"], row["title"], None, row["title"], row["updated_at"]))
            seen.add(row["id"])
        for row in rows:
            if row["conversation_id"] in seen or len(hits) >= limit:
                continue
            seen.add(row["conversation_id"])
            hits.append(SearchHit(row["conversation_id"], row["title"], row["id"],
                                  _snippet(row["content"], needle), row["updated_at"]))
        return hits

    def export_json(self, conversation_id: int) -> dict[str, Any]:
        """The conversation as a JSON-ready dict (format `camelid-conversation`)."""
        return self.conversation(conversation_id).to_dict()

    def export_markdown(self, conversation_id: int) -> str:
        """The conversation as a readable Markdown document."""
        conv = self.conversation(conversation_id)
        lines = [f"# {conv.title or 'Untitled chat'}", ""]
        made = time.strftime("%Y-%m-%d %H:%M", time.localtime(conv.created_at))
        lines += [f"_Model: {conv.model or 'unknown'} · started {made}_", ""]
        if conv.system_prompt:
            lines += ["## System", "", conv.system_prompt, ""]
        for m in conv.messages:
            heading = m.role.capitalize()
            if m.state == "stopped":
                heading += " (stopped)"
            elif m.state == "streaming":
                heading += " (interrupted)"
            lines += [f"## {heading}", "", m.content, ""]
        return "\n".join(lines).rstrip() + "\n"

    def export(self, conversation_id: int, path: Path) -> Path:
        """Write Markdown (.md) or JSON (.json, anything else) to `path`."""
        path = Path(path)
        if path.suffix.lower() in (".md", ".markdown"):
            text = self.export_markdown(conversation_id)
        else:
            text = json.dumps(self.export_json(conversation_id), indent=2, ensure_ascii=False) + "\n"
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise ChatStoreError(f"The conversation could not be written to {path} ({exc}).",
                                 "Choose a folder you can write to.") from exc
        return path


class ReplyWriter:
    """An assistant message saved while it streams.

    `append()` is cheap (called per token); the text reaches the database at
    most every `flush_interval` seconds, and on `flush()` / `finish()`.
    Use it from one thread (the one generating the reply).
    """

    def __init__(self, store: ChatStore, message_id: int, *, flush_interval: float = 1.0) -> None:
        self.store = store
        self.message_id = message_id
        self.flush_interval = flush_interval
        self._parts: list[str] = []
        self._text = ""
        self._last_flush = time.monotonic()
        self._dirty = False
        self.finished = False

    @property
    def text(self) -> str:
        if self._parts:
            self._text += "".join(self._parts)
            self._parts.clear()
        return self._text

    def append(self, chunk: str) -> None:
        if not chunk:
            return
        self._parts.append(chunk)
        self._dirty = True
        if time.monotonic() - self._last_flush >= self.flush_interval:
            self.flush()

    def flush(self) -> None:
        """Save the text shown so far."""
        if self._dirty:
            self.store.update_message(self.message_id, self.text)
            self._dirty = False
        self._last_flush = time.monotonic()

    def finish(self, *, state: str = "complete", stats: dict[str, Any] | None = None) -> Message:
        """Save the final text with its state (complete, stopped, error) and stats."""
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}, not {state!r}")
        self.store.update_message(self.message_id, self.text, state=state, stats=stats)
        self._dirty = False
        self.finished = True
        return self.store.message(self.message_id)


def _dumps(value: dict[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def _insert(db: sqlite3.Connection, conversation_id: int, parent_id: int | None, role: str, content: str,
            stats: dict[str, Any] | None, state: str, now: float, *, title: str | None = None) -> tuple[int, int | None]:
    """Insert a message after `parent_id` and make it the end of the chosen branch; (id, parent_id)."""
    cur = db.execute(
        "INSERT INTO messages (conversation_id, role, content, stats, state, created_at, updated_at, parent_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (conversation_id, role, content, _dumps(stats), state, now, now, parent_id))
    message_id = _row_id(cur)
    if title is None:
        db.execute("UPDATE conversations SET leaf_id = ?, updated_at = ? WHERE id = ?",
                   (message_id, now, conversation_id))
    else:
        title = title or (derive_title(content) if role == "user" else "")
        db.execute("UPDATE conversations SET title = ?, leaf_id = ?, updated_at = ? WHERE id = ?",
                   (title, message_id, now, conversation_id))
    return message_id, parent_id


def _chosen_path(rows: Sequence[sqlite3.Row], leaf_id: int | None) -> list[Message]:
    """The messages from the first turn to `leaf_id`, each with the ids of its turn's versions."""
    by_id = {r["id"]: r for r in rows}
    siblings: dict[int | None, list[int]] = {}
    for r in rows:
        siblings.setdefault(r["parent_id"], []).append(r["id"])
    path: list[sqlite3.Row] = []
    node = by_id.get(leaf_id) if leaf_id is not None else None
    seen: set[int] = set()
    while node is not None and node["id"] not in seen:
        seen.add(node["id"])
        path.append(node)
        node = by_id.get(node["parent_id"]) if node["parent_id"] is not None else None
    path.reverse()
    return [_message(r, tuple(siblings.get(r["parent_id"], [r["id"]]))) for r in path]


def _message(row: sqlite3.Row, versions: tuple[int, ...] = ()) -> Message:
    try:
        stats = json.loads(row["stats"]) if row["stats"] else None
    except ValueError:
        stats = None  # figures only; a damaged one must not hide the message
    return Message(row["id"], row["conversation_id"], row["role"], row["content"], row["state"],
                   stats if isinstance(stats, dict) else None, row["created_at"], row["updated_at"],
                   row["parent_id"], versions)


def _conversation(row: sqlite3.Row, messages: Sequence[Message]) -> Conversation:
    try:
        settings = json.loads(row["settings"] or "{}")
    except ValueError:
        settings = {}
    return Conversation(row["id"], row["title"], row["model"], row["system_prompt"], settings,
                        row["created_at"], row["updated_at"], tuple(messages), row["leaf_id"])


def _storage_reason(folder: Path, exc: BaseException | None) -> str:
    """Why a folder takes no writes, in words: SQLite's own 'unable to open database file' says little."""
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "the file system is read-only"
    except (OSError, AttributeError):  # no statvfs on Windows
        pass
    if folder.is_dir() and not os.access(folder, os.W_OK):
        return "no permission to write in its folder"
    return _reason(exc)


def _reason(exc: BaseException | None) -> str:
    """An OSError or SQLite error in a few words (no errno prefix)."""
    if isinstance(exc, OSError):
        return str(exc.strerror or exc)
    return str(exc)


def _snippet(content: str, needle: str, width: int = 80) -> str:
    at = content.lower().find(needle.lower())
    if at < 0:
        return " ".join(content[:width].split())
    start = max(0, at - width // 2)
    text = " ".join(content[start:start + width].split())
    return ("…" if start else "") + text + ("…" if start + width < len(content) else "")


def _row_id(cur: sqlite3.Cursor) -> int:
    """The id SQLite gave the row just inserted (always set after an INSERT)."""
    if cur.lastrowid is None:
        raise ChatStoreError("The chat history did not record a new message.",
                             "Try again; if it repeats, the chat database may be damaged.")
    return cur.lastrowid
