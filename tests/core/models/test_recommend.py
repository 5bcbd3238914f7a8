"""The recommender's rules: the quality formula, floors, use cases, ranking, reasons, CLI."""

from __future__ import annotations

import itertools
import json
import math

import pytest

from app.cli import main
from app.core.errors import UsageError
from app.core.machine.simulate import preset_profile
from app.core.models.catalog import CATALOG_QUANTS, load_catalog
from app.core.models.recommend import (
    DEFAULT_CTX,
    USE_CASES,
    bits_label,
    effective_params_b,
    kl_divergence,
    quality,
    quant_allowed,
    recommend,
    speed_penalty,
)

K_LADDER = ["Q2_K", "Q3_K_M", "Q4_K_S", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "F16"]


# -- quality formula --------------------------------------------------------------------


@pytest.mark.parametrize("quant", CATALOG_QUANTS)
def test_quality_grows_with_parameters(quant: str) -> None:
    sizes = [0.135, 0.5, 1, 3, 7, 8, 13, 14, 32, 70, 72, 405]
    scores = [quality(p, quant) for p in sizes]
    assert all(a < b for a, b in itertools.pairwise(scores))


@pytest.mark.parametrize("params_b", [0.5, 1.5, 8, 32, 70])
def test_quality_grows_with_bits(params_b: float) -> None:
    scores = [quality(params_b, q) for q in K_LADDER]
    assert all(a < b for a, b in itertools.pairwise(scores))
    # The imatrix i-quants sit between their neighbours by measured KL, not by bits.
    assert quality(params_b, "Q3_K_M") > quality(params_b, "IQ3_M") > quality(params_b, "Q2_K")
    assert quality(params_b, "Q4_K_M") > quality(params_b, "IQ4_XS") > quality(params_b, "Q4_K_S")


def test_bigger_but_quantized_beats_smaller_at_high_precision() -> None:
    # REFERENCE section 5: 13B at Q3_K_M beats 7B at Q6_K at about the same file size.
    assert quality(13, "Q3_K_M") > quality(7, "Q6_K")
    # The example: a 32B at 4-bit beats a 14B at 8-bit.
    assert quality(32.8, "Q4_K_M") > quality(14.8, "Q8_0")
    # ... and 10 points is a doubling of parameters at no quantization loss.
    assert quality(16, "F16") - quality(8, "F16") == pytest.approx(10)


def test_quantization_costs_small_models_more() -> None:
    loss_small = quality(1, "F16") - quality(1, "Q4_K_M")
    loss_big = quality(70, "F16") - quality(70, "Q4_K_M")
    assert loss_small > 5 * loss_big > 0


def test_moe_counts_as_the_geometric_mean_of_total_and_active() -> None:
    assert effective_params_b(30.5, 3.3) == pytest.approx(math.sqrt(30.5 * 3.3))
    assert quality(14, "Q4_K_M") > quality(30.5, "Q4_K_M", active_params_b=3.3) > quality(8, "Q4_K_M")


def test_the_floor() -> None:
    for p in (0.5, 8, 14, 32, 60):
        # >= 4 bits first: IQ4_XS (4.25 bits a weight) is the lowest.
        assert quant_allowed(p, "IQ4_XS") and quant_allowed(p, "Q4_K_S")
        assert not quant_allowed(p, "Q3_K_M") and not quant_allowed(p, "IQ3_M") and not quant_allowed(p, "Q2_K")
        # The fallback when nothing useful fits at 4 bits: down to Q3_K_M / IQ3_M, never below.
        assert quant_allowed(p, "Q3_K_M", low_bits=True) and quant_allowed(p, "IQ3_M", low_bits=True)
        assert not quant_allowed(p, "Q3_K_S", low_bits=True) and not quant_allowed(p, "IQ2_M", low_bits=True)
        assert not quant_allowed(p, "Q2_K", low_bits=True)
    for p in (70, 72.7):
        assert quant_allowed(p, "Q2_K") and quant_allowed(p, "IQ2_M")
        assert not quant_allowed(p, "IQ1_M")
    code = USE_CASES["code"]
    assert not quant_allowed(32, "Q5_K_M", code) and quant_allowed(32, "Q6_K", code)
    assert quant_allowed(32, "Q8_0", code) and quant_allowed(32, "F16", code)
    assert not quant_allowed(8, "Q6_K", USE_CASES["json"]) and quant_allowed(8, "Q8_0", USE_CASES["json"])
    assert not quant_allowed(72, "Q3_K_M", USE_CASES["reasoning"])
    assert quant_allowed(72, "IQ4_XS", USE_CASES["reasoning"])
    with pytest.raises(ValueError):
        kl_divergence("Q9_X")


def test_speed_penalty_and_labels() -> None:
    assert speed_penalty(25, 5) == 0 and speed_penalty(20, 5) == 0
    assert speed_penalty(10, 5) == pytest.approx(5) and speed_penalty(5, 5) == pytest.approx(10)
    assert speed_penalty(1, 0) == 0
    assert [bits_label(q) for q in ("Q4_K_M", "IQ3_M", "Q8_0", "F16", "Q2_K")] == \
        ["4-bit", "3-bit", "8-bit", "16-bit", "2-bit"]


# -- ranking on every preset -----------------------------------------------------------------

PRESETS = ["rtx-4090", "rtx-3060-12gb", "gtx-1650-4gb", "m2-air-16gb", "laptop-8gb-cpu", "dual-rtx-3090"]


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("use_case", list(USE_CASES))
def test_picks_obey_the_rules(preset: str, use_case: str) -> None:
    hardware = preset_profile(preset)
    picks = recommend(hardware, use_case)
    case = USE_CASES[use_case]
    assert picks, "something in the catalog fits every preset"
    assert [p.rank for p in picks] == list(range(1, len(picks) + 1))
    assert len({p.model.id for p in picks}) == len(picks)  # one quant per model
    assert all(p.verdict != "no_fit" for p in picks)
    assert all(p.n_ctx == DEFAULT_CTX == p.plan.n_ctx for p in picks)  # judged at 8k, not 128k
    assert all(quant_allowed(p.model.params_b, p.quant, case) or p.role in ("half-size", "fast")
               for p in picks)
    # Slow picks are demoted below every usable one, never dropped.
    slow = [p.slow for p in picks]
    assert slow == sorted(slow)
    assert all(p.slow == (p.tokens_per_s < case.min_speed) for p in picks)
    if case.max_params_b:
        assert all(effective_params_b(p.model.params_b, p.model.active_params_b) <= case.max_params_b
                   for p in picks)
    if case.min_trained_ctx:
        assert all(p.model.context >= case.min_trained_ctx for p in picks)
    best = picks[0]
    assert best.role == "best" and best.why.startswith(f"{best.model.name} at {best.quant}")
    assert all(p.why and "tokens/s" in p.why for p in picks)
    # The ladder: about half the parameters at 8-bit, then a small faster model at 8-bit.
    for pick in picks:
        if pick.role == "half-size":
            assert pick.quant == "Q8_0"
            assert 0.3 <= pick.effective_params_b / best.effective_params_b <= 0.7
        if pick.role == "fast":
            assert pick.quant == "Q8_0" and pick.effective_params_b <= 4.5
            assert pick.tokens_per_s > best.tokens_per_s


def test_every_fitting_model_is_listed_and_nothing_else() -> None:
    """A 4 GB GPU: the 70B and 72B models cannot fit anywhere; tiny ones always can."""
    picks = recommend(preset_profile("gtx-1650-4gb"), "chat")
    ids = {p.model.id for p in picks}
    assert "llama-3.3-70b" not in ids and "qwen2.5-72b" not in ids
    assert {"smollm2-135m", "qwen3-0.6b", "llama-3.2-1b"} <= ids


def test_a_longer_context_changes_the_plan_and_filters_models() -> None:
    hardware = preset_profile("rtx-4090")
    picks = recommend(hardware, "chat", n_ctx=32768)
    assert all(p.n_ctx == 32768 and p.model.context >= 32768 for p in picks)
    assert not any(p.model.family == "Gemma 2" for p in picks)  # trained on 8k
    assert "a 32k context" in picks[0].why
    # More KV cache to hold: the best pick is no bigger than at 8k.
    at_8k = recommend(hardware, "chat")[0]
    assert picks[0].file.size_bytes <= at_8k.file.size_bytes


def test_min_speed_marks_and_demotes() -> None:
    hardware = preset_profile("m3-pro-36gb")
    picks = recommend(hardware, "chat", min_speed=1000)
    assert all(p.slow for p in picks)  # nothing is that fast, and nothing is dropped
    assert len(picks) == len(recommend(hardware, "chat"))
    assert "Slow here" in picks[0].why and "1000 tokens/s" in picks[0].why


def test_bad_arguments() -> None:
    hardware = preset_profile("rtx-4090")
    with pytest.raises(UsageError, match="poetry"):
        recommend(hardware, "poetry")
    with pytest.raises(UsageError):
        recommend(hardware, "chat", n_ctx=10)


def test_nothing_fits_gives_no_picks() -> None:
    hardware = preset_profile("laptop-8gb-cpu")
    hardware.ram.total_bytes = hardware.ram.available_bytes = 256 * 1024**2
    assert recommend(hardware, "chat") == []


# -- CLI ------------------------------------------------------------------------------


def test_cli_recommend_json_shape(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recommend", "--preset", "rtx-4090", "--json", "--top", "3"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"hardware", "use_case", "picks"}
    assert data["use_case"] == "chat" and data["hardware"]["simulated"] == "rtx-4090"
    assert len(data["picks"]) == 3
    required = {"rank", "model", "repo", "quant", "params_b", "file_bytes", "verdict", "n_gpu_layers",
                "n_ctx", "est_tokens_per_s", "quality", "why"}
    for i, pick in enumerate(data["picks"], 1):
        assert required <= set(pick)
        assert pick["rank"] == i and pick["n_ctx"] == 8192 and pick["verdict"] == "full_gpu"
    assert data["picks"][0]["model"] == load_catalog().get(data["picks"][0]["repo"]).model


def test_cli_recommend_text_and_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recommend", "--vram", "12", "--ram", "32", "--use-case", "code", "--ctx", "4096"]) == 0
    out = capsys.readouterr().out
    assert "Best models for code" in out and "a 4k context" in out
    assert "camelid download bartowski/" in out and "Every model that fits, with --top 0." in out
    assert main(["recommend", "--preset", "rtx-4090", "--top", "-1"]) == 2
    assert "--top" in capsys.readouterr().err


def test_cli_catalog_json_shape(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["catalog", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "models" in data and len(data["models"]) == len(load_catalog())
    for entry in data["models"]:
        assert {"model", "repo", "params_b", "files"} <= set(entry)
        assert [f["quant"] for f in entry["files"]] and all(
            {"quant", "size_bytes", "predicted"} <= set(f) and f["predicted"] for f in entry["files"])
    assert main(["catalog"]) == 0
    assert "Qwen3 30B-A3B" in capsys.readouterr().out


def test_an_empty_catalog_recommends_nothing_rather_than_the_shipped_one() -> None:
    from app.core.models.catalog import Catalog

    assert recommend(preset_profile("rtx-4090"), "chat", catalog=Catalog(models=())) == []
    assert recommend(preset_profile("rtx-4090"), "chat")  # the shipped catalog when none is given


def test_a_superseded_model_loses_to_its_successor_at_the_same_size_and_cost() -> None:
    """The ranking needs no hand-set quality: the same shape, quant and speed, and the entry the catalog
    marks superseded (or the older release) ranks below the other."""
    from dataclasses import replace

    from app.core.machine.simulate import preset_profile
    from app.core.models.catalog import Catalog
    from app.core.models.recommend import SUPERSEDED_PENALTY

    base = load_catalog().get("qwen3-8b")
    old = replace(base, id="old-8b", name="Old 8B", superseded_by="new-8b", released="2025-04-29")
    new = replace(base, id="new-8b", name="New 8B", superseded_by=None, released="2025-04-29")
    picks = recommend(preset_profile("rtx-4090"), "chat", catalog=Catalog(models=(old, new)))
    by_id = {p.model.id: p for p in picks}
    assert picks[0].model.id == "new-8b" and by_id["old-8b"].quant == by_id["new-8b"].quant
    assert by_id["new-8b"].score - by_id["old-8b"].score == pytest.approx(SUPERSEDED_PENALTY)
    later = replace(new, id="later-8b", released="2026-04-29")
    picks = recommend(preset_profile("rtx-4090"), "chat", catalog=Catalog(models=(new, later)))
    assert picks[0].model.id == "later-8b"  # two points a year of generation


# -- reasons that are true (UX findings 24, 25) ---------------------------------------------------


def test_which_models_think_before_they_answer() -> None:
    from app.core.models.recommend import thinks

    by_id = {m.id: m for m in load_catalog()}
    for thinking in ("qwen3-8b", "qwen3-30b-a3b", "qwen3.5-9b", "gpt-oss-20b", "glm-4.5-air", "smollm3-3b"):
        assert thinks(by_id[thinking]), thinking
    for direct in ("llama-3.3-70b", "qwen2.5-72b", "phi-4", "gemma-3-4b", "qwen3-4b-instruct-2507",
                   "qwen3-next-80b-a3b", "qwen3-coder-30b-a3b"):
        assert not thinks(by_id[direct]), direct


@pytest.mark.parametrize("preset", PRESETS)
def test_reasoning_reasons_say_whether_the_model_thinks(preset: str) -> None:
    from app.core.models.recommend import thinks

    for pick in recommend(preset_profile(preset), "reasoning"):
        if pick.role not in ("best", "alternative"):
            continue
        if thinks(pick.model):
            assert "thinks before it answers" in pick.why
        else:
            assert "Tuned for reasoning" not in pick.why and "thinks before it answers" not in pick.why
            assert "answers without thinking first" in pick.why


@pytest.mark.parametrize("preset", PRESETS)
def test_strongest_that_fits_only_when_nothing_bigger_fits(preset: str) -> None:
    picks = recommend(preset_profile(preset), "code")
    best = picks[0]
    bigger = [p for p in picks if p.effective_params_b > best.effective_params_b]
    assert ("the strongest model that fits" in best.why) == (not bigger)
    if bigger and all(p.slow for p in bigger):
        assert "also fits, but at about" in best.why


def test_a_negative_minimum_speed_is_refused() -> None:
    with pytest.raises(UsageError, match="not a speed"):
        recommend(preset_profile("laptop-8gb-cpu"), "chat", min_speed=-3)


def test_a_2_gb_simulated_machine_still_runs_the_smallest_models() -> None:
    from app.core.machine.simulate import simulate

    hardware = simulate(detect=lambda: preset_profile("laptop-8gb-cpu"), preset="laptop-8gb-cpu", ram_gb=2)
    assert hardware.budgets().ram.budget_bytes > 0
    ids = {p.model.id for p in recommend(hardware, "chat")}
    assert "smollm2-135m" in ids
