"""How numbers read on screen: byte sizes, speeds, durations."""

from __future__ import annotations

from app.core.units import human_bytes


def size(n: int | float | None) -> str:
    """1536 -> '1.5 KiB' (the same wording as the command line)."""
    return human_bytes(n)


def rate(bytes_per_s: float | None) -> str:
    return "…" if not bytes_per_s else f"{size(bytes_per_s)}/s"


def duration(seconds: float | None) -> str:
    """72 -> '1 min 12 s'; None -> '…' (not known yet)."""
    if seconds is None or seconds < 0:
        return "…"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
