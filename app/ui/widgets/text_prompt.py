"""A one-line text question (Rename chat…) wide enough for its title and a long answer."""

from __future__ import annotations

from PySide6.QtWidgets import QInputDialog, QWidget

#: Wide enough for "Rename chat — Camelid" in a title bar and a 60-character title in the field.
MINIMUM_WIDTH = 440


def text_dialog(parent: QWidget | None, title: str, label: str, text: str = "") -> QInputDialog:
    """The dialog, not yet shown (tests look at it; ask_text runs it)."""
    dialog = QInputDialog(parent)
    dialog.setWindowTitle(title)
    dialog.setLabelText(label)
    dialog.setTextValue(text)
    dialog.setMinimumWidth(MINIMUM_WIDTH)
    dialog.resize(MINIMUM_WIDTH, dialog.sizeHint().height())
    return dialog


def ask_text(parent: QWidget | None, title: str, label: str, text: str = "") -> tuple[str, bool]:
    """Like QInputDialog.getText: (the text, whether OK was pressed)."""
    dialog = text_dialog(parent, title, label, text)
    accepted = bool(dialog.exec())
    value = dialog.textValue()
    dialog.deleteLater()
    return value, accepted
