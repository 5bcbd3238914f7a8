"""Every way into `camelid` ends in a sentence and an exit code, never a traceback (findings 2, 11, 21, 28)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import COMMAND_MODULES, EXIT_BROKEN_PIPE, main

REPO = Path(__file__).resolve().parents[2]
SUBCOMMANDS = [name.rsplit(".", 1)[1] for name in COMMAND_MODULES]


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), **extra}
    return env


def _closed_pipe(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run `python -m app ARGV` with its stdout a pipe nobody reads (what `| head -1` leaves behind)."""
    proc = subprocess.Popen([sys.executable, "-m", "app", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=REPO, env=env or _env())
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the child writes: every write of its is refused
    err = proc.stderr.read().decode("utf-8", "replace")
    proc.stderr.close()
    return proc.wait(timeout=120), err


def test_no_display_is_a_sentence_not_a_core_dump() -> None:
    env = _env(QT_QPA_PLATFORM="")
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "XDG_SESSION_TYPE"):
        env.pop(name, None)
    out = subprocess.run([sys.executable, "-m", "app"], capture_output=True, text=True, cwd=REPO,
                         env=env, timeout=120)
    assert out.returncode == 2
    assert "No display found" in out.stderr and "camelid chat" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout and "qt.qpa" not in out.stderr


@pytest.mark.parametrize("command", ["", *SUBCOMMANDS])
def test_help_into_a_closed_pipe_ends_quietly(command: str) -> None:
    code, err = _closed_pipe(*([command] if command else []), "--help")
    assert code in (0, EXIT_BROKEN_PIPE) and err == "", err


@pytest.mark.parametrize("argv", [
    ["catalog"], ["catalog", "--json"], ["recommend", "--top", "0"], ["recommend", "--json"],
    ["hw"], ["hw", "--presets"], ["settings"], ["models"], ["chat", "--list"], ["starter", "--json"],
])
def test_commands_into_a_closed_pipe_end_quietly(argv: list[str]) -> None:
    code, err = _closed_pipe(*argv)
    assert code == EXIT_BROKEN_PIPE, err
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err


def test_head_minus_one_through_a_real_shell() -> None:
    out = subprocess.run(f"{sys.executable} -m app catalog | head -1", shell=True, capture_output=True,
                         text=True, cwd=REPO, env=_env(), timeout=120)
    assert out.stdout.startswith("model") and out.stdout.count("\n") == 1
    assert "Traceback" not in out.stderr


def test_unwritable_home_is_a_sentence() -> None:
    out = subprocess.run([sys.executable, "-m", "app", "chat", "--list"], capture_output=True, text=True,
                         cwd=REPO, env=_env(CAMELID_HOME="/proc/nope"), timeout=120)
    assert "Traceback" not in out.stderr
    assert out.returncode in (0, 2) and (out.stderr.startswith("camelid") or out.stdout)


def test_theme_outside_the_desktop_app_says_where_it_belongs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--theme", "dark", "catalog"])
    assert exited.value.code == 2
    assert "--theme is for the desktop app" in capsys.readouterr().err


def test_top_level_theme_reaches_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    import app.cli.gui as gui

    seen: list[str | None] = []
    monkeypatch.setattr(gui, "open_app", lambda *, theme_choice=None: seen.append(theme_choice) or 0)
    assert main(["--theme", "dark"]) == 0
    assert main(["gui", "--theme", "light"]) == 0
    assert seen == ["dark", "light"]


def test_theme_override_switches_the_window_without_saving(qtbot) -> None:  # type: ignore[no-untyped-def]
    from app.cli.gui import _override_theme
    from app.core.settings import Settings
    from app.ui.main_window import build_app, create_window

    app = build_app()
    window = create_window()
    qtbot.addWidget(window)
    assert not app.property("camelid_dark")
    _override_theme(app, "dark")
    assert app.property("camelid_dark") is True
    assert window.theme_actions["dark"].isChecked()
    assert Settings()["theme"] != "dark"  # this run only


def test_missing_model_file_is_named_as_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.gguf"
    assert main(["chat", str(missing), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"camelid: There is no file at {missing}.") and "library" not in err


def test_starter_missing_never_says_make(capsys: pytest.CaptureFixture[str]) -> None:
    main(["starter"])
    out = capsys.readouterr()
    text = out.out + out.err
    if "not installed" in text:
        assert "make" not in text and "--install-from" in text
    assert main(["chat", "--prompt", "hi"]) in (0, 2)
    assert "make run" not in capsys.readouterr().err


def test_search_offline_is_fast_and_one_sentence() -> None:
    out = subprocess.run([sys.executable, "-m", "app", "search", "qwen"], capture_output=True, text=True,
                         cwd=REPO, env=_env(HF_ENDPOINT="http://127.0.0.1:9"), timeout=60)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("camelid: Could not reach http://127.0.0.1:9"), out.stderr


def test_chat_into_a_closed_pipe_ends_quietly(starter_model: Path) -> None:
    base = ["chat", str(starter_model), "--ctx", "512", "--max-tokens", "16", "--seed", "1"]
    for argv, typed in ((["--prompt", "Write a poem"], None), (["--prompt", "hi", "--json"], None),
                        ([], b"Write a poem\n/quit\n")):
        proc = subprocess.Popen([sys.executable, "-m", "app", *base, *argv], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=_env())
        assert proc.stdout is not None
        proc.stdout.close()
        _, err = proc.communicate(typed, timeout=120)
        text = err.decode("utf-8", "replace")
        assert proc.returncode == EXIT_BROKEN_PIPE, text
        assert "Traceback" not in text and "Exception ignored" not in text


def test_library_warnings_go_to_the_log_not_the_terminal(tmp_path: Path) -> None:
    home = tmp_path / "home"
    script = ("import logging, sys\n"
              "from app.cli import main\n"
              "code = main(['starter', '--json'])\n"
              "import huggingface_hub.utils._http\n"
              "logging.getLogger('huggingface_hub.utils._http').warning('Retrying in 1s [Retry 1/5] LEAK')\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO,
                         env=_env(CAMELID_HOME=str(home)), timeout=120)
    assert "LEAK" not in out.stderr, out.stderr
    assert "LEAK" in (home / "logs" / "camelid.log").read_text(encoding="utf-8")
