"""`camelid starter`: the small bundled model that lets anyone chat at once."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from app import paths
from app.cli.common import add_json_flag, human_bytes, print_json
from app.core.errors import ModelFileError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "starter", help="show or install the starter model (SmolLM2-135M-Instruct Q4_1)",
        description="The starter model is small enough for any machine; it is used until you "
                    "download a better one.")
    add_json_flag(parser)
    parser.add_argument("--install-from", metavar="FILE.gguf", type=Path,
                        help="copy this file into the models folder if the starter model is absent")
    parser.set_defaults(run=run)


def install_starter(source: Path) -> tuple[Path, bool]:
    """Copy the starter model into the models folder unless it is already there."""
    dest = paths.starter_model_path()
    if dest.is_file() and dest.stat().st_size == source.stat().st_size:
        return dest, False
    if not source.is_file():
        raise ModelFileError(f"There is no file at {source}.",
                             "Give the path of a copy of SmolLM2-135M-Instruct.Q4_1.gguf.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".copying")
    shutil.copyfile(source, tmp)
    os.replace(tmp, dest)  # atomic: never a half-copied model in the folder
    return dest, True


def run(args: argparse.Namespace) -> int:
    installed = False
    if args.install_from:
        path, installed = install_starter(args.install_from)
    else:
        path = paths.starter_model_path()
        if not path.is_file() and paths.bundled_starter_model():
            path, installed = install_starter(paths.bundled_starter_model())
    present = path.is_file()
    if args.json:
        print_json({"path": str(path), "present": present, "installed_now": installed,
                    "bytes": path.stat().st_size if present else None})
    elif present:
        verb = "installed" if installed else "present"
        print(f"Starter model {verb}: {path} ({human_bytes(path.stat().st_size)})")
    else:
        from app.cli.chat import STARTER_FIX

        print(f"The starter model is not installed (expected at {path}). {STARTER_FIX}")
    return 0 if present else 1
