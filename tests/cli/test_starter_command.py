"""`camelid starter`: offers what works for an installed app (finding 12, CLI side)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app import paths
from app.cli import main
from app.cli.starter import STARTER_QUANT, STARTER_REPO
from tests.fixtures.loopback_hub import LoopbackHub


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def no_bundled_starter(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(paths, "bundled_starter_model", lambda: None)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))


def test_the_same_repo_as_the_wizard() -> None:
    from app.ui.wizard import STARTER_REPO as WIZARD_REPO

    assert (STARTER_REPO, STARTER_QUANT) == (WIZARD_REPO, "Q4_1")


def test_missing_starter_offers_download_and_install(no_bundled_starter: None,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "starter")
    assert code == 1
    assert "camelid starter --download" in out and "--install-from" in out and "make" not in out
    code, _, err = _run(capsys, "chat", "--prompt", "hi")
    assert code == 2 and "camelid starter --download" in err and "make" not in err


def test_download_fetches_it_and_chat_finds_it(no_bundled_starter: None, loopback_hub: LoopbackHub,
                                               starter_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    loopback_hub.add_repo(STARTER_REPO)
    loopback_hub.add_file(STARTER_REPO, paths.STARTER_MODEL_FILE, starter_model)
    code, out, err = _run(capsys, "starter", "--download")
    assert code == 0, err
    assert out.startswith("Starter model installed: ") and paths.STARTER_MODEL_FILE in out
    code, out, _ = _run(capsys, "starter", "--json")
    data = json.loads(out)
    assert code == 0 and data["present"] and data["bytes"] == starter_model.stat().st_size
    from app.cli.chat import resolve_model

    assert resolve_model("starter").stat().st_size == starter_model.stat().st_size


def test_install_from_a_missing_file_is_a_sentence(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = _run(capsys, "starter", "--install-from", str(tmp_path / "nope.gguf"))
    assert code == 2 and err.startswith(f"camelid: There is no file at {tmp_path / 'nope.gguf'}.")
