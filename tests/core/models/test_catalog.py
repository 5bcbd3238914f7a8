"""The curated catalog: every model the issue names, self-consistent shapes, predicted and Hub sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.core.errors import CatalogError
from app.core.fit import quants
from app.core.models.catalog import CATALOG_QUANTS, load_catalog, predicted_size, with_hub_sizes
from app.core.models.hub import QuantFile, RemoteFile
from tests.fixtures import REPO_ROOT

CATALOG = load_catalog()
#: Where the catalog downloads GGUFs from: the labs' own repos and the quantizers the issue trusts.
TRUSTED_QUANTIZERS = {"bartowski", "unsloth", "ggml-org", "lmstudio-community", "Qwen", "mistralai",
                      "ibm-granite", "LiquidAI"}

#: The issue's list, as original Hub ids.
REQUIRED = [
    "meta-llama/Llama-3.2-1B-Instruct", "meta-llama/Llama-3.2-3B-Instruct",
    "meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.3-70B-Instruct",
    *[f"Qwen/Qwen2.5-{s}-Instruct" for s in ("0.5B", "1.5B", "3B", "7B", "14B", "32B", "72B")],
    *[f"Qwen/Qwen2.5-Coder-{s}-Instruct" for s in ("7B", "14B", "32B")],
    *[f"Qwen/Qwen3-{s}" for s in ("0.6B", "1.7B", "4B", "8B", "14B", "32B", "30B-A3B")],
    "google/gemma-2-9b-it", "google/gemma-2-27b-it",
    *[f"google/gemma-3-{s}-it" for s in ("1b", "4b", "12b", "27b")],
    "mistralai/Mistral-7B-Instruct-v0.3", "mistralai/Mistral-Nemo-Instruct-2407",
    "mistralai/Mistral-Small-24B-Instruct-2501",
    "microsoft/Phi-3.5-mini-instruct", "microsoft/phi-4",
    *[f"HuggingFaceTB/SmolLM2-{s}-Instruct" for s in ("135M", "360M", "1.7B")],
]


def test_every_listed_model_is_in_the_catalog() -> None:
    have = {m.model for m in CATALOG}
    assert set(REQUIRED) <= have, set(REQUIRED) - have
    assert len({m.id for m in CATALOG}) == len(CATALOG)


@pytest.mark.parametrize("model", CATALOG.models, ids=lambda m: m.id)
def test_parameter_count_from_shapes_matches_the_stated_count(model) -> None:
    computed = model.arch.parameter_count() / 1e9
    assert abs(computed - model.params_b) / model.params_b < 0.03, (computed, model.params_b)
    if model.is_moe:
        active = model.arch.active_parameter_count() / 1e9
        assert abs(active - model.active_params_b) / model.active_params_b < 0.03, active
    else:
        assert model.active_params_b is None


@pytest.mark.parametrize("model", CATALOG.models, ids=lambda m: m.id)
def test_shapes_are_plausible(model) -> None:
    a = model.arch
    assert model.context >= 8192
    if model.header is not None:  # hybrids, MLA, per-layer shapes: checked against llama.cpp below
        assert model.repo.endswith("-GGUF") and model.repo.split("/")[0] in TRUSTED_QUANTIZERS
        return
    assert a.n_head % a.n_head_kv == 0  # GQA groups are whole
    assert a.head_dim_k in (64, 96, 128, 256)
    assert model.context >= 8192
    assert model.repo.endswith("-GGUF") and model.repo.split("/")[0] in TRUSTED_QUANTIZERS
    if a.architecture in ("gemma2", "gemma3"):
        assert a.sliding_window and a.sliding_window_pattern in (2, 6) and a.tied_embeddings
        assert sum(a.sliding_layers()) == a.n_layer - a.n_layer // a.sliding_window_pattern
    else:
        assert not a.sliding_window and not any(a.sliding_layers())
    # The fit engine builds the same tensor table and counts the same weights (norms aside).
    meta = model.meta("F16")
    assert abs(meta.n_params - a.parameter_count()) / a.parameter_count() < 0.002


def test_constants_of_well_known_models() -> None:
    """Spot checks against REFERENCE section 6 (each model's config.json)."""
    llama = CATALOG.get("meta-llama/Llama-3.1-8B-Instruct").arch
    assert (llama.n_layer, llama.n_embd, llama.n_head, llama.n_head_kv, llama.n_vocab) == (32, 4096, 32, 8, 128256)
    qwen32 = CATALOG.get("qwen3-32b").arch
    assert (qwen32.n_head, qwen32.head_dim_k, qwen32.n_embd) == (64, 128, 5120)  # q width 8192 != d_model
    moe = CATALOG.get("Qwen/Qwen3-30B-A3B").arch
    assert (moe.n_expert, moe.n_expert_used, moe.n_ff_exp, moe.n_head_kv) == (128, 8, 768, 4)
    gemma3 = CATALOG.get("gemma-3-27b").arch
    assert (gemma3.n_layer, gemma3.sliding_window, gemma3.sliding_window_pattern) == (62, 1024, 6)
    phi = CATALOG.get("phi-3.5-mini").arch
    assert (phi.n_head, phi.n_head_kv, phi.head_dim_k) == (32, 32, 96)


def test_file_names_follow_each_publishers_pattern() -> None:
    assert CATALOG.get("qwen3-8b").filename("Q4_K_M") == "Qwen_Qwen3-8B-Q4_K_M.gguf"
    assert CATALOG.get("llama-3.1-8b").filename("Q8_0") == "Meta-Llama-3.1-8B-Instruct-Q8_0.gguf"
    assert CATALOG.get("llama-3.1-8b").filename("F16") == "Meta-Llama-3.1-8B-Instruct-f16.gguf"
    assert CATALOG.get("gemma-3-12b").filename("IQ4_XS") == "google_gemma-3-12b-it-IQ4_XS.gguf"
    assert CATALOG.get("smollm2-135m").filename("Q6_K") == "SmolLM2-135M-Instruct-Q6_K.gguf"


def test_lookup_by_id_model_or_repo_and_unknown() -> None:
    m = CATALOG.get("phi-4")
    assert CATALOG.get("MICROSOFT/PHI-4") is m and CATALOG.get("bartowski/phi-4-GGUF") is m
    with pytest.raises(CatalogError, match="camelid catalog"):
        CATALOG.get("nope/nothing")
    with pytest.raises(CatalogError):
        m.file("Q4_0")


def test_size_labels() -> None:
    labels = {m.id: m.size_label for m in CATALOG}
    assert labels["qwen3-30b-a3b"] == "30B-A3B"
    assert labels["phi-4"] == "14B"
    assert labels["smollm2-135m"] == "135M"
    assert labels["qwen2.5-0.5b"] == "0.5B"
    assert labels["phi-3.5-mini"] == "3.8B"  # no size in its name: from the count


# -- sizes ------------------------------------------------------------------------


def test_predicted_size_of_a_published_file() -> None:
    # bartowski's Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf is 4,920,739,232 bytes.
    size = CATALOG.get("llama-3.1-8b").file("Q4_K_M").size_bytes
    assert abs(size - 4_920_739_232) / 4_920_739_232 < 0.001


@pytest.mark.parametrize("model", CATALOG.models, ids=lambda m: m.id)
def test_sizes_are_predicted_and_grow_with_the_quant(model) -> None:
    files = {f.quant: f for f in model.files}
    assert set(files) == set(CATALOG_QUANTS)
    assert all(f.predicted for f in files.values())
    ladder = ["Q4_K_S", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "F16"]
    sizes = [files[q].size_bytes for q in ladder]
    assert sizes == sorted(sizes)
    # Roughly params x bits: F16 is two bytes a weight (plus the header).
    assert 1.99 < files["F16"].size_bytes / model.arch.parameter_count() < 2.3


def test_the_catalogs_size_is_the_fit_engines_prediction() -> None:
    """The shortcut through one F16 table gives exactly quants.predict_file_size."""
    for model in CATALOG:
        if model.header is not None:
            continue
        for quant in ("Q2_K", "IQ3_M", "Q4_K_M", "Q6_K"):
            expected = quants.predict_file_size(model.arch_constants(), quant)
            assert model.meta(quant).file_size == expected
            assert predicted_size(model, quant) == expected


def test_hub_listing_replaces_predictions() -> None:
    model = CATALOG.get("llama-3.3-70b")
    predicted = model.file("Q4_K_M").size_bytes
    listing = [
        RemoteFile("Llama-3.3-70B-Instruct-Q4_K_M.gguf", 42_520_395_584),
        RemoteFile("Llama-3.3-70B-Instruct-Q4_K_L.gguf", 43_300_000_000),  # not a catalog quant
        RemoteFile("Llama-3.3-70B-Instruct-Q8_0/Llama-3.3-70B-Instruct-Q8_0-00001-of-00002.gguf", 39_000_000_000),
        RemoteFile("Llama-3.3-70B-Instruct-Q8_0/Llama-3.3-70B-Instruct-Q8_0-00002-of-00002.gguf", 35_980_000_000),
        RemoteFile("Llama-3.3-70B-Instruct-Q6_K/Llama-3.3-70B-Instruct-Q6_K-00001-of-00002.gguf", 40_000_000_000),
        RemoteFile("README.md", 1000),
        RemoteFile("mmproj-Llama-F16.gguf", 600_000_000),
    ]
    real = with_hub_sizes(model, listing)
    assert real.file("Q4_K_M").size_bytes == 42_520_395_584 and not real.file("Q4_K_M").predicted
    q8 = real.file("Q8_0")
    assert q8.size_bytes == 74_980_000_000 and not q8.predicted  # shards summed
    assert q8.filename.endswith("-00001-of-00002.gguf")  # llama.cpp opens the first shard
    assert real.file("Q6_K").predicted  # one shard of two is missing: keep the prediction
    assert real.file("F16").predicted  # the mmproj is not the model
    assert model.file("Q4_K_M").size_bytes == predicted  # the original is untouched
    assert [f.size_bytes for f in real.files] == sorted(f.size_bytes for f in real.files)


def test_hub_listing_bf16_fills_the_f16_slot_and_quantfiles_work() -> None:
    model = CATALOG.get("qwen3-8b")
    files = (RemoteFile("Qwen_Qwen3-8B-bf16.gguf", 16_388_000_000),)
    grouped = [QuantFile(repo_id=model.repo, quant="BF16", files=files),
               QuantFile(repo_id=model.repo, quant="Q4_K_M",
                         files=(RemoteFile("Qwen_Qwen3-8B-Q4_K_M.gguf", 5_027_000_000),))]
    real = with_hub_sizes(model, grouped)
    assert real.file("F16").size_bytes == 16_388_000_000
    assert real.file("F16").filename == "Qwen_Qwen3-8B-bf16.gguf"
    assert real.file("Q4_K_M").size_bytes == 5_027_000_000
    both = with_hub_sizes(model, [*grouped, QuantFile(
        repo_id=model.repo, quant="F16", files=(RemoteFile("Qwen_Qwen3-8B-f16.gguf", 16_390_000_000),))])
    assert both.file("F16").size_bytes == 16_390_000_000  # a real F16 wins over BF16


def test_predictions_are_close_to_real_files() -> None:
    """bartowski's SmolLM2-135M-Instruct files (Hub sizes: Q8_0 145 MB, f16 271 MB, Q4_K_M 105 MB)."""
    model = CATALOG.get("smollm2-135m")
    for quant, real_mb in (("Q8_0", 145), ("F16", 271), ("Q4_K_M", 105)):
        assert abs(model.file(quant).size_bytes / 1e6 - real_mb) / real_mb < 0.03


# -- bad catalogs -------------------------------------------------------------------


def test_a_malformed_catalog_is_a_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(CatalogError, match="could not be read"):
        load_catalog(path)
    path.write_text(json.dumps({"models": [{"id": "x"}]}), encoding="utf-8")
    with pytest.raises(CatalogError, match="malformed"):
        load_catalog(path)
    good = json.loads((REPO_ROOT / "resources" / "catalog.json").read_text())
    entry = good["models"][0]
    path.write_text(json.dumps({"models": [entry, entry]}), encoding="utf-8")
    with pytest.raises(CatalogError, match="inconsistent"):
        load_catalog(path)
    path.write_text(json.dumps({"models": [{**entry, "strengths": ["telepathy"]}]}), encoding="utf-8")
    with pytest.raises(CatalogError, match="telepathy"):
        load_catalog(path)
    with pytest.raises(CatalogError, match=r"missing\.json"):
        load_catalog(path.with_name("missing.json"))


def test_cli_catalog_hub_reads_real_sizes(loopback_hub, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`camelid catalog --hub`: real sizes where a repo answers, predictions (and a note) where not."""
    from app.cli import main

    model = CATALOG.get("smollm2-135m")
    sizes = {"Q4_K_M": 105_467_104, "Q8_0": 144_811_232}
    for quant, size in sizes.items():
        sparse = tmp_path / f"{quant}.gguf"
        with sparse.open("wb") as f:
            f.truncate(size)  # only the listing's size matters here
        loopback_hub.add_file(model.repo, model.filename(quant), sparse, sha256="0" * 64)
    loopback_hub.add_file(model.repo, "README.md", b"# SmolLM2", lfs=False)
    assert main(["catalog", "--hub", "--json"]) == 0
    captured = capsys.readouterr()
    entry = next(m for m in json.loads(captured.out)["models"] if m["repo"] == model.repo)
    files = {f["quant"]: f for f in entry["files"]}
    for quant, size in sizes.items():
        assert files[quant] == {"quant": quant, "size_bytes": size, "predicted": False,
                                "filename": model.filename(quant)}
    assert files["Q6_K"]["predicted"] and files["F16"]["predicted"]
    others = [m for m in json.loads(captured.out)["models"] if m["repo"] != model.repo]
    assert all(f["predicted"] for m in others for f in m["files"])  # those repos answered 404
    assert "bartowski/phi-4-GGUF" in captured.err and "Keeping predicted sizes" in captured.err


# -- the December-2026 snapshot --------------------------------------------------------------

import gzip  # noqa: E402
import importlib.util  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402

from app.core.fit import plan_memory  # noqa: E402
from app.core.machine import preset_profile  # noqa: E402

#: The issue's newer models that llama.cpp 0.3.36 runs and whose configs we could gather.
REQUIRED_2026 = [
    "openai/gpt-oss-20b", "openai/gpt-oss-120b", "Qwen/Qwen3-4B-Instruct-2507", "Qwen/Qwen3-30B-A3B-Instruct-2507",
    "Qwen/Qwen3-Coder-30B-A3B-Instruct", "Qwen/Qwen3-Next-80B-A3B-Instruct",
    *[f"Qwen/Qwen3.5-{s}" for s in ("0.8B", "2B", "4B", "9B", "27B", "35B-A3B", "122B-A10B", "397B-A17B")],
    "Qwen/Qwen3.6-27B", "Qwen/Qwen3.6-35B-A3B", "mistralai/Mistral-Small-3.2-24B-Instruct-2506",
    *[f"mistralai/Ministral-3-{s}-Instruct-2512" for s in ("3B", "8B", "14B")],
    "mistralai/Devstral-Small-2-24B-Instruct-2512", "zai-org/GLM-4.5-Air", "zai-org/GLM-4.7-Flash",
    *[f"ibm-granite/granite-4.0-h-{s}" for s in ("micro", "tiny", "small")],
    "nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16", "LiquidAI/LFM2-8B-A1B", "LiquidAI/LFM2.5-1.2B-Instruct",
    "HuggingFaceTB/SmolLM3-3B", "microsoft/Phi-4-mini-instruct", "meta-llama/Llama-3.3-70B-Instruct",
]
PUBLISHED = json.loads((REPO_ROOT / "bench" / "data" / "published_sizes.json").read_text())["sizes"]


def _headers_script():
    spec = importlib.util.spec_from_file_location("catalog_headers", REPO_ROOT / "scripts" / "catalog_headers.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("catalog_headers", module)
    spec.loader.exec_module(module)
    return module


def _shipped() -> dict:
    with gzip.open(REPO_ROOT / "resources" / "catalog_headers.json.gz", "rt", encoding="utf-8") as f:
        return json.load(f)


def test_the_2026_models_are_in_the_catalog() -> None:
    have = {m.model for m in CATALOG}
    assert set(REQUIRED_2026) <= have, set(REQUIRED_2026) - have
    assert sum(m.released >= "2025-06" for m in CATALOG) >= 30


@pytest.mark.parametrize("model", CATALOG.models, ids=lambda m: m.id)
def test_every_entry_prices_and_plans(model) -> None:
    machine = preset_profile("workstation-64gb-cpu")
    for quant in ("Q4_K_M", "Q8_0"):
        meta = model.meta(quant)
        assert meta.file_size == model.file(quant).size_bytes > 0
        plan = plan_memory(meta, machine, n_ctx=4096)
        assert plan.verdict in ("full_gpu", "partial", "cpu", "no_fit"), plan.verdict
    small = model.meta("Q4_K_M").file_size / 1e9
    # A 64 GB machine holds every Q4_K_M below ~55 GB.
    if small < 50:
        assert plan_memory(model.meta("Q4_K_M"), machine, n_ctx=4096).verdict != "no_fit"


def test_superseded_by_points_to_a_newer_release() -> None:
    ids = {m.id: m for m in CATALOG}
    marked = [m for m in CATALOG if m.superseded_by]
    assert len(marked) >= 15
    for m in marked:
        newer = ids[m.superseded_by]
        assert newer.released > m.released, (m.id, newer.id)
        assert newer.superseded_by != m.id
    for old, new in [("qwen3-8b", "qwen3.5-9b"), ("qwen3-30b-a3b", "qwen3-30b-a3b-instruct-2507"),
                     ("qwen3.5-35b-a3b", "qwen3.6-35b-a3b"), ("mistral-small-24b", "mistral-small-3.2-24b")]:
        assert ids[old].superseded_by == new


def test_header_entries_and_mmproj() -> None:
    shipped = _shipped()
    for m in CATALOG:
        if m.header is not None:
            assert m.arch.architecture == m.header["metadata"]["general.architecture"]
            assert m.header["metadata"]["general.file_type"] == 1
            assert {t[2] for t in m.header["tensors"]} <= {0, 1}  # F32 vectors, F16 matrices
    assert len(shipped) == 28
    assert CATALOG.get("qwen3.6-35b-a3b").mmproj["file"].startswith("mmproj")
    assert CATALOG.get("qwen3-8b").mmproj is None


def test_qwen3_small_models_have_tied_embeddings_as_their_published_files_show() -> None:
    """Qwen/Qwen3-0.6B-GGUF's Q8_0 is 639,446,688 bytes: tied embeddings match it within 0.6 %, a separate
    151,936-row output matrix would put it ~27 % higher; 1.7B (1.83 GB) and 4B (4.28 GB) likewise (+9 % or more untied)."""
    from dataclasses import replace

    for mid, published in [("qwen3-0.6b", 639_446_688), ("qwen3-1.7b", 1.83e9), ("qwen3-4b", 4.28e9)]:
        model = CATALOG.get(mid)
        assert model.arch.tied_embeddings
        assert abs(model.file("Q8_0").size_bytes - published) / published < 0.006
        untied = replace(model, arch=replace(model.arch, tied_embeddings=False))
        assert (predicted_size(untied, "Q8_0") - published) / published > 0.08


def test_predicted_sizes_match_published_files() -> None:
    errors = []
    for row in PUBLISHED:
        size = CATALOG.get(row["id"]).file(row["quant"]).size_bytes
        errors.append(abs(size - row["bytes"]) / row["bytes"])
    assert len(errors) >= 25 and sum(r["kind"] == "exact" for r in PUBLISHED) >= 7
    assert statistics.median(errors) <= 0.02
    assert sorted(errors)[int(0.9 * len(errors)) - 1] <= 0.05


def test_the_headers_file_is_deterministic() -> None:
    script = _headers_script()
    path = REPO_ROOT / "resources" / "catalog_headers.json.gz"
    assert script.encode(_shipped()) == path.read_bytes()
    assert set(_shipped()) == set(script.MODELS)


@pytest.mark.slow
@pytest.mark.parametrize("key", ["lfm2-350m", "granite-4.0-h-tiny", "qwen3.5-35b-a3b", "glm-4.7-flash"])
def test_shipped_header_is_what_llama_cpp_builds(key: str, tmp_path: Path) -> None:
    script = _headers_script()
    arch, kv, tied = script.MODELS[key]
    assert script.build_record(arch, kv, tied, tmp_path, mtp=key in script.MTP) == _shipped()[key]


@pytest.mark.slow
@pytest.mark.parametrize("key", ["lfm2-350m", "qwen3.5-0.8b"])
def test_the_stand_in_build_equals_llama_cpps_direct_build(key: str, tmp_path: Path) -> None:
    """One layer per kind, few experts, 263 tokens, grown back: the same table as building the whole model."""
    script = _headers_script()
    arch, kv, _ = script.MODELS[key]
    assert script.llama_table(arch, kv, tmp_path) == script.llama_table(arch, kv, tmp_path, direct=True)
