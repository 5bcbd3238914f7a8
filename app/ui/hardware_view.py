"""The Hardware page: the full profile, the budgets the planner uses, and what they mean."""

from __future__ import annotations

import time
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import (
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from app import paths
from app.core.machine import DeviceBudget, HardwareProfile, detect
from app.ui import text
from app.ui.widgets.common import Card, Notice, paragraph, subtle, title
from app.ui.widgets.memory_bar import MemoryBar, Part

MEANING = (
    "<b>Budget</b> is what Camelid lets a model use on each device: what is free now, minus a "
    "reserve it never touches. On a graphics card the reserve (512 MiB) covers the display and "
    "the browser; in RAM it is 10% of memory (1 to 4 GiB) for the system and your apps. "
    "A model runs fastest when its weights, its KV cache (the memory of the conversation, which "
    "grows with the context length) and its compute buffers all fit in the GPU budget; what does "
    "not fit runs on the CPU from RAM, several times slower."
)
UNIFIED_MEANING = (
    "<b>Unified memory</b>: the CPU and the GPU share one pool. macOS lets the GPU wire at most its "
    "Metal budget (about 2/3 of memory below 36 GB, 3/4 above), so that is the ceiling for a model, "
    "and it comes out of the same free memory your apps use."
)


def device_parts(device: DeviceBudget) -> list[Part]:
    """A device's memory as bar parts: used by others, kept for the system, Camelid's budget."""
    in_use = max(0, device.total_bytes - device.free_bytes)
    # Only what the reserve actually takes out of this device: Apple's GPU share is capped by the
    # Metal budget already, so its budget plus the system's part would overflow the bar.
    reserve = max(0, min(device.reserve_bytes, device.total_bytes - in_use - device.budget_bytes))
    return [
        Part("in_use", "in use by other programs", in_use,
             help="Memory other programs hold right now."),
        Part("reserve", "kept for the system", reserve,
             help="Never given to a model, so the desktop stays responsive."),
        Part("free", "Camelid may use", device.budget_bytes,
             help="The budget the planner fits a model into."),
    ]


def memory_card(profile: HardwareProfile, heading: str = "Memory a model may use") -> Card:
    """One bar per GPU budget (or the unified GPU share) and one for RAM, as the planner sees them."""
    budgets = profile.budgets()
    memory = Card(heading)
    for device in budgets.gpus:
        bar = MemoryBar()
        label = "Unified memory, GPU share" if device.kind == "unified" else device.name
        bar.set_parts(device_parts(device), device.total_bytes, title=label,
                      figure=f"a model may use {text.size(device.budget_bytes)} of "
                             f"{text.size(device.total_bytes)}")
        memory.body.addWidget(bar)
    ram_bar = MemoryBar()
    ram_title = "Unified memory (CPU side)" if profile.unified_memory else "System RAM"
    ram_bar.set_parts(device_parts(budgets.ram), budgets.ram.total_bytes, title=ram_title,
                      figure=f"layers on the CPU may use {text.size(budgets.ram.budget_bytes)} of "
                             f"{text.size(budgets.ram.total_bytes)}")
    memory.body.addWidget(ram_bar)
    if not budgets.gpus:
        memory.body.addWidget(paragraph(
            "No GPU that the installed llama.cpp can use: models run on the CPU from RAM."))
    return memory


#: Showing the page measures again when the last reading is older than this (free memory moves).
STALE_AFTER_S = 30.0


class HardwareView(QWidget):
    """Shows one HardwareProfile; `set_profile` replaces it. With the window's state it can measure
    again: the "Measure again" button, and on showing the page when the reading is stale."""

    def __init__(self, state: Any = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self._measuring = False
        self._measured_at = time.monotonic()
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        outer.addWidget(scroll)
        self._content = QWidget()
        scroll.setWidget(self._content)
        self._layout = QVBoxLayout(self._content)
        self._layout.setContentsMargins(24, 20, 24, 20)
        self._layout.setSpacing(14)
        head = QHBoxLayout()
        head.addWidget(title("Hardware"), 1)
        self.measure_button = QPushButton("Measure again")
        self.measure_button.setToolTip("Read free memory, GPUs and the engine again (other programs change "
                                       "what is free).")
        self.measure_button.clicked.connect(lambda _c=False: self.measure())
        self.measure_button.setVisible(state is not None and not getattr(state, "demo", False))
        head.addWidget(self.measure_button, 0, Qt.AlignmentFlag.AlignVCenter)
        self._layout.addLayout(head)
        self.subtitle = subtle("Measuring this machine…")
        self._layout.addWidget(self.subtitle)
        self._dynamic: list[QWidget] = []
        self._layout.addStretch(1)
        self.profile: HardwareProfile | None = None

    def measure(self) -> bool:
        """Detect this machine again off the GUI thread; the window's profile (and this page) follow.

        A simulated machine is not measured (it is what was asked for); False when nothing started.
        """
        state = self.state
        if state is None or self._measuring or (self.profile is not None and self.profile.simulated):
            return False
        from app.ui.workers import run_job

        self._measuring = True
        self.measure_button.setEnabled(False)
        self.measure_button.setText("Measuring…")

        def done(profile: HardwareProfile) -> None:
            self._measured()
            state.set_profile(profile)

        def failed(message: str) -> None:
            self._measured()
            self.subtitle.setText(message)

        run_job(lambda: detect(models_dir=paths.models_dir()), result=done, error=failed)
        return True

    def _measured(self) -> None:
        self._measuring = False
        self._measured_at = time.monotonic()
        self.measure_button.setEnabled(True)
        self.measure_button.setText("Measure again")

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self.profile is not None and time.monotonic() - self._measured_at > STALE_AFTER_S:
            self.measure()

    def _add(self, widget: QWidget) -> None:
        self._layout.insertWidget(self._layout.count() - 1, widget)
        self._dynamic.append(widget)

    def set_profile(self, profile: HardwareProfile) -> None:
        self.profile = profile
        self._measured_at = time.monotonic()
        self.measure_button.setVisible(self.state is not None and not profile.simulated
                                       and not getattr(self.state, "demo", False))
        for widget in self._dynamic:
            widget.setParent(None)
            widget.deleteLater()
        self._dynamic.clear()
        if profile.simulated:
            self.subtitle.setText(f"A simulated machine ({profile.simulated}): plans and "
                                  "recommendations are made for it, not for this computer.")
        else:
            self.subtitle.setText("What Camelid measured on this computer, and the memory it may give a model.")

        for note in self.warnings(profile):
            notice = Notice("warning")
            notice.show_text(note)
            self._add(notice)

        memory = memory_card(profile)
        self._add(memory)

        machine = Card("Machine")
        grid = QGridLayout()
        grid.setHorizontalSpacing(18)
        grid.setVerticalSpacing(6)
        for row, (key, value) in enumerate(self.facts(profile)):
            k = QLabel(key)
            k.setProperty("subtle", True)
            k.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
            v = QLabel(value)
            v.setWordWrap(True)
            v.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            grid.addWidget(k, row, 0)
            grid.addWidget(v, row, 1)
        grid.setColumnStretch(1, 1)
        machine.body.addLayout(grid)
        self._add(machine)

        meaning = Card("What these numbers mean")
        meaning.body.addWidget(paragraph(MEANING))
        if profile.unified_memory:
            meaning.body.addWidget(paragraph(UNIFIED_MEANING))
        self._add(meaning)

    @staticmethod
    def warnings(profile: HardwareProfile) -> list[str]:
        """Notes worth a warning box (the "Simulated: ..." line is shown as the subtitle instead)."""
        return [n for n in profile.notes if not n.startswith("Simulated:")]

    @staticmethod
    def facts(profile: HardwareProfile) -> list[tuple[str, str]]:
        cpu = profile.cpu
        cores = f"{cpu.cores_physical} cores, {cpu.cores_logical} threads"
        if cpu.performance_cores:
            cores += f" ({cpu.performance_cores} performance cores)"
        rows = [("System", f"{profile.os} ({profile.arch})"), ("Processor", cpu.name), ("Cores", cores)]
        if cpu.features:
            rows.append(("CPU features", " ".join(cpu.features)))
        rows.append(("Memory", f"{text.size(profile.ram.total_bytes)} total, "
                               f"{text.size(profile.ram.available_bytes)} available"
                     + (", shared with the GPU" if profile.unified_memory else "")))
        if profile.apple:
            rows.append(("GPU budget", f"{text.size(profile.apple.metal_budget_bytes)} "
                                       f"(from {profile.apple.metal_budget_source})"))
        gpus = [g for g in profile.gpus if g.vendor != "apple"]
        if not gpus and not profile.apple:
            rows.append(("Graphics", "none found"))
        for gpu in gpus:
            detail = [f"{text.size(gpu.vram_total_bytes)} VRAM" if gpu.vram_total_bytes else "shared memory"]
            if gpu.driver:
                detail.append(f"driver {gpu.driver}")
            if gpu.cuda_driver_version:
                detail.append(f"CUDA {gpu.cuda_driver_version}")
            if gpu.compute_capability:
                detail.append(f"compute capability {gpu.compute_capability}")
            rows.append((f"GPU {gpu.index}", f"{gpu.name}: {', '.join(detail)}"))
        backend = profile.backend
        if backend.available:
            offload = "can offload to the GPU" if backend.gpu_offload else "CPU only"
            version = f"llama.cpp via llama-cpp-python {backend.llama_cpp_version}; " \
                if backend.llama_cpp_version else ""
            rows.append(("Engine", f"{version}backends {', '.join(backend.compiled)} ({offload})"))
            if not profile.simulated:
                rows.append(("CPU code", backend.cpu_code() or ""))
        else:
            rows.append(("Engine", "the llama.cpp engine (llama-cpp-python) is missing from this installation: "
                                   "reinstall Camelid."))
        if profile.disk_free_bytes is not None:
            rows.append(("Disk", f"{text.size(profile.disk_free_bytes)} free in {profile.disk_path}"))
        return rows
