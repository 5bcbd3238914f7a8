"""One chat message: Markdown text, its actions (copy, edit in place, regenerate), its versions (‹ 2/3 ›)
and, for replies, stats and why the reply ended."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from app.ui.widgets.markdown_view import MarkdownView

#: Why a reply ended early, as the line under it says.
STOP_WORDS = {
    "cancelled": "stopped",
    "length": "cut at the reply length limit (max tokens)",
    "context": "stopped: the context is full",
}


def stats_text(stats: dict[str, Any] | None, state: str = "complete") -> str:
    """"128 tokens · 54.2 tokens/s · first token 0.21 s" (+ "stopped" when cut short)."""
    if not stats:
        return "stopped" if state == "stopped" else ""
    parts = []
    if stats.get("completion_tokens") is not None:
        parts.append(f"{stats['completion_tokens']} tokens")
    if stats.get("tokens_per_s"):
        parts.append(f"{stats['tokens_per_s']:.1f} tokens/s")
    if stats.get("ttft_s") is not None:
        parts.append(f"first token {stats['ttft_s']:.2f} s")
    reason = stats.get("stop_reason")
    if reason in STOP_WORDS:
        parts.append(STOP_WORDS[str(reason)])
    elif state == "stopped":
        parts.append("stopped")
    return " · ".join(parts)


class MessageBubble(QFrame):
    """A user or assistant message. `set_text` re-renders; callers throttle it while streaming."""

    copy_requested = Signal()
    #: The user saved an edit of this message (the new text): it becomes a new version.
    edit_saved = Signal(str)
    regenerate_requested = Signal()
    #: The id of the version of this turn to show.
    version_chosen = Signal(int)

    def __init__(self, role: str, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.role = role
        self.message_id: int | None = None
        self.setObjectName("Bubble")
        self.setProperty("role", role)
        # Ignored: the bubble takes the view's width, never its content's (a long line scrolls inside).
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 8, 12, 6)
        layout.setSpacing(4)
        who = QLabel("You" if role == "user" else "Assistant")
        who.setProperty("subtle", True)
        layout.addWidget(who)
        self.body = MarkdownView()
        layout.addWidget(self.body)
        # Edit in place: the text in a box with Save and Cancel; nothing changes until Save.
        self.editor = QPlainTextEdit()
        self.editor.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.editor.setFixedHeight(96)
        self.editor.hide()
        layout.addWidget(self.editor)
        edit_row = QHBoxLayout()
        edit_row.addStretch(1)
        self.cancel_edit_button = QPushButton("Cancel")
        self.cancel_edit_button.clicked.connect(lambda _c=False: self.cancel_edit())
        self.save_edit_button = QPushButton("Save and send")
        self.save_edit_button.setProperty("primary", True)
        self.save_edit_button.clicked.connect(lambda _c=False: self.save_edit())
        edit_row.addWidget(self.cancel_edit_button)
        edit_row.addWidget(self.save_edit_button)
        self.edit_bar = QWidget()
        self.edit_bar.setLayout(edit_row)
        edit_row.setContentsMargins(0, 0, 0, 0)
        self.edit_bar.hide()
        layout.addWidget(self.edit_bar)

        self.footer = QWidget()
        footer = QHBoxLayout(self.footer)
        footer.setContentsMargins(0, 0, 0, 0)
        footer.setSpacing(6)
        self.stats = QLabel("")
        self.stats.setObjectName("Stats")
        self.stats.setWordWrap(True)
        self.stats.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        footer.addWidget(self.stats, 1)
        self.previous_button = self._button("‹", lambda: self._step(-1))
        self.previous_button.setToolTip("Previous version")
        self.version_label = QLabel("")
        self.version_label.setProperty("subtle", True)
        self.next_button = self._button("›", lambda: self._step(1))
        self.next_button.setToolTip("Next version")
        for widget in (self.previous_button, self.version_label, self.next_button):
            footer.addWidget(widget)
            widget.hide()
        self.copy_button = self._button("Copy", self.copy)
        footer.addWidget(self.copy_button)
        self.edit_button = self._button("Edit", self.start_edit)
        self.edit_button.setToolTip("Change this message and send it again; the current version is kept.")
        self.regenerate_button = self._button("Regenerate", self.regenerate_requested.emit)
        self.regenerate_button.setToolTip("Write another reply; this one is kept as a version.")
        footer.addWidget(self.edit_button)
        footer.addWidget(self.regenerate_button)
        self.edit_button.setVisible(role == "user")
        self.regenerate_button.setVisible(False)
        layout.addWidget(self.footer)
        self.text = ""
        #: Ids of this turn's versions, oldest first (see `set_versions`).
        self.versions: tuple[int, ...] = ()
        self._actions_enabled = True
        self.set_text(text)

    def _button(self, label: str, slot) -> QPushButton:
        button = QPushButton(label)
        button.setFlat(True)
        button.setCursor(Qt.CursorShape.PointingHandCursor)
        button.clicked.connect(lambda _checked=False: slot())
        return button

    def minimumSizeHint(self) -> QSize:
        # Qt would take the text wrapped at the bubble's narrowest as its minimum height, so the
        # conversation scrolled far past its end; the height comes from the width it gets instead.
        return QSize(super().minimumSizeHint().width(), 0)

    def set_text(self, text: str) -> None:
        self.text = text
        self.body.set_text(text)

    def set_versions(self, versions: tuple[int, ...], current: int | None) -> None:
        """Show ‹ n/m › when this turn has more than one version."""
        self.versions = versions
        self.message_id = current
        several = len(versions) > 1 and current in versions
        for widget in (self.previous_button, self.version_label, self.next_button):
            widget.setVisible(several)
        if several:
            self.version_label.setText(f"{versions.index(current) + 1}/{len(versions)}")
        self.set_actions_enabled(self._actions_enabled)

    def set_actions_enabled(self, enabled: bool) -> None:
        """Edit, Save and the version arrows wait while a reply streams."""
        self._actions_enabled = enabled
        at = self.versions.index(self.message_id) if self.message_id in self.versions else 0
        self.edit_button.setEnabled(enabled)
        self.save_edit_button.setEnabled(enabled)
        self.previous_button.setEnabled(enabled and at > 0)
        self.next_button.setEnabled(enabled and at < len(self.versions) - 1)

    def _step(self, by: int) -> None:
        if self.message_id in self.versions:
            at = self.versions.index(self.message_id) + by
            if 0 <= at < len(self.versions):
                self.version_chosen.emit(self.versions[at])

    @property
    def editing(self) -> bool:
        return not self.editor.isHidden()

    def start_edit(self) -> None:
        self.editor.setPlainText(self.text)
        self.body.hide()
        self.footer.hide()
        self.editor.show()
        self.edit_bar.show()
        self.editor.setFocus()

    def cancel_edit(self) -> None:
        self.editor.hide()
        self.edit_bar.hide()
        self.body.show()
        self.footer.show()

    def save_edit(self) -> None:
        text = self.editor.toPlainText().strip()
        if not text:
            return
        self.cancel_edit()
        if text != self.text:
            self.edit_saved.emit(text)

    def set_stats(self, stats: dict[str, Any] | None, state: str = "complete") -> None:
        self.stats.setText(stats_text(stats, state))

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.text)
        self.copy_requested.emit()
