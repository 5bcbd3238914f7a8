"""`camelid search QUERY`: GGUF repos on the Hub, most downloaded first."""

from __future__ import annotations

import argparse

from app.cli.common import add_json_flag, at_least, print_json
from app.core.models import hub


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("search", help="search the Hub for GGUF models",
                                   description="Search GGUF repos on the Hugging Face Hub (HF_ENDPOINT honoured).")
    add_json_flag(parser)
    parser.add_argument("query", nargs="?", default="", help="words in the repo name, e.g. qwen3 8b")
    parser.add_argument("--limit", type=at_least(1), default=20, help="how many results (default 20)")
    parser.add_argument("--sort", default="downloads", choices=("downloads", "likes", "last_modified",
                                                                 "trending_score"))
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    results = hub.search_models(args.query, limit=args.limit, sort=args.sort)
    if args.json:
        print_json([r.to_dict() for r in results])
        return 0
    if not results:
        print(f"No GGUF repos match {args.query!r}.")
        return 0
    width = max(len(r.repo_id) for r in results)
    for r in results:
        params = f"{r.parameters / 1e9:.1f}B" if r.parameters else ""
        flags = " gated" if r.gated else ""
        print(f"{r.repo_id:{width}}  {r.downloads:>10,} downloads  {params:>7}{flags}")
    print(f"\nSee the quants of one with `camelid files {results[0].repo_id}`.")
    return 0
