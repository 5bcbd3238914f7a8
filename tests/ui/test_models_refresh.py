"""The Models page's "Check for new models" and the daily check, against the loopback Hub (offscreen)."""

from __future__ import annotations

import json
import time

import pytest
from PySide6.QtCore import QThreadPool

from app import paths
from app.core.machine.simulate import preset_profile
from app.core.models import load_catalog
from app.core.settings import Settings
from app.ui import workers
from app.ui.main_window import MainWindow
from app.ui.models_view import ModelsView
from app.ui.state import AppState
from tests.fixtures.loopback_hub import LoopbackHub
from tests.fixtures.refresh_hub import NEW, OWN, populate_new_models


@pytest.fixture
def new_models(loopback_hub: LoopbackHub) -> LoopbackHub:
    return populate_new_models(loopback_hub)


def _window(qtbot, settings: Settings) -> MainWindow:
    win = MainWindow(AppState(settings, preset_profile("desktop-16gb-cpu")))
    qtbot.addWidget(win)
    win.show()
    win.show_page("Models")
    return win


@pytest.fixture
def window(qtbot):
    win = _window(qtbot, Settings())
    yield win
    win.close()
    assert QThreadPool.globalInstance().waitForDone(10_000)
    assert workers.running_jobs() == 0


def page(window: MainWindow) -> ModelsView:
    return window.pages["Models"]


def test_check_for_new_models_runs_on_a_worker_and_shows_the_result(qtbot, window: MainWindow,
                                                                   new_models: LoopbackHub) -> None:
    view = page(window)
    qtbot.waitUntil(lambda: "last checked for new models: never" in view.catalog_label.text(), timeout=10_000)
    new_models.throttle(2 * 1024 * 1024)  # each 1 MiB header read takes ~0.5 s: the click must not wait
    began = time.monotonic()
    view.check_button.click()
    assert time.monotonic() - began < 0.5
    assert not view.check_button.isEnabled() and view.catalog_result.isVisible()
    qtbot.waitUntil(lambda: view.check_button.isEnabled(), timeout=30_000)
    assert view.catalog_result.text().startswith("Added 2 new models: ")
    assert "Qwen3.9 35B-A3B" in view.catalog_result.text()
    qtbot.waitUntil(lambda: "UTC · 2 found by checks" in view.catalog_label.text(), timeout=10_000)
    assert {NEW, OWN} <= {m.model for m in load_catalog()}
    assert not view.error.shown()


def test_offline_the_button_says_so_and_sends_nothing(qtbot, new_models: LoopbackHub) -> None:
    settings = Settings()
    settings.set("offline", True)
    win = _window(qtbot, settings)
    view = page(win)
    new_models.clear_log()
    view.check_button.click()
    assert view.error.shown() and "offline" in view.error.text()
    view.start_daily_check()
    win.close()
    assert QThreadPool.globalInstance().waitForDone(10_000)
    assert new_models.requests() == [] and not paths.user_catalog_path().exists()


def test_a_connection_failure_shows_one_sentence(qtbot, window: MainWindow, new_models: LoopbackHub) -> None:
    view = page(window)
    new_models.stop()
    view.check_button.click()
    qtbot.waitUntil(lambda: view.error.shown(), timeout=30_000)
    assert view.error.text().startswith("Could not reach") and "\n" not in view.error.text()
    assert "Traceback" not in view.error.text() and view.check_button.isEnabled()


def test_daily_check_runs_once_a_day_and_not_when_turned_off(qtbot, new_models: LoopbackHub) -> None:
    settings = Settings()
    win = _window(qtbot, settings)
    view = page(win)
    view.start_daily_check()
    qtbot.waitUntil(lambda: paths.user_catalog_path().exists() and view.check_button.isEnabled(),
                    timeout=30_000)
    assert {m["model"] for m in json.loads(paths.user_catalog_path().read_text())["models"]} == {NEW, OWN}
    new_models.clear_log()
    view.check_for_new_models(automatic=True)  # what the hourly timer does: not due again today
    assert QThreadPool.globalInstance().waitForDone(10_000)
    qtbot.waitUntil(lambda: view.check_button.isEnabled(), timeout=10_000)
    assert new_models.requests() == []
    win.close()

    settings.set("catalog_daily_check", False)
    paths.user_catalog_path().unlink()
    win = _window(qtbot, settings)
    page(win).start_daily_check()
    assert QThreadPool.globalInstance().waitForDone(10_000)
    assert new_models.requests() == [] and not paths.user_catalog_path().exists()
    win.close()
    assert QThreadPool.globalInstance().waitForDone(10_000)
    assert workers.running_jobs() == 0
