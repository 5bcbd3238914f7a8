"""`camelid chat`'s own behaviour: /save, word wrap, what is kept in the history (findings 5, 22, 27)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import main
from app.cli.chat import WordWrap, gather_paste, save
from app.core.chat import ChatStore

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    with ChatStore(tmp_path / "chats.sqlite3") as s:
        yield s


def test_save_to_a_bad_path_says_so_and_returns(store: ChatStore, capsys: pytest.CaptureFixture[str]) -> None:
    conv = store.create_conversation(model="m.gguf")
    store.add_message(conv.id, "user", "Hello")
    save(store, conv, "/nonexistent/dir/x.md")
    out = capsys.readouterr().out
    assert out.startswith("camelid: The conversation could not be written to /nonexistent/dir/x.md")


def test_save_wants_a_known_format(store: ChatStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conv = store.create_conversation(model="m.gguf")
    store.add_message(conv.id, "user", "Hello")
    save(store, conv, str(tmp_path / "x.txt"))
    assert ".md for Markdown or .json for JSON" in capsys.readouterr().out
    assert not (tmp_path / "x.txt").exists()
    save(store, conv, str(tmp_path / "x.json"))
    assert json.loads((tmp_path / "x.json").read_text(encoding="utf-8"))["messages"][0]["content"] == "Hello"


def test_save_of_an_empty_conversation_writes_nothing(store: ChatStore, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    conv = store.create_conversation(model="m.gguf")
    save(store, conv, "")
    assert "Nothing to save yet" in capsys.readouterr().out
    assert list(tmp_path.glob("camelid-chat-*")) == []


def test_word_wrap_breaks_between_words() -> None:
    out = io.StringIO()
    wrap = WordWrap(out, width=12)
    for chunk in ("The cust", "omer bought a pr", "oduct today.\nNew line", " here"):
        wrap.write(chunk)
    wrap.flush()
    lines = out.getvalue().split("\n")
    assert "customer" in out.getvalue() and "product" in out.getvalue()
    assert all(len(line.rstrip()) <= 12 for line in lines), lines
    assert lines[-1] == "here" or lines[-1].endswith("here")


def test_word_wrap_leaves_a_pipe_alone() -> None:
    out = io.StringIO()  # not a terminal
    wrap = WordWrap(out)
    wrap.write("a " * 200)
    wrap.flush()
    assert out.getvalue() == "a " * 200


def test_save_needs_a_prompt(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chat", "--save"]) == 2
    assert "--save goes with --prompt" in capsys.readouterr().err


def test_one_shot_is_not_kept_unless_saved(starter_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["chat", str(starter_model), "--prompt", "Hi", "--ctx", "512", "--max-tokens", "4", "--json"]
    assert main(base) == 0
    assert json.loads(capsys.readouterr().out)["conversation_id"] is None
    with ChatStore() as history:
        assert history.list_conversations() == []
    assert main([*base, "--save"]) == 0
    kept = json.loads(capsys.readouterr().out)["conversation_id"]
    with ChatStore() as history:
        assert [c.id for c in history.list_conversations()] == [kept]


def test_a_bad_save_path_does_not_end_the_session(starter_model: Path, tmp_path: Path) -> None:
    script = f"Hello\n/save /nonexistent/dir/x.md\n/save {tmp_path / 'ok.md'}\n/new\n/quit\n"
    out = subprocess.run([sys.executable, "-m", "app", "chat", str(starter_model), "--ctx", "512",
                          "--max-tokens", "4", "--seed", "1"], input=script, text=True, capture_output=True,
                         cwd=REPO, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert "could not be written to /nonexistent/dir/x.md" in out.stdout
    assert (tmp_path / "ok.md").is_file() and "Traceback" not in out.stderr
    with ChatStore() as history:
        assert len(history.list_conversations()) == 1  # the empty one /new made was not kept


def test_gather_paste_joins_waiting_lines_on_a_terminal_only() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    waiting = Tty("second line\nthird line\n")
    assert gather_paste("first line", waiting, lambda: waiting.tell() < len(waiting.getvalue())) == (
        "first line\nsecond line\nthird line")
    piped = io.StringIO("second line\n")
    assert gather_paste("first line", piped, lambda: True) == "first line"


def test_a_paste_on_a_real_terminal_is_one_message(starter_model: Path) -> None:
    import pty
    import threading
    import time

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "app", "chat", str(starter_model), "--ctx", "512",
                             "--max-tokens", "4", "--seed", "1"], stdin=slave, stdout=slave, stderr=slave,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, close_fds=True)
    os.close(slave)
    seen = bytearray()

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                return
            if not chunk:
                return
            seen.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    deadline = time.monotonic() + 90
    while b"> " not in seen and time.monotonic() < deadline:
        time.sleep(0.05)
    os.write(master, b"Roses are red\nviolets are blue\nthree lines\n")
    while seen.count(b"> ") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.write(master, b"/quit\n")
    assert proc.wait(timeout=60) == 0, seen.decode(errors="replace")
    os.close(master)
    with ChatStore() as history:
        (conversation,) = history.list_conversations()
        users = [m.content for m in history.conversation(conversation.id).messages if m.role == "user"]
    assert users == ["Roses are red\nviolets are blue\nthree lines"]
