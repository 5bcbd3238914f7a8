"""The Machines page: other computers running `camelid worker` that lend their memory to a model.

The list is the `rpc_workers` setting (HOST:PORT, comma-separated). Each machine
is probed (app/core/cluster/probe.py, pure Python) as a pool job, never on the
GUI thread, and shows what it answered: its protocol version, its devices with
free and total memory (measured by the worker, or the protocol's number), and
the round trip; or the probe's sentence. A new address is probed before it is
saved. "Use these machines for models" makes the window's loads plan over this
machine and the listed ones (EngineHost.machines); that switch is the page's
own state in machines.ini beside settings.json (as the server page keeps its
port), so turning it off keeps the list.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from app import paths
from app.core.cluster.probe import (
    DEFAULT_PORT,
    WorkerError,
    WorkerInfo,
    endpoint_text,
    parse_endpoint,
)
from app.core.settings import SettingsError
from app.ui import text
from app.ui.state import AppState
from app.ui.widgets.common import Card, Notice, subtle, title
from app.ui.widgets.markdown_view import CodeBlock
from app.ui.workers import Job, run_job

#: Seconds one probe may wait for a worker (connect and each reply).
PROBE_TIMEOUT_S = 3.0

SECURITY_NOTE = ("A worker has no password and no encryption: anyone who can reach its port can run code "
                 "on that machine. Keep workers on 127.0.0.1 (the default) and reach them through an SSH "
                 "tunnel; add the tunnel's end here, 127.0.0.1:PORT.")
TUNNEL_STEPS = (f"# 1. On the other machine (listens on 127.0.0.1 only):\n"
                f"camelid worker\n"
                f"# 2. On this machine, a tunnel to it (keep it open):\n"
                f"ssh -N -L {DEFAULT_PORT}:127.0.0.1:{DEFAULT_PORT} user@other-machine\n"
                f"# 3. Add 127.0.0.1:{DEFAULT_PORT} above.\n")
OPEN_STEPS = ("# On the other machine: listens on every network address, with no authentication\n"
              "camelid worker --host 0.0.0.0\n"
              f"# Then add that machine's address above, e.g. 192.168.1.20:{DEFAULT_PORT}\n")
OPEN_WARNING = ("Only on a network where you trust every device: with --host 0.0.0.0 anyone on the network "
                "can run code on that machine through the worker.")


@dataclass
class Probed:
    """What one probe job hands back: the worker's answer, or its sentence (with the reason)."""

    endpoint: str
    info: WorkerInfo | None = None
    error: str = ""
    reason: str = ""


def probe_worker(endpoint: str, timeout: float = PROBE_TIMEOUT_S) -> Probed:
    """Probe `endpoint` (on a worker thread); a WorkerError becomes a sentence, never an exception."""
    from app.core.cluster.probe import probe

    try:
        return Probed(endpoint, info=probe(endpoint, timeout=timeout))
    except WorkerError as exc:
        return Probed(endpoint, error=str(exc), reason=exc.reason)


def normalise(address: str) -> str:
    """HOST:PORT as the setting keeps it (the port defaults to 50052); WorkerError for a bad address."""
    host, port = parse_endpoint(address)
    return endpoint_text(host, port)


def parse_list(value: str) -> list[str]:
    """The `rpc_workers` setting as a list, in order, without repeats."""
    out: list[str] = []
    for part in str(value or "").replace(";", ",").split(","):
        part = part.strip()
        if part and part not in out:
            out.append(part)
    return out


def device_text(device: Any) -> str:
    """"CPU: 22.1 GiB free of 23.5 GiB (measured by the worker)"."""
    name = device.name or f"Device {device.index}"
    kind = f" ({device.kind.upper()})" if device.kind and device.kind.lower() not in name.lower() else ""
    if device.free_source == "status":
        source = "measured by the worker"
    else:
        source = "assumed: the protocol's number, which counts all of a CPU's RAM as free"
    return f"{name}{kind}: {text.size(device.free_bytes)} free of {text.size(device.total_bytes)} ({source})"


def state_text(info: WorkerInfo) -> str:
    """"Reachable · protocol 7.0.0 · 0.3 ms round trip"."""
    version = ".".join(str(v) for v in info.version)
    ms = info.latency_s * 1000
    latency = f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"
    return f"Reachable · protocol {version} · {latency} round trip"


class MachineRow(QFrame):
    """One worker: its address, what its last probe said, Probe again and Remove."""

    probe_requested = Signal(str)
    remove_requested = Signal(str)

    def __init__(self, endpoint: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.endpoint = endpoint
        self.setObjectName("MachineRow")
        self.setStyleSheet("#MachineRow { border-top: 1px solid palette(mid); }")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 8, 0, 4)
        layout.setSpacing(4)
        head = QHBoxLayout()
        head.setSpacing(8)
        self.address = QLabel(f"<b>{endpoint}</b>")
        self.address.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        head.addWidget(self.address)
        self.state_label = QLabel("")
        self.state_label.setProperty("subtle", True)
        self.state_label.setWordWrap(True)
        head.addWidget(self.state_label, 1)
        self.probe_button = QPushButton("Probe again")
        self.probe_button.clicked.connect(lambda _c=False: self.probe_requested.emit(self.endpoint))
        self.remove_button = QPushButton("Remove")
        self.remove_button.clicked.connect(lambda _c=False: self.remove_requested.emit(self.endpoint))
        head.addWidget(self.probe_button, 0, Qt.AlignmentFlag.AlignTop)
        head.addWidget(self.remove_button, 0, Qt.AlignmentFlag.AlignTop)
        layout.addLayout(head)
        self.devices_label = QLabel("")
        self.devices_label.setWordWrap(True)
        self.devices_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.devices_label)
        self.error = Notice("error")
        layout.addWidget(self.error)
        #: Whether its last probe answered (or it holds part of the loaded model).
        self.usable = False
        self.show_probing()

    def show_probing(self) -> None:
        self.state_label.setText("Probing…")
        self.probe_button.setEnabled(False)

    def show_result(self, probed: Probed, *, in_use: bool = False) -> None:
        self.probe_button.setEnabled(True)
        info = probed.info
        self.usable = info is not None or in_use
        if info is not None:
            self.state_label.setText(state_text(info))
            lines = [device_text(d) for d in info.devices] + list(info.notes)
            self.devices_label.setText("\n".join(lines))
            self.devices_label.show()
            self.error.show_text("")
        elif in_use:
            self.state_label.setText("In use: it holds part of the model loaded here")
            self.devices_label.setText("A worker serves one Camelid at a time, so it is not probed while "
                                       "the model is loaded; unload it to probe again.")
            self.devices_label.show()
            self.error.show_text("")
        else:
            self.state_label.setText("Not usable")
            self.devices_label.hide()
            self.error.show_text(probed.error)


class MachinesView(QWidget):
    """The workers from the `rpc_workers` setting, their probes, Add / Probe again / Remove, the switch."""

    #: The machines a load plans with changed (a list of HOST:PORT; empty: this machine only).
    machines_changed = Signal(list)

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.host = state.engine_host()
        self.rows: dict[str, MachineRow] = {}
        #: The probe job in flight per address (a newer one replaces it; a removed row ignores it).
        self.jobs: dict[str, Job] = {}
        self.add_job: Job | None = None

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
        head.addWidget(title("Machines"), 1)
        self.use_box = QCheckBox("Use these machines for models")
        self.use_box.setToolTip("Loads on the Chat page plan over this machine and the machines below, and "
                                "put the layers that do not fit here on them.")
        self.use_box.toggled.connect(self._use_toggled)
        head.addWidget(self.use_box, 0, Qt.AlignmentFlag.AlignVCenter)
        layout.addLayout(head)
        layout.addWidget(subtle("Lend the memory of other computers to a model too big for this one. Each "
                                "runs `camelid worker`; when the switch above is on, loading a model plans "
                                "over this machine and these, and the chat says what each one holds. A "
                                "machine that fails ends only the model, never Camelid."))
        self.security = Notice("warning")
        self.security.show_text(SECURITY_NOTE)
        layout.addWidget(self.security)
        self.error = Notice("error")
        layout.addWidget(self.error)

        # --- the list -------------------------------------------------------------------
        machines = Card("Machines")
        add_row = QHBoxLayout()
        add_row.setSpacing(8)
        self.address_edit = QLineEdit()
        self.address_edit.setPlaceholderText(f"HOST:PORT, e.g. 127.0.0.1:{DEFAULT_PORT}")
        self.address_edit.setToolTip("The worker's address as it prints it (the port defaults to "
                                     f"{DEFAULT_PORT}); through an SSH tunnel: 127.0.0.1:PORT.")
        self.address_edit.returnPressed.connect(self.add)
        self.add_button = QPushButton("Add")
        self.add_button.setProperty("primary", True)
        self.add_button.clicked.connect(lambda _c=False: self.add())
        self.probe_all_button = QPushButton("Probe all")
        self.probe_all_button.clicked.connect(lambda _c=False: self.probe_all())
        add_row.addWidget(self.address_edit, 1)
        add_row.addWidget(self.add_button)
        add_row.addWidget(self.probe_all_button)
        machines.body.addLayout(add_row)
        self.add_error = Notice("error")
        machines.body.addWidget(self.add_error)
        self.empty_hint = subtle("No machines yet: start `camelid worker` on another computer (below), then "
                                 "add its address here.")
        machines.body.addWidget(self.empty_hint)
        self.rows_layout = QVBoxLayout()
        self.rows_layout.setSpacing(2)
        machines.body.addLayout(self.rows_layout)
        layout.addWidget(machines)

        # --- how to start a worker ---------------------------------------------------------
        start = Card("Start a worker on the other machine")
        start.body.addWidget(subtle("Safest: the worker listens on the other machine's loopback only, and an "
                                    "SSH tunnel carries the connection (encrypted, and only you can open it)."))
        self.tunnel_block = CodeBlock(TUNNEL_STEPS, "bash")
        start.body.addWidget(self.tunnel_block)
        start.body.addWidget(subtle("Without a tunnel, on a network you control:"))
        self.open_block = CodeBlock(OPEN_STEPS, "bash")
        start.body.addWidget(self.open_block)
        self.open_warning = Notice("warning")
        self.open_warning.show_text(OPEN_WARNING)
        start.body.addWidget(self.open_warning)
        start.body.addWidget(subtle("Every machine needs the same Camelid version (the protocol must match). "
                                    "A worker serves one Camelid at a time."))
        layout.addWidget(start)
        layout.addStretch(1)

        state.settings_changed.connect(self._settings_changed)
        if not state.demo:
            for endpoint in parse_list(state.settings["rpc_workers"]):
                self._add_row(endpoint)
                self.probe(endpoint)
            self.use_box.blockSignals(True)
            self.use_box.setChecked(self._stored().value("use", "false") == "true" and bool(self.rows))
            self.use_box.blockSignals(False)
        self._refresh()

    # ------------------------------------------------------------------ the list
    def endpoints(self) -> list[str]:
        return list(self.rows)

    def in_use(self) -> list[str]:
        """The machines a load plans with now (empty: this machine only)."""
        return self.endpoints() if self.use_box.isChecked() else []

    def _add_row(self, endpoint: str) -> MachineRow:
        row = MachineRow(endpoint)
        row.probe_requested.connect(self.probe)
        row.remove_requested.connect(self.remove)
        self.rows[endpoint] = row
        self.rows_layout.addWidget(row)
        return row

    def add(self, address: str | None = None) -> Job | None:
        """Check the address, probe it (off the GUI thread), and save it once it answered."""
        raw = self.address_edit.text() if address is None else address
        if self.add_job is not None or not raw.strip():
            return None
        try:
            endpoint = normalise(raw)
        except WorkerError as exc:
            self.add_error.show_text(str(exc))
            return None
        if endpoint in self.rows:
            self.add_error.show_text(f"{endpoint} is in the list already: use Probe again to ask it anew.")
            return None
        self.add_error.show_text("")
        self.add_button.setEnabled(False)
        self.add_button.setText("Probing…")
        self.add_job = run_job(probe_worker, endpoint, result=self._add_probed,
                               error=self._add_failed)
        return self.add_job

    def _add_probed(self, probed: Probed) -> None:
        self._add_done()
        if probed.info is None:
            self.add_error.show_text(f"{probed.error} It was not added.")
            return
        if probed.endpoint not in self.rows:
            self._add_row(probed.endpoint).show_result(probed)
        self.address_edit.clear()
        self._save()

    def _add_failed(self, message: str) -> None:
        self._add_done()
        self.add_error.show_text(message)

    def _add_done(self) -> None:
        self.add_job = None
        self.add_button.setEnabled(True)
        self.add_button.setText("Add")

    def probe(self, endpoint: str) -> Job | None:
        """Ask the worker at `endpoint` again (a pool job); its row shows the answer."""
        row = self.rows.get(endpoint)
        if row is None or self.state.demo:
            return None
        row.show_probing()
        job = run_job(probe_worker, endpoint, result=self._probed,
                      error=lambda message, e=endpoint: self._probed(Probed(e, error=message)))
        self.jobs[endpoint] = job
        return job

    def probe_all(self) -> list[Job]:
        return [job for endpoint in self.endpoints() if (job := self.probe(endpoint)) is not None]

    def _probed(self, probed: Probed) -> None:
        row = self.rows.get(probed.endpoint)
        if row is None:
            return  # removed while it was probed
        engine = self.host.engine
        in_use = (probed.reason == "timeout" and getattr(engine, "split", False) and engine.loaded
                  and probed.endpoint in getattr(engine, "endpoints", []))
        row.show_result(probed, in_use=in_use)

    def remove(self, endpoint: str) -> None:
        row = self.rows.pop(endpoint, None)
        self.jobs.pop(endpoint, None)
        if row is None:
            return
        row.setParent(None)
        row.deleteLater()
        self._save()

    # ------------------------------------------------------------------ saving
    @staticmethod
    def _stored() -> QSettings:
        # An ini file beside settings.json (as the server page's), so CAMELID_HOME isolates it.
        return QSettings(str(paths.config_dir() / "machines.ini"), QSettings.Format.IniFormat)

    def _save(self) -> None:
        """The list into the `rpc_workers` setting (saved now), and the loads follow."""
        value = ", ".join(self.rows)
        settings = self.state.settings
        if not self.state.demo and str(settings["rpc_workers"] or "") != value:
            try:
                settings.set("rpc_workers", value)
                settings.save()
            except SettingsError as exc:
                self.error.show_text(str(exc))
            else:
                self.error.show_text("")
                self.state.settings_changed.emit(["rpc_workers"])
        self._refresh()

    def _settings_changed(self, keys: list[str]) -> None:
        if "rpc_workers" not in keys:
            return
        wanted = parse_list(self.state.settings["rpc_workers"])
        if wanted == self.endpoints():
            return
        for endpoint in [e for e in self.rows if e not in wanted]:
            row = self.rows.pop(endpoint)
            row.setParent(None)
            row.deleteLater()
        for endpoint in wanted:
            if endpoint not in self.rows:
                self._add_row(endpoint)
                self.probe(endpoint)
        self._refresh()

    def _use_toggled(self, on: bool) -> None:
        if not self.state.demo:
            stored = self._stored()
            stored.setValue("use", "true" if on else "false")
            stored.sync()
        self._refresh()

    def set_use(self, on: bool) -> None:
        """The switch, as a click sets it (tests)."""
        self.use_box.setChecked(on)

    def _refresh(self) -> None:
        has = bool(self.rows)
        self.empty_hint.setVisible(not has)
        self.probe_all_button.setEnabled(has)
        self.use_box.setEnabled(has or self.use_box.isChecked())
        if not has and self.use_box.isChecked():
            self.use_box.blockSignals(True)
            self.use_box.setChecked(False)
            self.use_box.blockSignals(False)
        machines = self.in_use()
        if not self.state.demo and self.host.machines != machines:
            self.host.machines = machines
            self.machines_changed.emit(machines)

    # ------------------------------------------------------------------ lifecycle
    def shutdown(self) -> None:
        """Window closing: probes end on their own within their timeout; wait for them."""
        for job in [*self.jobs.values(), *([self.add_job] if self.add_job else [])]:
            with contextlib.suppress(Exception):
                job.done.wait(PROBE_TIMEOUT_S * 3)

    def show_demo(self) -> None:
        """Two workers (one through a tunnel, one on the LAN) and one that is off, for screenshots."""
        from app.ui import demo

        demo.fill_machines(self)
