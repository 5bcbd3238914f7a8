"""A one-line message bar that keeps its place: dismissable, and cleared by the page's next action.

Unlike a Notice (a wrapping box that appears and disappears), a Banner always takes
the same height, so showing or clearing it never moves the rows around it (a click
aimed at a row lands on that row). A long sentence is elided; the whole of it is in
the tooltip.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFontMetrics, QResizeEvent
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QSizePolicy, QToolButton, QWidget


class ElidedLabel(QLabel):
    """A one-line label that elides its text to its width."""

    def __init__(self) -> None:
        super().__init__("")
        self._full = ""
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

    def set_full_text(self, text: str) -> None:
        self._full = text
        self.setToolTip(text)
        self._elide()

    def full_text(self) -> str:
        return self._full

    def _elide(self) -> None:
        self.setText(QFontMetrics(self.font()).elidedText(self._full, Qt.TextElideMode.ElideRight,
                                                          max(40, self.width())))

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._elide()


class Banner(QFrame):
    """An error (or info) sentence on one line, with a close button; empty means invisible but still there."""

    dismissed = Signal()

    def __init__(self, kind: str = "error", parent: QWidget | None = None, *,
                 rewrite: Callable[[str], str] | None = None) -> None:
        """`rewrite`: applied to every sentence before it is shown (e.g. ui.wording.window_sentence)."""
        super().__init__(parent)
        self.kind = kind
        self._rewrite = rewrite
        self._text = ""
        self._style = "ErrorBanner" if kind == "error" else "Warning"
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 2, 4, 2)
        layout.setSpacing(6)
        self.label = ElidedLabel()
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.label, 1)
        self.close_button = QToolButton()
        self.close_button.setText("×")
        self.close_button.setAutoRaise(True)
        self.close_button.setToolTip("Dismiss")
        self.close_button.setAccessibleName("Dismiss message")
        self.close_button.clicked.connect(self._dismiss)
        layout.addWidget(self.close_button)
        self.setFixedHeight(max(30, QFontMetrics(self.label.font()).height() + 14))
        policy = self.sizePolicy()
        policy.setRetainSizeWhenHidden(True)  # an empty banner still holds its line: nothing shifts
        self.setSizePolicy(policy)
        self._paint("")

    def text(self) -> str:
        """The whole sentence shown (not the elided one)."""
        return self._text

    def show_text(self, text: str) -> None:
        """Show `text` on one line (empty: clear)."""
        if self._rewrite is not None and text:
            text = self._rewrite(text)
        self._text = " ".join(text.split())
        self._paint(self._text)

    def shown(self) -> bool:
        """Whether a message is on show (the empty banner is visible too, holding its line)."""
        return bool(self._text) and self.isVisible()

    def clear(self) -> None:
        self.show_text("")

    def _dismiss(self) -> None:
        self.clear()
        self.dismissed.emit()

    def _paint(self, text: str) -> None:
        # The styled box only while there is something to say; the space is kept either way.
        self.setObjectName(self._style if text else "")
        self.style().unpolish(self)
        self.style().polish(self)
        self.setToolTip(text)
        self.label.set_full_text(text)
        self.close_button.setEnabled(bool(text))
        self.close_button.setText("×" if text else "")
