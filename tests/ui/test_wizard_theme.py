"""The theme can be switched after the wizard was skipped (a hidden, cleaned-up wizard crashed Qt inside
setStyleSheet when every widget was repolished)."""

from app.core.machine.simulate import preset_profile
from app.core.settings import Settings
from app.ui.main_window import MainWindow
from app.ui.state import AppState
from tests.fixtures.ui import close_window


def test_the_theme_switches_after_the_wizard_is_skipped(qtbot) -> None:
    state = AppState(Settings(), preset_profile("rtx-4090"))
    window = MainWindow(state)
    qtbot.addWidget(window)
    wizard = window.open_wizard()
    wizard.reject()
    qtbot.wait(50)
    window.set_theme("dark")
    window.set_theme("light")
    close_window(window)
