"""The `camelid` command: argparse front door over app.core.

Each sub-command lives in its own module under app/cli and exposes
`register(subparsers)`, which adds its parser and sets `run(args) -> int`.
With no sub-command, `camelid` opens the desktop app.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence

from app import __version__
from app.core.errors import CamelidError

#: Sub-command modules, in the order `camelid --help` lists them.
COMMAND_MODULES = (
    "app.cli.hw",
    "app.cli.starter",
    "app.cli.settings",
    "app.cli.search",
    "app.cli.files",
    "app.cli.plan",
    "app.cli.recommend",
    "app.cli.catalog",
    "app.cli.download",
    "app.cli.models",
    "app.cli.chat",
    "app.cli.gui",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="camelid",
        description="Run the best local LLM your machine can hold.",
    )
    parser.add_argument("--version", action="version", version=f"camelid {__version__}")
    parser.add_argument("--self-test", action="store_true",
                        help="load the starter model, generate a few tokens, start the GUI offscreen, report")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.self_test:
        from app.selftest import run_self_test

        return run_self_test()
    if args.command is None:
        from app.cli.gui import open_app

        return open_app()
    try:
        if args.command != "settings":  # which shows them itself
            _settings_notes()
        return int(args.run(args) or 0)
    except CamelidError as exc:
        report_error(exc, as_json=getattr(args, "json", False))
        return 2
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        return 130


def _settings_notes() -> None:
    """Values in settings.json that are not honoured, one sentence each, so no command ignores them silently."""
    from app.core.settings import Settings

    for problem in Settings().problems:
        print(f"camelid: note: {problem}", file=sys.stderr)


def report_error(exc: CamelidError, *, as_json: bool) -> None:
    """A user-facing error: one sentence and its fix, never a traceback."""
    if as_json:
        print(json.dumps({"error": exc.to_dict()}, indent=2))
    else:
        print(f"camelid: {exc}", file=sys.stderr)
