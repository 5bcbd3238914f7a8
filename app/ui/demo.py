"""Sample content for screenshots: a simulated machine, a short conversation, a demo download."""

from __future__ import annotations

from PySide6.QtWidgets import QWidget


def prepare(window: QWidget, page: str) -> None:
    """Fill `page` of the main window with sample content, where the page has a demo mode."""
    widget = getattr(window, "pages", {}).get(page.capitalize())
    if widget is not None and hasattr(widget, "show_demo"):
        widget.show_demo()


def wizard(window: QWidget) -> QWidget:
    """The first-run wizard on its recommendation page, for the screenshot."""
    from app.ui.wizard import FirstRunWizard

    dialog = FirstRunWizard(window.state, window)
    dialog.show_demo()
    return dialog
