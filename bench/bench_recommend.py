"""Recommender: time to rank the whole catalog, and the picks per hardware preset.

1. Time of `recommend(hardware, use_case)` over the 35-model catalog:
   - cold: empty caches, as the first call in a process (every synthetic header
     is predicted with llama.cpp's type rules, every plan is made);
   - new machine: headers already predicted, plans not (the GUI after
     changing the simulated hardware);
   - warm: the same machine again with another use case (plans reused).
   Next to it, the brute force: `plan_memory` with its own layer search for every
   catalog model at every quant (350 plans), headers cached for both.
2. The top three picks for chat on every preset, and the best pick per use case.
3. A catalog refresh of N new repos on the loopback Hub: requests by kind and bytes (`--refresh` runs
   only this part).

Run: .venv/bin/python bench/bench_recommend.py [--refresh]   (writes its sections of docs/BENCHMARKS.md)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import machine_line, summary, table, update_section

ROUNDS = 5
TIMED_PRESETS = ["rtx-4090", "rtx-3060-12gb", "gtx-1650-4gb", "m3-pro-36gb", "workstation-64gb-cpu"]


def _clear(*, headers: bool) -> None:
    # The caches are module-private; a benchmark of cold starts has to empty them.
    import importlib

    catalog = importlib.import_module("app.core.models.catalog")
    recommend = importlib.import_module("app.core.models.recommend")  # the package exports a function of that name
    recommend._FITS.clear()
    if headers:
        catalog._METAS.clear()
        catalog._SIZES.clear()
        catalog._HEADER_METAS.clear()
        catalog._default_catalog.cache_clear()


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def timing_rows() -> tuple[list[list[str]], dict[str, float]]:
    from app.core.fit.memory import plan_memory
    from app.core.machine.simulate import preset_profile
    from app.core.models.catalog import CATALOG_QUANTS, load_catalog
    from app.core.models.recommend import recommend

    catalog = load_catalog()
    rows, medians = [], {}
    for preset in TIMED_PRESETS:
        hardware = preset_profile(preset)
        cold, cold5, new, warm, brute = [], [], [], [], []
        for _ in range(ROUNDS):
            _clear(headers=True)
            cold5.append(_time(lambda hw=hardware: recommend(hw, "chat", limit=5)))
            _clear(headers=True)
            cold.append(_time(lambda hw=hardware: recommend(hw, "chat")))
            _clear(headers=False)
            new.append(_time(lambda hw=hardware: recommend(hw, "chat")))
            warm.append(_time(lambda hw=hardware: recommend(hw, "code")))
        for _ in range(2):
            brute.append(_time(lambda hw=hardware: [
                plan_memory(m.meta(q), hw, n_ctx=8192, improvements=False)
                for m in catalog for q in CATALOG_QUANTS]))
        c5, c, n, w, b = (summary(x) for x in (cold5, cold, new, warm, brute))
        medians[preset] = n[0]
        medians[f"{preset} cold top 5"] = c5[0]
        rows.append([preset, f"{c5[0]:.0f} ± {c5[1]:.0f}", f"{c[0]:.0f} ± {c[1]:.0f}", f"{n[0]:.0f} ± {n[1]:.0f}",
                     f"{w[0]:.1f} ± {w[1]:.1f}", f"{b[0]:.0f}", f"{b[0] / n[0]:.1f}x"])
    return rows, medians


def _cell(pick) -> str:
    place = {"full_gpu": "GPU", "partial": f"{pick.n_gpu_layers} layers on GPU", "cpu": "CPU"}[pick.verdict]
    slow = ", slow" if pick.slow else ""
    return f"{pick.model.name} {pick.quant} ({place}, {pick.tokens_per_s:.0f} tok/s{slow})"


def pick_tables() -> tuple[list[list[str]], list[list[str]]]:
    from app.core.machine.simulate import preset_names, preset_profile
    from app.core.models.recommend import USE_CASES, recommend

    top3, per_case = [], []
    for preset in preset_names():
        hardware = preset_profile(preset)
        picks = recommend(hardware, "chat")
        top3.append([preset, *(_cell(p) for p in picks[:3])])
        per_case.append([preset, *(_cell(recommend(hardware, u)[0]) for u in USE_CASES if u != "chat")])
    return top3, per_case


def main() -> None:
    from app.core.models.catalog import CATALOG_QUANTS, load_catalog
    from app.core.models.recommend import USE_CASES

    n_models = len(load_catalog(include_user=False))
    timing, medians = timing_rows()
    top3, per_case = pick_tables()
    worst = max(v for k, v in medians.items() if "cold" not in k)
    cold5 = {k.split()[0]: v for k, v in medians.items() if "cold top 5" in k}
    body = "\n\n".join([
        "`bench/bench_recommend.py`. " + machine_line(),
        f"Time to rank the catalog ({n_models} models x {len(CATALOG_QUANTS)} quants), ms, median ± spread of "
        f"{ROUNDS} runs. *Cold, top 5*: empty caches, the first call in a process, asking for the five best "
        "(`camelid recommend`'s default: models are planned in order of their optimistic bound and the rest "
        "are skipped once five usable picks beat every remaining bound). *Cold, all*: the same for every "
        "model (`--top 0`). *New machine*: synthetic headers already "
        "predicted, no plans yet (the GUI after changing hardware). *Warm*: the same machine, another "
        f"use case. *Brute force*: `plan_memory` with its own layer search for all {n_models * len(CATALOG_QUANTS)} files (headers "
        "cached); the ratio is brute force / new machine.",
        table(["preset", "cold, top 5", "cold, all", "new machine", "warm", "brute force", "ratio"], timing),
        "Cold, top 5 against the 500 ms target: " + ", ".join(
            f"{k} {v:.0f} ms{'' if v < 500 else ' (over)'}" for k, v in cold5.items()) + ". "
        "A small GPU (the GTX 1650) plans the most candidates: partial offloads score close together, so "
        "fewer bounds are beaten early.",
        f"Target: under 100 ms. Warm and new-machine calls {'meet' if worst < 100 else 'miss'} it (a new "
        f"machine takes at most {worst:.0f} ms: per-layer costs are computed once per header and "
        "settings). A cold call does not: it pays once per process for predicting each candidate file's "
        "tensor types with llama.cpp's rules (`ModelMeta.from_architecture` / `with_file_type`: "
        "2-6 ms a file), which is most of the cold time. The GUI runs it on a worker thread.",
        "Top three picks for chat per preset (judged at an 8k context with Camelid's default load settings, flash attention on and an f16 KV cache, as the engine loads them; rank 2 is about half the "
        "parameters at 8-bit, rank 3 a small, faster model at 8-bit):",
        table(["preset", "1", "2", "3"], top3),
        "Best pick per use case:",
        table(["preset", *(u for u in USE_CASES if u != "chat")], per_case),
    ])
    update_section("recommend", "Recommender: time to rank the catalog, picks per preset", body)
    print(body)


# -- catalog refresh: what finding N new repos costs on the wire --------------------------------

REFRESH_SIZES = (1, 4, 16)


def _refresh_hub(hub, n_new: int, header_file: Path) -> None:
    """`n_new` brand-new instruct models spread over the watched labs, each with a bartowski GGUF
    (a Llama-3.1-8B-sized header: 128k-token tokenizer, real tensor table) in three quants, plus one
    third-party fine-tune and one base model that the refresh must leave out."""
    import hashlib
    from datetime import datetime, timezone

    from app.core.models.refresh import watched_labs

    today = datetime.now(timezone.utc).date().isoformat()
    labs = watched_labs().labs
    for i in range(n_new):
        lab = labs[i % len(labs)]
        repo = f"{lab}/Bench-{i}-8B-Instruct"
        hub.add_repo(repo, created_at=today, card_data={"license": "apache-2.0"}, tags=["license:apache-2.0"])
        gguf = f"bartowski/{lab}_Bench-{i}-8B-Instruct-GGUF"
        hub.add_repo(gguf, created_at=today, tags=[f"base_model:quantized:{repo}"])
        for q in ("Q4_K_M", "Q6_K", "Q8_0"):
            hub.add_file(gguf, f"{lab}_Bench-{i}-8B-Instruct-{q}.gguf", header_file,
                         sha256=hashlib.sha256(f"{gguf}/{q}".encode()).hexdigest())
    hub.add_repo(f"{labs[0]}/Bench-8B-Base", created_at=today)
    hub.add_repo("someone/Bench-0-8B-Instruct-Uncensored", created_at=today,
                 tags=[f"base_model:finetune:{labs[0]}/Bench-0-8B-Instruct"])


def refresh_rows() -> tuple[list[list[str]], dict[str, int]]:
    """Refreshes of N new repos on the loopback Hub: requests by kind, bytes, the largest header."""
    import os
    import tempfile

    from app.core.fit import read_gguf
    from app.core.models.refresh import HEADER_MAX_BYTES, refresh_catalog, watched_labs
    from tests.fixtures.loopback_hub import LoopbackHub
    from tests.fixtures.synthetic_gguf import big_model

    rows, worst = [], {"max_header": 0, "over_budget": 0, "header_size": 0, "ranges": 0}
    n_labs = len(watched_labs().labs)
    work = Path(tempfile.mkdtemp(prefix="camelid-bench-refresh-"))
    header_file = work / "llama-8b-q4_k_m.gguf"
    big_model(header_file)
    worst["header_size"] = read_gguf(header_file).header_bytes
    saved = {k: os.environ.get(k) for k in ("CAMELID_HOME", "HF_ENDPOINT", "HF_HUB_DISABLE_XET", "HF_TOKEN")}
    try:
        for n in REFRESH_SIZES:
            os.environ["CAMELID_HOME"] = str(work / f"home-{n}")
            os.environ["HF_HUB_DISABLE_XET"] = "1"
            os.environ.pop("HF_TOKEN", None)
            with LoopbackHub() as hub:
                os.environ["HF_ENDPOINT"] = hub.url
                _refresh_hub(hub, n, header_file)
                result = refresh_catalog()
                served = hub.requests()
            files = [r for r in served if r.filename]
            per_header = {}
            for r in files:
                per_header[(r.repo_id, r.filename)] = per_header.get((r.repo_id, r.filename), 0) + r.bytes_sent
            biggest = max(per_header.values(), default=0)
            worst["ranges"] = max(worst["ranges"], sum(r.status == 206 for r in files) // max(1, n))
            worst["max_header"] = max(worst["max_header"], biggest)
            worst["over_budget"] += sum(v > HEADER_MAX_BYTES for v in per_header.values())
            budget = n_labs + n + n
            rows.append([
                str(n), str(len(result.added)), str(result.listing_calls), str(result.quant_lookups),
                f"{result.header_reads} ({len(files)} HTTP)", str(result.requests), str(len(served)),
                f"{n_labs} + {n} + {n} = {budget}", f"{result.listing_bytes / 1024:.0f} KiB",
                f"{result.header_bytes / 2**20:.1f} MiB", f"{biggest / 2**20:.1f} MiB",
                f"{result.seconds * 1000:.0f} ms",
            ])
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return rows, worst


def refresh_main() -> None:
    from app.core.models.refresh import HEADER_MAX_BYTES, watched_labs

    rows, worst = refresh_rows()
    n_labs = len(watched_labs().labs)
    body = "\n\n".join([
        "`bench/bench_recommend.py --refresh`. " + machine_line(),
        f"`camelid catalog --refresh` against the loopback Hub (127.0.0.1, real HTTP through httpx2, the "
        f"CDN on a second port as on the real Hub). N brand-new instruct models spread over the {n_labs} "
        "watched labs, each quantized by bartowski in three quants whose header is a Llama-3.1-8B "
        f"Q4_K_M's (128k-token tokenizer and the real tensor table: {worst['header_size'] / 2**20:.1f} MiB), "
        "plus a base model and "
        "a third-party fine-tune that must be left out. *Listing calls*: one `/api/models?author=` per "
        "lab; *lookups*: one `base_model:quantized:<repo>` + `gguf` query per new model; *header reads*: "
        "one per new model, in growing Range requests (each a 302 to the CDN and a 206 from it). "
        "*Requests* counts every HTTP request the client sent (redirects included), checked against the "
        "server's log. The target column is listings + lookups + headers.",
        table(["N new", "added", "listing calls", "lookups", "header reads", "requests (client)",
               "requests (server log)", "target: listings + lookups + header reads", "listing bytes", "header bytes",
               "largest header", "time"], rows),
        f"Every header read stays under its {HEADER_MAX_BYTES >> 20} MiB bound (largest "
        f"{worst['max_header'] / 2**20:.1f} MiB, {worst['over_budget']} over). The cost is one listing per "
        "lab whatever N is, then one lookup and one header read per new model. The reader asks for 1 MiB, "
        f"then doubles, so a {worst['header_size'] / 2**20:.1f} MiB header costs {worst['ranges']} ranges "
        f"({2 * worst['ranges']} HTTP requests through the CDN redirect) and "
        f"{worst['max_header'] / 2**20:.1f} MiB on the wire. The refresh sends its own user agent rather "
        "than huggingface_hub's header builder, which would add a once-a-day fetch of the Hub's agent "
        "registry outside the count. Time is loopback time (no network latency): on the real Hub each "
        "request adds a round trip.",
    ])
    update_section("refresh", "Catalog refresh: requests and bytes for N new repos", body)
    print(body)


if __name__ == "__main__":
    if "--refresh" in sys.argv[1:]:
        refresh_main()
    else:
        main()
        refresh_main()
