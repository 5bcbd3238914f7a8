"""How byte counts read in sentences: one formatter for the CLI, the GUI and core messages."""

from __future__ import annotations


def human_bytes(n: int | float | None) -> str:
    """1536 -> '1.5 KiB'; binary units, as memory is sold and reported by tools."""
    if n is None:
        return "unknown"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
