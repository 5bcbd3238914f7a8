"""The Chat page: conversations on the left, the conversation and its input on the right.

Store reads and writes run on the store thread, the model on the engine
thread (engine_host.py); this file only arranges widgets and reacts to
signals. Streamed text is buffered and drawn at most every STREAM_REPAINT_MS,
so a fast model never floods the GUI thread with re-layouts.

Documents: files attached (the Attach button, or dropped on the page) are
indexed into the conversation's private collection `chat-<id>` on the engine
thread (docs_view.IndexProgress), and "Use documents" adds named collections,
remembered in the conversation's settings. A reply then draws on them through
core's DocumentChat; its citations show under it, and a click opens the
passage in the side panel.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QMimeData, Qt, QTimer, Signal
from PySide6.QtGui import (
    QDragEnterEvent,
    QDragMoveEvent,
    QDropEvent,
    QKeyEvent,
    QKeySequence,
    QPalette,
    QShortcut,
)
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QTextBrowser,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.core.chat import PRESETS, Conversation, LoadReport, Message, Reply, preset
from app.core.fit import LoadChoices
from app.core.models import LibraryModel, list_models
from app.ui import docs_view, theme
from app.ui.docs_view import Attachment, IndexProgress, citation_label, citation_links
from app.ui.engine_host import EngineHost
from app.ui.state import AppState
from app.ui.widgets.common import Notice, subtle
from app.ui.widgets.message_bubble import MessageBubble
from app.ui.widgets.plan_view import verdict_text
from app.ui.widgets.text_prompt import ask_text
from app.ui.workers import Job, run_job

STREAM_REPAINT_MS = 50
#: Where a conversation keeps the collections it draws on (Conversation.settings).
DOCS_KEY = "documents"
#: Attachment chips shown before "+N more".
MAX_CHIPS = 5
#: The widest a chip's name is drawn before it ends in "…" (the full path is its tooltip).
CHIP_NAME_PX = 170
#: What a reply's stored docs_mode says in the notices and under the reply.
MODE_WORDS = {"whole": "Read the documents whole", "retrieval": "Searched the documents",
              "empty": "Nothing in the documents matched the question"}


def dropped_paths(mime: QMimeData) -> list[str]:
    """The local files and folders in a drag (empty when it carries none)."""
    if not mime.hasUrls():
        return []
    return [url.toLocalFile() for url in mime.urls() if url.isLocalFile() and url.toLocalFile()]


def mode_text(stats: dict[str, Any]) -> str:
    """"Searched the documents: the 8 best passages given" / "Read the documents whole (12 passages)"."""
    mode = stats.get("docs_mode")
    n = len(stats.get("passages") or [])
    if mode == "retrieval":
        return f"{MODE_WORDS[mode]}: the {n} best passage{'s' if n != 1 else ''} given to the model."
    if mode == "whole":
        return f"{MODE_WORDS[mode]} ({n} passage{'s' if n != 1 else ''})."
    if mode == "empty":
        return f"{MODE_WORDS[mode]}."
    return ""


def when_text(timestamp: float, now: float | None = None) -> str:
    """When a chat was last used, as a list shows it: "Today 14:05", "Yesterday", "Mon", "3 Nov 2025"."""
    then = datetime.fromtimestamp(timestamp)
    today = datetime.fromtimestamp(now if now is not None else time.time()).date()
    days = (today - then.date()).days
    if days <= 0:
        return f"Today {then:%H:%M}"
    if days == 1:
        return "Yesterday"
    if days < 7:
        return f"{then:%A}"
    return f"{then.day} {then:%b}" + ("" if then.year == today.year else f" {then.year}")


class PromptEdit(QPlainTextEdit):
    """The input box: Enter sends, Shift+Enter starts a new line, Esc stops the reply."""

    submitted = Signal()
    stop_requested = Signal()
    #: Local files or folders dropped on the box: attached, not pasted as text.
    files_dropped = Signal(list)

    def canInsertFromMimeData(self, source: QMimeData) -> bool:
        return bool(dropped_paths(source)) or super().canInsertFromMimeData(source)

    def insertFromMimeData(self, source: QMimeData) -> None:
        paths = dropped_paths(source)
        if paths:
            self.files_dropped.emit(paths)
            return
        super().insertFromMimeData(source)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Escape:
            self.stop_requested.emit()
            return
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and \
                not event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            self.submitted.emit()
            return
        super().keyPressEvent(event)


def machine_lines(report: LoadReport) -> list[str]:
    """What each machine holds of a model split across machines (the plan's " holds " lines); [] otherwise."""
    plan = report.plan
    if plan is None or not any(d.kind == "rpc" for d in plan.devices):
        return []
    return [line for line in plan.reasons if " holds " in line]


def load_verdict(report: LoadReport) -> str:
    """Where the loaded model sits, from the parameters llama.cpp accepted."""
    plan = report.plan
    remote = [d for d in plan.devices if d.kind == "rpc" and (d.layers or d.output)] if plan is not None else []
    if remote:
        # The input embeddings always stay here, so "this machine" is always part of it.
        others = len({d.name.rsplit(" on ", 1)[-1] for d in remote})  # "CUDA0 on 10.0.0.2:50052"
        return f"split across this machine and {others} other{'s' if others > 1 else ''}"
    layers = report.params.n_gpu_layers
    total = report.plan.n_layers + 1 if report.plan is not None else None
    if layers == 0:
        return verdict_text("cpu")
    if layers < 0 or (total is not None and layers >= total):
        return verdict_text("full_gpu")
    return verdict_text("partial", layers, total) if total else f"{layers} layers on GPU"


class SourcesRow(QWidget):
    """Under a documents reply: its citations as links (or the passages given, folded) and how it read them."""

    #: A citation or passage (the stored dict) to show in the side panel.
    opened = Signal(dict)

    def __init__(self, stats: dict[str, Any], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.citations: list[dict[str, Any]] = list(stats.get("citations") or [])
        self.passages: list[dict[str, Any]] = list(stats.get("passages") or [])
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.setSpacing(2)
        self.mode = QLabel(mode_text(stats))
        self.mode.setProperty("subtle", True)
        self.mode.setWordWrap(True)
        self.mode.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.links = self._links("")
        self.toggle: QToolButton | None = None
        if self.citations:
            heading = QLabel("Sources")
            heading.setObjectName("SectionTitle")
            layout.addWidget(heading)
            layout.addWidget(self.links)
        elif self.passages:
            self.toggle = QToolButton()
            self.toggle.setCheckable(True)
            self.toggle.setAutoRaise(True)
            self.toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
            self.toggle.setArrowType(Qt.ArrowType.RightArrow)
            self.toggle.setText(f"Passages given ({len(self.passages)}); the reply cites none")
            self.toggle.toggled.connect(self._fold)
            layout.addWidget(self.toggle)
            self.links.hide()
            layout.addWidget(self.links)
        layout.addWidget(self.mode)
        self.mode.setVisible(bool(self.mode.text()))
        self._render()

    def _render(self) -> None:
        """The links in the theme's link colour (Qt's rich text keeps its own blue otherwise)."""
        dark = self.palette().color(QPalette.ColorRole.Window).lightness() < 128
        color = theme.colors(dark)["accent_text"]
        if self.citations:
            self.links.setText(citation_links(self.citations, "cite", color))
        elif self.passages:
            self.links.setText(citation_links(self.passages, "passage", color))

    def changeEvent(self, event: QEvent) -> None:
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.StyleChange) and hasattr(self, "toggle"):
            self._render()  # light ↔ dark
        super().changeEvent(event)

    def _links(self, text: str) -> QLabel:
        label = QLabel(text)
        label.setTextFormat(Qt.TextFormat.RichText)
        label.setWordWrap(True)
        label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        label.setTextInteractionFlags(Qt.TextInteractionFlag.LinksAccessibleByMouse
                                      | Qt.TextInteractionFlag.LinksAccessibleByKeyboard)
        label.linkActivated.connect(self.open_link)
        return label

    def _fold(self, open_: bool) -> None:
        assert self.toggle is not None
        self.toggle.setArrowType(Qt.ArrowType.DownArrow if open_ else Qt.ArrowType.RightArrow)
        self.links.setVisible(open_)

    def open_link(self, href: str) -> None:
        kind, _, at = href.partition(":")
        items = self.citations if kind == "cite" else self.passages
        if at.isdigit() and int(at) < len(items):
            self.opened.emit(items[int(at)])


class SourcePanel(QFrame):
    """The side pane: one cited passage with its file, page and heading (from the citation itself)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("Card")
        self.setMinimumWidth(260)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(14, 12, 14, 12)
        layout.setSpacing(6)
        head = QHBoxLayout()
        self.number = QLabel("Source")
        self.number.setObjectName("SectionTitle")
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(lambda _c=False: self.hide())
        head.addWidget(self.number, 1)
        head.addWidget(self.close_button)
        layout.addLayout(head)
        self.file_label = QLabel("")
        self.file_label.setWordWrap(True)
        self.file_label.setStyleSheet("font-weight: 600;")
        self.where_label = QLabel("")
        self.where_label.setProperty("subtle", True)
        self.where_label.setWordWrap(True)
        self.path_label = subtle("")
        self.path_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.text = QTextBrowser()
        self.text.setOpenLinks(False)
        for widget in (self.file_label, self.where_label, self.path_label):
            widget.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            layout.addWidget(widget)
        layout.addWidget(self.text, 1)
        self.citation: dict[str, Any] | None = None
        self.hide()

    def show_citation(self, c: dict[str, Any]) -> None:
        self.citation = c
        source = str(c.get("source") or "")
        self.number.setText(f"Source [{c.get('n', '?')}]")
        self.file_label.setText(Path(source).name or source)
        where = []
        page, page_end = c.get("page"), c.get("page_end")
        if page is not None:
            where.append(f"Page {page}" if page_end in (None, page) else f"Pages {page}–{page_end}")
        if c.get("heading"):
            where.append(f"Under “{c['heading']}”")
        if c.get("start") is not None and c.get("end") is not None:
            where.append(f"characters {c['start']:,}–{c['end']:,}")
        self.where_label.setText(" · ".join(where))
        self.path_label.setText(source)
        self.path_label.setToolTip(source)
        self.text.setPlainText(str(c.get("text") or ""))
        self.setToolTip(citation_label(c))
        self.show()


class AttachmentChip(QFrame):
    """One attached file or folder: its name, a ⚠ when it could not be read, and × to detach it."""

    removed = Signal(str)

    def __init__(self, attachment: Attachment, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.attachment = attachment
        self.setObjectName("Card")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 1, 2, 1)
        layout.setSpacing(2)
        mark = "⚠ " if attachment.problems and attachment.documents <= len(attachment.problems) else ""
        self.label = QLabel(f"{mark}{attachment.name}")
        self.label.setText(self.label.fontMetrics().elidedText(self.label.text(), Qt.TextElideMode.ElideMiddle,
                                                               CHIP_NAME_PX))
        tip = [attachment.path, f"{attachment.documents} file{'s' if attachment.documents != 1 else ''}, "
                                f"{attachment.passages:,} passages"]
        tip += [docs_view.sentence(p) for p in attachment.problems]
        self.setToolTip("\n".join(tip))
        self.remove_button = QToolButton()
        self.remove_button.setText("×")
        self.remove_button.setAutoRaise(True)
        self.remove_button.setToolTip(f"Detach {attachment.name} (the file stays where it is)")
        self.remove_button.clicked.connect(lambda _c=False: self.removed.emit(attachment.path))
        layout.addWidget(self.label)
        layout.addWidget(self.remove_button)


class ChatView(QWidget):
    """Conversation list, messages, input, model picker and sampling controls."""

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.host: EngineHost = state.engine_host()
        self.conversation: Conversation | None = None
        self.bubbles: list[MessageBubble] = []
        self.reply_job: Job | None = None
        #: Reserved at Send (before the conversation exists), so a Stop at once is not lost.
        self._ticket: int | None = None
        self.load_job: Job | None = None
        #: The first Send with no model loaded loads the chosen one, then sends (see `send`).
        self._send_after_load = False
        self._stream_bubble: MessageBubble | None = None
        self._stream_text = ""
        self._stream_dirty = False
        self._models: list[LibraryModel] = []
        #: The open conversation's attached files and folders (its `chat-<id>` collection).
        self.attachments: list[Attachment] = []
        #: The collections a conversation not created yet will draw on ("Use documents").
        self._docs_choice: list[str] = []
        #: The named collections the picker offers (read from the index on the pool).
        self.collection_names: list[str] = []
        #: The conversation whose attachments are being indexed.
        self._attaching: int | None = None

        splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter = splitter
        root = QHBoxLayout(self)
        root.setContentsMargins(0, 0, 0, 0)
        root.addWidget(splitter)

        # --- left: conversations ---------------------------------------------
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(12, 12, 6, 12)
        self.new_button = QPushButton("New chat")
        self.new_button.setProperty("primary", True)
        self.new_button.clicked.connect(lambda _c=False: self.new_conversation())
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search chats")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(lambda _t: self._search_timer.start())
        self._search_timer = QTimer(self, singleShot=True, interval=200)
        self._search_timer.timeout.connect(self.refresh_list)
        self.list = QListWidget()
        self.list.itemClicked.connect(self._open_item)
        # Long titles end in an ellipsis (never a sideways scrollbar); each shows when it was last used.
        self.list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.setWordWrap(False)
        self.list.setUniformItemSizes(True)
        row = QHBoxLayout()
        self.rename_button = QPushButton("Rename")
        self.delete_button = QPushButton("Delete")
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("Save this chat as Markdown or JSON.")
        self.rename_button.clicked.connect(lambda _c=False: self.rename_current())
        self.delete_button.clicked.connect(lambda _c=False: self.delete_current())
        self.export_button.clicked.connect(lambda _c=False: self.export_current())
        row.addWidget(self.rename_button)
        row.addWidget(self.delete_button)
        row.addWidget(self.export_button)
        left_layout.addWidget(self.new_button)
        left_layout.addWidget(self.search)
        left_layout.addWidget(self.list, 1)
        left_layout.addLayout(row)
        splitter.addWidget(left)

        # --- right: model bar, messages, input ---------------------------------
        right = QWidget()
        layout = QVBoxLayout(right)
        layout.setContentsMargins(6, 12, 16, 12)
        top = QHBoxLayout()
        self.model_picker = QComboBox()
        # Shrinks (eliding the name) rather than push Load over it in a narrow window.
        self.model_picker.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model_picker.setMinimumContentsLength(18)
        self.model_picker.setPlaceholderText("No model on disk yet")
        self.load_button = QPushButton("Load")
        self.load_button.clicked.connect(lambda _c=False: self.load_selected())
        self.load_progress = QProgressBar()
        self.load_progress.setRange(0, 100)
        self.load_progress.setFixedWidth(140)
        self.load_progress.hide()
        self.verdict = QLabel("No model loaded")
        self.verdict.setProperty("subtle", True)
        self.preset = QComboBox()
        for name in PRESETS:
            self.preset.addItem(name.capitalize(), name)
        self.preset.setCurrentIndex(max(0, self.preset.findData(state.settings["sampling_preset"])))
        self.preset.setToolTip("Sampling: precise for facts and code, creative for stories.")
        self.system_button = QPushButton("System prompt")
        self.system_button.setCheckable(True)
        top.addWidget(self.model_picker, 1)
        top.addWidget(self.load_button)
        top.addSpacing(12)
        top.addWidget(QLabel("Sampling"))
        top.addWidget(self.preset)
        top.addWidget(self.system_button)
        layout.addLayout(top)
        #: "Serving 2 requests" while the local server uses the model (show_serving).
        self.serving = QLabel("")
        self.serving.setProperty("subtle", True)
        self.serving.hide()
        status_row = QHBoxLayout()
        status_row.addWidget(self.load_progress)
        status_row.addWidget(self.verdict, 1)
        status_row.addWidget(self.serving)
        layout.addLayout(status_row)

        self.system_prompt = QPlainTextEdit()
        self.system_prompt.setPlaceholderText("Instructions the model sees before the conversation, "
                                              "e.g. \"Answer briefly, in French.\"")
        self.system_prompt.setFixedHeight(70)
        self.system_prompt.hide()
        self.system_button.toggled.connect(self.system_prompt.setVisible)
        self.system_prompt.textChanged.connect(lambda: self._system_timer.start())
        self._system_timer = QTimer(self, singleShot=True, interval=600)
        self._system_timer.timeout.connect(self._save_system_prompt)
        layout.addWidget(self.system_prompt)

        self.notice = Notice("warning")
        self.error = Notice("error")
        layout.addWidget(self.notice)
        layout.addWidget(self.error)

        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.messages_widget = QWidget()
        self.messages_layout = QVBoxLayout(self.messages_widget)
        self.messages_layout.setContentsMargins(4, 4, 8, 4)
        self.messages_layout.setSpacing(10)
        self.empty_hint = subtle("Pick a model above, load it, and type a message below. "
                                 "Enter sends; Shift+Enter adds a line; Esc stops a reply.")
        self.empty_hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.messages_layout.addWidget(self.empty_hint)
        self.messages_layout.addStretch(1)
        self.scroll.setWidget(self.messages_widget)
        layout.addWidget(self.scroll, 1)
        self.scroll.verticalScrollBar().rangeChanged.connect(self._follow_bottom)
        self._at_bottom = True
        self.scroll.verticalScrollBar().valueChanged.connect(self._track_bottom)

        meter_row = QHBoxLayout()
        self.context_meter = QProgressBar()
        self.context_meter.setFixedHeight(14)
        self.context_meter.setTextVisible(False)
        self.context_label = QLabel("")
        self.context_label.setProperty("subtle", True)
        meter_row.addWidget(QLabel("Context"))
        meter_row.addWidget(self.context_meter, 1)
        meter_row.addWidget(self.context_label)
        layout.addLayout(meter_row)

        # --- documents: attach, pick collections, the attached files as chips ----------------
        docs_row = QHBoxLayout()
        docs_row.setSpacing(6)
        self.attach_button = QPushButton("Attach…")
        self.attach_button.setToolTip("Let this chat answer from files or a folder, citing them "
                                      "(you can also drop files on the chat).")
        attach_menu = QMenu(self.attach_button)
        attach_menu.addAction("Files…", self.choose_files)
        attach_menu.addAction("Folder…", self.choose_folder)
        self.attach_button.setMenu(attach_menu)
        self.docs_button = QPushButton("Use documents: none")
        self.docs_button.setToolTip("Collections from the Documents page this chat also answers from.")
        self.docs_menu = QMenu(self.docs_button)
        self.docs_menu.aboutToShow.connect(self._fill_docs_menu)
        self.docs_button.setMenu(self.docs_menu)
        self.chips = QWidget()
        self.chips_layout = QHBoxLayout(self.chips)
        self.chips_layout.setContentsMargins(0, 0, 0, 0)
        self.chips_layout.setSpacing(4)
        self.chips.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        docs_row.addWidget(self.attach_button)
        docs_row.addWidget(self.docs_button)
        docs_row.addStretch(1)
        layout.addLayout(docs_row)
        # On a row of their own, so a narrow chat (the source panel open) still shows whole names.
        self.chips.hide()
        layout.addWidget(self.chips)
        self.attach_progress = IndexProgress()
        self.attach_progress.done.connect(self._attached)
        self.attach_progress.failed.connect(self._attach_failed)
        layout.addWidget(self.attach_progress)
        self.attach_notice = Notice("warning")
        layout.addWidget(self.attach_notice)

        input_row = QHBoxLayout()
        self.input = PromptEdit()
        self.input.setPlaceholderText("Message the model (Enter to send, Shift+Enter for a new line)")
        self.input.setFixedHeight(76)
        self.input.submitted.connect(self.send)
        self.input.stop_requested.connect(self.stop)
        self.input.files_dropped.connect(self.attach_paths)
        self.send_button = QPushButton("Send")
        self.send_button.setProperty("primary", True)
        self.send_button.clicked.connect(lambda _c=False: self.send_or_stop())
        input_row.addWidget(self.input, 1)
        input_row.addWidget(self.send_button)
        layout.addLayout(input_row)
        splitter.addWidget(right)
        self.source_panel = SourcePanel()
        splitter.addWidget(self.source_panel)
        splitter.setSizes([250, 900, 0])
        splitter.setStretchFactor(1, 1)
        splitter.setCollapsible(1, False)
        self.setAcceptDrops(True)

        # Esc anywhere on the page (the input box handles its own Esc).
        QShortcut(QKeySequence(Qt.Key.Key_Escape), self, activated=self.stop,
                  context=Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self._repaint_timer = QTimer(self, interval=STREAM_REPAINT_MS)
        self._repaint_timer.timeout.connect(self._paint_stream)
        state.model_changed.connect(self._model_changed)
        self._update_buttons()
        if not state.demo:
            self.refresh_list()
            self.refresh_models()
            self.refresh_collections()
            # Said once, when the store opens: a damaged history set aside, or storage that keeps nothing.
            self.host.store_call("opening_notice", result=lambda text: text and self.notice.show_text(text),
                                 error=self.error.show_text)

    # ------------------------------------------------------------------ list
    def refresh_list(self, select: int | None = None) -> None:
        query = self.search.text().strip()
        if query:
            self.host.store_call("search", query, result=lambda hits: self._fill_list(
                [(h.conversation_id, h.title or "Untitled", h.snippet, h.updated_at) for h in hits], select),
                error=self.error.show_text)
        else:
            self.host.store_call("list_conversations", result=lambda convs: self._fill_list(
                [(c.id, c.title or "New chat", "", c.updated_at) for c in convs], select),
                error=self.error.show_text)

    def _fill_list(self, rows: list[tuple[int, str, str, float]], select: int | None) -> None:
        self.list.clear()
        seen: set[int] = set()
        current = select if select is not None else (self.conversation.id if self.conversation else None)
        for conv_id, title, snippet, when in rows:
            if conv_id in seen:
                continue
            seen.add(conv_id)
            item = QListWidgetItem(f"{title}\n{when_text(when)}")
            item.setData(Qt.ItemDataRole.UserRole, conv_id)
            item.setToolTip(f"{title}\n{snippet}" if snippet else title)
            self.list.addItem(item)
            if conv_id == current:
                self.list.setCurrentItem(item)

    def _open_item(self, item: QListWidgetItem) -> None:
        self.open_conversation(int(item.data(Qt.ItemDataRole.UserRole)))

    def open_conversation(self, conversation_id: int) -> None:
        if self.reply_job is not None:
            return
        self.host.store_call("conversation", conversation_id, result=self.show_conversation,
                             error=self.error.show_text)

    def new_conversation(self) -> None:
        """Start an empty conversation (created in the store when the first message is sent)."""
        if self.reply_job is not None:
            return
        self.conversation = None
        self._docs_choice = []
        self.show_conversation(None)
        self.list.clearSelection()
        self.input.setFocus()

    def rename_current(self) -> None:
        if self.conversation is None:
            return
        title, ok = ask_text(self, "Rename chat", "Title", self.conversation.title)
        if ok and title.strip():
            self.host.store_call("rename", self.conversation.id, title.strip(),
                                 result=lambda conv: self._after_change(conv.id), error=self.error.show_text)

    def delete_current(self, *, confirm: bool = True) -> None:
        if self.conversation is None or self.reply_job is not None:
            return
        if confirm and QMessageBox.question(self, "Delete chat",
                                            f"Delete \u201c{self.conversation.title or 'this chat'}\u201d? "
                                            "This cannot be undone.") != QMessageBox.StandardButton.Yes:
            return
        conv_id = self.conversation.id
        self.new_conversation()
        self.host.store_call("delete", conv_id, result=lambda _r: self.refresh_list(),
                             error=self.error.show_text)
        # Its attachments go with it (the files themselves stay where they are).
        host = self.host
        run_job(lambda: docs_view.forget_attachments(host, conv_id), error=self.error.show_text)

    def _after_change(self, conv_id: int) -> None:
        self.refresh_list(select=conv_id)
        self.open_conversation(conv_id)

    # -------------------------------------------------------------- messages
    def show_conversation(self, conversation: Conversation | None) -> None:
        self.conversation = conversation
        for bubble in self.bubbles:
            bubble.setParent(None)
            bubble.deleteLater()
        self.bubbles = []
        self.notice.show_text("")
        self.error.show_text("")
        self.system_prompt.blockSignals(True)
        self.system_prompt.setPlainText(conversation.system_prompt if conversation else "")
        self.system_prompt.blockSignals(False)
        last_stats: dict[str, Any] | None = None
        for message in conversation.messages if conversation else ():
            if message.role == "system":
                continue
            bubble = self._add_bubble(message.role, message.content, message)
            bubble.set_versions(message.versions, message.id)
            if message.role == "assistant":
                bubble.set_stats(message.stats, message.state)
                self._show_sources(bubble, message.stats)
                last_stats = message.stats or last_stats
        self._update_meter(last_stats)
        if not self.attach_progress.running:
            self.attach_progress.hide()
            self.attach_notice.show_text("")
        self._show_docs_choice()
        self._load_attachments()
        self._update_buttons()

    def _add_bubble(self, role: str, text: str, message: Message | None = None) -> MessageBubble:
        bubble = MessageBubble(role, text)
        bubble.message_id = message.id if message else None
        bubble.edit_saved.connect(lambda text, b=bubble: self.save_edit(b, text))
        bubble.regenerate_requested.connect(self.regenerate)
        bubble.version_chosen.connect(self.choose_version)
        self.messages_layout.insertWidget(self.messages_layout.count() - 1, bubble)
        self.bubbles.append(bubble)
        self.empty_hint.hide()
        return bubble

    def _track_bottom(self, value: int) -> None:
        bar = self.scroll.verticalScrollBar()
        self._at_bottom = value >= bar.maximum() - 8

    def _follow_bottom(self, _min: int, maximum: int) -> None:
        # Keep the newest text in view while it grows, unless the user scrolled up to read.
        if self._at_bottom:
            self.scroll.verticalScrollBar().setValue(maximum)

    def _update_meter(self, stats: dict[str, Any] | None) -> None:
        n_ctx = self.host.report.n_ctx if self.host.report else None
        used = 0
        if stats:
            used = int(stats.get("prompt_tokens") or 0) + int(stats.get("completion_tokens") or 0)
        if n_ctx:
            self.context_meter.setRange(0, n_ctx)
            self.context_meter.setValue(min(used, n_ctx))
            self.context_label.setText(f"{used:,} of {n_ctx:,} tokens")
        else:
            self.context_meter.setRange(0, 1)
            self.context_meter.setValue(0)
            self.context_label.setText(f"{used:,} tokens" if used else "no model loaded")

    def _update_buttons(self) -> None:
        replying = self.reply_job is not None
        self.send_button.setText("Stop" if replying else "Send")
        self.send_button.setEnabled(replying or self.host.engine.loaded or self.state.demo
                                    or bool(self.model_picker.currentData()))
        has_conv = self.conversation is not None and not replying
        self.rename_button.setEnabled(has_conv)
        self.delete_button.setEnabled(has_conv)
        self.export_button.setEnabled(self.conversation is not None)
        self.load_button.setEnabled(self.load_job is None and not replying and self.model_picker.count() > 0)
        self.attach_button.setEnabled(not self.attach_progress.running)
        for bubble in self.bubbles:
            bubble.set_actions_enabled(not replying)
            bubble.regenerate_button.setVisible(False)
        if not replying and self.bubbles and self.bubbles[-1].role == "assistant":
            self.bubbles[-1].regenerate_button.setVisible(True)

    # ------------------------------------------------------------------ model
    def refresh_models(self, select: Path | None = None) -> None:
        # Names and paths only: headers are read by the Models page, not here.
        run_job(lambda: list_models(describe=lambda _p: (None, None)),
                result=lambda models: self._fill_models(models, select), error=self.error.show_text)

    def _fill_models(self, models: list[LibraryModel], select: Path | None = None) -> None:
        self._models = [m for m in models if m.complete]
        current = select or (self.host.engine.model_path if self.host.engine.loaded else None)
        self.model_picker.clear()
        for model in self._models:
            where = "" if model.source == "camelid" else f" ({model.source})"
            self.model_picker.addItem(f"{model.name}{where}", str(model.path))
        if self._models:
            self.model_picker.setCurrentIndex(0)
        if current is not None:
            index = self.model_picker.findData(str(current))
            if index >= 0:
                self.model_picker.setCurrentIndex(index)
        self._update_buttons()

    def load_selected(self) -> None:
        path = self.model_picker.currentData()
        if path:
            self.load_model(Path(path))

    def load_model(self, path: Path) -> Job | None:
        """Load `path` on the engine thread, showing progress; the status bar follows."""
        if self.load_job is not None or self.reply_job is not None:
            return None
        self.error.show_text("")
        self.load_progress.setValue(0)
        self.load_progress.show()
        others = len(self.host.machines)
        across = f" across this machine and {others} other{'s' if others > 1 else ''}" if others else ""
        self.verdict.setText(f"Loading {path.name}{across}…")
        self.load_job = self.host.load(
            path, LoadChoices.from_settings(self.state.settings),
            progress=lambda f: self.load_progress.setValue(int(float(f) * 100)),
            result=self._loaded, error=self._load_failed, cancelled=lambda: self._load_failed("Loading was cancelled."))
        self._update_buttons()
        return self.load_job

    def _loaded(self, report: LoadReport) -> None:
        self.load_job = None
        self.load_progress.hide()
        self._show_loaded(report)
        self._update_buttons()
        self.input.setFocus()
        if self._send_after_load:
            self._send_after_load = False
            self.send()

    def _show_loaded(self, report: LoadReport) -> None:
        """The verdict line, the status bar (through the state) and the meter for the loaded model."""
        path = Path(report.path)
        where = load_verdict(report)
        self.verdict.setText(f"Loaded · {where} · {report.n_ctx:,} tokens of context")
        # Hovering the verdict shows the plan checked against what llama.cpp allocated.
        memory = report.memory.summary() if report.memory is not None else ""
        self.verdict.setToolTip(memory)
        self.state.set_model({"name": path.stem, "path": str(path), "verdict_text": where,
                              "backend": "RPC" if machine_lines(report) else
                              "CPU" if report.params.n_gpu_layers == 0 else None,
                              "n_ctx": report.n_ctx, "memory": memory})
        # A model split across machines: what each one holds, in the plan's words.
        notes = [*machine_lines(report), *report.notices]
        if notes:
            self.notice.show_text(" ".join(notes))
        # The meter counts the open conversation (its last reply's prompt + answer), not zero.
        self._update_meter(self._last_stats())
        if self.model_picker.findData(str(path)) < 0:
            self.refresh_models(select=path)

    def _last_stats(self) -> dict[str, Any] | None:
        if self.conversation is None:
            return None
        return next((m.stats for m in reversed(self.conversation.messages)
                     if m.role == "assistant" and m.stats), None)

    def _load_failed(self, message: str) -> None:
        self._send_after_load = False
        self.load_job = None
        self.load_progress.hide()
        report = self.host.engine.report if self.host.engine.loaded else None
        if report is not None:  # refused before anything was unloaded (a machine did not answer)
            self._show_loaded(report)
        else:
            self.verdict.setText("No model loaded")
        self.error.show_text(message)
        self._update_buttons()

    def show_engine_model(self) -> None:
        """The local server loaded or unloaded a model on the shared engine: show what is loaded now."""
        if self.load_job is not None:
            return  # this page's own load reports when it ends
        engine = self.host.engine
        report = engine.report if engine.loaded else None
        self.host.report = report
        if report is None:
            self.state.set_model(None)
        else:
            self._show_loaded(report)
            index = self.model_picker.findData(str(report.path))
            if index >= 0:
                self.model_picker.setCurrentIndex(index)
        self._update_buttons()

    def show_serving(self, active: int) -> None:
        """How many requests the local server has waiting or running (hidden at none)."""
        self.serving.setText(f"Serving {active} request{'' if active == 1 else 's'} from the local server"
                             if active > 0 else "")
        self.serving.setVisible(active > 0)

    def _model_changed(self, model: dict[str, Any] | None) -> None:
        if model is None:
            self.verdict.setText("No model loaded")
        self._update_buttons()

    # ----------------------------------------------------------------- replies
    def sampling(self):
        return preset(self.preset.currentData() or "balanced")

    def send_or_stop(self) -> None:
        if self.reply_job is not None:
            self.stop()
        else:
            self.send()

    def send(self) -> None:
        """Send what is in the input box (creating the conversation on the first message)."""
        text = self.input.toPlainText().strip()
        if not text or self.reply_job is not None:
            return
        if not self.host.engine.loaded:
            # As Ollama and Jan do: the first Send loads the chosen model, then sends.
            if self.model_picker.currentData() and self.load_job is None:
                self._send_after_load = True
                self.load_selected()
                return
            if self.load_job is not None:
                self._send_after_load = True
                return
            self.error.show_text("No model is on disk yet: download one on the Models page.")
            return
        self.input.clear()
        self.error.show_text("")
        self._ticket = self.host.engine.reserve_reply()
        if self.conversation is None:
            model = self.host.engine.model_path.name if self.host.engine.model_path else None
            self.host.store_call("create_conversation", model=model,
                                 system_prompt=self.system_prompt.toPlainText().strip(),
                                 settings={DOCS_KEY: list(self._docs_choice)} if self._docs_choice else None,
                                 result=lambda conv: self._start_reply(conv, text),
                                 error=self._send_failed)
        else:
            self._start_reply(self.conversation, text)

    def _start_reply(self, conversation: Conversation, text: str | None) -> None:
        """Stream the answer to `text` (None: answer the stored conversation again)."""
        new = self.conversation is None or self.conversation.id != conversation.id
        self.conversation = conversation
        if text is not None:
            self._add_bubble("user", text)
        self._stream_bubble = self._add_bubble("assistant", "")
        self._stream_text = ""
        self._stream_dirty = False
        self.notice.show_text("")
        self._at_bottom = True
        ticket, self._ticket = self._ticket, None
        sampling = self.sampling()
        names = self.document_names()
        augment = docs_view.documents_augment(self.host, names, self._embedding_setting(),
                                              reply_tokens=sampling.max_tokens) if names else None
        self.reply_job = self.host.send(conversation.id, text, sampling, progress=self._on_chunk,
                                        result=self._reply_done, error=self._reply_failed, ticket=ticket,
                                        augment=augment)
        self._repaint_timer.start()
        self._update_buttons()
        if new:
            self.refresh_list(select=conversation.id)

    def _on_chunk(self, chunk: str) -> None:
        self._stream_text += chunk
        self._stream_dirty = True

    def _paint_stream(self) -> None:
        if self._stream_dirty and self._stream_bubble is not None:
            self._stream_bubble.set_text(self._stream_text)
            self._stream_dirty = False

    def _reply_done(self, outcome: tuple[Reply, Message]) -> None:
        reply, message = outcome
        self._finish_stream()
        bubble = self.bubbles[-1] if self.bubbles else None
        if bubble is not None:
            bubble.set_text(message.content)
            bubble.message_id = message.id
            bubble.set_stats(message.stats, message.state)
            self._show_sources(bubble, message.stats)
        notices = list(reply.notices)
        said = mode_text(message.stats or {})
        if said:
            notices.insert(0, said)
        if notices:
            self.notice.show_text(" ".join(notices))
        self._update_meter(message.stats)
        self._update_buttons()
        # Reload so message ids (for edit and regenerate) and the title match the store.
        assert self.conversation is not None
        conv_id = self.conversation.id
        self.host.store_call("conversation", conv_id, result=self._refresh_after_reply)

    def _refresh_after_reply(self, conversation: Conversation) -> None:
        if self.reply_job is None and self.conversation and conversation.id == self.conversation.id:
            self.conversation = conversation
            replies = [m for m in conversation.messages if m.role != "system"]
            for bubble, message in zip(self.bubbles, replies, strict=False):
                bubble.set_versions(message.versions, message.id)
            self.refresh_list(select=conversation.id)
        self._update_buttons()

    def _reply_failed(self, message: str) -> None:
        self._finish_stream()
        if self.bubbles and self.bubbles[-1].role == "assistant" and not self.bubbles[-1].text:
            bubble = self.bubbles.pop()
            bubble.setParent(None)
            bubble.deleteLater()
        self.error.show_text(message)
        if self.state.model is not None and not self.host.engine.loaded:
            # The model went with its process (a machine it was split across failed): nothing is loaded.
            self.host.report = None
            self.state.set_model(None)
        self._update_buttons()

    def _finish_stream(self) -> None:
        self._repaint_timer.stop()
        self._paint_stream()
        self._stream_bubble = None
        self.reply_job = None

    def _send_failed(self, message: str) -> None:
        self._ticket = None
        self.error.show_text(message)

    def stop(self) -> None:
        """Esc / Stop: end the reply now, or the one just sent; what was shown stays (stored as "stopped")."""
        if self.reply_job is not None or self._ticket is not None:
            self.host.stop()

    def regenerate(self) -> None:
        """Write another reply to the last turn; the current one stays as a version (‹ 1/2 ›)."""
        if self.reply_job is not None or self.conversation is None or not self.bubbles:
            return
        last = self.bubbles[-1]
        if last.role != "assistant" or last.message_id is None:
            return
        if not self.host.engine.loaded:
            self.error.show_text("No model is loaded. Pick one above and press Load to write another reply.")
            return
        conversation = self.conversation
        self.bubbles.pop()
        last.setParent(None)
        last.deleteLater()
        self._ticket = self.host.engine.reserve_reply()
        self.host.store_call("rewind_to_before", last.message_id,
                             result=lambda _r: self._start_reply(conversation, None),
                             error=self._send_failed)

    def save_edit(self, bubble: MessageBubble, text: str) -> None:
        """Send an edited user message as a new version of its turn; the old turn and its replies stay."""
        if self.reply_job is not None or self.conversation is None or bubble.message_id is None:
            return
        if not self.host.engine.loaded:
            self.error.show_text("No model is loaded. Pick one above and press Load, then save the edit again.")
            bubble.start_edit()
            bubble.editor.setPlainText(text)
            return
        index = self.bubbles.index(bubble)
        for later in self.bubbles[index + 1:]:
            later.setParent(None)
            later.deleteLater()
        self.bubbles = self.bubbles[:index + 1]
        bubble.set_text(text)
        conversation = self.conversation
        self._ticket = self.host.engine.reserve_reply()

        def edited(message: Message) -> None:
            bubble.set_versions((*bubble.versions, message.id), message.id)
            self._start_reply(conversation, None)
        self.host.store_call("edit_message", bubble.message_id, text, result=edited, error=self._send_failed)
        self._update_buttons()

    def choose_version(self, message_id: int) -> None:
        """Show another version of a turn; the conversation (and the next reply) follows it."""
        if self.reply_job is not None or self.conversation is None:
            return
        self.host.store_call("choose_version", message_id, result=self._show_version, error=self.error.show_text)

    def _show_version(self, conversation: Conversation) -> None:
        if self.reply_job is None and self.conversation is not None and conversation.id == self.conversation.id:
            at = self.scroll.verticalScrollBar().value()
            self.show_conversation(conversation)
            QTimer.singleShot(0, lambda: self.scroll.verticalScrollBar().setValue(at))

    def export_current(self, path: Path | None = None) -> None:
        """Save the open chat as Markdown (.md) or JSON (.json); asks where unless `path` is given."""
        if self.conversation is None:
            return
        if path is None:
            name = "".join(c if c.isalnum() or c in " -_" else "_" for c in (self.conversation.title or "chat"))
            chosen, _filter = QFileDialog.getSaveFileName(
                self, "Export chat", str(Path.home() / f"{name.strip()[:60] or 'chat'}.md"),
                "Markdown (*.md);;JSON (*.json)")
            if not chosen:
                return
            path = Path(chosen)
            if not path.suffix:
                path = path.with_suffix(".json" if "JSON" in _filter else ".md")
        self.host.store_call("export", self.conversation.id, path,
                             result=lambda saved: self.notice.show_text(f"Saved to {saved}"),
                             error=self.error.show_text)

    def _save_system_prompt(self) -> None:
        if self.conversation is not None:
            self.host.store_call("update_conversation", self.conversation.id,
                                 system_prompt=self.system_prompt.toPlainText().strip(),
                                 error=self.error.show_text)

    # --------------------------------------------------------------- documents
    def _embedding_setting(self) -> str:
        return str(self.state.settings[docs_view.EMBEDDING_SETTING] or "")

    def documents_choice(self) -> list[str]:
        """The named collections this conversation draws on (stored with it once it exists)."""
        if self.conversation is None:
            return list(self._docs_choice)
        return [str(n) for n in self.conversation.settings.get(DOCS_KEY) or []]

    def document_names(self) -> list[str]:
        """Every collection the next reply draws on: the chosen ones and the attachments."""
        names = self.documents_choice()
        # Files still being indexed count too: the reply's job runs after theirs on the engine thread.
        if self.conversation is not None and (self.attachments or (
                self.attach_progress.running and self._attaching == self.conversation.id)):
            names.append(docs_view.attachments_collection(self.conversation.id))
        return names

    def refresh_collections(self) -> None:
        """Re-read the named collections for the "Use documents" picker (pool thread)."""
        if self.state.demo:
            return
        host = self.host

        def got(names: list[str]) -> None:
            self.collection_names = names
            self._show_docs_choice()

        # A document index that cannot be read says so on the Documents page; the chat goes on without it.
        run_job(lambda: docs_view.collection_names(host), result=got, error=lambda _message: None)

    def _fill_docs_menu(self) -> None:
        self.docs_menu.clear()
        chosen = {n.lower() for n in self.documents_choice()}
        names = list(self.collection_names)
        names += [n for n in self.documents_choice() if n.lower() not in {m.lower() for m in names}]
        if not names:
            action = self.docs_menu.addAction("No collections yet: add some on the Documents page")
            action.setEnabled(False)
        for name in names:
            action = self.docs_menu.addAction(name)
            action.setCheckable(True)
            action.setChecked(name.lower() in chosen)
            action.toggled.connect(lambda on, n=name: self._toggle_collection(n, on))
        self.refresh_collections()  # for the next time: the Documents page may have changed them

    def _toggle_collection(self, name: str, on: bool) -> None:
        names = [n for n in self.documents_choice() if n.lower() != name.lower()]
        self.set_documents([*names, name] if on else names)

    def set_documents(self, names: list[str]) -> None:
        """Draw on the collections `names` (from the picker), remembered with the conversation."""
        names = list(dict.fromkeys(names))
        if self.conversation is None:
            self._docs_choice = names
        else:
            settings = {**self.conversation.settings, DOCS_KEY: names}
            self.conversation = replace(self.conversation, settings=settings)
            self.host.store_call("update_conversation", self.conversation.id, settings=settings,
                                 error=self.error.show_text)
        self._show_docs_choice()

    def _show_docs_choice(self) -> None:
        names = self.documents_choice()
        text = ", ".join(names) if names else "none"
        self.docs_button.setText(f"Use documents: {text if len(text) <= 32 else text[:31] + '…'}")
        self.docs_button.setToolTip("Collections from the Documents page this chat also answers from"
                                    + (f": {', '.join(names)}." if names else "."))

    def choose_files(self) -> None:
        from app.ui.docs_view import file_filter

        files, _filter = QFileDialog.getOpenFileNames(self, "Attach files", str(Path.home()), file_filter())
        if files:
            self.attach_paths(files)

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Attach a folder", str(Path.home()))
        if folder:
            self.attach_paths([folder])

    def attach_paths(self, paths: list[str] | list[Path]) -> None:
        """Index files and folders into this conversation's attachments (creating the conversation first)."""
        paths = [str(p) for p in paths]
        if not paths or self.attach_progress.running or self.state.demo:
            return
        self.attach_notice.show_text("")
        self.error.show_text("")
        if self.conversation is None:
            model = self.host.engine.model_path.name if self.host.engine.model_path else None
            self.attach_button.setEnabled(False)

            def created(conv: Conversation) -> None:
                self.conversation = conv
                self._docs_choice = []
                self.refresh_list(select=conv.id)
                self._start_attach(conv, paths)

            self.host.store_call("create_conversation", model=model,
                                 system_prompt=self.system_prompt.toPlainText().strip(),
                                 settings={DOCS_KEY: list(self._docs_choice)} if self._docs_choice else None,
                                 result=created, error=self._attach_failed)
        else:
            self._start_attach(self.conversation, paths)

    def _start_attach(self, conversation: Conversation, paths: list[str]) -> None:
        name = docs_view.attachments_collection(conversation.id)
        self._attaching = conversation.id
        self.attach_progress.start(self.host, docs_view.index_work(
            self.host, name, paths, setting=self._embedding_setting(), private=True), what="Attaching")
        self._update_buttons()

    def _attached(self, report: Any) -> None:
        self._update_buttons()
        if report is not None and report.failed:
            self.attach_notice.show_text(docs_view.problems_text(report))
        if self.conversation is not None and self.conversation.id == self._attaching:
            self._load_attachments()

    def _attach_failed(self, message: str) -> None:
        self.attach_notice.show_text(docs_view.sentence(message))
        self._update_buttons()

    def _load_attachments(self) -> None:
        conversation = self.conversation
        if conversation is None or self.state.demo:
            self._show_attachments(None, [])
            return
        host = self.host
        run_job(lambda: docs_view.list_attachments(host, conversation.id),
                result=lambda found: self._show_attachments(conversation.id, found), error=self.error.show_text)

    def _show_attachments(self, conversation_id: int | None, found: list[Attachment]) -> None:
        current = self.conversation.id if self.conversation is not None else None
        if conversation_id != current:
            return
        self.attachments = found
        while self.chips_layout.count():
            item = self.chips_layout.takeAt(0)
            widget = item.widget()
            if widget is not None:
                widget.setParent(None)
                widget.deleteLater()
        for attachment in found[:MAX_CHIPS]:
            chip = AttachmentChip(attachment)
            chip.removed.connect(self.detach)
            self.chips_layout.addWidget(chip)
        if len(found) > MAX_CHIPS:
            more = QLabel(f"+{len(found) - MAX_CHIPS} more")
            more.setProperty("subtle", True)
            more.setToolTip("\n".join(a.path for a in found[MAX_CHIPS:]))
            self.chips_layout.addWidget(more)
        self.chips_layout.addStretch(1)
        self.chips.setVisible(bool(found))

    def chip_names(self) -> list[str]:
        """The attachment chips' texts, in order (tests)."""
        return [w.label.text() for w in self.chips.findChildren(AttachmentChip) if not w.isHidden()]

    def detach(self, path: str) -> None:
        """Forget an attached file or folder (its passages; the file stays)."""
        if self.conversation is None or self.attach_progress.running:
            return
        host, conv_id = self.host, self.conversation.id
        run_job(lambda: docs_view.detach(host, conv_id, path), result=lambda _n: self._load_attachments(),
                error=self.error.show_text)

    def _show_sources(self, bubble: MessageBubble, stats: dict[str, Any] | None) -> None:
        """Citations under a documents reply (or the passages given, folded), replacing any shown."""
        old = getattr(bubble, "sources_row", None)
        if old is not None:
            old.setParent(None)
            old.deleteLater()
            bubble.sources_row = None
        if not stats or not (stats.get("citations") or stats.get("passages") or stats.get("docs_mode")):
            return
        row = SourcesRow(stats)
        row.opened.connect(self.open_source)
        layout = bubble.layout()
        layout.insertWidget(layout.indexOf(bubble.footer), row)
        bubble.sources_row = row

    def open_source(self, citation: dict[str, Any]) -> None:
        """Show a cited passage in the side panel."""
        self.source_panel.show_citation(citation)
        sizes = self.splitter.sizes()
        if len(sizes) == 3 and sizes[2] < 200:
            total = sum(sizes)
            side = max(300, total // 4)
            self.splitter.setSizes([sizes[0], max(300, total - sizes[0] - side), side])

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if dropped_paths(event.mimeData()) and not self.state.demo:
            event.acceptProposedAction()
        else:
            super().dragEnterEvent(event)

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:
        if dropped_paths(event.mimeData()):
            event.acceptProposedAction()
        else:
            super().dragMoveEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:
        paths = dropped_paths(event.mimeData())
        if paths:
            event.acceptProposedAction()
            self.attach_paths(paths)
        else:
            super().dropEvent(event)

    # --------------------------------------------------------------- lifecycle
    def shutdown(self) -> None:
        self.stop()
        self.attach_progress.cancel()
        self._repaint_timer.stop()

    def show_demo(self) -> None:
        """Sample conversation for screenshots (no model, no store)."""
        from app.ui import demo

        demo.fill_chat(self)
