"""Helpers shared by sub-commands: --json output, hardware flags, byte sizes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from app.core.machine import HardwareProfile
from app.core.units import human_bytes

__all__ = [
    "add_hardware_flags",
    "add_json_flag",
    "at_least",
    "file_size",
    "fit_words",
    "hardware_from_args",
    "human_bytes",
    "print_json",
    "sold_as",
]

#: A plan's verdict in a table column: the user's words, not the code's (full_gpu, no_fit).
FIT_WORDS = {"full_gpu": "fits on GPU", "partial": "fits, GPU+RAM", "cpu": "fits, CPU", "no_fit": "too big"}


def file_size(n: int | None) -> str:
    """A model file's size as the Hub and the recommendations say it (decimal: 4.9 GB, 98.3 MB).

    Memory (plans, hardware) stays in binary units (`human_bytes`); machines are "24 GB" as sold.
    """
    if n is None:
        return "unknown"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def sold_as(n: int) -> str:
    """Memory as the box says it, the way the recommendations name it: 23.5 GiB of RAM is '24 GB'."""
    return f"{n / 2**30:.0f} GB"


def fit_words(verdict: str | None, *, unknown: str = "not known") -> str:
    """`verdict` as a table cell; `unknown` when there is none (header unreadable, gated...)."""
    return FIT_WORDS.get(verdict or "", unknown)


def at_least(low: float, kind: type = int) -> Any:
    """An argparse type: a number of `kind` no smaller than `low` ("--ctx-cap 0" is refused at once)."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if not value >= low:  # also refuses NaN
            raise argparse.ArgumentTypeError(f"must be at least {low:g} (got {text})")
        return value
    parse.__name__ = "number"  # argparse names the type in its own messages
    return parse


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def add_hardware_flags(parser: argparse.ArgumentParser) -> None:
    """Flags that describe another machine; shared by hw, plan and recommend."""
    group = parser.add_argument_group(
        "simulated hardware", "plan for another machine instead of this one (sizes in GB as sold)"
    )
    group.add_argument("--preset", metavar="NAME", help="a named machine (see `camelid hw --presets`)")
    group.add_argument("--hardware", metavar="FILE.json", type=Path,
                       help="a machine described in JSON (the format of `camelid hw --json`)")
    group.add_argument("--vram", metavar="GB", type=float, action="append",
                       help="a GPU with this much memory; repeat for several GPUs")
    group.add_argument("--ram", metavar="GB", type=float, help="system RAM")
    group.add_argument("--unified", action="store_true",
                       help="Apple Silicon style unified memory (the GPU shares --ram)")
    group.add_argument("--gpu", metavar="NAME", help='GPU model, e.g. "RTX 4070" (VRAM looked up if known)')
    group.add_argument("--rpc", metavar="HOST:PORT", action="append", default=[],
                       help="also use the memory of the machine running `camelid worker` there "
                            "(repeatable; probed first)")


def hardware_from_args(args: argparse.Namespace) -> HardwareProfile:
    """The machine the flags describe (this one by default), plus the --rpc workers' devices."""
    hardware = _local_hardware(args)
    workers = getattr(args, "rpc", None) or []
    if workers:
        from app.core.cluster.machines import with_workers

        hardware = with_workers(hardware, workers)
    return hardware


def _local_hardware(args: argparse.Namespace) -> HardwareProfile:
    from app import paths
    from app.core.machine import detect, simulate

    return simulate(
        detect=lambda: detect(models_dir=paths.models_dir()),
        preset=args.preset.strip().lower() if args.preset else None,  # RTX-4090 means rtx-4090
        hardware_file=args.hardware,
        vram_gb=args.vram,
        ram_gb=args.ram,
        unified=args.unified,
        gpu_name=args.gpu,
    )
