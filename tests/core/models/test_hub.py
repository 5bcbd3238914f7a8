"""Hub search and quant listing against the loopback Hub."""

from __future__ import annotations

import pytest

from app.core.errors import CamelidError, NotFoundError
from app.core.models import hub
from tests.fixtures.loopback_hub import LoopbackHub


@pytest.mark.parametrize(("name", "quant"), [
    ("Llama-3.1-8B-Instruct-Q4_K_M.gguf", "Q4_K_M"),
    ("qwen2.5-7b-instruct-q5_k_m-00001-of-00002.gguf", "Q5_K_M"),
    ("Q8_0/Model-00001-of-00003.gguf", "Q8_0"),
    ("gemma-3-27b-it-UD-Q4_K_XL.gguf", "UD-Q4_K_XL"),
    ("Qwen2.5-0.5B-Instruct-IQ3_XXS.gguf", "IQ3_XXS"),
    ("SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1"),
    ("phi-4-BF16.gguf", "BF16"),
    ("Meta-Llama-3.1-8B-Instruct-Q4_0_4_4.gguf", "Q4_0_4_4"),
    ("model.gguf", None),
])
def test_parse_quant(name: str, quant: str | None) -> None:
    assert hub.parse_quant(name) == quant


def test_search_sorted_by_downloads_with_gguf_summary(loopback_hub: LoopbackHub) -> None:
    loopback_hub.add_repo("bartowski/Qwen_Qwen3-8B-GGUF", downloads=500,
                          gguf={"total": 8_190_735_360, "architecture": "qwen3", "context_length": 40960})
    loopback_hub.add_file("bartowski/Qwen_Qwen3-8B-GGUF", "Qwen_Qwen3-8B-Q4_K_M.gguf", b"GGUF")
    loopback_hub.add_repo("Qwen/Qwen3-8B-GGUF", downloads=900)
    loopback_hub.add_file("Qwen/Qwen3-8B-GGUF", "qwen3-8b-q4_k_m.gguf", b"GGUF")
    loopback_hub.add_repo("Qwen/Qwen3-8B", downloads=10_000)  # safetensors only: not a GGUF repo
    loopback_hub.add_file("Qwen/Qwen3-8B", "model.safetensors", b"x", lfs=False)
    results = hub.search_models("qwen3-8b")
    assert [r.repo_id for r in results] == ["Qwen/Qwen3-8B-GGUF", "bartowski/Qwen_Qwen3-8B-GGUF"]
    assert results[1].parameters == 8_190_735_360 and results[1].to_dict()["architecture"] == "qwen3"
    assert len(hub.search_models("qwen3", limit=1)) == 1
    query = loopback_hub.requests(path_contains="/api/models")[0].query
    assert "filter=gguf" in query and "sort=downloads" in query


def test_repo_files_grouped_by_quant(loopback_hub: LoopbackHub) -> None:
    repo = "unsloth/Big-GGUF"
    loopback_hub.add_repo(repo)
    loopback_hub.add_file(repo, "Big-Q4_K_M.gguf", b"a" * 400)
    for i in (1, 2, 3):
        loopback_hub.add_file(repo, f"Q8_0/Big-Q8_0-0000{i}-of-00003.gguf", b"b" * (300 + i))
    loopback_hub.add_file(repo, "BF16/Big-BF16-00001-of-00002.gguf", b"c" * 1900)  # one shard missing
    loopback_hub.add_file(repo, "mmproj-Big-F16.gguf", b"m" * 50)
    loopback_hub.add_file(repo, "README.md", b"# Big", lfs=False)
    files = hub.repo_files(repo)
    assert files.sha == loopback_hub.repo(repo).sha
    by_quant = {q.quant: q for q in files.quants}
    assert set(by_quant) == {"Q4_K_M", "Q8_0", "BF16"}
    q8 = by_quant["Q8_0"]
    assert q8.is_split and q8.complete and q8.total_bytes == 301 + 302 + 303
    assert q8.first_file == "Q8_0/Big-Q8_0-00001-of-00003.gguf" and q8.name == "Big-Q8_0"
    assert all(f.sha256 and len(f.sha256) == 64 for f in q8.files)
    assert not by_quant["BF16"].complete
    assert [q.quant for q in files.quants] == ["Q4_K_M", "Q8_0", "BF16"]  # smallest first
    with_mmproj = hub.repo_files(repo, include_mmproj=True)
    assert [q.name for q in with_mmproj.quants if q.mmproj] == ["mmproj-Big-F16"]
    assert hub.select_quant(files, "q8_0") is not None
    assert hub.select_quant(files, "Q8_0/Big-Q8_0-00002-of-00003.gguf").quant == "Q8_0"
    with pytest.raises(CamelidError) as err:
        hub.select_quant(files)
    assert "Q4_K_M" in str(err.value) and f"{repo}:Q4_K_M" in str(err.value)
    with pytest.raises(NotFoundError) as err:
        hub.select_quant(files, "Q2_K")
    assert "Q8_0" in str(err.value)


def test_endpoint_is_read_at_call_time(loopback_hub: LoopbackHub, monkeypatch: pytest.MonkeyPatch) -> None:
    assert hub.endpoint() == loopback_hub.url
    monkeypatch.setenv("HF_ENDPOINT", "https://mirror.example/")
    assert hub.endpoint() == "https://mirror.example"
    assert hub.file_url("a/b", "x.gguf").startswith("https://mirror.example/a/b/resolve/main/")


def test_bad_repo_names_are_refused_without_a_request(loopback_hub: LoopbackHub) -> None:
    for bad in ("../etc", "a/b/c", "onlyname", "a/..", "a/b c"):
        with pytest.raises(CamelidError):
            hub.repo_files(bad)
    assert loopback_hub.requests() == []
