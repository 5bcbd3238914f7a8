"""The catalog refresh against the loopback Hub: real HTTP, real listings, real header reads over ranges."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from app import paths
from app.core.errors import RemoteError
from app.core.fit import plan_memory
from app.core.machine.simulate import preset_profile
from app.core.models import load_catalog
from app.core.models import refresh as refresh_mod
from app.core.models.refresh import OfflineError, refresh_catalog, refresh_due, watched_labs
from app.core.settings import Settings
from tests.fixtures.arch_gguf import arch_gguf
from tests.fixtures.loopback_hub import LoopbackHub
from tests.fixtures.refresh_hub import (
    FINETUNE,
    NEW,
    NEW_GGUF,
    OWN,
    TODAY,
    add_gguf,
    add_lab_model,
    populate_new_models,
)
from tests.fixtures.synthetic_gguf import big_model

MIB = 1024 * 1024


@pytest.fixture
def new_models(loopback_hub: LoopbackHub) -> LoopbackHub:
    return populate_new_models(loopback_hub)


def _header_requests(hub: LoopbackHub) -> list:
    return [r for r in hub.requests(method="GET") if r.filename]


def test_refresh_adds_the_new_lab_models_priced_from_their_headers(new_models: LoopbackHub) -> None:
    result = refresh_catalog()
    added = {e["model"]: e for e in result.added}
    assert set(added) == {NEW, OWN}
    entry = added[NEW]
    assert entry["repo"] == NEW_GGUF  # bartowski before an untrusted quantizer
    assert entry["file_pattern"] == "Qwen_Qwen3.9-35B-A3B-{quant}.gguf"
    assert entry["released"] == TODAY and entry["fetched"] == TODAY and entry["source"] == "hub"
    assert entry["license"] == "apache-2.0" and entry["strengths"] == ["chat"]
    assert entry["header"]["metadata"]["general.architecture"] == "qwen35moe"
    assert entry["active_params_b"] < entry["params_b"]
    assert added[OWN]["repo"] == f"{OWN}-GGUF" and added[OWN]["file_pattern"] == "gemma-5-2b-it-{quant}.gguf"
    assert added[OWN]["license"] == "gemma" and added[OWN]["name"] == "Gemma 5 2B it"
    assert added[OWN]["mmproj"] == {"file": "mmproj-gemma-5-2b-it-f16.gguf", "size_bytes": None}
    assert "mmproj" not in entry

    reasons = {s.repo: s.reason for s in result.skipped}
    assert "already in the catalog" in reasons[load_catalog(include_user=False).models[0].model]
    assert "base" in reasons[f"{NEW}-Base"]
    assert "not a chat model" in reasons["Qwen/Qwen3.9-Embedding-4B"]
    assert "no GGUF by a trusted quantizer" in reasons["Qwen/Qwen3.9-122B-A10B"]
    assert FINETUNE not in reasons and FINETUNE not in added  # never even looked at: not a watched lab

    # The user catalog is on disk, merged by load_catalog(), and the new model plans from its header.
    stored = json.loads(paths.user_catalog_path().read_text())
    assert stored["refreshed"] == result.refreshed and {m["model"] for m in stored["models"]} == {NEW, OWN}
    catalog = load_catalog()
    assert len(catalog) == len(load_catalog(include_user=False)) + 2
    model = catalog.get(NEW)
    assert model.source == "hub" and model.arch.architecture == "qwen35moe" and model.is_moe
    plan = plan_memory(model.meta("Q4_K_M"), preset_profile("rtx-4090"), n_ctx=8192)
    assert plan.verdict == "full_gpu" and plan.recurrent_state_bytes > 0
    assert not any(m.model == FINETUNE for m in catalog)


def test_refresh_costs_one_listing_per_lab_one_lookup_and_one_header_per_new_repo(
        new_models: LoopbackHub) -> None:
    new_models.clear_log()
    result = refresh_catalog()
    labs = watched_labs().labs
    api = [r for r in new_models.requests(method="GET") if r.path == "/api/models"]
    listings = [r for r in api if "author=" in r.query]
    lookups = [r for r in api if "base_model" in r.query]
    assert sorted(r.query.split("author=")[1].split("&")[0] for r in listings) == sorted(labs)
    # Lookups: one per new chat model of a watched lab (the two added and the one without a GGUF yet).
    assert len(lookups) == result.quant_lookups == 3
    headers = _header_requests(new_models)
    assert {(r.repo_id, r.filename) for r in headers} == {
        (NEW_GGUF, "Qwen_Qwen3.9-35B-A3B-Q4_K_M.gguf"), (f"{OWN}-GGUF", "gemma-5-2b-it-Q4_0.gguf")}
    for repo, filename in {(r.repo_id, r.filename) for r in headers}:
        assert new_models.bytes_served(repo, filename) <= 16 * MIB
    assert result.header_reads == 2 and result.header_bytes == new_models.bytes_served()
    assert result.requests == len(new_models.requests()) and result.listing_calls == len(labs)


def test_offline_sends_nothing_and_changes_nothing(new_models: LoopbackHub,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings()
    settings.set("offline", True)
    new_models.clear_log()
    with pytest.raises(OfflineError, match="offline"):
        refresh_catalog(settings=settings)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError):
        refresh_catalog()
    assert new_models.requests() == [] and not paths.user_catalog_path().exists()
    assert refresh_due(settings) is False


def test_a_connection_failure_mid_way_leaves_the_user_catalog_untouched(new_models: LoopbackHub) -> None:
    refresh_catalog()
    before = paths.user_catalog_path().read_bytes()
    add_lab_model(new_models, "Qwen/Qwen3.9-4B")
    add_gguf(new_models, "Qwen/Qwen3.9-4B-GGUF", "Qwen/Qwen3.9-4B", "Qwen3.9-4B", arch_gguf("qwen35"))
    new_models.clear_log()
    new_models.drop_after(100, path_contains="/cdn/")  # the connection dies inside the header read
    with pytest.raises(RemoteError) as failure:
        refresh_catalog()
    assert "Could not reach" in str(failure.value) and "not changed" in str(failure.value)
    assert "\n" not in str(failure.value)
    assert paths.user_catalog_path().read_bytes() == before
    assert [p.name for p in paths.user_catalog_path().parent.glob(".catalog_user-*")] == []


def test_an_unreachable_hub_stops_at_the_first_request(new_models: LoopbackHub) -> None:
    new_models.stop()
    with pytest.raises(RemoteError, match="Could not reach"):
        refresh_catalog()
    assert not paths.user_catalog_path().exists()


def test_a_header_over_the_budget_is_skipped_after_at_most_the_budget(
        new_models: LoopbackHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "big.gguf"
    big_model(big, n_tokens=32_000)  # a Llama-3.1-8B header with a 32k-token tokenizer: about 0.6 MB
    add_lab_model(new_models, "meta-llama/Llama-5-8B-Instruct", tags=("llama",))
    add_gguf(new_models, "bartowski/meta-llama_Llama-5-8B-Instruct-GGUF", "meta-llama/Llama-5-8B-Instruct",
             "meta-llama_Llama-5-8B-Instruct", big, quants=("Q4_K_M",))
    monkeypatch.setattr(refresh_mod, "HEADER_MAX_BYTES", MIB // 4)
    result = refresh_catalog()
    reasons = {s.repo: s.reason for s in result.skipped}
    assert "larger than 0.25 MiB" in reasons["meta-llama/Llama-5-8B-Instruct"]
    assert new_models.bytes_served("bartowski/meta-llama_Llama-5-8B-Instruct-GGUF") <= MIB // 4
    assert result.max_header_bytes <= MIB // 4
    assert {e["model"] for e in result.added} == {NEW, OWN}  # the others still came in


def test_a_second_refresh_keeps_earlier_finds_and_adds_only_new_ones(new_models: LoopbackHub) -> None:
    first = refresh_catalog()
    new_models.clear_log()
    second = refresh_catalog()
    assert second.added == [] and second.header_reads == 0 and second.refreshed >= first.refreshed
    assert {s.repo for s in second.skipped if s.reason == "already in the catalog"} >= {NEW, OWN}
    assert {m.model for m in load_catalog() if m.source == "hub"} == {NEW, OWN}


def test_user_entries_never_replace_shipped_ones_and_a_damaged_file_is_left_out() -> None:
    shipped = load_catalog(include_user=False)
    clash = json.loads((paths.resources_dir() / "catalog.json").read_text())["models"][0]
    path = paths.user_catalog_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"refreshed": "2026-12-01T00:00:00Z",
                                "models": [{**clash, "name": "Impostor"}, {"id": "broken"}]}))
    merged = load_catalog()
    assert [m.name for m in merged] == [m.name for m in shipped]
    info = refresh_mod.user_catalog_info()
    assert info.refreshed == "2026-12-01T00:00:00Z" and any("broken" in p for p in info.problems)
    path.write_text("{not json")
    assert len(load_catalog()) == len(shipped)


def test_daily_check_is_due_once_a_day_and_only_when_on() -> None:
    settings = Settings()
    assert refresh_due(settings) is True  # never refreshed
    path = paths.user_catalog_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    now = datetime(2026, 12, 2, 12, tzinfo=timezone.utc)
    path.write_text(json.dumps({"refreshed": (now - timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                                "models": []}))
    assert refresh_due(settings, now=now) is False
    assert refresh_due(settings, now=now + timedelta(days=1)) is True
    settings.set("catalog_daily_check", False)
    assert refresh_due(settings, now=now + timedelta(days=1)) is False


def test_entry_names_and_strengths_from_the_repo_name() -> None:
    assert refresh_mod._display_name("Qwen3.9-35B-A3B-Instruct") == "Qwen3.9 35B-A3B Instruct"
    assert refresh_mod._display_name("gemma-5-2b-it") == "Gemma 5 2B it"
    assert refresh_mod._family("Qwen3.9-Coder-30B-A3B-Instruct", "qwen3moe") == "Qwen3.9 Coder"
    assert refresh_mod._strengths("Qwen3.9-Coder-30B-A3B-Thinking", []) == ["chat", "code", "reasoning"]
    assert refresh_mod._file_pattern("Q4_K_M/Model-Q4_K_M-00001-of-00002.gguf", "Q4_K_M") == \
        "{quant}/Model-{quant}-00001-of-00002.gguf"
    assert refresh_mod._file_pattern("model.q4_k_m.gguf", "Q4_K_M") == "model.{quant}.gguf"


def test_a_failing_hub_stops_the_refresh_with_one_sentence(new_models: LoopbackHub) -> None:
    new_models.fail_next(1, status=503, path_contains="/api/models")
    with pytest.raises(RemoteError) as failure:
        refresh_catalog()
    assert "503" in str(failure.value) and "\n" not in str(failure.value)
    assert len([r for r in new_models.requests() if r.path == "/api/models"]) == 1  # no retries, no more labs
    assert not paths.user_catalog_path().exists()


def test_recommend_ranks_a_refreshed_model_with_its_own_header_plan(new_models: LoopbackHub,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """After a refresh, `recommend` plans the new lab model from the header it read: the pick's plan is
    exactly plan_memory's for that header at the pick's settings, hybrid state included, and
    the CLI says the pick came from a refresh."""
    from app.cli import main
    from app.core.fit import LoadChoices, plan_with_choices
    from app.core.models.recommend import recommend

    refresh_catalog()
    hw = preset_profile("rtx-4090")
    picks = recommend(hw, "chat", catalog=load_catalog())
    pick = next(p for p in picks if p.model.model == NEW)
    assert pick.model.source == "hub" and pick.to_dict()["source"] == "hub"
    again = plan_with_choices(pick.model.meta(pick.quant), hw, LoadChoices(n_ctx=pick.n_ctx, gpu_layers=pick.n_gpu_layers),
                              improvements=False)
    assert again.total_bytes == pick.plan.total_bytes and pick.plan.recurrent_state_bytes > 0
    capsys.readouterr()
    assert main(["recommend", "--preset", "rtx-4090", "--top", "0"]) == 0
    out = capsys.readouterr().out
    assert "(found by a catalog refresh)" in out and "last checked for new models on" in out
