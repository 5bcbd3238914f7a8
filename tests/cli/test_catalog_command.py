"""`camelid catalog`, `catalog --refresh` and `catalog --hub` through the real argparse front door."""

from __future__ import annotations

import json

import pytest

from app import paths
from app.cli import main
from app.core.fit import plan_memory
from app.core.machine.simulate import preset_profile
from app.core.models import load_catalog
from app.core.settings import Settings
from tests.fixtures.loopback_hub import LoopbackHub
from tests.fixtures.refresh_hub import NEW, NEW_GGUF, OWN, populate_new_models


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def new_models(loopback_hub: LoopbackHub) -> LoopbackHub:
    return populate_new_models(loopback_hub)


def test_plain_catalog_says_when_it_was_last_refreshed(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "catalog")
    assert code == 0
    assert "Catalog snapshot of 20" in out and "last refreshed never." in out
    code, out, _ = _run(capsys, "catalog", "--json")
    data = json.loads(out)
    assert data["last_refreshed"] is None and data["snapshot"] and data["models"]


def test_refresh_adds_the_new_model_and_it_plans(new_models: LoopbackHub,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "catalog", "--refresh", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert {e["model"] for e in data["added"]} == {NEW, OWN}
    assert data["last_refreshed"] == data["refreshed"] and data["header_reads"] == 2
    model = load_catalog().get(NEW)
    assert model.repo == NEW_GGUF and model.source == "hub"
    assert plan_memory(model.meta("Q4_K_M"), preset_profile("rtx-3060-12gb"), n_ctx=4096).verdict == "full_gpu"

    code, out, _ = _run(capsys, "catalog")
    assert code == 0 and "Qwen3.9 35B-A3B+" in out and "last refreshed 20" in out and "never" not in out
    code, out, _ = _run(capsys, "catalog", "--json")
    entry = next(m for m in json.loads(out)["models"] if m["model"] == NEW)
    assert entry["source"] == "hub" and entry["fetched"]

    code, out, _ = _run(capsys, "catalog", "--refresh")  # the text form; nothing new the second time
    assert code == 0 and "No new models from the 14 watched labs" in out and "last refreshed" in out


def test_refresh_offline_says_so_once_and_changes_nothing(new_models: LoopbackHub,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings()
    settings.set("offline", True)
    settings.save()
    new_models.clear_log()
    code, out, err = _run(capsys, "catalog", "--refresh")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "offline" in err and "Traceback" not in err
    code, out, _ = _run(capsys, "catalog", "--refresh", "--json")
    assert code == 2 and json.loads(out)["error"]["code"] == "offline"
    code, _, err = _run(capsys, "catalog", "--hub")
    assert code == 2 and err.count("\n") == 1
    assert new_models.requests() == [] and not paths.user_catalog_path().exists()


def test_a_connection_failure_is_one_sentence_and_keeps_the_user_catalog(
        new_models: LoopbackHub, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(capsys, "catalog", "--refresh")[0] == 0
    before = paths.user_catalog_path().read_bytes()
    new_models.stop()
    code, out, err = _run(capsys, "catalog", "--refresh")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("camelid: Could not reach") and "not changed" in err
    assert paths.user_catalog_path().read_bytes() == before


def test_catalog_hub_stops_at_the_first_connection_failure(loopback_hub: LoopbackHub,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    loopback_hub.stop()
    code, out, err = _run(capsys, "catalog", "--hub")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Could not reach" in err
