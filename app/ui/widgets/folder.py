"""Open a folder in the desktop's file manager, or show its path with Copy when there is none."""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

log = logging.getLogger(__name__)


class FolderPathDialog(QDialog):
    """The folder's path, selectable, with a Copy button (no file manager could be started)."""

    def __init__(self, path: Path, parent: QWidget | None = None, *, reason: str | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Folder")
        self.setMinimumWidth(520)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(18, 16, 18, 14)
        layout.setSpacing(10)
        message = QLabel(reason or "No file manager could be opened here. The folder is:")
        message.setWordWrap(True)
        layout.addWidget(message)
        row = QHBoxLayout()
        self.path_edit = QLineEdit(str(path))
        self.path_edit.setReadOnly(True)
        self.path_edit.setCursorPosition(0)
        self.copy_button = QPushButton("Copy")
        self.copy_button.clicked.connect(self.copy)
        row.addWidget(self.path_edit, 1)
        row.addWidget(self.copy_button)
        layout.addLayout(row)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.path_edit.text())
        self.copy_button.setText("Copied")


def open_folder(path: Path, parent: QWidget | None = None) -> QDialog | None:
    """Show `path` in the file manager; when none starts, a dialog with the path and Copy (returned)."""
    path = Path(path)
    if path.is_dir() and QDesktopServices.openUrl(QUrl.fromLocalFile(str(path))):
        return None
    reason = None if path.is_dir() else "This folder does not exist yet. Its path is:"
    log.info("No file manager opened %s; showing the path instead", path)
    dialog = FolderPathDialog(path, parent, reason=reason)
    dialog.open()
    return dialog
