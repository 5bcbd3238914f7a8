"""The first-run hardware-fit wizard end to end: real recommender, loopback Hub, real download, real chat.

The wizard recommends from a small catalog (the three SmolLM2 sizes from the
shipped catalog) on a simulated 16 GB CPU desktop. The loopback Hub serves the
real SmolLM2-135M file under the repo and file name of whatever the
recommender puts on top, so the download, the sha256 check and the chat all
run on real bytes.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QWizard

from app import paths
from app.core.machine.simulate import preset_profile
from app.core.models import downloads as core_downloads
from app.core.models.catalog import Catalog, load_catalog
from app.core.models.first_run import should_show_wizard
from app.core.models.recommend import Pick, recommend
from app.core.settings import Settings
from app.ui.chat_view import ChatView
from app.ui.main_window import MainWindow
from app.ui.state import AppState
from app.ui.widgets.common import Notice
from app.ui.widgets.memory_bar import MemoryBar
from app.ui.wizard import (
    PAGE_DOWNLOAD,
    PAGE_MACHINE,
    PAGE_PICKS,
    PAGE_PURPOSE,
    PAGE_READY,
    SCREENSHOT_SIZE,
    STARTER_REPO,
    STARTER_UNREACHABLE,
    HardwareFitWizard,
)
from tests.fixtures import REPO_ROOT, ui
from tests.fixtures.ui import close_window

PROFILE = "desktop-16gb-cpu"
SHORT_CTX = 4096


@pytest.fixture
def catalog() -> Catalog:
    full = load_catalog()
    return Catalog(models=tuple(full.get(i) for i in ("smollm2-135m", "smollm2-360m", "smollm2-1.7b")))


@pytest.fixture
def top_pick(catalog: Catalog) -> Pick:
    """What the wizard should put on top for chat with a short context on this profile."""
    picks = recommend(preset_profile(PROFILE), "chat", n_ctx=SHORT_CTX, catalog=catalog)
    assert len(picks) >= 3
    return picks[0]


@pytest.fixture
def hub_serving_top_pick(loopback_hub, starter_model: Path, top_pick: Pick):
    loopback_hub.add_repo(top_pick.model.repo, downloads=10)
    loopback_hub.add_file(top_pick.model.repo, top_pick.file.filename, starter_model)
    return loopback_hub


@pytest.fixture
def installed_starter(starter_model: Path) -> Path:
    """The starter model where `make run` / `camelid starter` installs it."""
    dest = paths.starter_model_path()
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(starter_model, dest)
    return dest


def open_window(qtbot) -> MainWindow:
    return ui.open_window(qtbot, PROFILE)


def click(wizard: HardwareFitWizard, which: QWizard.WizardButton) -> None:
    button = wizard.button(which)
    assert button.isVisible() and button.isEnabled(), f"{button.text()} is not clickable"
    button.click()


def walk_to_picks(qtbot, wizard: HardwareFitWizard, use: str = "chat", ctx: str = "short") -> None:
    """Machine -> purpose (choose) -> recommendation with three picks shown."""
    assert wizard.currentId() == PAGE_MACHINE
    qtbot.waitUntil(wizard.machine.isComplete, timeout=5000)
    click(wizard, QWizard.WizardButton.NextButton)
    assert wizard.currentId() == PAGE_PURPOSE
    wizard.purpose.use_buttons[use].click()
    wizard.purpose.ctx_buttons[ctx].click()
    click(wizard, QWizard.WizardButton.NextButton)
    assert wizard.currentId() == PAGE_PICKS
    # Widgets added to a shown page become visible one event later.
    qtbot.waitUntil(lambda: len(wizard.picks.cards) == 3 and all(c.isVisible() for c in wizard.picks.cards),
                    timeout=60_000)


def send_and_wait_for_reply(qtbot, chat: ChatView, message: str) -> str:
    choose = chat.sampling
    chat.sampling = lambda: choose().with_(max_tokens=24)  # a 135M model need not ramble
    chat.input.setPlainText(message)
    qtbot.keyClick(chat.input, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: chat.reply_job is not None or len(chat.bubbles) == 2, timeout=5000)
    qtbot.waitUntil(lambda: chat.reply_job is None, timeout=120_000)
    assert [b.role for b in chat.bubbles] == ["user", "assistant"]
    return chat.bubbles[-1].text


# --- the run_app decision --------------------------------------------------------------------


def test_the_wizard_shows_until_the_first_run_is_done() -> None:
    settings = Settings()
    assert should_show_wizard(settings)
    assert not should_show_wizard(settings, demo=True)
    settings.set("first_run_done", True)
    settings.save()
    assert not should_show_wizard(Settings())  # read back from disk


def test_creating_a_window_never_opens_the_wizard(qtbot) -> None:
    window = open_window(qtbot)
    assert window.wizard is None
    assert "Hardware-fit &wizard…" in [a.text() for a in window.menuBar().actions()[-1].menu().actions()]
    close_window(window)


def test_the_machine_page_shows_bars_the_backend_and_warnings_with_their_fix(qtbot) -> None:
    profile = preset_profile("rtx-4090")
    fix = ("NVIDIA GeForce RTX 4090 found, but this llama-cpp-python was built without CUDA: "
           "run `make gpu` to rebuild it.")
    profile.notes.append(fix)
    state = AppState(Settings(), profile)
    window = MainWindow(state)
    qtbot.addWidget(window)
    wizard = window.open_wizard()
    page = wizard.machine
    titles = [bar.title.text() for bar in page.findChildren(MemoryBar)]
    assert any("RTX 4090" in t for t in titles) and any("System RAM" in t for t in titles)
    assert [n.text() for n in page.findChildren(Notice) if n.objectName() == "Warning"] == [fix]
    assert page.backend_words(profile).startswith("CUDA")
    close_window(window)


def test_nothing_that_fits_offers_the_starter(qtbot) -> None:
    window = open_window(qtbot)  # 16 GB of RAM, no GPU: a 70B does not fit at any quant
    wizard = window.open_wizard(catalog=Catalog(models=(load_catalog().get("llama-3.3-70b"),)))
    assert wizard.currentId() == PAGE_MACHINE
    click(wizard, QWizard.WizardButton.NextButton)
    click(wizard, QWizard.WizardButton.NextButton)
    offer = wizard.picks.offer
    qtbot.waitUntil(lambda: not offer.isHidden(), timeout=30_000)
    assert "Nothing in the catalog fits" in offer.error.text()
    assert wizard.picks.cards == [] and not wizard.button(QWizard.WizardButton.NextButton).isEnabled()
    close_window(window)


# --- end to end ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_wizard_recommends_downloads_and_opens_the_chat(qtbot, catalog: Catalog, top_pick: Pick,
                                                         hub_serving_top_pick, starter_model: Path) -> None:
    window = open_window(qtbot)
    wizard = window.open_wizard(catalog=catalog)
    assert wizard.isVisible()

    # 1. The machine: memory bars for what was detected, and the backend.
    assert wizard.machine.findChildren(MemoryBar)
    assert "System RAM" in wizard.machine.findChildren(MemoryBar)[-1].title.text()
    assert wizard.machine.backend_words(window.state.profile).startswith("CPU")

    # 2-3. Chat, short context: three picks, the recommender's own top pick first.
    walk_to_picks(qtbot, wizard)
    cards = wizard.picks.cards
    assert (cards[0].pick.model.id, cards[0].pick.quant) == (top_pick.model.id, top_pick.quant)
    assert cards[0].radio.isChecked() and cards[0].pick.role == "best"
    for card in cards:
        assert card.bars.bars, "each pick shows its memory plan as bars"
        assert card.pick.why and card.why.text() == card.pick.why
        assert "tokens/s" in card.summary.text() and "on the CPU" in card.summary.text()
        assert card.pick.n_ctx == SHORT_CTX
    cards[0].arithmetic_button.click()
    assert cards[0].arithmetic.isVisible()
    shown = cards[0].arithmetic.toPlainText()
    assert "Verdict: on the CPU" in shown and "weights" in shown and "KV cache" in shown

    # 4. Download: the progress reported by the queue reaches the whole file.
    reported: list[tuple[int, int]] = []
    downloads = window.state.downloads()
    downloads.progressed.connect(
        lambda row: reported.append((downloads.entries[row].progress.bytes_done,
                                     downloads.entries[row].progress.total_bytes)))
    click(wizard, QWizard.WizardButton.NextButton)
    assert wizard.currentId() == PAGE_DOWNLOAD
    qtbot.waitUntil(lambda: wizard.currentId() == PAGE_READY, timeout=120_000)
    entry = wizard.download.entry
    size = starter_model.stat().st_size
    assert entry.state == "done" and reported and reported[-1] == (size, size)
    assert wizard.download.bar.value() == wizard.download.bar.maximum()
    path = wizard.download.done_path
    assert path.parent == paths.models_dir() / top_pick.model.repo
    assert path.name == top_pick.file.filename and path.stat().st_size == size
    assert entry.job.result.verified
    assert not list(paths.downloads_dir().rglob("*.part"))

    # 5. Ready -> the chat with the model loaded, and a reply to a message.
    assert top_pick.model.name in wizard.ready.headline.text()
    click(wizard, QWizard.WizardButton.FinishButton)
    assert not wizard.isVisible()
    chat: ChatView = window.pages["Chat"]
    assert window.current_page() == "Chat"
    qtbot.waitUntil(lambda: chat.load_job is None and chat.host.engine.loaded, timeout=120_000)
    assert "Loaded" in chat.verdict.text()
    assert window.state.model and window.state.model["path"] == str(path)
    assert send_and_wait_for_reply(qtbot, chat, "Say hello in one word.").strip()

    # Finishing marks the first run done and keeps the answers, on disk.
    stored = Settings()
    assert stored["first_run_done"] is True
    assert (stored["use_case"], stored["context_length"]) == ("chat", SHORT_CTX)
    close_window(window)


@pytest.mark.slow
def test_a_missing_repo_offers_the_starter_model_which_opens_in_the_chat(
        qtbot, catalog: Catalog, top_pick: Pick, loopback_hub, installed_starter: Path) -> None:
    # The Hub answers, but not for the recommended repo (404).
    window = open_window(qtbot)
    wizard = window.open_wizard(catalog=catalog)
    walk_to_picks(qtbot, wizard)
    click(wizard, QWizard.WizardButton.NextButton)
    offer = wizard.download.offer
    qtbot.waitUntil(offer.isVisible, timeout=30_000)
    sentence = offer.error.text()
    assert top_pick.model.repo in sentence and "not found" in sentence
    assert "Traceback" not in sentence and "`camelid" not in sentence
    assert not wizard.button(QWizard.WizardButton.NextButton).isEnabled()

    qtbot.waitUntil(offer.button.isVisible, timeout=10_000)  # shown once the starter is found on disk
    assert offer.button.text() == "Chat with the starter model"
    offer.button.click()
    qtbot.waitUntil(lambda: wizard.currentId() == PAGE_READY, timeout=10_000)
    assert wizard.ready_path() == installed_starter
    assert "starter" in wizard.ready.headline.text().lower()
    click(wizard, QWizard.WizardButton.FinishButton)
    chat: ChatView = window.pages["Chat"]
    qtbot.waitUntil(lambda: chat.load_job is None and chat.host.engine.loaded, timeout=120_000)
    assert window.state.model["path"] == str(installed_starter)
    assert Settings()["first_run_done"] is True
    close_window(window)


def test_an_unreachable_hub_is_a_sentence_and_a_missing_starter_says_what_to_do(
        qtbot, catalog: Catalog, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # No starter anywhere: not installed, not in this user's Hugging Face cache or LM Studio folders.
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    window = open_window(qtbot)
    wizard = window.open_wizard(catalog=catalog)
    walk_to_picks(qtbot, wizard)
    click(wizard, QWizard.WizardButton.NextButton)
    offer = wizard.download.offer
    qtbot.waitUntil(offer.isVisible, timeout=60_000)
    assert "Could not reach" in offer.error.text() and "connection" in offer.error.text()
    assert "Traceback" not in offer.error.text()

    # No starter model on this machine, and the Hub is not there to fetch it: no button, one sentence
    # that names no command line.
    qtbot.waitUntil(lambda: offer.missing.text() == STARTER_UNREACHABLE, timeout=30_000)
    assert offer.button.isHidden() and "`" not in offer.missing.text()
    assert wizard.currentId() == PAGE_DOWNLOAD and wizard.ready_path() is None

    # Back to the picks, then skip: the first run counts as done, and the answers given are kept.
    click(wizard, QWizard.WizardButton.BackButton)
    assert wizard.currentId() == PAGE_PICKS
    click(wizard, QWizard.WizardButton.CancelButton)
    assert not wizard.isVisible()
    stored = Settings()
    assert stored["first_run_done"] is True and stored["context_length"] == SHORT_CTX
    close_window(window)


@pytest.mark.slow
def test_a_paused_download_resumes_after_a_restart(qtbot, catalog: Catalog, top_pick: Pick,
                                                   hub_serving_top_pick, starter_model: Path) -> None:
    hub = hub_serving_top_pick
    hub.throttle(8 * 1024 * 1024)  # ~12 s for the 98 MB file: time to pause mid-way
    window = open_window(qtbot)
    wizard = window.open_wizard(catalog=catalog)
    walk_to_picks(qtbot, wizard)
    click(wizard, QWizard.WizardButton.NextButton)
    page = wizard.download
    qtbot.waitUntil(lambda: page.entry is not None and page.entry.progress is not None
                    and page.entry.progress.bytes_done > 4 * 1024 * 1024, timeout=60_000)
    assert "left" in page.detail.text() and "/s" in page.detail.text()
    assert page.pause_button.text() == "Pause"
    page.pause_button.click()
    qtbot.waitUntil(lambda: page.entry.state == "cancelled", timeout=10_000)
    assert page.pause_button.text() == "Resume" and "Paused" in page.detail.text()
    kept = next(paths.downloads_dir().rglob("*.part")).stat().st_size
    assert kept > 0
    click(wizard, QWizard.WizardButton.CancelButton)  # skip, then quit
    close_window(window)

    # A restart: a new window and wizard, the same answers, the same pick.
    hub.throttle(None)
    hub.clear_log()
    again = open_window(qtbot)
    wizard = again.open_wizard(catalog=catalog)
    walk_to_picks(qtbot, wizard)
    click(wizard, QWizard.WizardButton.NextButton)
    qtbot.waitUntil(lambda: wizard.currentId() == PAGE_READY, timeout=120_000)
    assert "Continuing an earlier download" in wizard.download.note.text()
    size = starter_model.stat().st_size
    # The new fit check reads the header again (bounded ranges); the body is fetched once,
    # from where the part file ended (give or take the one-chunk resume granularity).
    bodies = [r for r in hub.requests(method="GET", filename=top_pick.file.filename)
              if r.status in (200, 206) and (r.range is None or r.range.endswith("-"))]
    assert len(bodies) == 1 and bodies[0].range is not None
    start = int(bodies[0].range.removeprefix("bytes=").removesuffix("-"))
    assert kept - core_downloads.CHUNK_SIZE <= start <= kept
    assert bodies[0].bytes_sent == size - start
    assert wizard.download.done_path.stat().st_size == size
    close_window(again)


def test_screenshot_of_the_wizard(tmp_path: Path, camelid_home: Path) -> None:
    out = tmp_path / "wizard.png"
    result = subprocess.run([sys.executable, "-m", "app", "gui", "--screenshot", str(out), "--page", "wizard"],
                            capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    image = QImage(str(out))
    assert (image.width(), image.height()) == SCREENSHOT_SIZE
    assert not paths.settings_path().exists() and not paths.chats_db_path().exists()


# --- answers kept, the starter offered only when it can be had -------------------------------------


def test_the_answers_are_kept_when_next_is_pressed_even_if_the_wizard_is_skipped(qtbot, catalog: Catalog) -> None:
    window = open_window(qtbot)
    wizard = window.open_wizard(catalog=catalog)
    changed: list[list[str]] = []
    window.state.settings_changed.connect(changed.append)
    qtbot.waitUntil(wizard.machine.isComplete, timeout=5000)
    click(wizard, QWizard.WizardButton.NextButton)
    wizard.purpose.use_buttons["code"].click()
    wizard.purpose.ctx_buttons["long"].click()
    click(wizard, QWizard.WizardButton.NextButton)
    long_ctx = wizard.purpose.context().n_ctx
    assert long_ctx > 8192
    stored = Settings()  # on disk at once, before the wizard ends
    assert (stored["use_case"], stored["context_length"]) == ("code", long_ctx)
    assert ["use_case", "context_length"] in changed
    click(wizard, QWizard.WizardButton.CancelButton)
    stored = Settings()
    assert (stored["use_case"], stored["context_length"], stored["first_run_done"]) == ("code", long_ctx, True)
    close_window(window)


def _nothing_fits(qtbot, window: MainWindow) -> HardwareFitWizard:
    wizard = window.open_wizard(catalog=Catalog(models=(load_catalog().get("llama-3.3-70b"),)))
    click(wizard, QWizard.WizardButton.NextButton)
    click(wizard, QWizard.WizardButton.NextButton)
    return wizard


def test_no_starter_button_when_there_is_no_starter_and_no_hub(qtbot, monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    window = open_window(qtbot)
    offer = _nothing_fits(qtbot, window).picks.offer
    qtbot.waitUntil(lambda: offer.missing.text() == STARTER_UNREACHABLE, timeout=30_000)
    assert offer.button.isHidden() and "make run" not in offer.missing.text()
    close_window(window)


def test_a_missing_starter_is_offered_for_download_when_the_hub_answers(
        qtbot, loopback_hub, starter_model: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HOME", str(tmp_path))
    loopback_hub.add_repo(STARTER_REPO)
    loopback_hub.add_file(STARTER_REPO, paths.STARTER_MODEL_FILE, starter_model)
    window = open_window(qtbot)
    wizard = _nothing_fits(qtbot, window)
    offer = wizard.picks.offer
    qtbot.waitUntil(lambda: offer.button.isVisible(), timeout=30_000)
    assert offer.button.text() == "Download the starter model"
    chat: ChatView = window.pages["Chat"]
    offer.button.click()
    qtbot.waitUntil(lambda: wizard.currentId() == PAGE_READY, timeout=60_000)
    path = wizard.ready_path()
    assert path is not None and path.is_file() and path.name == paths.STARTER_MODEL_FILE
    # The download went through the library: the chat's picker lists it without a restart.
    qtbot.waitUntil(lambda: chat.model_picker.findData(str(path)) >= 0, timeout=10_000)
    close_window(window)
