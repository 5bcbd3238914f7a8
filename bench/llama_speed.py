"""Bare llama-cpp-python speed with whichever llama.cpp build the running Python has.

Run by bench/bench_engine.py once per build (portable, native) in that build's
own virtual environment; prints one JSON line: prompt and generation tokens/s,
wall clock, medians of several runs, and the CPU variant llama.cpp used.

Run: PYTHON bench/llama_speed.py MODEL.gguf [RUNS]
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPT = "Summarise the following notes about camels. " + "Camels store fat in their humps and cross deserts. " * 40
GENERATE = 128


def main() -> None:
    model = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    from app.core.machine import backends

    llama_cpp = backends.llama_cpp_module()  # loads a portable build's backends; a native one has them
    llm = llama_cpp.Llama(model_path=model, n_ctx=2048, n_threads=2, n_batch=512, verbose=False)
    tokens = llm.tokenize(PROMPT.encode(), add_bos=True)
    prompt_rates, gen_rates = [], []
    for i in range(runs + 1):  # the first run warms the page cache and the kernels
        llm.reset()
        started = time.perf_counter()
        llm.eval(tokens)
        evaluated = time.perf_counter()
        n = 0
        last = evaluated
        for _token in llm.generate([], temp=0.0, top_k=1, reset=False):
            n += 1
            last = time.perf_counter()
            if n >= GENERATE:
                break
        if i:
            prompt_rates.append(len(tokens) / (evaluated - started))
            gen_rates.append(n / (last - evaluated))
    state = backends.state()
    print(json.dumps({
        "prompt_tokens": len(tokens), "generated": GENERATE,
        "prompt_tps": statistics.median(prompt_rates), "gen_tps": statistics.median(gen_rates),
        "cpu_variant": state.cpu_variant if state else None,
        "dynamic": bool(state and state.dynamic),
    }))
    llm.close()


if __name__ == "__main__":
    main()
