"""F11: read-only storage is a sentence, and read-only use (listing, planning, chatting unsaved) keeps working.

Two ways to make storage unwritable, both real: a file where a folder must be
(works for any user), and a truly read-only data folder. For the latter,
`chmod a-w` where permissions bind this process; root ignores them, so there
a read-only bind mount inside a private mount namespace (`unshare -m`), which
vanishes with the command. Where neither is possible the test is skipped.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import paths
from app.core.chat.chats import ChatStore
from app.core.settings import Settings, SettingsError
from tests.fixtures import REPO_ROOT

# -- a file where a folder must be ----------------------------------------------------------------------------------


def test_chat_store_under_a_file_runs_without_saving(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("not a folder")
    with ChatStore(blocker / "chats.sqlite3") as store:
        assert not store.saving and store.notice is not None
        assert "cannot be written" in store.notice and "nothing is saved" in store.notice
        conv = store.create_conversation(title="in memory only")
        store.add_message(conv.id, "user", "hello")
        assert [c.title for c in store.list_conversations()] == ["in memory only"]
        scratch = store._db_path
        assert scratch.exists() and not scratch.is_relative_to(tmp_path)
    assert not scratch.exists()  # the temporary copy is gone with the store
    assert blocker.read_text() == "not a folder"


def test_settings_save_under_a_file_is_a_sentence(tmp_path: Path) -> None:
    blocker = tmp_path / "config"
    blocker.write_text("not a folder")
    settings = Settings(blocker / "settings.json")
    assert settings.problems == []  # reading a missing file is not a problem
    settings.set("theme", "dark")
    with pytest.raises(SettingsError, match="could not be saved"):
        settings.save()


def test_ensure_dirs_reports_instead_of_raising(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.write_text("a file where CAMELID_HOME should be a folder")
    monkeypatch.setenv("CAMELID_HOME", str(home))
    problems = paths.ensure_dirs()
    assert problems and all("could not be created" in p and "CAMELID_HOME" in p for p in problems)


# -- a truly read-only data folder ------------------------------------------------------------------------------------


class ReadOnly:
    """Runs commands with one folder read-only: chmod where permissions hold, else (root) a private ro mount."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.mount = not _chmod_is_enough(folder.parent)

    def prefix(self) -> list[str]:
        if not self.mount:
            return []
        script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
        return ["unshare", "--mount", "sh", "-c", script, str(self.folder)]

    def check(self) -> None:
        if not self.mount:
            return
        if shutil.which("unshare") is None:
            pytest.skip("permissions do not bind this user (root) and there is no unshare for a read-only mount")
        probe = subprocess.run([*self.prefix(), "sh", "-c", f'! touch "{self.folder}/.probe" 2>/dev/null'],
                               capture_output=True, text=True)
        if probe.returncode != 0:
            pytest.skip("permissions do not bind this user (root) and no read-only mount could be made: "
                        f"{probe.stderr.strip()[:200]}")

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([*self.prefix(), sys.executable, "-m", "app", *args], capture_output=True,
                             text=True, cwd=REPO_ROOT, timeout=timeout)
        assert "Traceback" not in out.stdout + out.stderr, out.stderr
        return out


def _chmod_is_enough(where: Path) -> bool:
    """Whether a folder without write permission refuses this process (not so for root with its capabilities)."""
    probe = where / ".chmod-probe"
    probe.mkdir()
    try:
        probe.chmod(0o555)
        try:
            (probe / "x").touch()
        except PermissionError:
            return True
        return False
    finally:
        probe.chmod(0o755)
        shutil.rmtree(probe)


def _chmod_tree(folder: Path, *, writable: bool) -> None:
    for root, dirs, files in os.walk(folder):
        for name in [*dirs, *files, None]:
            p = Path(root) / name if name else Path(root)
            mode = p.stat().st_mode
            p.chmod(mode | stat.S_IWUSR if writable else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def readonly_home(camelid_home: Path, starter_model: Path) -> Iterator[ReadOnly]:
    """CAMELID_HOME with a model, a saved chat and a settings file, then made read-only."""
    models = camelid_home / "models"
    models.mkdir()
    shutil.copy(starter_model, models / starter_model.name)  # a copy: chmod must not touch the cache
    with ChatStore() as store:
        conv = store.create_conversation(title="saved before", model=starter_model.name)
        store.add_message(conv.id, "user", "kept")
    db = sqlite3.connect(paths.chats_db_path())
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    settings = Settings()
    settings.set("theme", "dark")
    settings.save()
    ro = ReadOnly(camelid_home)
    ro.check()
    if not ro.mount:
        _chmod_tree(camelid_home, writable=False)
    try:
        yield ro
    finally:
        if not ro.mount:
            _chmod_tree(camelid_home, writable=True)


def test_read_only_use_keeps_working(readonly_home: ReadOnly, camelid_home: Path) -> None:
    ro = readonly_home
    before = _digest(camelid_home)
    model = str(camelid_home / "models" / paths.STARTER_MODEL_FILE)

    listed = ro.run("chat", "--list")
    assert listed.returncode == 0 and "saved before" in listed.stdout
    assert "cannot be written" in listed.stderr and "nothing is saved" in listed.stderr

    models = ro.run("models")
    assert models.returncode == 0 and "SmolLM2" in models.stdout

    assert ro.run("plan", model).returncode == 0
    shown = ro.run("settings")
    assert shown.returncode == 0 and "dark" in shown.stdout

    changed = ro.run("settings", "theme", "light")
    assert changed.returncode == 2 and "could not be saved" in changed.stderr and "writable" in changed.stderr

    chat = ro.run("chat", model, "--prompt", "Say hello.", "--max-tokens", "4", "--temperature", "0", "--save")
    assert chat.returncode == 0 and chat.stdout.strip(), chat.stderr
    assert "nothing is saved" in chat.stderr

    assert _digest(camelid_home) == before  # nothing was written, nothing was lost
