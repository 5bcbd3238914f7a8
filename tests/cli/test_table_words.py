"""CLI tables in the user's words, with headers and one unit per kind of size (findings 35, 36)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli import main
from app.cli.common import file_size, fit_words
from tests.fixtures.loopback_hub import LoopbackHub
from tests.fixtures.synthetic_gguf import big_model


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_fit_and_size_words() -> None:
    assert [fit_words(v) for v in ("full_gpu", "partial", "cpu", "no_fit", None)] == [
        "fits on GPU", "fits, GPU+RAM", "fits, CPU", "too big", "not known"]
    assert fit_words(None, unknown="gated") == "gated"
    assert (file_size(98_406_400), file_size(4_920_000_000), file_size(512), file_size(None)) == (
        "98.4 MB", "4.9 GB", "512 B", "unknown")


def test_files_table_has_a_header_words_and_sha256(loopback_hub: LoopbackHub, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    repo = "bartowski/Meta-Llama-3.1-8B-Instruct-GGUF"
    big = tmp_path / "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf"
    big_model(big)
    loopback_hub.add_repo(repo)
    loopback_hub.add_file(repo, big.name, big, sha256="ab" * 32)
    code, out, err = _run(capsys, "files", repo, "--preset", "rtx-4090")
    assert code == 0, err
    header, row = out.splitlines()[1:3]
    assert header.split() == ["quant", "size", "fit", "here", "sha256", "file"]
    assert "fits on GPU" in row and "abababababab" in row and " GB " in row
    assert "full_gpu" not in out and "?" not in out
    code, out, _ = _run(capsys, "files", repo, "--preset", "laptop-8gb-cpu", "--ram", "4")
    assert "too big" in out and "no_fit" not in out


def test_models_table_has_a_header(tmp_path: Path, starter_model: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from app import paths

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    code, out, _ = _run(capsys, "models", "--source", "lmstudio")
    assert out.startswith("No models found in LM Studio.") and str(paths.models_dir()) not in out
    code, out, _ = _run(capsys, "models", "--source", "camelid")
    assert out.startswith(f"No models yet in {paths.models_dir()}.")
    paths.models_dir().mkdir(parents=True, exist_ok=True)
    (paths.models_dir() / starter_model.name).symlink_to(starter_model)
    code, out, err = _run(capsys, "models", "--source", "camelid")
    assert code == 0, err
    header, row = out.splitlines()[:2]
    assert header.split() == ["model", "size", "fit", "here", "found", "in"]
    assert row.startswith(starter_model.stem) and row.rstrip().endswith("Camelid") and " MB " in row


def test_catalog_columns_fit_their_longest_cell(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "catalog")
    assert code == 0 and "File sizes in GB" in out
    table = out.split("\n\n")[0].splitlines()
    assert len(table) > 10 and all(len(line) == len(table[0]) for line in table[1:])


def test_hw_names_memory_as_sold_next_to_the_measure(capsys: pytest.CaptureFixture[str]) -> None:
    from app.cli.common import sold_as

    assert (sold_as(int(23.5 * 2**30) + 2**20), sold_as(8 * 2**30)) == ("24 GB", "8 GB")
    code, out, _ = _run(capsys, "hw", "--preset", "rtx-4090")
    assert code == 0
    assert "64.0 GiB total (sold as 64 GB)" in out and "24.0 GiB VRAM (sold as 24 GB)" in out
