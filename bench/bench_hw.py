"""Hardware detection time: Camelid's full detect() vs the raw psutil reading.

Run: .venv/bin/python bench/bench_hw.py   (writes its section of docs/BENCHMARKS.md)
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import machine_line, summary, table, update_section

ROUNDS = 7


def cold(code: str) -> float:
    """Seconds a fresh interpreter spends in `code` (imports included)."""
    wrapped = f"import time; t=time.perf_counter(); {code}; print(time.perf_counter()-t)"
    out = subprocess.run([sys.executable, "-c", wrapped], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from app.core.machine import detect

    detect()  # warm file caches once
    warm = []
    for _ in range(ROUNDS):
        t = time.perf_counter()
        detect()
        warm.append(time.perf_counter() - t)
    cold_full = [cold("from app.core.machine import detect; detect()") for _ in range(ROUNDS)]
    cold_psutil = [cold("import psutil; psutil.virtual_memory(); psutil.cpu_count(False)")
                   for _ in range(ROUNDS)]
    cold_nobackend = [cold("from app.core.machine import detect; detect(with_backend=False)")
                      for _ in range(ROUNDS)]
    rows = []
    for label, samples in (("detect(), warm process", warm),
                           ("detect(), fresh process (imports llama_cpp)", cold_full),
                           ("detect() without the llama.cpp probe, fresh process", cold_nobackend),
                           ("psutil RAM + cores only, fresh process", cold_psutil)):
        median, spread = summary(samples)
        rows.append((label, f"{median * 1000:.1f} ms", f"{spread * 1000:.1f} ms"))
    body = (f"`bench/bench_hw.py`, {ROUNDS} rounds each. {machine_line()}\n\n"
            + table(("what", "median", "spread"), rows)
            + "\n\nTarget: under 300 ms. Most of a fresh detect() is importing llama_cpp "
              "(loading libllama), which the app needs anyway to chat.")
    print(body)
    update_section("hw", "Hardware detection", body)


if __name__ == "__main__":
    main()
