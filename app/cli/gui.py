"""Opening the desktop app (what `camelid` with no sub-command does), and its screenshots."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

# The page list lives with the renderer; importing it loads no Qt.
from app.ui.screenshot import PAGES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("gui", help="open the desktop app (the default with no command)")
    parser.add_argument("--screenshot", metavar="PATH", type=Path,
                        help="render a page offscreen with demo state, save it as PNG, and exit")
    parser.add_argument("--page", choices=PAGES, default="hardware",
                        help="the page --screenshot renders (default: hardware)")
    parser.add_argument("--theme", choices=("light", "dark"), default="light",
                        help="the look --screenshot renders (default: light)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.screenshot:
        # Offscreen unless the caller chose a platform (QT_QPA_PLATFORM=xcb shows it on a display).
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        refused = platform_gate()
        if refused is not None:
            return refused
        from app.ui.screenshot import render

        path = render(args.screenshot, args.page, theme_choice=args.theme)
        print(f"Saved {path}")
        return 0
    return open_app()


def platform_gate() -> int | None:
    """None when Qt can open a window; otherwise one sentence on stderr and the exit code.

    Qt itself would abort (a core dump) with a misleading hint when no platform
    plugin can start, so this asks first. app.ui.platform_check loads no Qt module.
    """
    from app.ui.platform_check import gate

    return gate()


def open_app() -> int:
    refused = platform_gate()
    if refused is not None:
        return refused
    from app.ui.main_window import run_app

    return run_app()
