"""`camelid download REPO[:QUANT] | REPO/FILE`: plan, fetch, verify, add to the library.

Ctrl-C stops the download and keeps the partial file; the same command resumes it.
A second download of a file that is being downloaded (another terminal, the GUI)
waits for the first and reports the file it saved; ``--no-wait`` stops at once.
"""

from __future__ import annotations

import argparse
import sys
import time

from app.cli import report_error
from app.cli.common import (
    add_hardware_flags,
    add_json_flag,
    file_size,
    fit_words,
    hardware_from_args,
    print_json,
)
from app.core.errors import CamelidError, DownloadCancelled
from app.core.models import downloads, hub


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "download", help="download a GGUF model from the Hub",
        description="Download REPO:QUANT (e.g. bartowski/Qwen_Qwen3-8B-GGUF:Q4_K_M) or REPO/FILE. "
                    "Checks disk space and fit first, resumes interrupted downloads, verifies sha256.")
    add_json_flag(parser)
    parser.add_argument("target", help="REPO, REPO:QUANT or REPO/path/to/file.gguf")
    parser.add_argument("--force", action="store_true",
                        help="download even when the model will not fit in this machine's memory")
    parser.add_argument("--no-fit-check", action="store_true", help="skip reading the header to judge the fit")
    parser.add_argument("--dry-run", action="store_true", help="show the plan and stop")
    parser.add_argument("--no-wait", action="store_true",
                        help="stop at once when another Camelid is downloading the same file "
                             "(default: wait for it and report the file it saves)")
    add_hardware_flags(parser)
    parser.set_defaults(run=run)


def parse_target(target: str) -> tuple[str, str | None]:
    """``owner/name:Q4_K_M`` -> (repo, "Q4_K_M"); ``owner/name/dir/f.gguf`` -> (repo, "dir/f.gguf")."""
    head, sep, quant = target.partition(":")
    parts = head.strip("/").split("/")
    if len(parts) < 2:
        raise CamelidError(f"{target!r} does not name a Hub repo.",
                           "Use owner/name, owner/name:QUANT or owner/name/file.gguf.")
    repo = "/".join(parts[:2])
    if len(parts) > 2:
        if sep:
            raise CamelidError(f"{target!r} names both a file and a quant.", "Give one or the other.")
        return repo, "/".join(parts[2:])
    return repo, quant or None


def run(args: argparse.Namespace) -> int:
    repo_id, wanted = parse_target(args.target)
    files = hub.repo_files(repo_id)
    quant = hub.select_quant(files, wanted)
    judge = None
    if not args.no_fit_check:
        judge = _tolerant(downloads.judge_remote_fit(hardware_from_args(args)))
    plan = downloads.plan_download(quant, judge=judge, allow_no_fit=args.force)
    if args.dry_run:
        if args.json:
            print_json(plan.to_dict())
        else:
            _print_plan(plan)
        return 0
    already = all(f.installed for f in plan.files)
    if not args.json and not already:
        _print_plan(plan)
    bar = ProgressBar(enabled=sys.stderr.isatty())
    try:
        result = downloads.download(plan, progress=bar.update, wait=not args.no_wait)
    except (KeyboardInterrupt, DownloadCancelled):
        bar.close()
        stop = DownloadCancelled(f"Stopped; the partial download of {plan.name} is kept in "
                                 f"{plan.files[0].part.parent}.", "Run the same command again to resume it.")
        report_error(stop, as_json=args.json)
        return 130
    bar.close()
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        print_json(result.to_dict())
    else:
        state = "verified (sha256 matches the Hub)" if result.verified else "NOT verified (the Hub gave no hash)"
        if already and all(f.installed for f in plan.files):
            print(f"Already downloaded: {result.path} ({file_size(result.bytes)}), {state}. "
                  f"Chat with it: camelid chat {result.path.stem}")
        else:
            print(f"Saved {result.path} ({file_size(result.bytes)}), {state}.")
    return 0


def _tolerant(judge: downloads.FitJudge) -> downloads.FitJudge:
    """A header that cannot be judged must not block a download: the verdict is then unknown."""

    def safe(quant: hub.QuantFile) -> downloads.FitJudgement | None:
        try:
            return judge(quant)
        except CamelidError as exc:
            print(f"note: fit not checked: {exc}", file=sys.stderr)
            return None

    return safe


def _print_plan(plan: downloads.DownloadPlan) -> None:
    shards = f" in {len(plan.files)} shards" if len(plan.files) > 1 else ""
    have = plan.total_bytes - plan.remaining_bytes
    resume = f", {file_size(have)} already here" if have else ""
    verdict = f"; on this machine: {fit_words(plan.verdict)}" if plan.verdict else ""
    print(f"{plan.repo_id} {plan.quant}: {file_size(plan.total_bytes)}{shards}{resume}{verdict}", file=sys.stderr)
    print(f"  -> {plan.destination} ({file_size(plan.free_bytes)} free on that disk)", file=sys.stderr)


class ProgressBar:
    """A one-line terminal progress bar on stderr: percent, bytes, speed, time left."""

    WIDTH = 28

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.shown = False
        self.last = 0.0
        self.waiting_said = False

    def update(self, p: downloads.DownloadProgress) -> None:
        if p.state == "waiting" and not self.waiting_said:
            # Said once even without a terminal: a second download joins the first instead of writing.
            self.waiting_said = True
            self.close()
            print(f"{p.file}: {p.message}.", file=sys.stderr)
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last < 0.2 and p.state not in ("done", "moving"):
            return
        self.last = now
        filled = int(self.WIDTH * p.fraction)
        eta = _clock(p.eta_seconds) if p.eta_seconds is not None else "--:--"
        shard = f" {p.file_index + 1}/{p.file_count}" if p.file_count > 1 else ""
        label = p.state if p.state != "downloading" else f"{file_size(p.speed_bps)}/s"
        line = (f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {p.fraction * 100:5.1f}% "
                f"{file_size(p.bytes_done)}/{file_size(p.total_bytes)} {label:>11} ETA {eta}{shard}")
        sys.stderr.write(line.ljust(90))
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.shown = False


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"
