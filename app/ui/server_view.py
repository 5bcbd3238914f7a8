"""The Local server page: Camelid's OpenAI-, Anthropic- and Ollama-compatible API, switched on here.

The server answers with the window's own engine on the window's engine thread
(EngineHost.runner()), so a model loaded on the Chat page is the one the server
answers with, and a model the server loads shows on the Chat page. Starting and
stopping run as jobs on the pool (uvicorn binds, then waits for its thread);
the service's events come from the server's and the engine's threads, so they
reach the widgets through a queued Qt signal.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from PySide6.QtCore import QObject, QSettings, Qt, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app import paths
from app.core.fit import LoadChoices
from app.ui.state import AppState
from app.ui.widgets.common import Card, Notice, subtle, title
from app.ui.widgets.markdown_view import CodeBlock
from app.ui.wording import window_sentence
from app.ui.workers import Job, run_job

DEFAULT_PORT = 1234  # app.core.server.DEFAULT_PORT, without importing the server before it is wanted
#: Rows the request log keeps (the service keeps its own 500 too).
LOG_ROWS = 500
LOG_COLUMNS = ("Time", "Method", "Route", "Model", "Tokens", "Tokens/s", "Status")
#: What the snippets say when the library has no model to name yet.
MODEL_PLACEHOLDER = "MODEL-NAME"
KEY_PLACEHOLDER = "YOUR-API-KEY"

LAN_WARNING = ("Other computers on your network will be able to use your models. Each request must carry "
               "the API key below; only turn this on for a network you trust.")
KEY_NOTE = ("Copy the key now: Camelid keeps only its fingerprint, so it will not be shown again. "
            "Turning this off and on makes a new key (the old one stops working).")
KEY_LATER = "A new API key is made when the server starts (the last one is not shown again)."


def serving_text(active: int) -> str:
    """"Serving 1 request", "Serving 3 requests", "Idle"."""
    if active <= 0:
        return "Idle"
    return f"Serving {active} request" + ("" if active == 1 else "s")


def _sentence(message: str) -> str:
    """A core sentence with its command-line hints turned into this page's own controls."""
    message = window_sentence(message)
    return (message.replace("pick another port with --port.", "choose another port above.")
            .replace("Pass --api-key KEY (or --api-key generate), or bind 127.0.0.1.",
                     "Turn off “Serve on the local network”, or start again for a new key."))


def url_note(lan_url: str | None) -> str:
    """How clients use the base URL (and the address other computers use)."""
    note = "OpenAI clients add /v1; Anthropic and Ollama clients use it as is."
    return note + (f" Other computers: {lan_url}" if lan_url else "")


def lan_address() -> str | None:
    """This machine's address on its network (no packet is sent: a UDP socket only picks a route)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.255.255.255", 1))
            address = probe.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


def snippets(url: str, model: str, key: str | None) -> dict[str, tuple[str, str]]:
    """Copy-ready client code for the running server: {tab: (language, code)}."""
    model_json = json.dumps(model)
    api_key = KEY_PLACEHOLDER if key else "camelid"  # the openai client wants some key; loopback needs none
    auth_curl = f' \\\n  -H "Authorization: Bearer {KEY_PLACEHOLDER}"' if key else ""
    auth_ollama = f', headers={{"Authorization": "Bearer {KEY_PLACEHOLDER}"}}' if key else ""
    python = (f'from openai import OpenAI\n\n'
              f'client = OpenAI(base_url="{url}/v1", api_key="{api_key}")\n'
              f'reply = client.chat.completions.create(\n'
              f'    model={model_json},\n'
              f'    messages=[{{"role": "user", "content": "Hello!"}}],\n'
              f')\n'
              f'print(reply.choices[0].message.content)\n')
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello!"}]}).replace("'", "'\\''")
    curl = (f'curl {url}/v1/chat/completions \\\n'
            f'  -H "Content-Type: application/json"{auth_curl} \\\n'
            f"  -d '{body}'\n")
    anthropic = (f'from anthropic import Anthropic\n\n'
                 f'client = Anthropic(base_url="{url}", api_key="{api_key}")\n'
                 f'reply = client.messages.create(\n'
                 f'    model={model_json},\n'
                 f'    max_tokens=1024,\n'
                 f'    messages=[{{"role": "user", "content": "Hello!"}}],\n'
                 f')\n'
                 f'print(reply.content[0].text)\n')
    ollama = (f'from ollama import Client\n\n'
              f'client = Client(host="{url}"{auth_ollama})\n'
              f'reply = client.chat(model={model_json}, messages=[{{"role": "user", "content": "Hello!"}}])\n'
              f'print(reply["message"]["content"])\n')
    return {"Python (openai)": ("python", python), "curl": ("bash", curl),
            "Python (anthropic)": ("python", anthropic), "Ollama clients": ("python", ollama)}


@dataclass
class Started:
    """What the start job hands back to the page."""

    handle: Any  # app.core.server.ServerHandle
    key: str | None
    names: list[str]
    lan_url: str | None


class _Bridge(QObject):
    """Carries the service's events (from server and engine threads) to the GUI thread, queued."""

    event = Signal(str, object)

    def forward(self, name: str, data: Any) -> None:
        self.event.emit(name, data)


class CopyField(QWidget):
    """A read-only line of text with a Copy button."""

    def __init__(self, placeholder: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        self.edit = QLineEdit()
        self.edit.setReadOnly(True)
        self.edit.setPlaceholderText(placeholder)
        self.copy_button = QPushButton("Copy")
        self.copy_button.clicked.connect(lambda _c=False: self.copy())
        layout.addWidget(self.edit, 1)
        layout.addWidget(self.copy_button)
        self.set_text("")

    def text(self) -> str:
        return self.edit.text()

    def set_text(self, text: str) -> None:
        self.edit.setText(text)
        self.edit.setCursorPosition(0)
        self.copy_button.setEnabled(bool(text))

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.edit.text())


class ServerView(QWidget):
    """Start/stop switch, port and network choice, address, loaded model, request log, client snippets."""

    #: Requests waiting or running (the Chat page shows "serving N requests").
    active_changed = Signal(int)
    #: The server loaded (a dict from ModelService.status()) or unloaded (None) a model on the shared engine.
    model_changed = Signal(object)

    def __init__(self, state: AppState, parent: QWidget | None = None, *,
                 models: Callable[[], list[Any]] | None = None) -> None:
        """`models`: the library the server names models from (default: Camelid's scan of every source)."""
        super().__init__(parent)
        self.state = state
        self._models = models
        self.handle: Any = None  # ServerHandle while running
        self.job: Job | None = None  # the start or stop in flight
        self._live: Any = None  # the handle as the worker sees it (shutdown stops it even mid-start)
        self._api_key: str | None = None
        self._key_job: Job | None = None
        self._names: list[str] = []
        self._active = 0
        self._closed = False
        self._choices = LoadChoices.from_settings(state.settings)
        self._bridge = _Bridge(self)
        self._bridge.event.connect(self._on_event)

        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        outer.addWidget(scroll)
        content = QWidget()
        scroll.setWidget(content)
        layout = QVBoxLayout(content)
        layout.setContentsMargins(24, 20, 24, 20)
        layout.setSpacing(14)

        head = QHBoxLayout()
        head.addWidget(title("Local server"), 1)
        self.state_label = QLabel("Stopped")
        self.state_label.setProperty("subtle", True)
        head.addWidget(self.state_label, 0, Qt.AlignmentFlag.AlignVCenter)
        head.addSpacing(8)
        self.switch = QPushButton("Start server")
        self.switch.setProperty("primary", True)
        self.switch.setMinimumWidth(130)
        self.switch.clicked.connect(lambda _c=False: self.toggle())
        head.addWidget(self.switch, 0, Qt.AlignmentFlag.AlignVCenter)
        layout.addLayout(head)
        layout.addWidget(subtle("Other programs on this computer can use your models through the OpenAI, "
                                "Anthropic and Ollama APIs. The server answers with the model loaded on the "
                                "Chat page, and loads the model a request names when it fits."))
        self.error = Notice("error")
        layout.addWidget(self.error)

        # --- settings -----------------------------------------------------------------
        settings = Card("Settings")
        grid = QGridLayout()
        grid.setHorizontalSpacing(10)
        grid.setVerticalSpacing(8)
        self.port_box = QSpinBox()
        self.port_box.setRange(0, 65535)
        self.port_box.setSpecialValueText("any free port")  # 0: the system picks one (tests do)
        self.port_box.setValue(DEFAULT_PORT)
        self.port_box.setMinimumWidth(130)
        self.port_box.setToolTip("The TCP port clients connect to (1234 is what LM Studio uses too).")
        grid.addWidget(QLabel("Port"), 0, 0)
        grid.addWidget(self.port_box, 0, 1, Qt.AlignmentFlag.AlignLeft)
        self.cors_edit = QLineEdit()
        self.cors_edit.setPlaceholderText("Optional: http://localhost:3000")
        self.cors_edit.setToolTip("Origins (scheme, host and port) whose pages may call the server from a "
                                  "browser; separate several with commas. Empty: none.")
        grid.addWidget(QLabel("CORS origins"), 1, 0)
        grid.addWidget(self.cors_edit, 1, 1)
        grid.setColumnStretch(1, 1)
        settings.body.addLayout(grid)
        self.lan_box = QCheckBox("Serve on the local network")
        self.lan_box.setToolTip("Listen on every network address of this machine, not only 127.0.0.1.")
        self.lan_box.toggled.connect(self._lan_toggled)
        settings.body.addWidget(self.lan_box)
        self.lan_warning = Notice("warning")
        settings.body.addWidget(self.lan_warning)
        self.key_row = QWidget()
        key_layout = QVBoxLayout(self.key_row)
        key_layout.setContentsMargins(0, 0, 0, 0)
        key_layout.setSpacing(4)
        key_head = QHBoxLayout()
        key_head.addWidget(QLabel("API key"))
        self.key_field = CopyField("Made when the server starts")
        key_head.addWidget(self.key_field, 1)
        key_layout.addLayout(key_head)
        self.key_note = subtle(KEY_NOTE)
        key_layout.addWidget(self.key_note)
        self.key_row.hide()
        settings.body.addWidget(self.key_row)
        settings.body.addStretch(1)

        # --- status -------------------------------------------------------------------
        status = Card("Status")
        rows = QGridLayout()
        rows.setHorizontalSpacing(10)
        rows.setVerticalSpacing(8)
        self.url_field = CopyField("Shown once it runs")
        rows.addWidget(QLabel("Base URL"), 0, 0)
        rows.addWidget(self.url_field, 0, 1)
        self.url_note = subtle(url_note(None))
        rows.addWidget(self.url_note, 1, 1)
        self.model_label = QLabel("")
        self.model_label.setWordWrap(True)
        rows.addWidget(QLabel("Model"), 2, 0)
        rows.addWidget(self.model_label, 2, 1)
        self.serving_label = QLabel(serving_text(0))
        rows.addWidget(QLabel("Requests"), 3, 0)
        rows.addWidget(self.serving_label, 3, 1)
        rows.setColumnStretch(1, 1)
        status.body.addLayout(rows)
        status.body.addStretch(1)
        # Side by side: what to choose, and what it gives.
        top = QHBoxLayout()
        top.setSpacing(14)
        top.addWidget(settings, 1)
        top.addWidget(status, 1)
        layout.addLayout(top)

        # --- request log -------------------------------------------------------------------
        log = Card("Request log")
        self.log_table = QTableWidget(0, len(LOG_COLUMNS))
        self.log_table.setHorizontalHeaderLabels(list(LOG_COLUMNS))
        self.log_table.verticalHeader().hide()
        self.log_table.setShowGrid(False)
        self.log_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.log_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        header = self.log_table.horizontalHeader()
        for column in range(len(LOG_COLUMNS)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        self.log_table.setMinimumHeight(160)
        log.body.addWidget(self.log_table)
        self.log_hint = subtle("Each request shows here as it ends: newest first.")
        log.body.addWidget(self.log_hint)
        layout.addWidget(log)

        # --- snippets ---------------------------------------------------------------------
        code = Card("Use it from your code")
        self.snippet_tabs = QTabWidget()
        self.snippet_blocks: dict[str, CodeBlock] = {}
        for name in snippets("", "", None):
            block = CodeBlock()
            self.snippet_blocks[name] = block
            self.snippet_tabs.addTab(block, name)
        code.body.addWidget(self.snippet_tabs)
        layout.addWidget(code)
        layout.addStretch(1)

        state.model_changed.connect(lambda _m: self._refresh_model())
        state.settings_changed.connect(self._settings_changed)
        if not state.demo:
            self._restore()
        self._show_state()
        self._refresh_model()
        self._refresh_snippets()

    # ------------------------------------------------------------------ choices
    @staticmethod
    def _stored() -> QSettings:
        # An ini file beside settings.json (as the window's own state), so CAMELID_HOME isolates it.
        return QSettings(str(paths.config_dir() / "server.ini"), QSettings.Format.IniFormat)

    def _restore(self) -> None:
        stored = self._stored()
        try:
            port = int(stored.value("port", DEFAULT_PORT))
        except (TypeError, ValueError):
            port = DEFAULT_PORT
        self.port_box.setValue(port if 1 <= port <= 65535 else DEFAULT_PORT)
        self.cors_edit.setText(str(stored.value("cors", "") or ""))
        lan = str(stored.value("lan", "false")).lower() == "true"
        self.lan_box.blockSignals(True)
        self.lan_box.setChecked(lan)
        self.lan_box.blockSignals(False)
        self._show_lan(lan)

    def _remember(self) -> None:
        if self.state.demo:
            return
        stored = self._stored()
        if self.port_box.value():  # "any free port" is for tests, never the next start's default
            stored.setValue("port", self.port_box.value())
        stored.setValue("lan", "true" if self.lan_box.isChecked() else "false")
        stored.setValue("cors", self.cors_edit.text().strip())
        stored.sync()

    def _settings_changed(self, _keys: list[str]) -> None:
        # The next model the server loads uses the window's settings as they are now.
        self._choices = LoadChoices.from_settings(self.state.settings)

    def _lan_toggled(self, on: bool) -> None:
        self._api_key = None
        self.key_field.set_text("")
        self._show_lan(on)
        if on and not self.state.demo:
            from app.core.server.runner import new_api_key

            self._key_job = run_job(new_api_key, result=self._key_made, error=self.error.show_text)

    def _key_made(self, key: str) -> None:
        self._key_job = None
        if self.lan_box.isChecked():
            self._api_key = key
            self.key_field.set_text(key)
            self.key_note.setText(KEY_NOTE)

    def _show_lan(self, on: bool) -> None:
        self.lan_warning.show_text(LAN_WARNING if on else "")
        self.key_row.setVisible(on)
        self.key_note.setText(KEY_NOTE if self._api_key else KEY_LATER)
        self._refresh_snippets()

    # ------------------------------------------------------------------ start / stop
    @property
    def running(self) -> bool:
        return self.handle is not None

    def toggle(self) -> None:
        if self.running:
            self.stop()
        else:
            self.start()

    def start(self) -> Job | None:
        """Start the server off the GUI thread; the page follows when it listens (or shows why not)."""
        if self.job is not None or self.running or self.state.demo:
            return None
        from app.core.server import DEFAULT_HOST, ModelService, ServerConfig, ServerHandle
        from app.core.server.runner import new_api_key

        self.error.show_text("")
        lan = self.lan_box.isChecked()
        port = self.port_box.value()
        cors = tuple(o for o in re.split(r"[\s,]+", self.cors_edit.text().strip()) if o)
        key = self._api_key if lan else None
        host = self.state.engine_host()
        runner = host.runner()
        embedder = host.embedder  # shared with document search: one embedding model in memory
        choices = lambda: self._choices  # noqa: E731  (read on the engine thread at each load)
        bridge = self._bridge

        def run() -> Started:
            service = ModelService(runner, choices=choices, models=self._models, embedder=embedder)
            service.add_listener(bridge.forward)
            try:
                chosen = key or (new_api_key() if lan else None)
                handle = ServerHandle(service, ServerConfig(host="0.0.0.0" if lan else DEFAULT_HOST, port=port,
                                                            api_key=chosen, cors=cors))
                handle.start()
            except BaseException:
                service.close()
                raise
            self._live = handle
            try:
                names = [m.name for m in service.library()]
            except Exception:  # only the snippets' example name: the server runs all the same
                names = []
            address = lan_address() if lan else None
            return Started(handle, chosen, names, f"http://{address}:{handle.port}" if address else None)

        self._remember()
        self.job = run_job(run, result=self._started, error=self._start_failed)
        self._show_state("Starting…")
        return self.job

    def _started(self, started: Started) -> None:
        self.job = None
        if self._closed:  # the window closed while it started: shutdown() stopped it already
            return
        self.handle = started.handle
        self._names = started.names
        if started.key and started.key != self._api_key:
            self._api_key = started.key
            self.key_field.set_text(started.key)
            self.key_note.setText(KEY_NOTE)
        url = started.handle.url
        self.url_field.set_text(url)
        self.url_note.setText(url_note(started.lan_url))
        self.state.status_message.emit(f"The local server is running at {url}.")
        self._show_state()
        self._refresh_model()
        self._refresh_snippets()

    def _start_failed(self, message: str) -> None:
        self.job = None
        self.error.show_text(_sentence(message))
        self._show_state()

    def stop(self) -> Job | None:
        """Stop the server off the GUI thread: open requests end, what the server loaded is unloaded."""
        handle = self.handle
        if handle is None or self.job is not None:
            return None

        def run() -> None:
            handle.stop()
            handle.service.close()  # unloads the model the server loaded (queued after its requests)
            self._live = None

        self.job = run_job(run, result=lambda _r: None, error=self.error.show_text, finished=self._stopped)
        self._show_state("Stopping…")
        return self.job

    def _stopped(self) -> None:
        self.job = None
        self.handle = None
        self.url_field.set_text("")
        self._set_active(0)
        self.url_note.setText(url_note(None))
        self._show_state()
        self._refresh_model()
        self._refresh_snippets()

    def _show_state(self, busy: str | None = None) -> None:
        running = self.running
        if busy:
            self.state_label.setText(busy)
        elif running:
            self.state_label.setText(f"Running on port {self.handle.port}")
        else:
            self.state_label.setText("Stopped")
        self.switch.setText("Stop server" if running else "Start server")
        self.switch.setProperty("primary", not running)
        self.switch.style().unpolish(self.switch)
        self.switch.style().polish(self.switch)
        self.switch.setEnabled(busy is None and not self.state.demo)
        for widget in (self.port_box, self.cors_edit, self.lan_box):
            widget.setEnabled(not running and busy is None)

    # ------------------------------------------------------------------ events
    def _on_event(self, name: str, data: Any) -> None:
        if name == "active":
            self._set_active(int(data))
        elif name == "request":
            self.add_record(data)
        elif name == "model":
            self._refresh_model()
            self._refresh_snippets()
            self.model_changed.emit(data)

    def _set_active(self, active: int) -> None:
        changed = active != self._active
        self._active = active
        self.serving_label.setText(serving_text(active))
        if changed:
            self.active_changed.emit(active)

    def add_record(self, record: Any) -> None:
        """One finished request at the top of the log (a RequestRecord)."""
        table = self.log_table
        table.insertRow(0)
        tokens = (f"{record.prompt_tokens:,} in · {record.completion_tokens:,} out"
                  if record.prompt_tokens or record.completion_tokens else "")
        rate = f"{record.tokens_per_s:.1f}" if record.tokens_per_s else ""
        cells = (datetime.fromtimestamp(record.at).strftime("%H:%M:%S"), record.method, record.route,
                 record.model or "", tokens, rate, str(record.status))
        for column, value in enumerate(cells):
            item = QTableWidgetItem(value)
            if column in (4, 5, 6):
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            if record.error:
                item.setToolTip(record.error)
            table.setItem(0, column, item)
        while table.rowCount() > LOG_ROWS:
            table.removeRow(table.rowCount() - 1)

    def log_rows(self) -> list[list[str]]:
        """The log as text, newest first (tests)."""
        table = self.log_table
        return [[table.item(r, c).text() if table.item(r, c) else "" for c in range(table.columnCount())]
                for r in range(table.rowCount())]

    def _loaded(self) -> dict[str, Any] | None:
        """The loaded chat model: the service's view while running, else the window's."""
        if self.handle is not None:
            try:
                return self.handle.service.status()["chat"]
            except Exception:  # a model unloading under us: the next event refreshes
                return None
        model = self.state.model
        return {"name": model.get("name"), "by_server": False} if model else None

    def _refresh_model(self) -> None:
        loaded = self._loaded()
        if loaded is None:
            self.model_label.setText("None yet: a request that names a model of the library loads it, "
                                     "if it fits.")
        elif loaded.get("by_server"):
            minutes = round(self.handle.service.idle_unload_s / 60) if self.handle is not None else 15
            self.model_label.setText(f"{loaded['name']}, loaded by the server (unloaded when it stops, or "
                                     f"after {minutes} idle minutes)")
        else:
            self.model_label.setText(f"{loaded['name']}, loaded on the Chat page")

    def _refresh_snippets(self) -> None:
        url = self.url_field.text() or f"http://127.0.0.1:{self.port_box.value() or DEFAULT_PORT}"
        loaded = self._loaded()
        model = (loaded or {}).get("name") or (self._names[0] if self._names else MODEL_PLACEHOLDER)
        lan = self.lan_box.isChecked()
        for name, (language, code) in snippets(url, str(model), KEY_PLACEHOLDER if lan else None).items():
            self.snippet_blocks[name].set_code(code, language)

    # ------------------------------------------------------------------ lifecycle
    def shutdown(self) -> None:
        """Window closing: stop the server before the engine host ends (waits for a start or stop)."""
        self._closed = True
        if self.job is not None:
            self.job.done.wait(30)
        if self._key_job is not None:
            self._key_job.done.wait(5)
        handle, self._live, self.handle = self._live or self.handle, None, None
        if handle is not None:
            handle.stop()
            handle.service.close()
            handle.service.remove_listener(self._bridge.forward)

    def show_demo(self) -> None:
        """A running server with a few requests, for screenshots (nothing listens)."""
        from app.ui import demo

        demo.fill_server(self)
