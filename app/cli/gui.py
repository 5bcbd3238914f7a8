"""Opening the desktop app (what `camelid` with no sub-command does)."""

from __future__ import annotations

import argparse
import importlib.util


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("gui", help="open the desktop app (the default with no command)")
    parser.set_defaults(run=lambda args: open_app())


def open_app() -> int:
    if importlib.util.find_spec("app.ui") is None or importlib.util.find_spec("app.ui.main_window") is None:
        # The desktop app is not built yet: show what Camelid knows today.
        from app import paths
        from app.cli.hw import describe
        from app.core.hardware import detect

        print(describe(detect(models_dir=paths.models_dir())))
        print("\nThe desktop window is not part of this version yet; the command line "
              "(`camelid --help`) is the whole app for now.")
        return 0
    from app.ui.main_window import run_app

    return run_app()
