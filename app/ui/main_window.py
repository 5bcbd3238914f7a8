"""The main window: navigation (Chat, Documents, Models, Hardware, Server, Machines), status bar, menus, and `run_app()`."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
from PySide6.QtCore import (
    QByteArray,
    QMessageLogContext,
    QRect,
    QSettings,
    QSize,
    QTimer,
    QtMsgType,
    qInstallMessageHandler,
    qVersion,
)
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QGuiApplication, QIcon, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QStackedWidget,
    QWidget,
)

from app import __version__, paths
from app.core.machine import HardwareProfile, detect
from app.core.models import should_show_wizard
from app.core.settings import SettingsError
from app.ui import gc_guard, text, theme
from app.ui.hardware_view import HardwareView
from app.ui.settings_dialog import SettingsDialog
from app.ui.state import AppState
from app.ui.workers import run_job

#: How often the status bar re-reads RAM use (psutil: microseconds per read).
MEMORY_REFRESH_MS = 2000
#: The smallest window whose pages still lay out (the chat header row is the widest part).
MINIMUM_SIZE = QSize(960, 560)
#: The size Camelid opens at when the screen has room for it.
PREFERRED_SIZE = QSize(1280, 800)
#: Room kept around a first window: the title bar and frame the window manager adds.
FRAME_ROOM = QSize(40, 48)


def default_size(available: QRect) -> QSize:
    """The first window's size on a screen whose free area (without panels and docks) is `available`."""
    width = min(PREFERRED_SIZE.width(), available.width() - FRAME_ROOM.width())
    height = min(PREFERRED_SIZE.height(), available.height() - FRAME_ROOM.height())
    return QSize(max(width, min(MINIMUM_SIZE.width(), available.width())),
                 max(height, min(MINIMUM_SIZE.height(), available.height())))


class MainWindow(QMainWindow):
    """The shell: pages on the right, navigation on the left, status at the bottom."""

    def __init__(self, state: AppState) -> None:
        super().__init__()
        self.state = state
        self.setWindowTitle("Camelid")
        icon = paths.resources_dir() / "icons" / "camelid.svg"
        if icon.is_file():
            self.setWindowIcon(QIcon(str(icon)))
        self.setMinimumSize(MINIMUM_SIZE)
        self._process = psutil.Process(os.getpid())

        central = QWidget()
        layout = QHBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        self.nav = QListWidget()
        self.nav.setObjectName("NavList")
        self.nav.setFixedWidth(170)
        self.stack = QStackedWidget()
        layout.addWidget(self.nav)
        layout.addWidget(self.stack, 1)
        self.setCentralWidget(central)
        self.pages: dict[str, QWidget] = {}
        #: The hardware-fit wizard while open (or last opened); see open_wizard.
        self.wizard = None
        self.nav.currentRowChanged.connect(self.stack.setCurrentIndex)

        self._build_pages()
        self._build_status_bar()
        self._build_menus()

        state.profile_changed.connect(self._profile_changed)
        state.model_changed.connect(lambda _m: self._refresh_status())
        state.model_changed.connect(self._remember_model)
        state.settings_changed.connect(self._settings_changed)
        state.status_message.connect(lambda msg: self.statusBar().showMessage(msg, 8000))
        if state.profile is not None:
            self._profile_changed(state.profile)

        self._memory_timer = QTimer(self)
        self._memory_timer.setInterval(MEMORY_REFRESH_MS)
        self._memory_timer.timeout.connect(self._refresh_status)
        self._memory_timer.start()
        self._refresh_status()
        self._restore_geometry()

    # --- pages ----------------------------------------------------------
    def _build_pages(self) -> None:
        for name, factory in self.page_factories():
            self.add_page(name, factory())
        self.nav.setCurrentRow(0)

    def page_factories(self) -> list[tuple[str, Callable[[], QWidget]]]:
        """The pages in navigation order; each view module is imported only here."""
        from app.ui.chat_view import ChatView
        from app.ui.models_view import ModelsView

        def models() -> QWidget:
            view = ModelsView(self.state)
            view.chat_requested.connect(self.chat_with)
            return view

        def chat() -> QWidget:
            view = ChatView(self.state)
            # The picker follows the library (a download done anywhere, a delete, an import, Refresh).
            self.state.library_changed.connect(lambda: view.refresh_models())
            return view

        def server() -> QWidget:
            from app.ui.server_view import ServerView

            view = ServerView(self.state)
            page = self.pages.get("Chat")  # built before this one
            if page is not None:
                # One engine: the Chat page shows the server's work and the model it loads or unloads.
                view.active_changed.connect(page.show_serving)
                view.model_changed.connect(lambda _m: page.show_engine_model())
            return view

        def documents() -> QWidget:
            from app.ui.docs_view import DocsView

            view = DocsView(self.state)
            page = self.pages.get("Chat")  # built before this one
            if page is not None:
                # The chat's "Use documents" picker offers the collections made or removed here.
                view.collections_changed.connect(page.refresh_collections)
            return view

        def machines() -> QWidget:
            from app.ui.machines_view import MachinesView

            return MachinesView(self.state)

        factories: list[tuple[str, Callable[[], QWidget]]] = [("Chat", chat), ("Documents", documents),
                                                              ("Models", models)]
        factories.append(("Hardware", lambda: HardwareView(self.state)))
        factories.append(("Server", server))
        factories.append(("Machines", machines))
        return factories

    def add_page(self, name: str, widget: QWidget) -> None:
        self.pages[name] = widget
        self.stack.addWidget(widget)
        item = QListWidgetItem(name)
        item.setSizeHint(QSize(150, 38))
        self.nav.addItem(item)

    def show_page(self, name: str) -> bool:
        """Switch to the page called `name`; False when it is not in this build."""
        names = list(self.pages)
        if name not in names:
            return False
        self.nav.setCurrentRow(names.index(name))
        return True

    def current_page(self) -> str:
        return list(self.pages)[self.nav.currentRow()]

    # --- status bar -------------------------------------------------------
    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.model_label = QLabel("No model loaded")
        self.backend_label = QLabel("")
        self.memory_label = QLabel("")
        bar.addPermanentWidget(self.model_label, 1)
        bar.addPermanentWidget(self.backend_label)
        bar.addPermanentWidget(self.memory_label)

    def _refresh_status(self) -> None:
        model = self.state.model
        if model:
            verdict = f" · {model['verdict_text']}" if model.get("verdict_text") else ""
            self.model_label.setText(f"Model: {model.get('name', '?')}{verdict}")
        else:
            self.model_label.setText("No model loaded")
        self.backend_label.setText(f"Backend: {self.state.backend_label()}")
        profile = self.state.profile
        if profile is not None and profile.simulated:
            # The pages show the simulated machine: this computer's RAM beside it would contradict them.
            total, used = profile.ram.total_bytes, profile.ram.total_bytes - profile.ram.available_bytes
        else:
            vm = psutil.virtual_memory()
            total, used = vm.total, vm.total - vm.available
        rss = self._process.memory_info().rss
        parts = [f"RAM {text.size(used)} / {text.size(total)}", f"Camelid {text.size(rss)}"]
        vram = self._vram_text()
        if vram:
            parts.append(vram)
        self.memory_label.setText(" · ".join(parts))

    def _vram_text(self) -> str:
        # VRAM use comes from the last hardware reading (a fresh NVML query every
        # two seconds would cost more than the rest of the status bar together).
        profile = self.state.profile
        if profile is None or profile.simulated:
            return ""
        gpus = [g for g in profile.gpus if g.vram_total_bytes and g.vendor != "apple"]
        if not gpus:
            return ""
        used = sum((g.vram_total_bytes or 0) - (g.vram_free_bytes if g.vram_free_bytes is not None
                                                 else g.vram_total_bytes or 0) for g in gpus)
        total = sum(g.vram_total_bytes or 0 for g in gpus)
        return f"VRAM {text.size(used)} / {text.size(total)}"

    # --- menus --------------------------------------------------------------
    def _action(self, menu, label: str, slot: Callable[[], object], shortcut=None) -> QAction:
        action = QAction(label, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(lambda _checked=False: slot())
        menu.addAction(action)
        return action

    def _build_menus(self) -> None:
        menus = self.menuBar()
        file_menu = menus.addMenu("&File")
        if "Chat" in self.pages:
            self._action(file_menu, "&New chat", self._new_chat, "Ctrl+N")
        self._action(file_menu, "&Settings…", self.open_settings, "Ctrl+,")
        file_menu.addSeparator()
        self._action(file_menu, "&Quit", self.close, "Ctrl+Q")

        view_menu = menus.addMenu("&View")
        for i, name in enumerate(self.pages):
            self._action(view_menu, name, lambda n=name: self.show_page(n), f"Ctrl+{i + 1}")
        view_menu.addSeparator()
        theme_menu = view_menu.addMenu("&Theme")
        self.theme_actions: dict[str, QAction] = {}
        # One of three: an exclusive group draws radio marks, not check boxes.
        self.theme_group = QActionGroup(self)
        self.theme_group.setExclusive(True)
        for choice, label in (("system", "Follow the system"), ("light", "Light"), ("dark", "Dark")):
            action = self._action(theme_menu, label, lambda c=choice: self.set_theme(c))
            action.setCheckable(True)
            self.theme_group.addAction(action)
            action.setChecked(self.state.settings["theme"] == choice)
            self.theme_actions[choice] = action

        help_menu = menus.addMenu("&Help")
        self.wizard_action = self._action(help_menu, "Hardware-fit &wizard…", self.open_wizard)
        help_menu.addSeparator()
        self.diagnostics_action = self._action(help_menu, "&Copy diagnostics", self.copy_diagnostics)
        self.diagnostics_action.setToolTip("Versions, backend, hardware, settings and the last errors, "
                                           "for a bug report (no token)")
        self.logs_action = self._action(help_menu, "Open &logs folder", self.open_logs_folder)
        help_menu.addSeparator()
        self._action(help_menu, "&About Camelid", self._about)

    def open_wizard(self, *, catalog=None):
        """Open the hardware-fit wizard (first run, or Help menu); finishing it opens the chat."""
        from app.ui.wizard import HardwareFitWizard

        current = self.wizard
        if current is not None and current.isVisible():
            current.raise_()
            current.activateWindow()
            return current
        if current is not None:
            current.deleteLater()  # a finished or skipped one: start afresh
        wizard = HardwareFitWizard(self.state, catalog=catalog, parent=self)
        wizard.model_ready.connect(self.chat_with)
        self.wizard = wizard
        wizard.open()
        return wizard

    def chat_with(self, path) -> None:
        """Open the Chat page and load `path` there."""
        self.show_page("Chat")
        self.pages["Chat"].load_model(path)

    def load_last_model(self) -> bool:
        """Load the model loaded last time (setting ``load_last_model``); False when there is none to load."""
        settings = self.state.settings
        last = str(settings["last_model"] or "")
        chat = self.pages.get("Chat")
        if self.state.demo or not settings["load_last_model"] or not last or chat is None:
            return False
        if not os.path.isfile(last):
            self.statusBar().showMessage(f"The model used last time is no longer at {last}; pick another one.",
                                         8000)
            return False
        self.chat_with(Path(last))
        return True

    def _remember_model(self, model: dict | None) -> None:
        path = (model or {}).get("path")
        settings = self.state.settings
        if self.state.demo or not path or settings["last_model"] == str(path):
            return
        settings.set("last_model", str(path))
        with contextlib.suppress(SettingsError):  # only a convenience: the next start simply loads nothing
            settings.save()

    def _new_chat(self) -> None:
        self.show_page("Chat")
        page = self.pages.get("Chat")
        if page is not None and hasattr(page, "new_conversation"):
            page.new_conversation()

    def open_settings(self) -> SettingsDialog:
        dialog = SettingsDialog(self.state.settings, self)
        dialog.saved.connect(self.state.settings_changed.emit)
        dialog.open()
        self._settings_dialog = dialog
        return dialog

    def set_theme(self, choice: str) -> None:
        self.state.settings.set("theme", choice)
        try:
            kept = self.state.settings.save()
        except SettingsError as exc:
            self.statusBar().showMessage(str(exc), 8000)
        else:
            if kept is not None:
                self.statusBar().showMessage(f"The old settings file could not be used; it is kept as {kept}.")
        self.state.settings_changed.emit(["theme"])

    def _settings_changed(self, keys: list[str]) -> None:
        if "theme" in keys:
            choice = self.state.settings["theme"]
            app = QApplication.instance()
            if isinstance(app, QApplication):
                theme.apply_theme(app, choice)
            for key, action in self.theme_actions.items():
                action.setChecked(key == choice)
            self.update()

    def diagnostics_text(self) -> str:
        import PySide6

        from app import diagnostics, logging_setup

        log_file = logging_setup.log_path()
        return diagnostics.diagnostics_text(
            settings=self.state.settings, profile=self.state.profile, problems=logging_setup.recent_problems(),
            qt=f"{qVersion()} (PySide6 {PySide6.__version__})", backend_in_use=self.state.backend_label(),
            log_file=log_file if log_file.is_file() else None)

    def copy_diagnostics(self) -> str:
        """Put the diagnostics on the clipboard (for a bug report) and say so."""
        report = self.diagnostics_text()
        QGuiApplication.clipboard().setText(report)
        self.statusBar().showMessage("Diagnostics copied: paste them into your bug report.", 8000)
        return report

    def open_logs_folder(self) -> QDialog | None:
        """The logs folder in the file manager, or (returned) a dialog with its path and Copy."""
        from app.ui.widgets.folder import open_folder

        return open_folder(paths.logs_dir(), self)

    def _about(self) -> None:
        QMessageBox.about(self, "About Camelid",
                          f"<b>Camelid {__version__}</b><br>Runs the best local LLM your machine can hold.<br>"
                          "llama.cpp through llama-cpp-python; models from the Hugging Face Hub.")

    def _profile_changed(self, profile: HardwareProfile) -> None:
        hardware = self.pages.get("Hardware")
        if isinstance(hardware, HardwareView):
            hardware.set_profile(profile)
        self._refresh_status()

    # --- window state ---------------------------------------------------------
    @staticmethod
    def _window_settings() -> QSettings:
        # An ini file next to settings.json, so CAMELID_HOME isolates it like everything else.
        return QSettings(str(paths.config_dir() / "window.ini"), QSettings.Format.IniFormat)

    def _restore_geometry(self) -> None:
        stored = self._window_settings()
        geometry = stored.value("geometry")
        if not (isinstance(geometry, QByteArray) and not geometry.isEmpty() and self.restoreGeometry(geometry)):
            self.place_default()
        page = stored.value("page")
        if isinstance(page, str):
            self.show_page(page)

    def place_default(self) -> None:
        """Size the window to fit the screen it opens on (a 1366x768 laptop too) and centre it."""
        screen = self.screen() or QGuiApplication.primaryScreen()
        if screen is None:
            self.resize(PREFERRED_SIZE)
            return
        available = screen.availableGeometry()
        self.resize(default_size(available))
        frame = self.frameGeometry()
        frame.moveCenter(available.center())
        self.move(frame.topLeft())

    def save_window_state(self) -> None:
        stored = self._window_settings()
        stored.setValue("geometry", self.saveGeometry())
        stored.setValue("page", self.current_page())
        stored.sync()

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self.state.demo:
            self.save_window_state()
        # The server first: its open requests end and it lets go of the engine before anything else stops.
        pages = sorted(self.pages.values(), key=lambda p: p is not self.pages.get("Server"))
        for page in pages:
            if hasattr(page, "shutdown"):
                page.shutdown()
        self._memory_timer.stop()
        self.state.shutdown()
        super().closeEvent(event)


def build_app(argv: list[str] | None = None) -> QApplication:
    app = QApplication.instance()
    if not isinstance(app, QApplication):
        app = QApplication(argv if argv is not None else sys.argv[:1])
    app.setApplicationName("Camelid")
    app.setApplicationDisplayName("Camelid")
    app.setOrganizationName("Camelid")
    app.setApplicationVersion(__version__)
    gc_guard.install(app)
    return app


def create_window(state: AppState | None = None, *, startup_problems: list[str] | None = None) -> MainWindow:
    """A main window over `state` (a fresh AppState on this machine by default), theme applied."""
    app = build_app()
    state = state or AppState()
    theme.apply_theme(app, state.settings["theme"])
    theme.follow_system(app)
    window = MainWindow(state)
    # What could not be used or created at start-up stays in the status bar until the next message.
    startup = [*state.settings.problems, *(startup_problems or [])]
    if startup:
        window.statusBar().showMessage(" ".join(startup))
    if state.profile is None:
        # Detection imports llama.cpp and asks the drivers: never on the GUI thread.
        run_job(lambda: detect(models_dir=paths.models_dir()), result=state.set_profile)
    return window


_qt_log = logging.getLogger("qt")
_QT_LEVELS = {QtMsgType.QtDebugMsg: logging.DEBUG, QtMsgType.QtInfoMsg: logging.INFO,
              QtMsgType.QtWarningMsg: logging.WARNING, QtMsgType.QtCriticalMsg: logging.ERROR,
              QtMsgType.QtFatalMsg: logging.CRITICAL}


def _qt_message(kind: QtMsgType, context: QMessageLogContext, message: str) -> None:
    category = f"{context.category}: " if context.category and context.category != "default" else ""
    _qt_log.log(_QT_LEVELS.get(kind, logging.WARNING), "%s%s", category, message)


def route_qt_messages() -> None:
    """Qt's warnings ("Unable to detect a launcher"...) go to Camelid's log, not the terminal."""
    qInstallMessageHandler(_qt_message)


def run_app() -> int:
    """Open Camelid and run until the window closes."""
    from app import logging_setup

    problems = paths.ensure_dirs()  # read-only storage still opens the app, saying what is not kept
    logging_setup.configure("gui")
    route_qt_messages()
    # A slot's unexpected exception goes to the log (PySide6 hands it to sys.excepthook), not the terminal.
    sys.excepthook = lambda kind, value, tb: logging.getLogger("camelid").critical(
        "Unexpected error", exc_info=(kind, value, tb))
    app = build_app()
    window = create_window(startup_problems=problems)
    window.show()
    if should_show_wizard(window.state.settings, demo=window.state.demo):
        window.open_wizard()
    else:
        window.load_last_model()  # as Ollama and Jan do: the model used last is ready without a click
    daily_check = getattr(window.pages.get("Models"), "start_daily_check", None)
    if callable(daily_check):
        # Only the real app checks daily (never a test's or a screenshot's window); it skips itself when
        # offline, turned off in Settings, or already done today.
        daily_check()
    return app.exec()
