"""A stacked memory bar: parts (weights, KV cache, ...) against a budget, with legend and tooltips."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QHelpEvent, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QLabel, QSizePolicy, QToolTip, QVBoxLayout, QWidget

from app.ui import text, theme


@dataclass(frozen=True)
class Part:
    """One coloured stretch of the bar."""

    key: str  # a COMPONENT_COLORS key, or any name with `color` given
    label: str
    bytes: int
    color: str | None = None
    help: str = ""

    @property
    def qcolor(self) -> QColor:
        return QColor(self.color or theme.COMPONENT_COLORS.get(self.key, "#888888"))


class _Bar(QWidget):
    """The painted bar. The scale is max(budget, total) so an overflow is visible past the marker."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.parts: list[Part] = []
        self.budget = 0
        self.setMinimumHeight(20)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setMouseTracking(True)

    def sizeHint(self) -> QSize:
        return QSize(320, 20)

    def _scale(self) -> float:
        return float(max(self.budget, sum(p.bytes for p in self.parts), 1))

    def _rects(self) -> list[tuple[Part, QRectF]]:
        area = QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5)
        scale = self._scale()
        x = area.left()
        out = []
        for part in self.parts:
            w = area.width() * part.bytes / scale
            out.append((part, QRectF(x, area.top(), w, area.height())))
            x += w
        return out

    def paintEvent(self, _event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        area = QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5)
        clip = QPainterPath()
        clip.addRoundedRect(area, 5, 5)
        colors = theme.colors(theme.current_dark())
        painter.fillPath(clip, QColor(colors["input"]))
        painter.setClipPath(clip)
        for part, rect in self._rects():
            painter.fillRect(rect, part.qcolor)
        painter.setClipping(False)
        total = sum(p.bytes for p in self.parts)
        if self.budget and total > self.budget:
            # A red line where the budget ends: everything right of it does not fit.
            x = area.left() + area.width() * self.budget / self._scale()
            painter.setPen(QPen(QColor("#d62728"), 3))
            painter.drawLine(int(x), 0, int(x), self.height())
        painter.setPen(QPen(QColor(colors["border"]), 1))
        painter.drawPath(clip)

    def event(self, ev) -> bool:
        if ev.type() == ev.Type.ToolTip and isinstance(ev, QHelpEvent):
            pos = ev.position() if hasattr(ev, "position") else ev.pos()
            for part, rect in self._rects():
                if rect.contains(pos if isinstance(pos, QPointF) else QPointF(pos)):
                    tip = f"<b>{part.label}</b>: {text.size(part.bytes)}"
                    if part.help:
                        tip += f"<br>{part.help}"
                    QToolTip.showText(ev.globalPos(), tip, self)
                    return True
            if self.budget:
                QToolTip.showText(ev.globalPos(), f"Budget: {text.size(self.budget)}", self)
                return True
        return super().event(ev)


class MemoryBar(QWidget):
    """Title line ("GPU 0 · 21.3 of 23.5 GiB"), the bar, and a legend that wraps."""

    def __init__(self, title: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        self.title = QLabel(title)
        self.title.setTextFormat(Qt.TextFormat.RichText)
        self.title.setWordWrap(True)
        self.bar = _Bar(self)
        self.legend = QLabel()
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        self.legend.setWordWrap(True)
        self.legend.setProperty("subtle", True)
        layout.addWidget(self.title)
        layout.addWidget(self.bar)
        layout.addWidget(self.legend)
        self._title_text = title

    def set_parts(self, parts: list[Part], budget: int, *, title: str | None = None,
                  budget_label: str = "budget", figure: str | None = None) -> None:
        """Show `parts` against `budget` bytes; the title gains the used/budget figure (or `figure`)."""
        self.bar.parts = [p for p in parts if p.bytes > 0]
        self.bar.budget = budget
        if title is not None:
            self._title_text = title
        total = sum(p.bytes for p in self.bar.parts)
        if figure is None:
            figure = f"{text.size(total)} of {text.size(budget)} {budget_label}" if budget else text.size(total)
        over = bool(budget) and total > budget
        figure_html = f"<span style='color:#d62728'>{figure}, does not fit</span>" if over else figure
        self.title.setText(f"<b>{self._title_text}</b> &nbsp; {figure_html}")
        self.legend.setText(" &nbsp; ".join(
            f"<span style='color:{p.qcolor.name()}'>&#9632;</span>&nbsp;{p.label}&nbsp;{text.size(p.bytes)}"
            for p in self.bar.parts))
        self.bar.setToolTip("")
        self.bar.update()
