"""Thread count under a competing CPU load: prompt and generation speed at 1 and 2 threads.

llama.cpp's worker threads spin while they wait for each other; when they take
every core and another process wants one, a thread that is descheduled stalls
all the others. This bench measures how prompt processing (n_threads_batch)
and generation (n_threads) hold up at each thread count while 0, 1 or 2 busy
processes (each spinning on one core) compete, so the default can be chosen
from numbers, separately for the two phases.

Each run is a fresh process (load, one prompt, greedy generation); runs
alternate thread counts and loads within each round so that drift hits all
alike. Prompt speed is prompt tokens / time to the first token; generation
speed is tokens after the first / time after the first. A generation that is
still running after GEN_SECONDS is cut there (its speed is what it managed).

Run: .venv/bin/python bench/bench_threads.py [MODEL.gguf] [--rounds N]
(writes its section of docs/BENCHMARKS.md)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import machine_line, summary, table, update_section

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / ".cache" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
THREADS = (1, 2)
LOADS = (0, 1, 2)
ROUNDS = 4
MAX_TOKENS = 64
GEN_SECONDS = 10.0
RUN_TIMEOUT = 60.0
PROMPT = ("You are a helpful assistant. Write a detailed story about a camel crossing the Sahara, with many "
          "characters, places, markets, storms, oases and the stars at night. ") * 6

WORKER = r"""
import json, sys, time
sys.path.insert(0, sys.argv[4])
from app.core.machine import llama_cpp_module
llama_cpp = llama_cpp_module()
path, threads, max_tokens, gen_seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[5])
prompt = sys.stdin.read()
llm = llama_cpp.Llama(model_path=path, n_ctx=1024, n_threads=threads, n_threads_batch=threads,
                      n_batch=512, verbose=False)
tokens = llm.tokenize(prompt.encode())
start = time.perf_counter()
first = last = None
n = 0
for _tok in llm.generate(tokens, top_k=1, temp=0.0, reset=True):
    now = time.perf_counter()
    if first is None:
        first = now
    last = now
    n += 1
    if n >= max_tokens or now - first > gen_seconds:
        break
print(json.dumps({"prompt_tokens": len(tokens), "first": first - start, "tokens": n,
                  "gen": (n - 1) / (last - first) if n > 1 and last > first else 0.0,
                  "cut": n < max_tokens}))
"""


def spinners(n: int) -> list[subprocess.Popen[bytes]]:
    """`n` busy processes, each spinning on one core."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def run_once(model: Path, threads: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", WORKER, str(model), str(threads), str(MAX_TOKENS), str(ROOT), str(GEN_SECONDS)],
        input=PROMPT, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=True,
        env=os.environ | {"PYTHONPATH": str(ROOT)})
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["pp"] = result["prompt_tokens"] / result["first"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    # A timeout's SIGTERM must still end the busy processes (the `finally` below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    from app.core.chat.engine import default_batch_threads, default_threads
    from app.core.machine import probe_cpu

    cpu = probe_cpu()
    results: dict[tuple[int, int], list[dict[str, Any]]] = {(load, t): [] for load in LOADS for t in THREADS}
    began = time.perf_counter()
    for r in range(args.rounds):
        loads = LOADS if r % 2 == 0 else tuple(reversed(LOADS))
        for load in loads:
            busy = spinners(load)
            try:
                time.sleep(0.5)
                order = THREADS if (r + load) % 2 == 0 else tuple(reversed(THREADS))
                for t in order:
                    others = os.getloadavg()[0]
                    res = run_once(args.model, t)
                    res["loadavg"] = others
                    results[(load, t)].append(res)
                    print(f"round {r + 1} load {load} threads {t}: prompt {res['pp']:.0f} tok/s, "
                          f"generation {res['gen']:.1f} tok/s{' (cut)' if res['cut'] else ''}", flush=True)
            finally:
                for p in busy:
                    p.kill()
                    p.wait()
    wall = time.perf_counter() - began

    def cell(samples: list[float]) -> str:
        med, spread = summary(samples)
        return f"{med:.1f} (±{spread / 2:.1f})" if med < 100 else f"{med:.0f} (±{spread / 2:.0f})"

    rows = []
    for load in LOADS:
        row: list[object] = [{0: "none", 1: "1 busy process", 2: "2 busy processes"}[load]]
        row += [cell([x["pp"] for x in results[(load, t)]]) for t in THREADS]
        row += [cell([x["gen"] for x in results[(load, t)]]) for t in THREADS]
        rows.append(row)
    cut = sum(x["cut"] for v in results.values() for x in v)
    quiet = [x["loadavg"] for t in THREADS for x in results[(0, t)]]
    gen_default, batch_default = default_threads(cpu), default_batch_threads(cpu)
    body = f"""Script: `bench/bench_threads.py` ({args.rounds} rounds, each run a fresh process; thread counts and
loads alternate; prompt of {results[(0, 1)][0]["prompt_tokens"]} tokens, greedy generation of up to {MAX_TOKENS}
tokens, cut after {GEN_SECONDS:.0f} s). A busy process spins on one core (`while True: pass`). Model:
{args.model.name}. Median tokens/s (± half the spread). {cut} run(s) were cut at {GEN_SECONDS:.0f} s. Wall
{wall:.0f} s. The machine is shared: before the runs with no competing load of ours, the 1-minute load
average was {min(quiet):.1f}-{max(quiet):.1f}, so "none" means other people's work only.

{machine_line()}

{table(["competing load", "prompt, 1 thread", "prompt, 2 threads", "generation, 1 thread",
        "generation, 2 threads"], rows)}

Before this measurement the default was every physical core (2 here) for both phases. The defaults on this
machine now (`app/core/chat/engine.py`): generation `n_threads` = {gen_default} (`default_threads`), prompt
`n_threads_batch` = {batch_default} (`default_batch_threads`); the comment next to them says why.
"""
    update_section("threads", "Threads under a competing CPU load", body)
    print(body)


if __name__ == "__main__":
    main()
