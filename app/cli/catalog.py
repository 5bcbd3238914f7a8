"""`camelid catalog`: the curated models and their file sizes per quant; `--refresh` asks the Hub for new ones."""

from __future__ import annotations

import argparse
import sys

from app.cli.common import add_json_flag, print_json
from app.core.errors import CamelidError, GatedRepoError, NotFoundError, UsageError
from app.core.models import CATALOG_QUANTS, CatalogModel, load_catalog, with_hub_sizes


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "catalog", help="list the curated models and their file sizes; --refresh finds new ones",
        description="The curated instruct models Camelid recommends from, with each quant's file size: "
                    "predicted from the architecture, or read from the Hub with --hub. --refresh asks the "
                    "Hub for models the watched labs published since the snapshot and adds them.")
    add_json_flag(parser)
    parser.add_argument("--hub", action="store_true",
                        help="replace predicted sizes with the real ones from each GGUF repo (online)")
    parser.add_argument("--refresh", action="store_true",
                        help="look for the watched labs' new models on the Hub and add them (online)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.refresh and args.hub:
        raise UsageError("--refresh and --hub do different things.", "Run them one at a time.")
    if args.refresh:
        return _refresh(args)
    models = list(load_catalog())
    if args.hub:
        from app.core.models.refresh import OfflineError, is_offline

        if is_offline():
            raise OfflineError("Camelid is set to work offline, so it did not read sizes from the Hub.",
                               "Turn off offline mode in Settings (or unset HF_HUB_OFFLINE), then try again.")
        models = [_from_hub(m) for m in models]
    snapshot, refreshed = _dates()
    if args.json:
        print_json({"snapshot": snapshot, "last_refreshed": refreshed, "models": [_entry(m) for m in models]})
        return 0
    quants = [q for q in CATALOG_QUANTS if q in ("Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "F16")]
    # Columns as wide as their longest cell, so a long license or a 397B-A17B never shifts a row.
    name_w = max([36, *(len(m.name) + 1 for m in models)])
    params_w = max([7, *(len(m.size_label) for m in models)])
    license_w = max([14, *(len(m.license) + 1 for m in models)])
    print(f"{'model':{name_w}} {'params':>{params_w}}  {'released':10}  {'license':{license_w}} "
          + " ".join(f"{q:>7}" for q in quants))
    for m in models:
        sizes = []
        for q in quants:
            f = m.file(q)
            sizes.append(f"{f.size_bytes / 1e9:6.1f}{'~' if f.predicted else ' '}")
        gated = "*" if m.gated else ""
        new = "+" if m.source == "hub" else ""
        print(f"{m.name + new:{name_w}} {m.size_label:>{params_w}}  {m.released[:10]:10}  "
              f"{m.license + gated:{license_w}} " + " ".join(sizes))
    print("\nFile sizes in GB (as the Hub shows them); ~ predicted from the architecture "
          "(--hub reads the real ones). "
          "* the original repo is gated; the GGUF repo is not. + found by a refresh.")
    print(_dates_line(snapshot, refreshed))
    return 0


def _dates() -> tuple[str, str | None]:
    from app.core.models.catalog import last_refreshed, snapshot_date

    return snapshot_date(), last_refreshed()


def _dates_line(snapshot: str, refreshed: str | None) -> str:
    when = _when(refreshed) if refreshed else "never"
    return f"Catalog snapshot of {snapshot}; last refreshed {when}."


def _when(stamp: str) -> str:
    return stamp.replace("T", " ").removesuffix("Z")[:16] + (" UTC" if "T" in stamp else "")


def _refresh(args: argparse.Namespace) -> int:
    from app.core.models.refresh import refresh_catalog

    live = not args.json and sys.stderr.isatty()

    def say(message: str) -> None:
        # Progress overwrites one terminal line; piped output gets the result (or one error) only.
        if live:
            print(f"\r\033[K{message}", end="", file=sys.stderr, flush=True)

    try:
        result = refresh_catalog(progress=say)
    finally:
        if live:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
    snapshot, refreshed = _dates()
    if args.json:
        print_json({**result.to_dict(), "snapshot": snapshot, "last_refreshed": refreshed})
        return 0
    if result.added:
        print(f"Added {len(result.added)} new model{'s' if len(result.added) != 1 else ''}:")
        for e in result.added:
            size = _params(e["params_b"]) + (f" ({_params(e['active_params_b'])} active)"
                                             if e.get("active_params_b") else "")
            print(f"  {e['name']:36} {size:>18}  released {e['released']}  {e['license']:14} from {e['repo']}")
    else:
        print(f"No new models from the {result.labs} watched labs since {result.since}.")
    if result.skipped:
        print(f"Looked at and left out ({len(result.skipped)}):")
        for s in result.skipped[:8]:
            print(f"  {s.repo}: {s.reason}")
        if len(result.skipped) > 8:
            print(f"  … and {len(result.skipped) - 8} more (--json lists them all)")
    print(f"{result.requests} requests, {result.bytes_fetched / 2**20:.1f} MiB read "
          f"({result.header_reads} model headers).")
    print(_dates_line(snapshot, refreshed))
    return 0


def _params(billions: float) -> str:
    if billions >= 1:
        return f"{billions:.1f}".removesuffix(".0") + "B"
    return f"{billions * 1000:.3g}M"


def _entry(m: CatalogModel) -> dict:
    return {"id": m.id, "model": m.model, "repo": m.repo, "params_b": m.params_b,
            "active_params_b": m.active_params_b, "name": m.name,
            "license": m.license, "gated": m.gated, "context": m.context, "released": m.released,
            "strengths": list(m.strengths), "source": m.source, "fetched": m.fetched,
            "superseded_by": m.superseded_by,
            "files": [{"quant": f.quant, "size_bytes": f.size_bytes, "predicted": f.predicted,
                       "filename": f.filename} for f in m.files]}


def _from_hub(model: CatalogModel) -> CatalogModel:
    """`model` with the Hub's sizes; a missing or gated repo keeps its predictions, and a connection
    failure stops the whole listing (raised once, not once per model)."""
    from app.core.models import hub

    try:
        listing = hub.repo_files(model.repo)
    except (NotFoundError, GatedRepoError) as exc:
        print(f"camelid: {model.repo}: {exc} Keeping predicted sizes.", file=sys.stderr)
        return model
    except CamelidError:
        raise
    return with_hub_sizes(model, listing.quants)
