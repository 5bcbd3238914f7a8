"""A memory plan on screen: verdict words, one stacked bar per device, and the full arithmetic.

Works on the plan's JSON form (`MemoryPlan.to_dict()`, the same document
`camelid plan --json` prints), so it shows plans from the recommender, the
library and remote fit checks alike.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from app.ui import text
from app.ui.widgets.memory_bar import MemoryBar, Part

COMPONENTS = (
    ("weights", "weights", "The model's parameters."),
    ("repack", "repacked copies", "Weights rearranged for this CPU's fastest kernels (llama.cpp's CPU_REPACK)."),
    ("kv_cache", "KV cache", "The conversation's memory; grows with the context length."),
    ("recurrent_state", "conversation state, fixed size",
     "Recurrent layers' state: the same size whatever the context length."),
    ("compute", "compute", "Scratch buffers for one batch of tokens."),
    ("overhead", "overhead", "The backend's own context and allocations."),
)
#: Parts most models do not have: shown only when a plan has them.
OPTIONAL = ("repack", "recurrent_state")
VERDICT_COLORS = {"full_gpu": "#2e7d32", "partial": "#b26a00", "cpu": "#5f6b7a", "no_fit": "#c62828"}


def verdict_text(verdict: str | None, n_gpu_layers: int | None = None, n_layers: int | None = None) -> str:
    """The verdict in words: "all on GPU", "20 of 33 layers on GPU", "on the CPU", "does not fit"."""
    if verdict == "full_gpu":
        return "all on GPU"
    if verdict == "partial":
        if n_gpu_layers is not None and n_layers:
            return f"{n_gpu_layers} of {n_layers} layers on GPU"
        return "partly on GPU"
    if verdict == "cpu":
        return "on the CPU"
    if verdict == "no_fit":
        return "does not fit"
    return "fit not known"


def verdict_html(verdict: str | None, n_gpu_layers: int | None = None, n_layers: int | None = None) -> str:
    color = VERDICT_COLORS.get(verdict or "", "#777777")
    return f"<b style='color:{color}'>{verdict_text(verdict, n_gpu_layers, n_layers)}</b>"


def plan_verdict(plan: dict[str, Any]) -> str:
    """Verdict words for a plan document (n_layers counts the output layer, as llama.cpp does)."""
    n_layers = plan.get("n_layers")
    total = n_layers + 1 if isinstance(n_layers, int) else None
    return verdict_text(plan.get("verdict"), plan.get("n_gpu_layers"), total)


def device_parts(device: dict[str, Any]) -> list[Part]:
    return [Part(key, label, int(device.get(key) or 0), help=why) for key, label, why in COMPONENTS
            if key not in OPTIONAL or device.get(key)]


class PlanBars(QWidget):
    """One memory bar per device of a plan (GPU first, then RAM)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(6)
        self.bars: list[MemoryBar] = []

    def set_plan(self, plan: dict[str, Any] | None) -> None:
        for bar in self.bars:
            bar.setParent(None)
            bar.deleteLater()
        self.bars = []
        if not plan:
            return
        for device in plan.get("devices") or []:
            parts = device_parts(device)
            if not any(p.bytes for p in parts):
                continue  # a device the plan puts nothing on
            bar = MemoryBar()
            bar.set_parts(parts, int(device.get("budget") or 0), title=str(device.get("name", "device")))
            self._layout.addWidget(bar)
            self.bars.append(bar)


def arithmetic_text(plan: dict[str, Any]) -> str:
    """The whole plan as plain text: every component on every device, budgets, reasons, changes."""
    lines: list[str] = []
    model = plan.get("model") or {}
    if model:
        name = model.get("name") or model.get("architecture") or "model"
        lines.append(f"Model: {name}")
    lines.append(f"Context: {plan.get('n_ctx', '?')} tokens; layers on GPU: "
                 f"{plan.get('n_gpu_layers', '?')} of {(plan.get('n_layers') or 0) + 1} "
                 "(the blocks plus the output layer)")
    lines.append(f"Verdict: {plan_verdict(plan)}")
    lines.append("")
    for device in plan.get("devices") or []:
        lines.append(f"{device.get('name', 'device')} (budget {text.size(device.get('budget'))})")
        for key, label, _why in COMPONENTS:
            if key in OPTIONAL and not device.get(key):
                continue
            lines.append(f"  {label:<30} {text.size(device.get(key) or 0):>12}")
        total = device.get("total")
        if total is None:
            total = sum(int(device.get(k) or 0) for k, _l, _w in COMPONENTS)
        left = int(device.get("budget") or 0) - int(total)
        lines.append(f"  {'total':<30} {text.size(total):>12}   "
                     + (f"{text.size(left)} to spare" if left >= 0 else f"{text.size(-left)} over"))
        lines.append("")
    per_token = float(plan.get("kv_bytes_per_token") or 0)
    state = int((plan.get("bytes") or {}).get("recurrent_state") or 0)
    if per_token or state:
        growth = f"each 1,000 tokens of context add {text.size(per_token * 1000)} of KV cache" if per_token \
            else "a longer context adds no KV cache (no attention layer keeps one)"
        fixed = f"; the conversation state ({text.size(state)}) stays the same size" if state else ""
        lines.append(f"Context: {growth}{fixed}.")
        lines.append("")
    for title_, key in (("Why", "reasons"), ("What would change it", "improvements")):
        items = plan.get(key) or []
        if items:
            lines.append(title_ + ":")
            for item in items:
                lines.append(f"  - {item if isinstance(item, str) else item.get('text', item)}")
    return "\n".join(lines).rstrip()


def verdict_label(plan: dict[str, Any] | None) -> QLabel:
    label = QLabel(verdict_html(plan.get("verdict"), plan.get("n_gpu_layers"),
                                (plan.get("n_layers") or 0) + 1) if plan else "")
    return label
