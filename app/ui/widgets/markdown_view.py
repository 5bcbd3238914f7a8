"""A message's Markdown: prose as rich text with its line breaks kept, fenced code in its own scrolling box.

Qt's Markdown (md4c) joins single newlines into one paragraph, as CommonMark
says; chat text means them (poems, addresses, pasted logs, Shift+Enter), so
each single newline outside code becomes a hard break. A fenced code block is
a read-only monospace box that scrolls sideways on its own, so one long line
never widens the bubble or the conversation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QFontDatabase, QGuiApplication, QTextOption
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

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)\s*$")


@dataclass(frozen=True)
class Segment:
    """A run of prose (`language` is None) or one fenced code block."""

    text: str
    language: str | None = None

    @property
    def is_code(self) -> bool:
        return self.language is not None


def split_code_blocks(text: str) -> list[Segment]:
    """Prose and fenced code blocks, in order; an unclosed fence (a reply still streaming) runs to the end."""
    segments: list[Segment] = []
    prose: list[str] = []
    code: list[str] = []
    fence: str | None = None
    language = ""
    for line in text.split("\n"):
        if fence is None:
            match = _FENCE.match(line)
            if match:
                if prose:
                    segments.append(Segment("\n".join(prose)))
                    prose = []
                fence, language = match.group(1), match.group(2)
            else:
                prose.append(line)
        elif line.strip().startswith(fence[0] * len(fence)) and not line.strip().strip(fence[0]):
            segments.append(Segment("\n".join(code), language))
            code, fence = [], None
        else:
            code.append(line)
    if fence is not None:
        segments.append(Segment("\n".join(code), language))
    if prose:
        segments.append(Segment("\n".join(prose)))
    return [s for s in segments if s.is_code or s.text.strip()]


def keep_line_breaks(markdown: str) -> str:
    """Markdown prose with each single newline made a hard break (two trailing spaces)."""
    lines = markdown.split("\n")
    out = []
    for i, line in enumerate(lines):
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if (line.strip() and following.strip() and not line.endswith(("  ", "\\"))
                and not _SETEXT.match(following) and not line.lstrip().startswith("|")):
            line += "  "
        out.append(line)
    return "\n".join(out)


class CodeBlock(QFrame):
    """Monospace code that scrolls sideways inside its own box, with its language and a Copy button."""

    copied = Signal()

    def __init__(self, code: str = "", language: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("CodeBlock")
        self.setStyleSheet("#CodeBlock { background: palette(alternate-base); border: 1px solid palette(mid);"
                           " border-radius: 6px; }"
                           "#CodeBlock QPlainTextEdit { background: transparent; border: none; }")
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 4, 4, 6)
        layout.setSpacing(2)
        head = QHBoxLayout()
        self.language = QLabel(language or "code")
        self.language.setProperty("subtle", True)
        head.addWidget(self.language, 1)
        self.copy_button = QPushButton("Copy code")
        self.copy_button.setFlat(True)
        self.copy_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.copy_button.clicked.connect(lambda _c=False: self.copy())
        head.addWidget(self.copy_button)
        layout.addLayout(head)
        self.editor = QPlainTextEdit()
        self.editor.setReadOnly(True)
        self.editor.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.editor.setWordWrapMode(QTextOption.WrapMode.NoWrap)
        self.editor.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.editor.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.editor.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.editor.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.editor.setFrameShape(QFrame.Shape.NoFrame)
        layout.addWidget(self.editor)
        # Room for the sideways scrollbar only while a line is too long to show.
        self.editor.horizontalScrollBar().rangeChanged.connect(lambda _lo, _hi: self._fit_height())
        self.set_code(code, language)

    @property
    def code(self) -> str:
        return self.editor.toPlainText()

    def set_code(self, code: str, language: str = "") -> None:
        self.language.setText(language or "code")
        if code != self.editor.toPlainText():
            self.editor.setPlainText(code)
        self._fit_height()

    def _fit_height(self) -> None:
        lines = max(1, self.editor.document().blockCount())
        metrics = self.editor.fontMetrics()
        scroll = self.editor.horizontalScrollBar()
        bar = scroll.sizeHint().height() if scroll.maximum() > 0 else 0
        margins = int(self.editor.document().documentMargin() * 2) + self.editor.frameWidth() * 2
        self.editor.setFixedHeight(lines * metrics.lineSpacing() + margins + bar + 2)

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.code)
        self.copied.emit()


class _Prose(QLabel):
    """Wrapped rich text whose height always comes from the width it is given.

    QLabel's own minimum height is the text wrapped at its narrowest, several
    times the real height: the conversation would scroll far past its end.
    """

    def minimumSizeHint(self) -> QSize:
        return QSize(0, 0)


class MarkdownView(QWidget):
    """A message body: prose labels and code blocks, updated in place while a reply streams."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(6)
        self.parts: list[QLabel | CodeBlock] = []
        self.text = ""

    def set_text(self, text: str) -> None:
        self.text = text
        segments = split_code_blocks(text) or [Segment("…")]
        # Keep the parts that still match (a streaming reply only grows at its end); rebuild the rest.
        keep = 0
        while (keep < min(len(segments), len(self.parts))
               and segments[keep].is_code == isinstance(self.parts[keep], CodeBlock)):
            keep += 1
        for part in self.parts[keep:]:
            part.setParent(None)
            part.deleteLater()
        self.parts = self.parts[:keep]
        for segment in segments[keep:]:
            part: QLabel | CodeBlock = CodeBlock() if segment.is_code else self._prose()
            self.parts.append(part)
            self._layout.addWidget(part)
        for part, segment in zip(self.parts, segments, strict=True):
            if isinstance(part, CodeBlock):
                part.set_code(segment.text, segment.language or "")
            else:
                rendered = keep_line_breaks(segment.text)
                if part.text() != rendered:
                    part.setText(rendered)

    def _prose(self) -> QLabel:
        label = _Prose()
        label.setTextFormat(Qt.TextFormat.MarkdownText)
        label.setWordWrap(True)
        label.setOpenExternalLinks(True)
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse
                                      | Qt.TextInteractionFlag.LinksAccessibleByMouse)
        # Ignored: a long unbroken word (a URL) may not set the bubble's width.
        label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        return label

    def code_blocks(self) -> list[CodeBlock]:
        return [p for p in self.parts if isinstance(p, CodeBlock)]
