"""`camelid settings`: show or change a setting.

This is the command that repairs a bad settings file, so it works whatever the
file holds: values that cannot be used are notes, and a change writes a fresh
file after moving the old one aside (the note says where).
"""

from __future__ import annotations

import argparse

from app.cli.common import add_json_flag, print_json
from app.core.settings import BY_KEY, SETTINGS, Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("settings", help="show or change settings",
                                   description="With no KEY: every setting. With KEY VALUE: change it.")
    add_json_flag(parser)
    parser.add_argument("key", nargs="?", choices=sorted(BY_KEY), metavar="KEY")
    parser.add_argument("value", nargs="?", metavar="VALUE", help='new value ("auto" clears an optional one)')
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = Settings()
    problems = list(settings.problems)
    kept = None
    if args.key and args.value is not None:
        value = None if args.value == "auto" and BY_KEY[args.key].optional else args.value
        settings.set(args.key, value)
        kept = settings.save()
        # What the change repaired is no longer a problem; what it did not still is.
        problems = [p for p in problems if not p.startswith(("The settings file ", f"The setting {args.key} "))]
        if kept is not None:
            problems.append(f"The previous settings file, which could not be used as it was, is kept as {kept}.")
    if args.json:
        print_json({"path": str(settings.path), "settings": settings.to_dict(), "problems": problems,
                    "kept_copy": str(kept) if kept else None})
        return 0
    for problem in problems:
        print(f"note: {problem}")
    shown = [BY_KEY[args.key]] if args.key else list(SETTINGS)
    for setting in shown:
        value = settings[setting.key]
        text = "auto" if value is None else repr(value) if value == "" else str(value)
        print(f"{setting.key:16} {text:10}  {setting.help}")
    return 0
