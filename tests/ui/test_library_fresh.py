"""Fresh state on the Models, Chat and Hardware pages: one library signal, fits without Refresh, Ollama's
store in place, banners that keep their line, "Download anyway", a fast offline search, the last model."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtWidgets import QWidget

from app import paths
from app.core.errors import CamelidError
from app.core.machine.simulate import preset_profile
from app.core.models import FitJudgement, library
from app.core.settings import Settings, models_dir_problem
from app.ui.chat_view import ChatView
from app.ui.main_window import MainWindow
from app.ui.models_view import ModelsView
from app.ui.state import AppState
from tests.core.models.test_library import _ollama_model
from tests.fixtures.ui import close_window, open_window
from tests.ui.test_models import FILE, REPO, search_and_pick


@pytest.fixture
def hub_with_model(loopback_hub, starter_model: Path):
    loopback_hub.add_repo(REPO, downloads=1234, gguf={"total": 134_515_008, "architecture": "llama"})
    loopback_hub.add_file(REPO, FILE, starter_model)
    return loopback_hub


@pytest.fixture
def window(qtbot) -> Iterator[MainWindow]:
    win = open_window(qtbot)
    win.show_page("Models")
    yield win
    close_window(win)


def pages(window: MainWindow) -> tuple[ModelsView, ChatView]:
    return window.pages["Models"], window.pages["Chat"]


def picker_paths(chat: ChatView) -> list[str]:
    return [chat.model_picker.itemData(i) for i in range(chat.model_picker.count())]


def test_a_model_downloaded_while_the_app_runs_is_in_the_chat_picker_at_once(qtbot, window: MainWindow,
                                                                             hub_with_model) -> None:
    view, chat = pages(window)
    qtbot.waitUntil(lambda: view.installed_hint.text().startswith("No models yet"), timeout=10_000)
    assert chat.model_picker.count() == 0
    search_and_pick(qtbot, view)
    entry = view.download_selected()
    qtbot.waitUntil(lambda: entry.state == "done", timeout=60_000)
    qtbot.waitUntil(lambda: str(entry.path) in picker_paths(chat), timeout=10_000)
    qtbot.waitUntil(lambda: [m.path for m in view.library_model.models] == [Path(entry.path)], timeout=10_000)

    # Delete: both lists follow again, from the one signal.
    view.table.selectRow(0)
    view.delete_selected(confirm=False)
    qtbot.waitUntil(lambda: chat.model_picker.count() == 0 and not view.library_model.models, timeout=10_000)


class SilentServer:
    """Accepts connections and never answers: a network that swallows requests."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_a_search_that_gets_no_answer_shows_it_is_busy_and_ends_with_one_sentence(
        qtbot, window: MainWindow, monkeypatch: pytest.MonkeyPatch) -> None:
    server = SilentServer()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.port}")
    monkeypatch.setenv("CAMELID_HTTP_TIMEOUT", "1")
    monkeypatch.setenv("CAMELID_HTTP_DEADLINE", "2")
    try:
        view, _chat = pages(window)
        view.tabs.setCurrentIndex(1)
        view.query.setText("qwen2.5 7b")
        view.search()
        # Busy at once, before any answer could have come.
        assert view.search_busy.isVisible() and not view.search_button.isEnabled()
        assert view.search_button.text() == "Searching…" and "Searching the Hub" in view.repo_title.text()
        # The policy's deadline (2 s here) ends it; the wait below only bounds a broken policy.
        qtbot.waitUntil(lambda: view.error.shown(), timeout=15_000)
        sentence = view.error.text()
        assert "\n" not in sentence and "Traceback" not in sentence and "Error" not in sentence.split()[0]
        assert sentence == view.repo_title.text()
        assert not view.search_busy.isVisible() and view.search_button.isEnabled()
        assert view.search_button.text() == "Search"
    finally:
        server.close()


def test_ollama_store_and_an_added_folder_are_listed_in_place_and_never_deleted(
        qtbot, window: MainWindow, tmp_path: Path, starter_model: Path) -> None:
    store = Path(os.environ["OLLAMA_MODELS"])
    blob = _ollama_model(store, "registry.ollama.ai/library/smollm2/135m", starter_model, file_type="Q4_1")
    folder = tmp_path / "usb" / "ggufs"
    loose = folder / "Loose-Q8_0.gguf"
    loose.parent.mkdir(parents=True)
    loose.symlink_to(starter_model)
    view, chat = pages(window)
    view.refresh_button.click()
    qtbot.waitUntil(lambda: [m.source for m in view.library_model.models] == ["ollama"], timeout=10_000)
    assert view.library_model.data(view.library_model.index(0, 4)) == "Ollama (read-only)"
    assert view.library_model.data(view.library_model.index(0, 0)) == "smollm2:135m"
    qtbot.waitUntil(lambda: str(blob) in picker_paths(chat), timeout=10_000)

    assert view.add_folder(folder)
    assert Settings()["model_folders"] == str(folder)  # remembered
    qtbot.waitUntil(lambda: [m.source for m in view.library_model.models] == ["ollama", "folder"],
                    timeout=10_000)
    qtbot.waitUntil(lambda: str(loose) in picker_paths(chat), timeout=10_000)
    assert view.library_model.data(view.library_model.index(1, 4)) == "Added folder (read-only)"

    for row in (0, 1):
        view.table.selectRow(row)
        view.delete_selected(confirm=False)
        assert "only reads it there" in view.error.text()
    with pytest.raises(CamelidError):
        library.delete_model("smollm2:135m")
    assert blob.is_file() and loose.is_file()
    assert not view.add_folder(tmp_path / "nowhere") and "not a folder" in view.error.text()


def test_installed_shows_fits_as_soon_as_the_machine_is_measured(qtbot, starter_model: Path) -> None:
    target = paths.models_dir() / paths.STARTER_MODEL_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(starter_model)
    state = AppState(Settings(), None)  # the hardware is not known yet, as at every start
    window = MainWindow(state)
    qtbot.addWidget(window)
    view: ModelsView = window.pages["Models"]
    qtbot.waitUntil(lambda: len(view.library_model.models) == 1, timeout=10_000)
    assert view.library_model.models[0].verdict is None
    state.set_profile(preset_profile("desktop-16gb-cpu"))
    qtbot.waitUntil(lambda: view.library_model.models[0].verdict == "cpu", timeout=20_000)
    assert view.library_model.data(view.library_model.index(0, 3)) != "fit not known"
    close_window(window)


def test_the_banner_keeps_its_line_can_be_dismissed_and_clears_on_the_next_action(qtbot,
                                                                                  window: MainWindow) -> None:
    view, _chat = pages(window)
    qtbot.waitUntil(lambda: view.table.isVisible())
    tabs_top = view.tabs.geometry().top()
    tabs_height = view.tabs.height()
    view.error.show_text("A long sentence that says what went wrong. " * 12)
    qtbot.wait(10)
    assert view.error.shown() and view.error.label.text().endswith("…")  # one line, elided
    assert view.error.label.toolTip() == view.error.text()
    assert (view.tabs.geometry().top(), view.tabs.height()) == (tabs_top, tabs_height)  # nothing moved
    view.error.close_button.click()
    assert not view.error.shown()
    view.error.show_text("Something else.")
    view.tabs.setCurrentIndex(1)  # the next action clears it
    assert not view.error.shown()
    assert (view.tabs.geometry().top(), view.tabs.height()) == (tabs_top, tabs_height)


def test_a_file_that_does_not_fit_is_downloaded_only_after_an_explicit_yes(
        qtbot, window: MainWindow, hub_with_model, monkeypatch: pytest.MonkeyPatch) -> None:
    view, _chat = pages(window)
    search_and_pick(qtbot, view)
    quant = view.selected_quant()
    assert quant is not None
    qtbot.waitUntil(lambda: quant.first_file in view._fits, timeout=20_000)
    too_big = FitJudgement("no_fit", reason="It needs 40.2 GiB of RAM; this machine has 16 GiB.")
    view._fits[quant.first_file] = too_big
    view.downloads.judge = lambda _quant: too_big
    view._quant_selected()
    assert view.download_button.text() == "Download anyway…" and view.download_button.isEnabled()
    asked: list[str | None] = []
    monkeypatch.setattr(view, "confirm_no_fit", lambda _q, reason: asked.append(reason) or False)
    assert view.download_selected() is None and view.downloads.entries == []
    assert asked == [too_big.reason]

    # Queued before its fit was known: refused with a sentence that names the window's action, not a flag.
    del view._fits[quant.first_file]
    view._quant_selected()
    assert view.download_button.text() == "Download"
    entry = view.download_selected()
    qtbot.waitUntil(lambda: entry.state == "failed", timeout=20_000)
    assert entry.no_fit and "--force" not in (entry.error or "") and "camelid" not in (entry.error or "")
    view.tabs.setCurrentIndex(2)
    assert view.queue_button(0).text() == "Download anyway…"
    assert view.queue_button(0, 1).text() == "Remove"
    monkeypatch.setattr(view, "confirm_no_fit", lambda _q, reason: True)
    view.queue_button(0).click()
    qtbot.waitUntil(lambda: entry.state == "done", timeout=60_000)
    view.queue_button(0, 1).click()  # a finished row can be taken off the list
    assert view.downloads.entries == []


def test_the_last_model_loads_when_the_app_starts(qtbot, starter_model: Path) -> None:
    window = open_window(qtbot, last_model=str(starter_model))
    chat: ChatView = window.pages["Chat"]
    assert window.load_last_model()
    qtbot.waitUntil(lambda: chat.load_job is None and chat.host.engine.loaded, timeout=120_000)
    assert window.state.model["path"] == str(starter_model)
    close_window(window)

    off = open_window(qtbot, last_model=str(starter_model), load_last_model=False)
    assert not off.load_last_model()
    close_window(off)
    gone = open_window(qtbot, last_model=str(starter_model.with_name("gone.gguf")))
    assert not gone.load_last_model() and "no longer" in gone.statusBar().currentMessage()
    close_window(gone)


def test_loading_a_model_remembers_it(qtbot, window: MainWindow, tmp_path: Path) -> None:
    window.state.set_model({"name": "x", "path": str(tmp_path / "x.gguf")})
    assert Settings()["last_model"] == str(tmp_path / "x.gguf")


def test_the_hardware_page_measures_again(qtbot) -> None:
    state = AppState(Settings(), None)
    window = MainWindow(state)
    qtbot.addWidget(window)
    hardware = window.pages["Hardware"]
    assert hardware.measure()
    qtbot.waitUntil(lambda: hardware.profile is not None, timeout=60_000)
    assert state.profile is hardware.profile and hardware.measure_button.text() == "Measure again"
    state.set_profile(preset_profile("desktop-16gb-cpu"))
    assert not hardware.measure() and hardware.measure_button.isHidden()  # a simulated machine stays as asked
    close_window(window)


def test_the_models_folder_is_checked(tmp_path: Path, qtbot) -> None:
    from app.ui.settings_dialog import SettingsDialog

    a_file = tmp_path / "passwd"
    a_file.write_text("x")
    assert "is a file" in (models_dir_problem(str(a_file)) or "")
    assert "not a full path" in (models_dir_problem("models") or "")
    assert models_dir_problem("") is None and models_dir_problem(str(tmp_path)) is None
    assert models_dir_problem(str(tmp_path / "new" / "deeper")) is None  # can be created
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # root may write anywhere
            assert "may not write" in (models_dir_problem(str(locked)) or "")
            assert "cannot be created" in (models_dir_problem(str(locked / "sub")) or "")
    finally:
        locked.chmod(0o700)

    settings = Settings()
    parent = QWidget()
    qtbot.addWidget(parent)
    dialog = SettingsDialog(settings, parent)
    dialog.models_dir.setText(str(a_file))
    dialog.save()
    assert "is a file" in dialog.problem.text() and Settings()["models_dir"] == ""


def test_core_sentences_lose_their_terminal_hints_in_the_window() -> None:
    from app.ui.wording import window_sentence

    assert window_sentence("x/y was not found, or it is private. Check the name with `camelid search`; for a "
                           "private repo set HF_TOKEN.") == ("x/y was not found, or it is private. Check the "
                                                             "name with a search in Models › Discover; for a "
                                                             "private repo set HF_TOKEN.")
    assert "`" not in window_sentence("No file for Q9. List the files with `camelid files x/y`.")
    assert "--force" not in window_sentence("Big will not fit. Pick a smaller quant (see `camelid files`), or "
                                            "download anyway with --force.")
    assert window_sentence("Nothing to change.") == "Nothing to change."


def test_the_download_queue_judges_on_the_machine_measured_after_it_was_made(qtbot) -> None:
    state = AppState(Settings(), None)
    queue = state.downloads()
    before = queue.judge
    state.set_profile(preset_profile("desktop-16gb-cpu"))
    assert queue.judge is not before


def test_an_ollama_model_loads_from_its_blob_in_place(qtbot, window: MainWindow, starter_model: Path) -> None:
    blob = _ollama_model(Path(os.environ["OLLAMA_MODELS"]), "registry.ollama.ai/library/smollm2/135m",
                         starter_model, file_type="Q4_1")
    view, chat = pages(window)
    view.refresh_button.click()
    qtbot.waitUntil(lambda: [m.path for m in view.library_model.models] == [blob], timeout=10_000)
    view.table.selectRow(0)
    view.chat_button.click()  # "Chat with it": the blob (no .gguf name) is what llama.cpp opens
    qtbot.waitUntil(lambda: chat.load_job is None and chat.host.engine.loaded, timeout=120_000)
    assert window.state.model["path"] == str(blob) and window.current_page() == "Chat"
