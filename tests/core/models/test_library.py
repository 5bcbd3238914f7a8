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


def _ollama_model(store: Path, parts: str, blob: bytes | Path, *, file_type: str | None = "Q4_K_M",
                  projector: bool = False) -> Path:
    """An Ollama-style store entry: a manifest under manifests/<parts>, its GGUF as blobs/sha256-<hex>."""
    import hashlib
    import json

    data = blob.read_bytes()[: 1 << 20] if isinstance(blob, Path) else blob
    digest = hashlib.sha256(data + parts.encode()).hexdigest()
    target = store / "blobs" / f"sha256-{digest}"
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(blob, Path):
        target.symlink_to(blob)  # a 98 MB model need not be copied for a listing
    else:
        target.write_bytes(blob)
    layers = [{"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}",
               "size": len(data)}]
    if projector:
        layers.append({"mediaType": "application/vnd.ollama.image.projector", "digest": "sha256:" + "0" * 64,
                       "size": 10})
    manifest: dict[str, Any] = {"schemaVersion": 2, "layers": layers}
    if file_type:
        config = json.dumps({"model_format": "gguf", "file_type": file_type}).encode()
        config_digest = hashlib.sha256(config).hexdigest()
        (store / "blobs" / f"sha256-{config_digest}").write_bytes(config)
        manifest["config"] = {"digest": f"sha256:{config_digest}", "size": len(config)}
    path = store / "manifests" / parts
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest), encoding="utf-8")
    return target


def test_ollama_store_is_listed_in_place_and_never_deleted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          starter_model: Path) -> None:
    store = tmp_path / "ollama"
    monkeypatch.setenv("OLLAMA_MODELS", str(store))
    smol = _ollama_model(store, "registry.ollama.ai/library/smollm2/135m", starter_model, file_type="Q4_1")
    latest = store / "manifests" / "registry.ollama.ai" / "library" / "smollm2" / "latest"
    latest.write_text((latest.parent / "135m").read_text(), encoding="utf-8")  # a second tag, same blob
    hub_blob = _ollama_model(store, "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF/Q4_K_M", b"GGUF" + b"\0" * 60,
                             file_type=None, projector=True)
    (store / "manifests" / "registry.ollama.ai" / "library" / "broken").mkdir(parents=True)
    (store / "manifests" / "registry.ollama.ai" / "library" / "broken" / "latest").write_text("{not json")
    _ollama_model(store, "registry.ollama.ai/library/gone/latest", b"GGUF" + b"\1" * 60).unlink()
    before = sorted(p.relative_to(store) for p in store.rglob("*"))

    found = library.list_models(describe=CountingDescribe(), sources=["ollama"])
    assert [(m.name, m.source, m.repo_id, m.quant, m.path) for m in found] == [
        ("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", "ollama", "bartowski/Llama-3.2-1B-Instruct-GGUF",
         "Q4_K_M", hub_blob),
        ("smollm2:135m", "ollama", None, "Q4_1", smol),
    ]
    assert not any(m.deletable for m in found)
    # The real header is read from the blob although it has no .gguf extension.
    real = library.list_models(sources=["ollama"])
    assert real[1].meta and real[1].meta["architecture"] == "llama"
    assert library.find_model("smollm2:135m") == smol

    with pytest.raises(CamelidError) as err:
        library.delete_model("smollm2:135m")
    assert "Ollama" in str(err.value) and "ollama rm smollm2:135m" in str(err.value)
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before  # nothing moved, copied or deleted


def test_added_folders_are_listed_read_only(tmp_path: Path) -> None:
    from app.core.settings import Settings

    one = _gguf(tmp_path / "disk" / "models" / "Thing-Q5_K_M.gguf")
    two = _gguf(tmp_path / "other" / "deep" / "Other-Q8_0.gguf")
    own = _gguf(paths.models_dir() / "Mine-Q4_0.gguf")
    settings = Settings()
    settings.set("model_folders", f"{tmp_path / 'disk'}{os.pathsep}{tmp_path / 'missing'}{os.pathsep}"
                                  f"{tmp_path / 'other'}{os.pathsep}{paths.models_dir()}")
    settings.save()
    found = library.list_models(describe=CountingDescribe(), sources=["camelid", "folder"])
    assert [(m.name, m.source, m.path, m.deletable) for m in found] == [
        ("Mine-Q4_0", "camelid", own, True),  # Camelid's own folder is not listed twice
        ("Other-Q8_0", "folder", two, False),
        ("Thing-Q5_K_M", "folder", one, False),
    ]
    with pytest.raises(CamelidError):
        library.delete_model("Thing-Q5_K_M")
    assert one.exists()
    assert library.scan_models(["folder"], folders=[tmp_path / "other"])[0].path == two
