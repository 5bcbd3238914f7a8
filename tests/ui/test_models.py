"""The Models page against the loopback Hub: search, files, download, cancel and resume, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import QThreadPool

from app import paths
from app.core.machine.simulate import preset_profile
from app.core.models import downloads as core_downloads
from app.core.settings import Settings
from app.ui import workers
from app.ui.main_window import MainWindow
from app.ui.models_view import ModelsView
from app.ui.state import AppState

REPO = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
FILE = "SmolLM2-135M-Instruct-Q4_1.gguf"


@pytest.fixture
def hub_with_model(loopback_hub, starter_model: Path):
    loopback_hub.add_repo(REPO, downloads=1234, gguf={"total": 134_515_008, "architecture": "llama"})
    loopback_hub.add_file(REPO, FILE, starter_model)
    return loopback_hub


@pytest.fixture
def window(qtbot):
    state = AppState(Settings(), preset_profile("desktop-16gb-cpu"))
    win = MainWindow(state)
    qtbot.addWidget(win)
    win.show()
    win.show_page("Models")
    yield win
    win.close()
    assert QThreadPool.globalInstance().waitForDone(10_000)
    assert workers.running_jobs() == 0


def models_page(window: MainWindow) -> ModelsView:
    return window.pages["Models"]


def search_and_pick(qtbot, view: ModelsView, query: str = "smollm2") -> None:
    view.tabs.setCurrentIndex(1)
    view.query.setText(query)
    view.search()
    qtbot.waitUntil(lambda: view.results.count() == 1, timeout=10_000)
    assert view.results.item(0).text().startswith(REPO)
    view.results.setCurrentRow(0)
    qtbot.waitUntil(lambda: view.quant_table.rowCount() == 1, timeout=10_000)
    assert view.quant_table.item(0, 0).text() == "Q4_1"
    view.quant_table.selectRow(0)
    assert view.download_button.isEnabled()


def test_search_download_and_chat_handoff(qtbot, window: MainWindow, hub_with_model) -> None:
    view = models_page(window)
    search_and_pick(qtbot, view)
    entry = view.download_selected()
    assert view.tabs.currentIndex() == 2
    qtbot.waitUntil(lambda: entry.state == "done", timeout=60_000)
    assert entry.path.is_file() and entry.path.stat().st_size == hub_with_model_size(hub_with_model)
    assert view.queue_button(0).text() == "Chat with it"
    # The Installed tab lists it.
    qtbot.waitUntil(lambda: any(m.path == entry.path for m in view.library_model.models), timeout=10_000)


def hub_with_model_size(hub) -> int:
    return Path(hub._repos[REPO].files[FILE].content).stat().st_size


def test_cancel_then_resume_keeps_the_bytes(qtbot, window: MainWindow, hub_with_model) -> None:
    view = models_page(window)
    hub_with_model.throttle(8 * 1024 * 1024)  # ~12 s for the 98 MB file: time to cancel mid-way
    search_and_pick(qtbot, view)
    entry = view.download_selected()
    qtbot.waitUntil(lambda: entry.progress is not None and entry.progress.bytes_done > 4 * 1024 * 1024,
                    timeout=30_000)
    assert view.queue_button(0).text() == "Cancel"
    view.queue_button(0).click()
    qtbot.waitUntil(lambda: entry.state == "cancelled", timeout=10_000)
    assert view.queue_button(0).text() == "Resume"
    part = next(paths.downloads_dir().rglob("*.part"))
    kept = part.stat().st_size
    assert kept > 0
    served_before = hub_with_model.bytes_served(REPO, FILE)

    hub_with_model.throttle(None)
    view.queue_button(0).click()
    qtbot.waitUntil(lambda: entry.state == "done", timeout=60_000)
    size = hub_with_model_size(hub_with_model)
    fetched_again = hub_with_model.bytes_served(REPO, FILE) - served_before
    # Only the missing part came over the wire again (give or take one chunk).
    assert fetched_again <= size - kept + core_downloads.CHUNK_SIZE
    assert entry.path.stat().st_size == size


def test_missing_repo_shows_its_sentence(qtbot, window: MainWindow, loopback_hub) -> None:
    view = models_page(window)
    view.tabs.setCurrentIndex(1)
    view.open_repo("nobody/No-Such-Model-GGUF")
    qtbot.waitUntil(lambda: bool(view.error.text()), timeout=10_000)
    assert "nobody/No-Such-Model-GGUF" in view.error.text()
    assert "Traceback" not in view.error.text()
    assert "camelid " not in view.error.text() and "Models › Discover" in view.error.text()  # no CLI advice


def test_not_enough_disk_space_shows_its_sentence(qtbot, window: MainWindow, loopback_hub,
                                                  tmp_path: Path) -> None:
    free = core_downloads.disk_free_bytes(paths.downloads_dir())
    huge = tmp_path / "huge.gguf"
    with huge.open("wb") as f:
        f.truncate(free + 10 * 1024**3)  # sparse: costs no real space
    loopback_hub.add_repo("big/Huge-GGUF")
    loopback_hub.add_file("big/Huge-GGUF", "Huge-Q4_K_M.gguf", huge, sha256="0" * 64)
    view = models_page(window)
    view.tabs.setCurrentIndex(1)
    view.open_repo("big/Huge-GGUF")
    qtbot.waitUntil(lambda: view.quant_table.rowCount() == 1, timeout=10_000)
    view.quant_table.selectRow(0)
    entry = view.download_selected()
    qtbot.waitUntil(lambda: entry.state == "failed", timeout=10_000)
    assert "more on disk" in entry.error and "Free some space" in entry.error
    assert view.error.text() == entry.error
    assert view.queue_button(0).text() == "Resume"


def test_installed_models_can_be_deleted(qtbot, window: MainWindow, starter_model: Path) -> None:
    dest = paths.models_dir() / "HuggingFaceTB" / "SmolLM2" / starter_model.name
    dest.parent.mkdir(parents=True)
    shutil.copyfile(starter_model, dest)
    view = models_page(window)
    view.refresh_installed()
    qtbot.waitUntil(lambda: view.library_model.rowCount() == 1, timeout=10_000)
    row = view.library_model.models[0]
    assert row.path == dest and view.library_model.data(view.library_model.index(0, 2)) == "93.8 MiB"
    view.table.selectRow(0)
    view.delete_selected(confirm=False)
    qtbot.waitUntil(lambda: view.library_model.rowCount() == 0, timeout=10_000)
    assert not dest.exists()
