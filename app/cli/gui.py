"""Opening the desktop app (what `camelid` with no sub-command does), and its screenshots."""

from __future__ import annotations

import argparse
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
        from app.ui.screenshot import render

        path = render(args.screenshot, args.page, theme_choice=args.theme)
        print(f"Saved {path}")
        return 0
    return open_app()


def open_app() -> int:
    from app.ui.main_window import run_app

    return run_app()
