"""One chat message: Markdown text, its actions (copy, edit, regenerate) and, for replies, stats."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)


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
    if state == "stopped" or stats.get("stop_reason") == "cancelled":
        parts.append("stopped")
    elif stats.get("stop_reason") == "length":
        parts.append("reached the length limit")
    return " · ".join(parts)


class MessageBubble(QFrame):
    """A user or assistant message. `set_text` re-renders; callers throttle it while streaming."""

    copy_requested = Signal()
    edit_requested = Signal()
    regenerate_requested = Signal()

    def __init__(self, role: str, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.role = role
        self.message_id: int | None = None
        self.setObjectName("Bubble")
        self.setProperty("role", role)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 8, 12, 6)
        layout.setSpacing(4)
        who = QLabel("You" if role == "user" else "Assistant")
        who.setProperty("subtle", True)
        layout.addWidget(who)
        self.body = QLabel()
        # Qt's own Markdown (md4c): headings, lists, tables and fenced code blocks.
        self.body.setTextFormat(Qt.TextFormat.MarkdownText)
        self.body.setWordWrap(True)
        self.body.setOpenExternalLinks(True)
        self.body.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse
                                          | Qt.TextInteractionFlag.LinksAccessibleByMouse)
        layout.addWidget(self.body)
        footer = QHBoxLayout()
        footer.setSpacing(6)
        self.stats = QLabel("")
        self.stats.setObjectName("Stats")
        footer.addWidget(self.stats, 1)
        self.copy_button = self._button("Copy", self.copy)
        footer.addWidget(self.copy_button)
        self.edit_button = self._button("Edit and resend", self.edit_requested.emit)
        self.regenerate_button = self._button("Regenerate", self.regenerate_requested.emit)
        footer.addWidget(self.edit_button)
        footer.addWidget(self.regenerate_button)
        self.edit_button.setVisible(role == "user")
        self.regenerate_button.setVisible(False)
        layout.addLayout(footer)
        self.text = ""
        self.set_text(text)

    def _button(self, label: str, slot) -> QPushButton:
        button = QPushButton(label)
        button.setFlat(True)
        button.setCursor(Qt.CursorShape.PointingHandCursor)
        button.clicked.connect(lambda _checked=False: slot())
        return button

    def set_text(self, text: str) -> None:
        self.text = text
        self.body.setText(text if text else "…")

    def set_stats(self, stats: dict[str, Any] | None, state: str = "complete") -> None:
        self.stats.setText(stats_text(stats, state))

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.text)
        self.copy_requested.emit()
