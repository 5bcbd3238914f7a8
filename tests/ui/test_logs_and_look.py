"""The log file, Copy diagnostics, Open logs folder, the default window size and the Theme menu (offscreen)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from PySide6.QtCore import QRect
from PySide6.QtGui import QGuiApplication

from app import logging_setup, paths
from app.core.machine.simulate import preset_profile
from app.core.settings import Settings
from app.ui.main_window import FRAME_ROOM, MINIMUM_SIZE, MainWindow, default_size
from app.ui.state import AppState

TOKEN = "hf_" + "Zq8" * 12  # shaped like a Hugging Face token; must never reach the diagnostics


@pytest.fixture(autouse=True)
def detach_log():
    yield
    logging_setup.shutdown()


@pytest.fixture
def window(qtbot) -> MainWindow:
    win = MainWindow(AppState(Settings(), preset_profile("rtx-4090"), demo=True))
    qtbot.addWidget(win)
    return win


def log_text() -> str:
    path = logging_setup.log_path()
    return path.read_text(encoding="utf-8") if path.is_file() else ""


# --- the log file -----------------------------------------------------------------
def test_a_cli_command_writes_the_log_file_and_nothing_to_the_terminal(capfd) -> None:
    from app.cli import main

    assert main(["settings"]) == 0
    captured = capfd.readouterr()
    text = log_text()
    assert logging_setup.log_path().parent == paths.logs_dir()
    assert "camelid.cli: camelid settings" in text
    logging.getLogger("app.test").warning("a warning for the file only")
    assert "a warning for the file only" in log_text()
    assert "a warning for the file only" not in capfd.readouterr().err
    assert "camelid.cli" not in captured.err


def test_the_log_rotates_at_its_size_bound() -> None:
    logging_setup.configure("cli")
    handler = next(h for h in logging.getLogger().handlers
                   if isinstance(h, logging.handlers.RotatingFileHandler))
    assert handler.maxBytes == 1024 * 1024 and handler.backupCount == 5


def test_llama_cpp_lines_from_a_load_reach_the_log_file_not_the_terminal(starter_model, capfd) -> None:
    from app.core.chat import Engine, LoadParams

    logging_setup.configure("gui")
    engine = Engine()
    try:
        engine.load(starter_model, LoadParams(n_ctx=256))
    finally:
        engine.unload()
    text = log_text()
    assert "llama.cpp: llama_model_loader" in text or "llama.cpp: load_tensors" in text
    assert "llama_model_loader" not in capfd.readouterr().err


def test_llama_cpp_pieces_are_joined_into_lines(tmp_path) -> None:
    logging_setup.configure("gui")
    lines = logging_setup.LlamaLines()
    lines(3, "decode: removing memory module entries for seq_id = 0, ")
    lines(5, "pos = [206, +inf)\n")
    text = log_text()
    assert "WARNING llama.cpp: decode: removing memory module entries for seq_id = 0, pos = [206, +inf)" in text
    lines(1, "create_tensor: loading tensor blk.0.attn_q.weight\n")  # ggml's DEBUG: not kept
    assert "create_tensor" not in log_text()
    assert any("removing memory module" in p for p in logging_setup.recent_problems())


# --- Copy diagnostics --------------------------------------------------------------
def test_copy_diagnostics_has_the_versions_and_no_token(window, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    logging_setup.configure("gui")
    logging.getLogger("app.test").error("Hub refused token=%s for a gated repo", TOKEN)
    logging.getLogger("app.test").error("the download stopped: disk full")
    report = window.copy_diagnostics()
    assert QGuiApplication.clipboard().text() == report
    for needle in ("Camelid: ", "Python: ", "Qt: ", "PySide6", "llama-cpp-python: ", "## Backend",
                   "in use: CUDA", "RTX 4090", "## Settings", "context_length = 8192",
                   "the download stopped: disk full", str(logging_setup.log_path())):
        assert needle in report, needle
    assert TOKEN not in report and "Zq8Zq8" not in report
    assert "token=[hidden]" in report


def test_open_logs_folder_without_a_launcher_shows_the_path_with_copy(window, qtbot) -> None:
    # The offscreen platform has no file manager: exactly the fresh-Debian case.
    dialog = window.open_logs_folder()
    assert dialog is not None
    qtbot.addWidget(dialog)
    assert dialog.path_edit.text() == str(paths.logs_dir())
    dialog.copy_button.click()
    assert QGuiApplication.clipboard().text() == str(paths.logs_dir())


# --- the look ------------------------------------------------------------------------
@pytest.mark.parametrize("available", [QRect(0, 0, 1366, 768 - 32), QRect(0, 27, 1366, 768 - 27),
                                       QRect(0, 0, 1920, 1080 - 40), QRect(0, 0, 1024, 768 - 40)])
def test_the_default_window_fits_the_screen_with_its_frame(available) -> None:
    size = default_size(available)
    assert size.width() + FRAME_ROOM.width() <= available.width()
    assert size.height() + FRAME_ROOM.height() <= available.height()
    assert size.width() >= MINIMUM_SIZE.width() and size.height() >= MINIMUM_SIZE.height()


def test_a_first_window_is_sized_from_the_screen(qtbot) -> None:
    win = MainWindow(AppState(Settings(), preset_profile("rtx-4090"), demo=True))
    qtbot.addWidget(win)
    screen = win.screen() or QGuiApplication.primaryScreen()
    expected = default_size(screen.availableGeometry())
    assert (win.width(), win.height()) == (max(expected.width(), MINIMUM_SIZE.width()),
                                           max(expected.height(), MINIMUM_SIZE.height()))


def test_theme_actions_are_one_of_three(window) -> None:
    assert window.theme_group.isExclusive()
    assert set(window.theme_group.actions()) == set(window.theme_actions.values())
    window.theme_actions["dark"].trigger()
    assert [k for k, a in window.theme_actions.items() if a.isChecked()] == ["dark"]
    window.theme_actions["light"].trigger()
    assert [k for k, a in window.theme_actions.items() if a.isChecked()] == ["light"]
    assert window.state.settings["theme"] == "light"


@pytest.mark.parametrize("dark", [False, True])
def test_the_stylesheet_draws_arrows_from_files_that_exist(dark) -> None:
    import re

    from app.ui import theme

    sheet = theme.stylesheet(dark)
    assert not re.search(r"\$[a-z]", sheet.split("*/", 1)[1])  # every placeholder filled
    urls = re.findall(r"url\(([^)]+)\)", sheet)
    assert any("arrow-up" in u for u in urls) and any("arrow-down" in u for u in urls)
    for url in urls:
        assert Path(url).is_file(), url
    assert "::up-button" in sheet and "::drop-down" in sheet


# --- demo figures ------------------------------------------------------------------------
def test_the_demo_speed_is_the_speed_models_own_estimate() -> None:
    from app.ui import demo

    speed = demo.demo_speed()
    # A 32B Q4_K_M (about 18.5 GiB read per token) on an RTX 4090 (about 1 TB/s): tens of tokens/s, not 142.
    assert 25 < speed < 50
    stats = demo.demo_stats(demo.DEMO_CONVERSATION[1][1], speed)
    assert stats["tokens_per_s"] == speed and stats["ttft_s"] is None


# --- dialogs ------------------------------------------------------------------------------
def test_the_rename_dialog_is_wide_enough_for_its_title(window, qtbot) -> None:
    from app.ui.widgets.text_prompt import MINIMUM_WIDTH, text_dialog

    dialog = text_dialog(window, "Rename chat", "Title", "Reading files in Python")
    qtbot.addWidget(dialog)
    dialog.show()
    assert dialog.width() >= MINIMUM_WIDTH >= 400
    assert dialog.windowTitle() == "Rename chat" and dialog.textValue() == "Reading files in Python"
    title_width = dialog.fontMetrics().horizontalAdvance("Rename chat — Camelid")
    assert dialog.width() > title_width + 160  # room for the title bar's buttons too


def test_the_settings_dialog_is_not_cramped(window, qtbot) -> None:
    from app.ui import workers

    dialog = window.open_settings()
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: workers.running_jobs() == 0)  # its token check, before the dialog goes
    margins = dialog.layout().contentsMargins()
    assert dialog.minimumWidth() >= 600 and margins.left() >= 16 and margins.top() >= 16


def test_the_status_bar_shows_the_simulated_machines_ram_not_this_computers(window) -> None:
    profile = window.state.profile
    used = profile.ram.total_bytes - profile.ram.available_bytes
    from app.ui import text

    assert f"RAM {text.size(used)} / {text.size(profile.ram.total_bytes)}" in window.memory_label.text()


def test_qt_warnings_go_to_the_log(capfd) -> None:
    from PySide6.QtCore import qInstallMessageHandler, qWarning

    from app.ui.main_window import _qt_message

    logging_setup.configure("gui")
    previous = qInstallMessageHandler(_qt_message)
    try:
        qWarning("Launch of 'file:///models' failed: Unable to detect a launcher")
    finally:
        qInstallMessageHandler(previous)
    assert "WARNING qt: Launch of 'file:///models' failed" in log_text()
    assert "Unable to detect a launcher" not in capfd.readouterr().err
