"""Golden scenarios: what an expert would pick on each machine, and the rule that says so.

Each expectation is reasoned from the rule in its comment (sizes from the
catalog's predictions, budgets from hardware.py: a GPU keeps 0.5 GiB back,
Apple's GPU may use 2/3 of RAM below 36 GB and 3/4 from 36 GB, a simulated
desktop has 85% of RAM available less a 10% reserve), not copied from output.
Where the rule leaves a near tie between models, the test asserts the rule's
shape (size class, quant class, placement) rather than a name.
"""

from __future__ import annotations

from app.core.machine.simulate import preset_profile, simulate
from app.core.models.recommend import recommend

FOUR_BIT = {"Q4_K_S", "Q4_K_M", "IQ4_XS"}


def _sim(**flags):
    def no_detect():
        raise AssertionError("a simulated machine never measures this one")

    return simulate(detect=no_detect, **flags)


def test_24gb_gpu_chat_picks_a_32b_at_4bit_fully_on_the_gpu() -> None:
    # RTX 4090, 23.5 GiB budget. A 32B at Q4_K_M is ~19.8 GB (18.4 GiB) + 2 GiB of 8k KV: fits.
    # 70B-class even at Q2_K (26 GB) cannot fit and would crawl (~6 tok/s) from DDR5;
    # 14B at Q8_0 (15.7 GB) fits too but a 32B at 4-bit beats it by a doubling in size.
    picks = recommend(preset_profile("rtx-4090"), "chat")
    best = picks[0]
    assert 30 <= best.model.params_b <= 33 and not best.model.is_moe
    assert best.quant in FOUR_BIT and best.verdict == "full_gpu"
    assert "fits entirely in your 24 GB GPU with an 8k context" in best.why
    assert f"a {best.model.size_label} model at 4-bit beats a 14B at 8-bit" in best.why
    # Ladder: ~half the size at 8-bit (14B class), then a small model at 8-bit for speed.
    assert picks[1].role == "half-size" and picks[1].quant == "Q8_0" and 12 <= picks[1].model.params_b <= 15
    assert picks[2].role == "fast" and picks[2].model.params_b <= 4.5
    assert best.tokens_per_s > 25  # 1008 GB/s x 0.7 / ~19 GB read per token


def test_24gb_gpu_code_picks_the_14b_coder_at_8bit() -> None:
    # Code needs >= Q6_K. Coder-32B at Q6_K is 27 GB: over 24 GB, partial and slow;
    # Coder-14B at Q8_0 (15.7 GB) fits fully, and a coder beats a general model at code.
    best = recommend(preset_profile("rtx-4090"), "code")[0]
    assert best.model.id == "qwen2.5-coder-14b" and best.quant == "Q8_0" and best.verdict == "full_gpu"
    assert "Code needs Q6_K or better" in best.why


def test_12gb_gpu_chat_picks_a_14b_at_4bit_not_a_partial_24b() -> None:
    # RTX 3060, 11.5 GiB. 14B at Q4_K_M (~9 GB) + 1.25 GiB KV fits. Mistral Small 24B even at
    # IQ3_M (10.7 GB) + KV spills off the GPU: partial offload, and it is 3-bit besides.
    # With flash attention (the engine's default) the compute buffer is ~0.3 GiB, so even the
    # 14B's Q5_K_M (10.5 GB = 9.8 GiB) + KV + compute + CUDA context squeezes in: 4 or 5 bits.
    best = recommend(preset_profile("rtx-3060-12gb"), "chat")[0]
    assert 14 <= best.model.params_b <= 15 and best.quant in FOUR_BIT | {"Q5_K_S", "Q5_K_M"}
    assert best.verdict == "full_gpu" and "12 GB GPU" in best.why


def test_8gb_gpu_chat_picks_an_8b_fully_on_the_gpu() -> None:
    # RTX 4060 laptop, 7.5 GiB. A 14B at even Q3_K_M (7.3 GB) + KV cannot fit; an 8B at
    # 4-6 bits (5-6.7 GB) does, with room for the 8k cache.
    best = recommend(preset_profile("rtx-4060-8gb"), "chat")[0]
    assert 7 <= best.model.params_b <= 9.5 and best.verdict == "full_gpu"
    assert best.quant in FOUR_BIT | {"Q5_K_M", "Q6_K"}


def test_4gb_gpu_chat_stays_at_4_bits_or_more() -> None:
    # GTX 1650, 3.5 GiB of VRAM + ~12 GiB of RAM. The big-but-quantized rule's floor: under 65B,
    # >= 4 bits while a useful model runs there. Qwen3-30B-A3B needs ~18 GB at 4 bits: it does not
    # fit, and its IQ3_M (~13.7 GB) is below the floor. An 8B at 4-5 bits with part of its layers on
    # the GPU still writes > 5 tokens/s (its RAM half is ~3 GB a token at ~40 GB/s).
    picks = recommend(preset_profile("gtx-1650-4gb"), "chat")
    best = picks[0]
    assert 7 <= best.model.params_b <= 9 and best.verdict == "partial" and not best.slow
    assert best.quant in FOUR_BIT | {"Q5_K_S", "Q5_K_M"} and "Partial offload is the price" in best.why
    assert all(p.quant not in ("Q3_K_M", "IQ3_M", "Q2_K") for p in picks)


def test_nothing_useful_at_4_bits_falls_back_to_3_bits() -> None:
    # An 8 GB CPU machine (6.1 GiB usable for a model) and two candidates. Qwen3-8B at IQ4_XS
    # (4.6 GB) + its 8k cache (1.1 GiB) + compute does not fit; at IQ3_M (3.9 GB) it does. With
    # Qwen3-4B in the catalog, a useful model runs at >= 4 bits (Q5_K_M, 2.9 GB): the floor holds
    # and no 3-bit quant is offered. With only the 8B, nothing useful fits at 4 bits, so the rule's
    # fallback lets the 3-bit quant in rather than recommending nothing.
    from app.core.models.catalog import Catalog, load_catalog

    catalog = load_catalog()
    machine = _sim(preset="workstation-64gb-cpu", ram_gb=8.0)
    both = recommend(machine, "chat", catalog=Catalog(models=(catalog.get("qwen3-8b"), catalog.get("qwen3-4b"))))
    assert both[0].model.id == "qwen3-4b" and both[0].quant in FOUR_BIT | {"Q5_K_S", "Q5_K_M"}
    assert all(p.quant not in ("Q3_K_M", "IQ3_M") for p in both)
    only = recommend(machine, "chat", catalog=Catalog(models=(catalog.get("qwen3-8b"),)))
    assert [(p.model.id, p.quant) for p in only] == [("qwen3-8b", "IQ3_M")]


def test_16gb_gpu_code_picks_the_14b_coder_at_6bit() -> None:
    # RTX 4060 Ti 16 GB, 15.5 GiB. Coder-14B at Q8_0 (15.7 GB) + KV is over; at Q6_K (12.1 GB) it
    # fits fully, above the Q6_K floor for code; Coder-32B cannot reach Q6_K on 16 GB.
    hardware = _sim(preset="rtx-3060-12gb", gpu_name="RTX 4060 Ti")
    best = recommend(hardware, "code")[0]
    assert best.model.id == "qwen2.5-coder-14b" and best.quant == "Q6_K" and best.verdict == "full_gpu"
    assert "16 GB GPU" in best.why


def test_two_24gb_gpus_chat_picks_a_70b_class_at_4bit_across_both() -> None:
    # 2 x RTX 3090, 47 GiB together. A 70B-class model at IQ4_XS/Q4_K_M (38-43 GB) + 2.5 GiB of
    # KV fits across both cards; layers split by budget, the GPUs' times add (~16 tok/s).
    best = recommend(preset_profile("dual-rtx-3090"), "chat")[0]
    assert best.model.params_b >= 65 and best.quant in FOUR_BIT and best.verdict == "full_gpu"
    assert "two 24 GB GPUs" in best.why
    assert best.plan.tensor_split and len(best.plan.tensor_split) == 2


def test_apple_8gb_json_picks_a_small_model_at_8bit_that_is_fast() -> None:
    # M1 8 GB: 5.3 GiB for the GPU, 68 GB/s. JSON wants <= ~9B at Q8_0+ and >= 15 tokens/s:
    # an 8B at Q8_0 (8.5 GB) cannot fit; a 1-3B at Q8_0 (1.3-3.4 GB) writes 15-35 tokens/s.
    best = recommend(preset_profile("m1-8gb"), "json")[0]
    assert best.quant in ("Q8_0", "F16") and best.model.params_b <= 4.5
    assert best.verdict == "full_gpu" and not best.slow and best.tokens_per_s >= 15
    assert "high precision" in best.why


def test_apple_16gb_chat_picks_a_14b_at_4bit_in_unified_memory() -> None:
    # M2 Air 16 GB: the GPU may use 10.7 GiB. A 14B at IQ4_XS/Q4_K_M (8-9 GB) + 1.25 GiB KV fits;
    # a 24B at IQ3_M (10.7 GB) does not. 100 GB/s / ~8 GB a token: ~8 tokens/s, above 5.
    best = recommend(preset_profile("m2-air-16gb"), "chat")[0]
    assert 14 <= best.model.params_b <= 15 and best.quant in FOUR_BIT and best.verdict == "full_gpu"
    assert "10.7 GB of your 16 GB of unified memory" in best.why and not best.slow


def test_apple_36gb_reasoning_prefers_the_fast_moe_and_keeps_the_slow_dense_model() -> None:
    # M3 Pro 36 GB: 27 GiB for the GPU, 150 GB/s. Qwen3-32B at ~4-bit fits but reads ~18 GB a
    # token: ~6 tokens/s, under the 8 a thinking model needs. Qwen3-30B-A3B reads ~2.5 GB a token
    # at Q6_K: ~35 tokens/s. The dense 32B is still listed, demoted and marked slow.
    picks = recommend(preset_profile("m3-pro-36gb"), "reasoning")
    best = picks[0]
    assert best.model.id == "qwen3-30b-a3b" and best.verdict == "full_gpu" and not best.slow
    assert best.quant in {"Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0"}
    dense = next(p for p in picks if p.model.id == "qwen3-32b")
    assert dense.slow and dense.rank > max(p.rank for p in picks if not p.slow)


def test_apple_128gb_code_picks_the_32b_coder_at_6_or_8_bit() -> None:
    # M3 Max 128 GB: 96 GiB for the GPU, 400 GB/s. Coder-32B at Q6_K (27 GB) or Q8_0 (35 GB)
    # fits easily and writes >= 8 tokens/s (400 x 0.7 / 27-35 GB).
    best = recommend(preset_profile("m3-max-128gb"), "code")[0]
    assert best.model.id == "qwen2.5-coder-32b" and best.quant in ("Q6_K", "Q8_0")
    assert best.verdict == "full_gpu" and not best.slow


def test_apple_128gb_chat_picks_a_70b_class_model() -> None:
    # 96 GiB holds a 70B-class model at 4-bit (40-47 GB) with room to spare; at 400 GB/s it
    # writes ~6 tokens/s, above chat's 5. At Q8_0 (75 GB) it would crawl at ~3.5.
    best = recommend(preset_profile("m3-max-128gb"), "chat")[0]
    assert best.model.params_b >= 65 and best.quant in FOUR_BIT | {"Q5_K_M"} and not best.slow


def test_cpu_8gb_chat_picks_a_7b_class_at_4bit() -> None:
    # i5-8250U, 8 GB: ~5.8 GiB usable, ~23 GB/s effective. A 7-8B at ~4-bit (4.2-4.9 GB) fits and
    # writes ~5 tokens/s; anything bigger does not fit, a 14B would not even at Q3_K_M.
    best = recommend(preset_profile("laptop-8gb-cpu"), "chat")[0]
    assert 6.5 <= best.model.params_b <= 8.5 and best.quant in FOUR_BIT | {"Q3_K_M", "IQ3_M"}
    assert best.verdict == "cpu" and "from your 8 GB of RAM" in best.why


def test_cpu_16gb_json_picks_a_small_fast_model_at_8bit() -> None:
    # Ryzen 5 5600X, DDR4 (~31 GB/s effective): >= 15 tokens/s at Q8_0 means <= ~2 GB read a token,
    # so a 1-1.7B model at Q8_0.
    best = recommend(preset_profile("desktop-16gb-cpu"), "json")[0]
    assert best.quant == "Q8_0" and best.model.params_b <= 2 and not best.slow
    assert best.verdict == "cpu"


def test_cpu_64gb_chat_picks_the_moe() -> None:
    # Ryzen 9 7950X, DDR5 (~50 GB/s effective), 64 GB. Dense 14B at 4-bit reads 9 GB a token:
    # ~5.5 tokens/s; Qwen3-30B-A3B reads ~2.5 GB: ~19 tokens/s and is worth a ~10B model.
    best = recommend(preset_profile("workstation-64gb-cpu"), "chat")[0]
    assert best.model.id == "qwen3-30b-a3b" and best.verdict == "cpu" and best.tokens_per_s > 12


def test_16gb_gpu_rag_picks_a_long_context_model() -> None:
    # T4 (15 GiB): RAG needs a model trained on >= 32k-token inputs (no Gemma 2, no SmolLM2);
    # the largest at ~4-bit that fits fully: a 24B at IQ4_XS (12.8 GB) + 1.25 GiB of KV.
    picks = recommend(preset_profile("t4-16gb"), "rag")
    assert all(p.model.context >= 32768 for p in picks)
    best = picks[0]
    assert 20 <= best.model.params_b <= 28 and best.quant in FOUR_BIT and best.verdict == "full_gpu"
    assert "long documents" in best.why
