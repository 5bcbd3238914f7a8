"""The `camelid` command: argparse front door over app.core.

Each sub-command lives in its own module under app/cli and exposes
`register(subparsers)`, which adds its parser and sets `run(args) -> int`.
With no sub-command, `camelid` opens the desktop app.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
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
    "app.cli.serve",
    "app.cli.docs",
    "app.cli.worker",
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
    parser.add_argument("--theme", choices=("system", "light", "dark"),
                        help="open the desktop app in this look, this time only "
                             "(`camelid settings theme dark` keeps it)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


#: Exit code when the reader of our output went away (`camelid catalog | head -1`): 128 + SIGPIPE,
#: what a shell reports for a command that a closed pipe ended.
EXIT_BROKEN_PIPE = 141


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every way it can end is an exit code and at most one sentence, never a traceback."""
    _quiet_library_logs()
    try:
        try:
            code = _run(argv)
        except SystemExit:  # argparse's --help and usage errors end this way
            sys.stdout.flush()
            raise
        sys.stdout.flush()  # inside the try: a closed pipe surfaces here, not at interpreter exit
        return code
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE


def _quiet_library_logs() -> None:
    """Library log lines (huggingface_hub's retries, say) go to the log file, not the terminal.

    huggingface_hub gives its logger a stderr handler when it is imported; importing it here (10 ms)
    and removing that handler keeps its warnings in Camelid's log, where the CLI's sentence points.
    """
    try:
        import huggingface_hub.utils.logging  # noqa: F401  (adds the handler, once)
    except ImportError:
        return
    hf_root = logging.getLogger("huggingface_hub")
    for handler in list(hf_root.handlers):
        if type(handler) is logging.StreamHandler:
            hf_root.removeHandler(handler)


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.self_test:  # works in a temporary home: writes nothing, not even a log, in the user's
        from app.selftest import run_self_test

        return run_self_test()
    from app import logging_setup

    logging_setup.configure_cli(argv)  # the log file, never the terminal
    if args.command is None:
        from app.cli.gui import open_app

        return open_app(theme_choice=args.theme)
    if args.theme is not None and args.command != "gui":
        parser.error(f"--theme is for the desktop app: use `camelid --theme {args.theme}` or "
                     f"`camelid gui --theme {args.theme}`, without {args.command!r}")
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
    except BrokenPipeError:
        raise
    except OSError as exc:  # storage the command needed: a sentence, not a traceback
        print(f"camelid: {_os_error_sentence(exc)}", file=sys.stderr)
        return 2


def _os_error_sentence(exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename else ""
    return (f"A file could not be read or written{where}: {exc.strerror or exc}. Check that the folder "
            "exists and is writable and the disk is not full, or set CAMELID_HOME to a folder you can "
            "write to.")


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush does not fail on the closed pipe too."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


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
