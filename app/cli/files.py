"""`camelid files REPO`: the GGUF quants in a repo, their sizes, and whether each fits here."""

from __future__ import annotations

import argparse
from typing import Any

from app.cli.common import (
    add_hardware_flags,
    add_json_flag,
    file_size,
    fit_words,
    hardware_from_args,
    print_json,
)
from app.core.errors import CamelidError
from app.core.models import hub


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("files", help="list the quants of a Hub repo",
                                   description="List a repo's GGUF files grouped by quant, with sizes, "
                                               "sha256 and the fit verdict on this machine.")
    add_json_flag(parser)
    parser.add_argument("repo", help="owner/name, e.g. bartowski/Qwen_Qwen3-8B-GGUF")
    add_hardware_flags(parser)
    parser.add_argument("--mmproj", action="store_true", help="also list vision projector (mmproj) files")
    parser.add_argument("--no-fit", action="store_true",
                        help="skip the fit verdict (it reads each file's header over the network)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    files = hub.repo_files(args.repo, include_mmproj=args.mmproj)
    verdicts: dict[str, Any] = {}
    if not args.no_fit and files.quants:
        from app.core.models import judge_remote_fit

        judge = judge_remote_fit(hardware_from_args(args))
        for quant in files.quants:
            if quant.mmproj:
                continue
            try:
                fit = judge(quant)
                verdicts[quant.name] = fit.verdict if fit else None
            except CamelidError as exc:
                verdicts[quant.name] = None
                verdicts[f"{quant.name}:problem"] = str(exc)
    if args.json:
        data = files.to_dict()
        for q in data["quants"]:
            q["verdict"] = verdicts.get(q["name"])
            if f"{q['name']}:problem" in verdicts:
                q["verdict_problem"] = verdicts[f"{q['name']}:problem"]
        print_json(data)
        return 0
    gated = " (gated: accept the license at " + hub.repo_page(files.repo_id) + ")" if files.gated else ""
    print(f"{files.repo_id} @ {files.sha[:10]}{gated}")
    if not files.quants:
        print("  no GGUF files")
        return 0
    width = max(len(q.quant) for q in files.quants)
    unknown = "gated" if files.gated else "not known"
    show_fit = not args.no_fit
    fit_head = f"  {'fit here':14}" if show_fit else ""
    print(f"  {'quant':{width}}  {'size':>10}{fit_head}  {'sha256':12}  file")
    for q in files.quants:
        shards = f"  {len(q.files)} shards" if q.is_split else ""
        missing = "" if q.complete else f" (only {len(q.files)} of {q.shard_count} present)"
        verdict = ("" if not show_fit else
                   f"  {'' if q.mmproj else fit_words(verdicts.get(q.name), unknown=unknown):14}")
        sha = (q.files[0].sha256 or "")[:12] if q.files else ""
        print(f"  {q.quant:{width}}  {file_size(q.total_bytes):>10}{verdict}  {sha or '-':12}  "
              f"{q.first_file}{shards}{missing}")
    problems = {k.split(":", 1)[0]: v for k, v in verdicts.items() if k.endswith(":problem")}
    for name, problem in problems.items():
        print(f"  note: {name}: {problem}")
    print(f"\nDownload one with `camelid download {files.repo_id}:QUANT`.")
    return 0
