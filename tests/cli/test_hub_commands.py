"""`camelid search`, `files`, `download`, `models`, `rm` through the real argparse front door."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from app import paths
from app.cli import main
from tests.fixtures.loopback_hub import LoopbackHub
from tests.fixtures.synthetic_gguf import big_model

REPO = "org/Tiny-GGUF"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def tiny_repo(loopback_hub: LoopbackHub) -> LoopbackHub:
    loopback_hub.add_repo(REPO, downloads=42, gguf={"total": 135_000_000, "architecture": "llama"})
    loopback_hub.add_file(REPO, "Tiny-Q4_K_M.gguf", b"GGUF" + bytes(range(256)) * 400)
    for i in (1, 2):
        loopback_hub.add_file(REPO, f"Tiny-Q8_0-0000{i}-of-00002.gguf", b"GGUF" + bytes([i]) * 5000)
    return loopback_hub


def test_search_and_files(tiny_repo: LoopbackHub, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "search", "tiny", "--json")
    assert code == 0 and json.loads(out)[0]["repo_id"] == REPO
    code, out, _ = _run(capsys, "search", "tiny")
    assert code == 0 and REPO in out and "42 downloads" in out
    code, out, _ = _run(capsys, "files", REPO, "--json", "--no-fit")
    data = json.loads(out)
    assert [(q["quant"], q["shards"], q["total_bytes"]) for q in data["quants"]] == [
        ("Q8_0", 2, 10008), ("Q4_K_M", 1, 102404)]
    code, out, _ = _run(capsys, "files", REPO, "--no-fit")
    assert "Q4_K_M" in out and "2 shards" in out


def test_download_json_and_library(tiny_repo: LoopbackHub, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "download", f"{REPO}:Q8_0", "--json", "--no-fit-check", "--dry-run")
    assert code == 0 and json.loads(out)["remaining_bytes"] == 10008
    assert tiny_repo.bytes_served() == 0
    code, out, err = _run(capsys, "download", f"{REPO}:Q8_0", "--json", "--no-fit-check")
    assert code == 0, err
    result = json.loads(out)
    assert {"path", "bytes", "sha256", "verified"} <= set(result)
    assert result["verified"] is True and result["bytes"] == 10008
    assert result["path"].endswith("Tiny-Q8_0-00001-of-00002.gguf")
    code, out, err = _run(capsys, "download", f"{REPO}/Tiny-Q4_K_M.gguf", "--no-fit-check")
    assert code == 0 and "verified" in out

    code, out, err = _run(capsys, "rm", "Tiny-Q8_0")
    assert code == 0 and "Deleted Tiny-Q8_0" in out
    assert not list((paths.models_dir() / "org" / "Tiny-GGUF").glob("Tiny-Q8_0*"))


def test_download_errors_are_sentences(tiny_repo: LoopbackHub, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "download", "org/Missing-GGUF:Q4_K_M", "--json", "--no-fit-check")
    assert code == 2 and json.loads(out)["error"]["code"] == "not_found"
    code, _, err = _run(capsys, "download", REPO, "--no-fit-check")
    assert code == 2 and "Pick one" in err and "Traceback" not in err
    tiny_repo.add_repo("meta/Gated-GGUF", gated=True)
    tiny_repo.add_file("meta/Gated-GGUF", "Gated-Q4_K_M.gguf", b"GGUF")
    code, _, err = _run(capsys, "download", "meta/Gated-GGUF:Q4_K_M", "--no-fit-check")
    assert code == 2 and "gated" in err and "HF_TOKEN" in err


def test_models_lists_the_library(tiny_repo: LoopbackHub, capsys: pytest.CaptureFixture[str],
                                  tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    assert _run(capsys, "download", f"{REPO}:Q4_K_M", "--no-fit-check")[0] == 0
    code, out, err = _run(capsys, "models", "--json")
    assert code == 0, err
    listed = json.loads(out)
    assert [(m["name"], m["source"], m["repo_id"]) for m in listed] == [("Tiny-Q4_K_M", "camelid", REPO)]
    code, out, _ = _run(capsys, "models")
    assert code == 0 and "Tiny-Q4_K_M" in out


def test_fit_verdicts_come_from_the_real_headers(loopback_hub: LoopbackHub, capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path, starter_model: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """files, download and models judge the fit from each GGUF's own header, for the machine asked about."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    repo = "bartowski/Meta-Llama-3.1-8B-Instruct-GGUF"
    big = tmp_path / "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf"
    size = big_model(big)  # sparse: the real header of a 4.9 GB file
    loopback_hub.add_repo(repo)
    loopback_hub.add_file(repo, big.name, big, sha256="0" * 64)

    code, out, err = _run(capsys, "files", repo, "--json", "--preset", "rtx-4090")
    assert code == 0, err
    (quant,) = json.loads(out)["quants"]
    assert quant["total_bytes"] == size and quant["verdict"] == "full_gpu"
    code, out, _ = _run(capsys, "files", repo, "--json", "--preset", "laptop-8gb-cpu", "--ram", "4")
    assert json.loads(out)["quants"][0]["verdict"] == "no_fit"

    # A download that will not fit is refused after reading only the header.
    loopback_hub.clear_log()
    code, out, err = _run(capsys, "download", f"{repo}:Q4_K_M", "--preset", "laptop-8gb-cpu", "--ram", "4")
    assert code == 2 and "will not fit" in err and "--force" in err and "Traceback" not in err
    assert 0 < loopback_hub.bytes_served(repo, big.name) < 8 * 1024 * 1024
    assert not list(paths.models_dir().rglob("*.gguf"))

    # The library reads each file's header: a summary and the verdict on the machine asked about.
    dest = paths.models_dir() / "HuggingFaceTB" / "SmolLM2-135M-Instruct-GGUF" / starter_model.name
    dest.parent.mkdir(parents=True)
    try:
        os.link(starter_model, dest)
    except OSError:
        shutil.copyfile(starter_model, dest)
    code, out, err = _run(capsys, "models", "--json", "--preset", "workstation-64gb-cpu")
    assert code == 0, err
    (model,) = json.loads(out)
    assert model["verdict"] == "cpu" and model["quant"] == "Q4_1"
    assert model["meta"]["architecture"] == "llama" and model["meta"]["n_layers"] == 30
    assert model["meta"]["n_ctx_train"] == 8192 and model["meta"]["chat_template"] is True
    code, out, _ = _run(capsys, "models", "--json", "--preset", "rtx-4090")
    assert json.loads(out)[0]["verdict"] == "full_gpu"
