"""Writing benchmark results into docs/BENCHMARKS.md.

Each bench script owns one section, delimited by HTML comments, and replaces
only that section, so scripts can be run one at a time.
"""

from __future__ import annotations

import platform
import re
import statistics
from collections.abc import Sequence
from pathlib import Path

import psutil

DOC = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"
HEADER = """# Benchmarks

Every number here is produced by a script in `bench/` (run them all with
`make bench`); each section says which script and on what machine. Ratios
compare Camelid with the raw library doing the same work on the same machine.
Timings never appear in tests.
"""


def machine_line() -> str:
    from app.core.machine.probes import probe_cpu

    cpu = probe_cpu()
    ram = psutil.virtual_memory().total / 1024**3
    return (f"Machine: {cpu.name}, {cpu.cores_physical} cores / {cpu.cores_logical} threads, "
            f"{ram:.0f} GiB RAM, {platform.system()} {platform.machine()}, Python {platform.python_version()}.")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def summary(samples: Sequence[float]) -> tuple[float, float]:
    """Median and spread (max - min) of repeated timings."""
    return statistics.median(samples), max(samples) - min(samples)


def update_section(name: str, title: str, body: str) -> None:
    """Replace (or append) the section `name` of docs/BENCHMARKS.md."""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else HEADER
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n## {title}\n\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text, encoding="utf-8")
