"""Chat speed through Camelid's engine (store writing included) vs bare llama-cpp-python.

Same model, prompt, sampling settings and seed; the runs alternate so that
machine noise hits both sides alike. Every run starts from an empty KV cache
so time to first token includes the whole prompt evaluation. Speeds are
wall-clock for all sides (tokens after the first / time after the first).
Also measures how long a reply takes to end after Stop, while generating and
while evaluating a long prompt.

Then the llama.cpp build itself: the portable build every target ships (runtime
CPU dispatch) against a native build (GGML_NATIVE=ON, this CPU only) on the same
bare llama-cpp-python work, each in its own virtual environment, alternating.

Run: .venv/bin/python bench/bench_engine.py [MODEL.gguf] [--builds-only]
(writes its sections of docs/BENCHMARKS.md; the native build is made once, ~14 minutes)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import machine_line, summary, table, update_section

ROUNDS = 7
MAX_TOKENS = 200
N_CTX = 2048
PROMPT = [{"role": "system", "content": "You are a helpful assistant."},
          {"role": "user", "content": "Write a detailed story about a camel crossing the Sahara, "
                                      "with many characters and places."}]
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / ".cache" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


class Timing:
    """First-token and last-token clock for one run."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first: float | None = None
        self.last = self.start
        self.chunks = 0

    def seen(self, _text: str = "") -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        self.last = now
        self.chunks += 1

    def result(self, tokens: int) -> tuple[float, float]:
        """(ttft seconds, tokens/s over the tokens after the first)."""
        assert self.first is not None
        span = self.last - self.first
        return self.first - self.start, (tokens - 1) / span if span > 0 else float("nan")


ROOT = Path(__file__).resolve().parent.parent
NATIVE_VENV = ROOT / ".cache" / "venv-native"
BUILD_ROUNDS = 5


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    model = Path(args[0]) if args else Path(os.environ.get("CAMELID_TEST_MODEL", DEFAULT_MODEL))
    if "--builds-only" not in sys.argv:
        engine_section(model)
    build_section(model)


def native_python() -> Path:
    """A venv with the native llama.cpp build (and Camelid, for its backend loader); made once."""
    python = NATIVE_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(NATIVE_VENV)], check=True)
    subprocess.run([str(python), str(ROOT / "scripts" / "llama_build.py"), "--python", str(python),
                    "--build", "native"], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "-e", str(ROOT)], check=True)
    return python


def build_section(model: Path) -> None:
    configs = {
        "portable (runtime dispatch)": (Path(sys.executable), {}),
        "portable, AVX2 code forced (CAMELID_CPU_VARIANT=haswell)": (Path(sys.executable),
                                                                     {"CAMELID_CPU_VARIANT": "haswell"}),
        "native (GGML_NATIVE=ON, this CPU only)": (native_python(), {}),
    }
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    for _ in range(BUILD_ROUNDS):
        for name, (python, env) in configs.items():
            out = subprocess.run([str(python), str(ROOT / "bench" / "llama_speed.py"), str(model), "3"],
                                 capture_output=True, text=True, check=True, timeout=600,
                                 env={**os.environ, **env}).stdout
            samples[name].append(json.loads(out.strip().splitlines()[-1]))
    rows, med = [], {}
    for name, runs in samples.items():
        pp_m, pp_s = summary([r["prompt_tps"] for r in runs])
        tg_m, tg_s = summary([r["gen_tps"] for r in runs])
        med[name] = (pp_m, tg_m)
        variant = runs[0]["cpu_variant"] or "linked in"
        rows.append((name, variant, f"{pp_m:.0f} ± {pp_s / 2:.0f}", f"{tg_m:.1f} ± {tg_s / 2:.1f}"))
    portable, native = med["portable (runtime dispatch)"], med["native (GGML_NATIVE=ON, this CPU only)"]
    body = (
        f"`bench/bench_engine.py` with `bench/llama_speed.py`: bare llama-cpp-python on {model.name}, "
        f"{samples['portable (runtime dispatch)'][0]['prompt_tokens']}-token prompt then "
        f"{samples['portable (runtime dispatch)'][0]['generated']} greedy tokens, n_ctx 2048, 2 threads, "
        f"wall clock; each run a fresh process, {BUILD_ROUNDS} alternating rounds of 3 runs (medians; "
        f"± is half the spread). {machine_line()}\n\n"
        + table(("llama.cpp build", "CPU code", "prompt tokens/s", "generation tokens/s"), rows)
        + f"\n\n**Ratio portable / native: prompt {portable[0] / native[0]:.3f}, generation "
          f"{portable[1] / native[1]:.3f}** (target: within 5%). The portable build is the one every "
          "target ships; the AVX2 row is what an AVX2-only laptop runs from the same files.")
    print(body)
    update_section("build", "llama.cpp build: portable (runtime CPU dispatch) vs native", body)


def engine_section(model: Path) -> None:
    os.environ["CAMELID_HOME"] = tempfile.mkdtemp(prefix="camelid-bench-")

    from app.core.machine import llama_cpp_module

    Llama = llama_cpp_module().Llama  # a dynamic-backend build needs its backends loaded first

    from app.core.chat.chats import ChatStore
    from app.core.chat.conversation import send_message
    from app.core.chat.engine import Engine, LoadParams, default_threads
    from app.core.chat.sampling import PRESETS

    sampling = PRESETS["balanced"].with_(seed=42, max_tokens=MAX_TOKENS)
    params = LoadParams(n_ctx=N_CTX)
    engine = Engine()
    engine.load(model, params)
    store = ChatStore()
    bare = Llama(model_path=str(model), **params.llama_kwargs())

    prompt_len = len(bare.tokenize(engine.render(PROMPT).encode(), add_bos=False, special=True))

    def camelid_run() -> tuple[float, float, int]:
        engine.clear_cache()
        conv = store.create_conversation(model=model.name, system_prompt=PROMPT[0]["content"])
        timing = Timing()
        reply, _ = send_message(engine, store, conv.id, PROMPT[1]["content"], sampling, on_text=timing.seen)
        ttft, tps = timing.result(reply.stats.completion_tokens)
        return ttft, tps, reply.stats.completion_tokens

    def bare_chat_run() -> tuple[float, float, int]:
        bare.reset()
        timing = Timing()
        for chunk in bare.create_chat_completion(
                PROMPT, stream=True, temperature=sampling.temperature, top_p=sampling.top_p,
                top_k=sampling.top_k, min_p=sampling.min_p, repeat_penalty=sampling.repeat_penalty,
                seed=sampling.seed, max_tokens=MAX_TOKENS):
            if chunk["choices"][0]["delta"].get("content"):
                timing.seen()
        # Chunks may hold several tokens (text held back while it could start a
        # stop string); the KV cache says how many were generated.
        tokens = bare.n_tokens - prompt_len + 1
        ttft, tps = timing.result(tokens)
        return ttft, tps, tokens

    def bare_generate_run() -> tuple[float, float, int]:
        # The leanest loop llama-cpp-python allows: tokens in, pieces out.
        bare.reset()
        timing = Timing()
        prompt = bare.tokenize(engine.render(PROMPT).encode(), add_bos=False, special=True)
        bare.set_seed(sampling.seed)
        tokens = 0
        for token in bare.generate(prompt, top_k=sampling.top_k, top_p=sampling.top_p,
                                   min_p=sampling.min_p, temp=sampling.temperature,
                                   repeat_penalty=sampling.repeat_penalty):
            if token == bare.token_eos():
                break
            bare.detokenize([token])
            tokens += 1
            timing.seen()
            if tokens >= MAX_TOKENS:
                break
        ttft, tps = timing.result(tokens)
        return ttft, tps, tokens

    runs = {"camelid": camelid_run, "bare_chat": bare_chat_run, "bare_generate": bare_generate_run}
    for fn in runs.values():  # warm caches, page in the model
        fn()
    samples: dict[str, list[tuple[float, float, int]]] = {name: [] for name in runs}
    for _ in range(ROUNDS):
        for name, fn in runs.items():
            samples[name].append(fn())

    stop_generating, stop_prompt = stop_latency(engine, sampling)
    bare.close()
    store.close()
    engine.unload()

    rows = []
    med: dict[str, tuple[float, float]] = {}
    labels = {"camelid": "Camelid engine + chat store (send_message)",
              "bare_chat": "bare llama-cpp-python create_chat_completion(stream=True)",
              "bare_generate": "bare llama-cpp-python generate() + detokenize loop"}
    for name, runs_ in samples.items():
        ttft_m, _ = summary([r[0] for r in runs_])
        tps_m, tps_s = summary([r[1] for r in runs_])
        med[name] = (ttft_m, tps_m)
        tokens = statistics.median(r[2] for r in runs_)
        rows.append((labels[name], f"{tps_m:.1f} ± {tps_s / 2:.1f}", f"{ttft_m * 1000:.0f} ms",
                     f"{tokens:.0f}"))
    ratio_chat = med["camelid"][1] / med["bare_chat"][1]
    ratio_gen = med["camelid"][1] / med["bare_generate"][1]
    stop_rows = [("while generating", f"{statistics.median(stop_generating) * 1000:.1f} ms",
                  f"{max(stop_generating) * 1000:.1f} ms"),
                 ("while evaluating a ~1,500-token prompt", f"{statistics.median(stop_prompt) * 1000:.1f} ms",
                  f"{max(stop_prompt) * 1000:.1f} ms")]
    body = (
        f"`bench/bench_engine.py`: {model.name}, n_ctx {N_CTX}, {default_threads()} threads, "
        f"`balanced` preset, seed 42, up to {MAX_TOKENS} tokens, empty KV cache each run, "
        f"{ROUNDS} alternating rounds (medians; ± is half the spread). {machine_line()}\n\n"
        + table(("path", "tokens/s", "time to first token", "tokens"), rows)
        + f"\n\n**Ratio (Camelid / bare create_chat_completion): {ratio_chat:.3f}**; "
          f"Camelid / bare generate() loop: {ratio_gen:.3f}. Target >= 0.97. "
          "Camelid streams through its own loop over `Llama.generate` (EOG check and "
          "piece decoding in one ctypes call each) while the store saves the reply once a second.\n\n"
        + "Stop latency (Stop pressed on another thread until the reply call returns, "
          f"{len(stop_generating)} tries each):\n\n"
        + table(("stopped", "median", "max"), stop_rows)
        + "\n\nTarget: under 100 ms on CPU. During prompt evaluation llama.cpp's abort callback "
          "(polled before every graph node, without the GIL) ends the decode.")
    print(body)
    update_section("engine", "Chat engine speed", body)


def stop_latency(engine: Any, sampling: Any) -> tuple[list[float], list[float]]:
    """Seconds from stop() to chat() returning: mid-generation and mid-prompt."""
    generating: list[float] = []
    prompt: list[float] = []
    for _ in range(5):
        engine.clear_cache()
        latency = _stop_after_tokens(engine, sampling, 20)
        if latency is not None:
            generating.append(latency)
        engine.clear_cache()
        latency = _stop_during_prompt(engine, sampling, 0.3)
        if latency is not None:
            prompt.append(latency)
    return generating, prompt


def _stop_after_tokens(engine: Any, sampling: Any, tokens: int) -> float | None:
    pressed: list[float] = []
    count = [0]

    def press() -> None:
        pressed.append(time.perf_counter())
        engine.stop()

    def on_text(_t: str) -> None:
        count[0] += 1
        if count[0] == tokens:
            # From another thread, as the GUI's Stop button would.
            threading.Thread(target=press).start()

    engine.chat([PROMPT[1]], sampling.with_(max_tokens=400), on_text=on_text)
    return time.perf_counter() - pressed[0] if pressed else None


def _stop_during_prompt(engine: Any, sampling: Any, after_s: float) -> float | None:
    pressed: list[float] = []

    def press() -> None:
        pressed.append(time.perf_counter())
        engine.stop()

    timer = threading.Timer(after_s, press)
    timer.start()
    reply = engine.chat([{"role": "user", "content": "Summarise this: " + "the camel walks on sand. " * 250}],
                        sampling.with_(max_tokens=50))
    done = time.perf_counter()
    timer.join()
    # Count it only if the stop really landed in the prompt evaluation.
    return done - pressed[0] if pressed and reply.stats.ttft_s is None else None


if __name__ == "__main__":
    main()
