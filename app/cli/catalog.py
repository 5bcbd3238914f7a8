"""`camelid catalog`: the curated models and their file sizes per quant."""

from __future__ import annotations

import argparse
import sys

from app.cli.common import add_json_flag, print_json
from app.core.errors import CamelidError
from app.core.models import CATALOG_QUANTS, CatalogModel, load_catalog, with_hub_sizes


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "catalog", help="list the curated models and their file sizes",
        description="The curated instruct models Camelid recommends from, with each quant's file size: "
                    "predicted from the architecture, or read from the Hub with --hub.")
    add_json_flag(parser)
    parser.add_argument("--hub", action="store_true",
                        help="replace predicted sizes with the real ones from each GGUF repo (online)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    models = list(load_catalog())
    if args.hub:
        models = [_from_hub(m) for m in models]
    if args.json:
        print_json({"models": [_entry(m) for m in models]})
        return 0
    quants = [q for q in CATALOG_QUANTS if q in ("Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "F16")]
    print(f"{'model':36} {'params':>7}  {'license':14} " + " ".join(f"{q:>7}" for q in quants))
    for m in models:
        sizes = []
        for q in quants:
            f = m.file(q)
            sizes.append(f"{f.size_bytes / 1e9:6.1f}{'~' if f.predicted else ' '}")
        gated = "*" if m.gated else ""
        print(f"{m.name:36} {m.size_label:>7}  {m.license + gated:14} " + " ".join(sizes))
    print("\nSizes in GB; ~ predicted from the architecture (--hub reads the real ones). "
          "* the original repo is gated; the GGUF repo is not.")
    return 0


def _entry(m: CatalogModel) -> dict:
    return {"model": m.model, "repo": m.repo, "params_b": m.params_b, "name": m.name,
            "license": m.license, "gated": m.gated, "context": m.context, "released": m.released,
            "strengths": list(m.strengths),
            "files": [{"quant": f.quant, "size_bytes": f.size_bytes, "predicted": f.predicted,
                       "filename": f.filename} for f in m.files]}


def _from_hub(model: CatalogModel) -> CatalogModel:
    from app.core.models import hub

    try:
        listing = hub.repo_files(model.repo)
    except CamelidError as exc:
        print(f"camelid: {model.repo}: {exc} Keeping predicted sizes.", file=sys.stderr)
        return model
    return with_hub_sizes(model, listing.quants)
