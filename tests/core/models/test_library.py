"""The library: Camelid's models folder, HF cache and LM Studio discovery, metadata cache, delete."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import hf_hub_download

from app import paths
from app.core.errors import CamelidError, ModelFileError
from app.core.models import library
from tests.fixtures.loopback_hub import LoopbackHub


def _gguf(path: Path, size: int = 64) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + b"\0" * (size - 4))
    return path


class CountingDescribe:
    def __init__(self) -> None:
        self.calls: list[Path] = []

    def __call__(self, path: Path) -> tuple[dict[str, Any] | None, str | None]:
        self.calls.append(path)
        return {"architecture": "llama", "size": path.stat().st_size}, "cpu"


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private home (LM Studio folder) and HF cache, so the user's real ones are never read."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return home


def test_lists_all_sources_with_metadata_cache(elsewhere: Path, loopback_hub: LoopbackHub, tmp_path: Path) -> None:
    models = paths.models_dir()
    _gguf(models / "org" / "Tiny-GGUF" / "Tiny-Q4_K_M.gguf", 100)
    for i in (1, 2):
        _gguf(models / "org" / "Big-GGUF" / f"Big-Q8_0-0000{i}-of-00002.gguf", 50)
    _gguf(models / "org" / "Half-GGUF" / "Half-Q2_K-00001-of-00002.gguf")
    _gguf(paths.downloads_dir() / "org" / "X" / "Partial-Q4_0.gguf")  # never listed
    _gguf(elsewhere / ".lmstudio" / "models" / "lmstudio-community" / "Phi-GGUF" / "Phi-Q6_K.gguf")
    loopback_hub.add_repo("ggml-org/Cached-GGUF")
    loopback_hub.add_file("ggml-org/Cached-GGUF", "cached-q8_0.gguf", b"GGUF" + b"\1" * 60)
    hf_hub_download("ggml-org/Cached-GGUF", "cached-q8_0.gguf", endpoint=loopback_hub.url, token=False,
                    cache_dir=os.environ["HF_HUB_CACHE"])

    describe = CountingDescribe()
    found = library.list_models(describe=describe)
    summary = [(m.name, m.source, m.repo_id, m.quant, m.size_bytes) for m in found]
    assert summary == [
        ("Big-Q8_0", "camelid", "org/Big-GGUF", "Q8_0", 100),
        ("Half-Q2_K", "camelid", "org/Half-GGUF", "Q2_K", 64),
        ("Tiny-Q4_K_M", "camelid", "org/Tiny-GGUF", "Q4_K_M", 100),
        ("Phi-Q6_K", "lmstudio", "lmstudio-community/Phi-GGUF", "Q6_K", 64),
        ("cached-q8_0", "hf-cache", "ggml-org/Cached-GGUF", "Q8_0", 64),
    ]
    half = found[1]
    assert not half.complete and "1 of 2" in (half.problem or "")
    assert found[0].verdict == "cpu" and found[0].meta == {"architecture": "llama", "size": 50}
    assert [m.deletable for m in found] == [True, True, True, False, False]
    assert len(describe.calls) == 5

    again = library.list_models(describe=describe)
    assert len(describe.calls) == 5  # every header came from the cache
    assert [m.to_dict() for m in again] == [m.to_dict() for m in found]
    tiny = models / "org" / "Tiny-GGUF" / "Tiny-Q4_K_M.gguf"
    _gguf(tiny, 120)  # a changed file is read again
    library.list_models(describe=describe)
    assert describe.calls[5:] == [tiny]


def test_find_and_delete(elsewhere: Path) -> None:
    models = paths.models_dir()
    tiny = _gguf(models / "org" / "Tiny-GGUF" / "Tiny-Q4_K_M.gguf")
    _gguf(models / "org" / "Tiny-GGUF" / "Tiny-Q8_0.gguf")
    lms = _gguf(elsewhere / ".lmstudio" / "models" / "pub" / "Other-GGUF" / "Other-Q4_K_M.gguf")
    assert library.find_model("Tiny-Q4_K_M") == tiny
    assert library.find_model("tiny-q4_k_m.gguf") == tiny
    assert library.find_model("org/Tiny-GGUF:Q4_K_M") == tiny
    assert library.find_model("org/Tiny-GGUF/Tiny-Q4_K_M") == tiny
    assert library.find_model("other") == lms  # a unique partial name
    assert library.find_model(str(lms)) == lms
    with pytest.raises(ModelFileError) as err:
        library.find_model("tiny")
    assert "Tiny-Q4_K_M" in str(err.value) and "Tiny-Q8_0" in str(err.value)
    with pytest.raises(ModelFileError) as err:
        library.find_model("nothing-like-it")
    assert "camelid models" in str(err.value)

    with pytest.raises(CamelidError) as err:
        library.delete_model("Other-Q4_K_M")
    assert "LM Studio" in str(err.value) and lms.exists()
    deleted = library.delete_model("Tiny-Q4_K_M")
    assert deleted.path == tiny and not tiny.exists()
    library.delete_model("Tiny-Q8_0")
    assert not (models / "org").exists()  # empty folders go too
