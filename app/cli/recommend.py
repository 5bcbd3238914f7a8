"""`camelid recommend`: the best catalog models for this (or a simulated) machine, and why."""

from __future__ import annotations

import argparse
from typing import Any

from app.cli.common import (
    add_hardware_flags,
    add_json_flag,
    at_least,
    hardware_from_args,
    print_json,
)
from app.core.errors import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    from app.core.models import USE_CASES

    cases = ", ".join(f"{u.name} ({u.rule})" for u in USE_CASES.values())
    parser = subparsers.add_parser(
        "recommend", help="recommend the best models for this machine",
        description="Rank the curated catalog for this machine: the biggest model that fits at a sane "
                    f"quantization, planned at an 8k context. Use cases: {cases}.")
    add_json_flag(parser)
    parser.add_argument("--use-case", default="chat", choices=list(USE_CASES),
                        help="what the model is for (default: chat)")
    parser.add_argument("--ctx", type=int, metavar="N",
                        help="context length to plan for (default: 8192)")
    parser.add_argument("--top", type=int, default=5, metavar="N",
                        help="how many picks to show (default: 5; 0 for all)")
    parser.add_argument("--min-speed", type=at_least(0, float), metavar="TOK/S",
                        help="tokens/s under which a pick is marked slow (default: per use case)")
    add_hardware_flags(parser)
    parser.set_defaults(run=run)


def _pooled_words(hardware: Any, args: argparse.Namespace, best: Any) -> None:
    """What the added machines change: the best pick with them against this machine alone."""
    from dataclasses import replace

    from app.core.cluster.machines import endpoints_of
    from app.core.fit import LoadChoices
    from app.core.models import recommend

    alone = recommend(replace(hardware, remote=[]), args.use_case, n_ctx=args.ctx, min_speed=args.min_speed,
                      choices=LoadChoices.current(), limit=1)
    machines = endpoints_of(hardware)
    name = f"{best.model.name} {best.quant}"
    count = f"the {len(machines)} machines you added" if len(machines) > 1 else "the machine you added"
    if not alone:
        print(f"\nWith {count}, you can run {name}; this machine alone fits nothing in the catalog.")
    elif (alone[0].model.id, alone[0].quant) != (best.model.id, best.quant):
        print(f"\nWith {count}, you can run {name}; this machine alone would get "
              f"{alone[0].model.name} {alone[0].quant}.")
    else:
        verb = "do" if len(machines) > 1 else "does"
        print(f"\n{count[0].upper() + count[1:]} {verb} not change the best pick here.")
    print("(Layers on other machines are as fast as those machines' memory allows, plus one network round "
          "trip per machine for every token.)")


def run(args: argparse.Namespace) -> int:
    from app.core.fit import LoadChoices
    from app.core.models import (
        USE_CASES,
        catalog_freshness,
        context_words,
        recommend,
        released_words,
    )

    if args.top < 0:
        raise UsageError("--top cannot be negative.", "Give --top 5, or --top 0 for every pick.")
    hardware = hardware_from_args(args)
    # Planned with the load settings the engine will use (flash attention, KV cache type).
    picks = recommend(hardware, args.use_case, n_ctx=args.ctx, min_speed=args.min_speed,
                      choices=LoadChoices.current(), limit=args.top or None)
    shown = picks if args.top == 0 else picks[: args.top]
    if args.json:
        print_json({"hardware": hardware.to_dict(), "use_case": args.use_case,
                    "picks": [p.to_dict() for p in shown]})
        return 0
    where = f"the simulated machine ({hardware.simulated})" if hardware.simulated else "this machine"
    case = USE_CASES[args.use_case]
    if not picks:
        print(f"Nothing in the catalog fits {where} at this context. "
              "Try a shorter context (--ctx 2048) or close other apps to free memory.")
        return 1
    print(f"Best models for {case.label} on {where}, judged at {context_words(picks[0].n_ctx)}:")
    for pick in shown:
        layers = f"{pick.n_gpu_layers}/{pick.model.arch.n_layer + 1} layers on GPU"
        where_words = {"full_gpu": "all on GPU", "partial": layers, "cpu": "CPU only"}.get(
            pick.verdict, pick.verdict)
        flag = "  [slow]" if pick.slow else ""
        print()
        print(f"{pick.rank:>2}. {pick.model.name} {pick.quant}  {pick.file.size_bytes / 1e9:.1f} GB  "
              f"{where_words}  ~{pick.tokens_per_s:.0f} tok/s  quality {pick.quality:.0f}{flag}")
        print(f"    released {released_words(pick.model.released)}"
              + ("  (found by a catalog refresh)" if pick.model.source == "hub" else ""))
        print(f"    {pick.why}")
        print(f"    camelid download {pick.model.repo}:{pick.quant}")
    if hardware.remote:
        _pooled_words(hardware, args, picks[0])
    if args.top:
        print("\nEvery model that fits, with --top 0.")
    print(f"\n{catalog_freshness()}")
    return 0
