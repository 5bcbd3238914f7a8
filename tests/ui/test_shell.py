"""The desktop shell with real widgets (pytest-qt, offscreen): workers, window, hardware, settings."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PySide6.QtCore import QThreadPool
from PySide6.QtGui import QImage

from app import paths
from app.core.errors import DiskSpaceError
from app.core.machine.simulate import preset_profile
from app.core.settings import Settings
from app.ui import workers
from app.ui.hardware_view import HardwareView
from app.ui.main_window import MainWindow
from app.ui.screenshot import SIZE
from app.ui.settings_dialog import SettingsDialog
from app.ui.state import AppState
from tests.fixtures import REPO_ROOT as REPO


@pytest.fixture(autouse=True)
def no_leaked_jobs():
    """Every test must leave no job running and no pool thread busy."""
    yield
    assert QThreadPool.globalInstance().waitForDone(5000)
    assert workers.running_jobs() == 0


# --- workers ------------------------------------------------------------------
def test_job_result_and_progress_arrive_on_the_gui_thread(qtbot) -> None:
    gui = threading.get_ident()
    seen: list[tuple[str, object, bool]] = []

    def work(n: int, progress, cancel) -> int:
        for i in range(3):
            progress(i)
        return n * 2

    job = workers.Job(work, 21)
    job.on(progress=lambda p: seen.append(("progress", p, threading.get_ident() == gui)))
    with qtbot.waitSignal(job.signals.result, timeout=5000) as blocker:
        job.start()
    assert blocker.args == [42]
    qtbot.waitUntil(lambda: len(seen) == 3)
    assert [s[1] for s in seen] == [0, 1, 2]
    assert all(s[2] for s in seen)


def test_job_error_is_a_sentence_not_a_traceback(qtbot) -> None:
    def fails() -> None:
        raise DiskSpaceError("Not enough disk space for this model: 4.6 GiB needed, 1.2 GiB free.",
                             "Free some space or choose another models folder in Settings.")

    job = workers.Job(fails)
    with qtbot.waitSignal(job.signals.error, timeout=5000) as blocker:
        job.start()
    message = blocker.args[0]
    assert message.startswith("Not enough disk space")
    assert "Settings" in message and "Traceback" not in message


@pytest.mark.parametrize(("exc", "words"), [
    (OSError(errno.ENOSPC, "No space left on device"), "disk is full"),
    (ValueError("boom"), "Something unexpected went wrong"),
])
def test_unexpected_errors_still_read_as_sentences(qtbot, exc: Exception, words: str) -> None:
    def fails() -> None:
        raise exc

    job = workers.Job(fails)
    with qtbot.waitSignal(job.signals.error, timeout=5000) as blocker:
        job.start()
    assert words in blocker.args[0]
    assert "File \"" not in blocker.args[0]


def test_job_cancel_stops_the_callable(qtbot) -> None:
    started = threading.Event()

    def long_running(cancel: threading.Event) -> str:
        started.set()
        while not cancel.wait(0.01):
            pass
        return "stopped early"

    job = workers.Job(long_running)
    results: list[object] = []
    job.on(result=results.append)
    job.start()
    assert started.wait(5)
    with qtbot.waitSignals([job.signals.cancelled, job.signals.finished], timeout=5000):
        job.cancel()
    assert results == []


def test_owner_thread_runs_jobs_in_order_on_one_thread(qtbot) -> None:
    owner = workers.OwnerThread("test-owner")
    threads: list[int] = []
    order: list[int] = []

    def step(i: int) -> int:
        threads.append(threading.get_ident())
        return i

    jobs = [workers.run_job(step, i, result=order.append, where=owner) for i in range(5)]
    qtbot.waitUntil(lambda: len(order) == 5, timeout=5000)
    assert order == [0, 1, 2, 3, 4]
    assert len(set(threads)) == 1 and threads[0] != threading.get_ident()
    assert all(job.done.is_set() for job in jobs)
    assert owner.shutdown()
    assert not owner.is_running()


# --- main window ---------------------------------------------------------------
@pytest.fixture
def window(qtbot) -> MainWindow:
    state = AppState(Settings(), preset_profile("rtx-4090"), demo=True)
    win = MainWindow(state)
    qtbot.addWidget(win)
    win.show()
    return win


def test_navigation_switches_pages(window: MainWindow, qtbot) -> None:
    names = list(window.pages)
    assert "Hardware" in names
    for name in names:
        assert window.show_page(name)
        assert window.stack.currentWidget() is window.pages[name]
        assert window.current_page() == name
    assert not window.show_page("Nonexistent")


def test_view_menu_has_a_shortcut_per_page(window: MainWindow) -> None:
    shortcuts = {a.text(): a.shortcut().toString() for m in window.menuBar().actions()
                 for a in (m.menu().actions() if m.menu() else [])}
    for i, name in enumerate(window.pages):
        assert shortcuts[name] == f"Ctrl+{i + 1}"
    assert shortcuts["&Quit"]


def test_status_bar_shows_backend_and_memory(window: MainWindow) -> None:
    assert window.backend_label.text() == "Backend: CUDA"
    assert window.memory_label.text().startswith("RAM ")
    assert window.model_label.text() == "No model loaded"
    window.state.set_model({"name": "SmolLM2-135M-Instruct Q4_1", "verdict_text": "all on CPU",
                            "backend": "CPU"})
    assert "SmolLM2-135M-Instruct Q4_1" in window.model_label.text()
    assert window.backend_label.text() == "Backend: CPU"


def test_window_geometry_is_remembered(qtbot) -> None:
    state = AppState(Settings(), preset_profile("rtx-4090"))
    first = MainWindow(state)
    qtbot.addWidget(first)
    first.show()
    first.resize(960, 580)  # not the default (960x560 on the 800x600 offscreen screen), not below the minimum
    first.show_page("Hardware")
    size = (first.width(), first.height())
    first.close()
    assert (paths.config_dir() / "window.ini").is_file()
    second = MainWindow(AppState(Settings(), preset_profile("rtx-4090")))
    qtbot.addWidget(second)
    assert (second.width(), second.height()) == size == (960, 580)
    assert second.current_page() == "Hardware"


def test_theme_menu_switches_and_saves(window: MainWindow) -> None:
    from PySide6.QtWidgets import QApplication

    window.set_theme("dark")
    assert QApplication.instance().property("camelid_dark") is True
    assert Settings()["theme"] == "dark"
    assert window.theme_actions["dark"].isChecked()
    window.set_theme("light")
    assert QApplication.instance().property("camelid_dark") is False


# --- hardware view ---------------------------------------------------------------
def _texts(widget) -> str:
    from PySide6.QtWidgets import QLabel

    return "\n".join(label.text() for label in widget.findChildren(QLabel))


def test_hardware_view_shows_profile_and_budgets(qtbot) -> None:
    view = HardwareView()
    qtbot.addWidget(view)
    profile = preset_profile("rtx-4090")
    view.set_profile(profile)
    shown = _texts(view)
    assert "NVIDIA GeForce RTX 4090" in shown
    assert "23.5 GiB" in shown  # 24 GiB minus the 512 MiB GPU reserve
    assert "simulated machine" in shown
    assert "What these numbers mean" in shown
    assert "16 cores, 32 threads" in shown


def test_hardware_view_shows_warnings_with_fixes(qtbot) -> None:
    profile = preset_profile("desktop-16gb-cpu")
    profile.notes.append("NVIDIA: the driver did not answer (timeout); if you have an NVIDIA GPU, "
                         "install or update its driver.")
    view = HardwareView()
    qtbot.addWidget(view)
    view.set_profile(profile)
    shown = _texts(view)
    assert "install or update its driver" in shown
    assert "No GPU that the installed llama.cpp can use" in shown


def test_hardware_view_unified_memory(qtbot) -> None:
    view = HardwareView()
    qtbot.addWidget(view)
    view.set_profile(preset_profile("m3-pro-36gb"))
    shown = _texts(view)
    assert "Unified memory" in shown and "Metal budget" in shown


# --- settings dialog ----------------------------------------------------------------
def test_settings_dialog_saves_every_field(qtbot, tmp_path: Path) -> None:
    settings = Settings()
    dialog = SettingsDialog(settings)
    qtbot.addWidget(dialog)
    dialog.models_dir.setText(str(tmp_path / "models"))
    dialog.threads.setValue(6)
    dialog.gpu_auto.setChecked(False)
    dialog.gpu_layers.setValue(20)
    dialog.context.setCurrentIndex(dialog.context.findData(4096))
    dialog.flash.setChecked(True)
    for key, value in (("kv_cache_type", "q8_0"), ("theme", "dark"), ("use_case", "code"),
                       ("sampling_preset", "precise")):
        combo = dialog._controls[key]
        combo.setCurrentIndex(combo.findData(value))
    with qtbot.waitSignal(dialog.saved, timeout=2000) as blocker:
        dialog.buttons.button(dialog.buttons.StandardButton.Save).click()
    assert set(blocker.args[0]) >= {"threads", "gpu_layers", "kv_cache_type", "theme"}
    saved = json.loads(paths.settings_path().read_text())
    assert saved["models_dir"] == str(tmp_path / "models")
    assert (saved["threads"], saved["gpu_layers"], saved["context_length"]) == (6, 20, 4096)
    assert (saved["kv_cache_type"], saved["theme"], saved["use_case"]) == ("q8_0", "dark", "code")
    assert "token" not in json.dumps(saved).lower()


def test_settings_dialog_refuses_q4_cache_without_flash_attention(qtbot) -> None:
    dialog = SettingsDialog(Settings())
    qtbot.addWidget(dialog)
    dialog.flash.setChecked(False)
    combo = dialog._controls["kv_cache_type"]
    combo.setCurrentIndex(combo.findData("q4_0"))
    dialog.save()
    assert "needs flash attention" in dialog.problem.text()
    assert not paths.settings_path().exists()


def test_rejected_token_is_a_sentence_and_not_in_settings(qtbot, loopback_hub, monkeypatch) -> None:
    monkeypatch.setenv("HF_HOME", str(paths.data_dir() / "hf"))
    dialog = SettingsDialog(Settings())
    qtbot.addWidget(dialog)
    dialog.token.setText("hf_not_a_real_token")
    dialog.save()
    qtbot.waitUntil(lambda: bool(dialog.problem.text()), timeout=10_000)
    assert "token could not be saved" in dialog.problem.text()
    assert "hf_not_a_real_token" not in paths.settings_path().read_text()


# --- screenshots -----------------------------------------------------------------------
@pytest.mark.parametrize("page", ["hardware", "chat", "models"])
def test_screenshot_command_writes_a_png(tmp_path: Path, camelid_home: Path, page: str) -> None:
    out = tmp_path / f"{page}.png"
    result = subprocess.run([sys.executable, "-m", "app", "gui", "--screenshot", str(out), "--page", page],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    image = QImage(str(out))
    assert (image.width(), image.height()) == SIZE  # the window's default on a 1920x1080 screen
    # Demo state never touches the user's data.
    assert not paths.settings_path().exists() and not paths.chats_db_path().exists()


def test_a_job_sent_to_a_stopped_owner_thread_ends_as_cancelled(qtbot) -> None:
    owner = workers.OwnerThread("test-closed")
    assert owner.shutdown()
    job = workers.Job(lambda: "never runs")
    with qtbot.waitSignals([job.signals.cancelled, job.signals.finished], timeout=2000):
        job.start(owner)
    assert job.done.is_set()


@pytest.mark.parametrize("preset", ["m1-8gb", "m3-max-128gb", "rtx-4090", "dual-rtx-3090", "laptop-8gb-cpu"])
def test_memory_bars_never_add_up_to_more_than_the_device(preset: str) -> None:
    """The parts of each bar (others' use, the system's reserve, Camelid's budget) fit in the device:
    Apple's GPU share is already capped by the Metal budget, so no reserve is drawn on top of it."""
    from app.ui.hardware_view import device_parts

    budgets = preset_profile(preset).budgets()
    for device in [*budgets.gpus, budgets.ram]:
        parts = {p.key: p.bytes for p in device_parts(device)}
        assert sum(parts.values()) <= device.total_bytes, (device.name, parts)
        assert parts["free"] == device.budget_bytes
        if device.kind == "unified":
            assert parts["reserve"] == 0
        elif device.kind == "gpu":
            assert parts["reserve"] == device.reserve_bytes
