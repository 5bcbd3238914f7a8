"""`camelid models` (the library) and `camelid rm NAME`."""

from __future__ import annotations

import argparse

from app.cli.common import (
    add_hardware_flags,
    add_json_flag,
    file_size,
    fit_words,
    hardware_from_args,
    print_json,
)
from app.core.models import library

#: Where a model was found, as the table says it ("" for Camelid's own folder).
_WHERE = {"camelid": "Camelid", "lmstudio": "LM Studio", "hf-cache": "HF cache", "ollama": "Ollama",
          "folder": "your added folders"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list the models on disk",
                                   description="Models in Camelid's folder, plus GGUFs found in the Hugging "
                                               "Face cache and LM Studio's folder (read-only).")
    add_json_flag(parser)
    parser.add_argument("--source", action="append", choices=library.SOURCES,
                        help="only these places (repeatable)")
    add_hardware_flags(parser)
    parser.set_defaults(run=run_models)

    rm = subparsers.add_parser("rm", help="delete a model from Camelid's folder",
                               description="Delete a downloaded model (every shard) from Camelid's models folder.")
    add_json_flag(rm)
    rm.add_argument("name", help="a name from `camelid models`")
    rm.set_defaults(run=run_rm)


def run_models(args: argparse.Namespace) -> int:
    from app import paths

    models = library.list_models(hardware=hardware_from_args(args), sources=args.source or library.SOURCES)
    if args.json:
        print_json([m.to_dict() for m in models])
        return 0
    if not models:
        print(f"{_nothing_in(args.source or library.SOURCES, paths.models_dir())} "
              "Find one with `camelid search`.")
        return 0
    width = max(len("model"), *(len(m.name) for m in models))
    print(f"{'model':{width}}  {'size':>10}  {'fit here':14}  found in")
    for m in models:
        note = f"  ({m.problem})" if m.problem else ""
        print(f"{m.name:{width}}  {file_size(m.size_bytes):>10}  {fit_words(m.verdict):14}  "
              f"{_WHERE.get(m.source, m.source)}{note}")
    return 0


def _nothing_in(sources: list[str] | tuple[str, ...], models_dir: object) -> str:
    """Which places were looked in, in words, for the "no models" sentence."""
    if list(sources) == ["camelid"]:
        return f"No models yet in {models_dir}."
    places = [f"Camelid's folder ({models_dir})" if s == "camelid" else _WHERE.get(s, s) for s in sources]
    if len(places) > 1:
        return f"No models found in {', '.join(places[:-1])} or {places[-1]}."
    return f"No models found in {places[0]}."


def run_rm(args: argparse.Namespace) -> int:
    model = library.delete_model(args.name)
    if args.json:
        print_json({"deleted": [str(f) for f in model.files], "bytes": model.size_bytes})
    else:
        print(f"Deleted {model.name} ({file_size(model.size_bytes)}).")
    return 0
