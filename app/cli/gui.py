"""Opening the desktop app (what `camelid` with no sub-command does), and its screenshots."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

# The page list lives with the renderer; importing it loads no Qt.
from app.ui.screenshot import PAGES

if TYPE_CHECKING:
    from PySide6.QtWidgets import QApplication


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("gui", help="open the desktop app (the default with no command)")
    parser.add_argument("--screenshot", metavar="PATH", type=Path,
                        help="render a page offscreen with demo state, save it as PNG, and exit")
    parser.add_argument("--page", choices=PAGES, default="hardware",
                        help="the page --screenshot renders (default: hardware)")
    parser.add_argument("--theme", choices=("system", "light", "dark"),
                        help="the look, this time only: the window's (default: the theme setting) or "
                             "the --screenshot's (default: light)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.screenshot:
        # Offscreen unless the caller chose a platform (QT_QPA_PLATFORM=xcb shows it on a display).
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        refused = platform_gate()
        if refused is not None:
            return refused
        from app.ui.screenshot import render

        path = render(args.screenshot, args.page, theme_choice=args.theme or "light")
        print(f"Saved {path}")
        return 0
    return open_app(theme_choice=args.theme)


def platform_gate() -> int | None:
    """None when Qt can open a window; otherwise one sentence on stderr and the exit code.

    Qt itself would abort (a core dump) with a misleading hint when no platform
    plugin can start, so this asks first. app.ui.platform_check loads no Qt module.
    """
    from app.ui.platform_check import gate

    return gate()


def open_app(*, theme_choice: str | None = None) -> int:
    """The desktop app, or one sentence and exit code 2 when it cannot open here.

    `theme_choice` overrides the theme setting for this run only (it is not saved).
    """
    refused = platform_gate()
    if refused is not None:
        return refused
    from app.ui.main_window import build_app, run_app

    if theme_choice is not None:
        from PySide6.QtCore import QTimer

        app = build_app()
        # run_app builds the window with the saved theme; once the loop starts, the window switches,
        # in memory only, the way View > Theme does (so every view and the menu follow).
        QTimer.singleShot(0, lambda: _override_theme(app, theme_choice))
    return run_app()


def _override_theme(app: QApplication, choice: str) -> None:
    from app.ui.main_window import MainWindow

    for widget in app.topLevelWidgets():
        if isinstance(widget, MainWindow):
            widget.state.settings.set("theme", choice)  # not saved: this run only
            widget.state.settings_changed.emit(["theme"])
