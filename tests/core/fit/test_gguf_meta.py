"""GGUF headers: local files, split files, HTTP ranges on the loopback Hub, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import pytest
from gguf import GGMLQuantizationType as T

from app.cli import main
from app.core.errors import (
    GatedRepoError,
    ModelFileError,
    NotFoundError,
    NotGGUFError,
    RangeNotSupportedError,
    TruncatedGGUFError,
)
from app.core.fit import gguf_meta, quants
from app.core.fit.architectures import ArchConstants
from app.core.fit.gguf_meta import read_gguf, read_gguf_remote, read_gguf_url
from tests.fixtures.synthetic_gguf import LLAMA_8B, LLAMA_KV, big_model, write_gguf

# -- local -------------------------------------------------------------------------


def test_reader_agrees_with_gguf_package(starter_model: Path) -> None:
    meta = read_gguf(starter_model)
    reader = gguf.GGUFReader(starter_model)
    assert meta.header_bytes == reader.data_offset
    theirs = {t.name: (tuple(int(d) for d in t.shape), int(t.tensor_type), int(t.n_bytes)) for t in reader.tensors}
    assert {t.name: (t.shape, t.ggml_type, t.n_bytes) for t in meta.tensors} == theirs
    assert (meta.architecture, meta.n_layer, meta.n_embd, meta.n_head, meta.n_head_kv) == ("llama", 30, 576, 9, 3)
    assert (meta.head_dim_k, meta.n_vocab, meta.n_ctx_train, meta.quant) == (64, 49152, 8192, "Q4_1")
    assert meta.tied_embeddings and "<|im_start|>" in meta.chat_template
    assert meta.file_size == starter_model.stat().st_size and meta.bytes_fetched == 0


def test_big_sparse_header_reads_without_touching_data(tmp_path: Path) -> None:
    path = tmp_path / "Llama-3.1-8B-Q4_K_M.gguf"
    size = big_model(path)
    assert size > 4.9e9 and path.stat().st_blocks * 512 < 64 * 1024 * 1024  # sparse on disk
    meta = read_gguf(path)
    assert meta.n_vocab == 128256 and meta.quant == "Q4_K_M" and meta.file_size == size
    assert meta.tensor_bytes == sum(t.n_bytes for t in quants.predict_tensors(LLAMA_8B, "Q4_K_M"))
    assert 2_000_000 < meta.header_bytes < 4_000_000
    # long arrays (the tokenizer) are skipped, only their length kept
    assert "tokenizer.ggml.tokens" not in meta.metadata


def test_split_gguf_reads_every_shard(tmp_path: Path) -> None:
    tensors = [(t.name, t.shape, t.ggml_type) for t in quants.predict_tensors(LLAMA_8B, "Q8_0")]
    parts = [tensors[:100], tensors[100:200], tensors[200:]]
    for i, part in enumerate(parts):
        write_gguf(tmp_path / f"Big-Q8_0-{i + 1:05d}-of-00003.gguf", "llama", part,
                   kv=LLAMA_KV if i == 0 else {}, file_type=quants.F.MOSTLY_Q8_0,
                   extra_kv={"split.no": i, "split.count": 3, "split.tensors.count": len(tensors)})
    meta = read_gguf(tmp_path / "Big-Q8_0-00001-of-00003.gguf")
    assert len(meta.tensors) == len(tensors) and len(meta.shards) == 3
    assert {t.shard for t in meta.tensors} == {0, 1, 2}
    assert meta.tensor_bytes == sum(t.n_bytes for t in quants.predict_tensors(LLAMA_8B, "Q8_0"))
    (tmp_path / "Big-Q8_0-00003-of-00003.gguf").unlink()
    with pytest.raises(ModelFileError, match=r"00003-of-00003\.gguf is missing"):
        read_gguf(tmp_path / "Big-Q8_0-00001-of-00003.gguf")


def test_per_layer_heads_and_sliding_window_from_header(tmp_path: Path) -> None:
    arch = ArchConstants("gemma2", 4, 256, 4, [2, 2, 1, 1], 512, 1000, head_dim_k=64, n_ctx_train=8192)
    tensors = [(t.name, t.shape, t.ggml_type) for t in quants.predict_tensors(arch, "F16")]
    path = tmp_path / "g.gguf"
    write_gguf(path, "gemma2", tensors, kv={"block_count": 4, "embedding_length": 256, "attention.head_count": 4,
                                           "attention.head_count_kv": [2, 2, 1, 1], "attention.key_length": 64,
                                           "attention.value_length": 64, "attention.sliding_window": 4096,
                                           "context_length": 8192, "vocab_size": 1000})
    meta = read_gguf(path)
    assert meta.n_head_kv == [2, 2, 1, 1] and meta.kv_heads(2) == 1
    assert meta.swa_pattern == [True, False, True, False] and meta.sliding_window == 4096
    assert meta.tied_embeddings


# -- bad input --------------------------------------------------------------------------


def test_not_a_gguf(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_text("<html>404 Not Found</html>")
    with pytest.raises(NotGGUFError, match="not a GGUF") as info:
        read_gguf(path)
    assert info.value.fix
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(NotGGUFError):
        read_gguf(empty)


def test_truncated_header(tmp_path: Path, starter_model: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(starter_model.read_bytes()[:100_000])
    with pytest.raises(TruncatedGGUFError, match="ends inside its GGUF header") as info:
        read_gguf(cut)
    assert "download it again" in info.value.fix


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="no file"):
        read_gguf(tmp_path / "nope.gguf")
    with pytest.raises(ModelFileError, match="folder"):
        read_gguf(tmp_path)


def test_damaged_header_is_a_model_file_error(tmp_path: Path, starter_model: Path) -> None:
    data = bytearray(starter_model.read_bytes()[:200_000])
    data[16:24] = (2**40).to_bytes(8, "little")  # an absurd metadata count
    path = tmp_path / "bad.gguf"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="damaged"):
        read_gguf(path)


def test_cli_bad_input_is_a_sentence_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "notes.gguf"
    path.write_text("hello")
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("camelid: ") and "not a GGUF" in err and "Traceback" not in err
    assert main(["plan", str(tmp_path / "missing.gguf"), "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "model_file"


def test_cli_plan_local(starter_model: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["plan", str(starter_model), "--ctx", "2048", "--preset", "rtx-3060-12gb", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == "full_gpu" and data["n_ctx"] == 2048 and data["n_gpu_layers"] == 31
    assert data["model"]["quant"] == "Q4_1"
    assert main(["plan", str(starter_model), "--ram", "16", "--cache-type", "q8_0"]) == 0
    out = capsys.readouterr().out
    assert "Verdict: fits, on the CPU" in out and "flash attention on" in out and "KV cache q8_0/q8_0" in out


# -- remote --------------------------------------------------------------------------------

REPO = "meta-test/Llama-3.1-8B-Instruct-GGUF"
FILE = "Llama-3.1-8B-Instruct-Q4_K_M.gguf"


@pytest.fixture
def big_on_hub(loopback_hub, tmp_path: Path):
    path = tmp_path / FILE
    size = big_model(path)
    loopback_hub.add_repo(REPO)
    loopback_hub.add_file(REPO, FILE, path, sha256="0" * 64)
    header = read_gguf(path).header_bytes
    loopback_hub.clear_log()
    return loopback_hub, size, header


def test_remote_plan_reads_only_the_header(big_on_hub, capsys: pytest.CaptureFixture) -> None:
    hub, size, header = big_on_hub
    assert main(["plan", f"{REPO}/{FILE}", "--preset", "rtx-4090", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    served = hub.bytes_served(REPO, FILE)
    assert data["model"]["bytes_fetched"] == served
    assert header <= served < header + 4 * 1024 * 1024  # header plus at most the last chunk's overshoot
    assert served < size / 1000
    assert data["model"]["file_size"] == size and data["verdict"] == "full_gpu"
    ranges = [r.range for r in hub.requests(method="GET") if r.filename == FILE]
    assert ranges and all(r and r.startswith("bytes=") for r in ranges)
    assert len(ranges) >= 2  # fetched incrementally, in growing chunks


def test_remote_read_by_quant_uses_the_repo_listing(big_on_hub, capsys: pytest.CaptureFixture) -> None:
    hub, size, _header = big_on_hub
    assert main(["plan", f"{REPO}:Q4_K_M", "--ram", "32"]) == 0
    out = capsys.readouterr().out
    assert "header read over HTTP" in out and "Verdict:" in out
    assert hub.bytes_served(REPO, FILE) < size / 1000


def test_remote_meta_equals_local(big_on_hub, tmp_path: Path) -> None:
    remote = read_gguf_remote(REPO, FILE)
    local = read_gguf(tmp_path / FILE)
    assert remote.tensors == local.tensors and remote.n_vocab == local.n_vocab == 128256
    assert remote.bytes_fetched > 0 and remote.file_size == local.file_size


def test_remote_split_shards(loopback_hub, tmp_path: Path) -> None:
    tensors = [(t.name, t.shape, t.ggml_type) for t in quants.predict_tensors(LLAMA_8B, "Q8_0")]
    repo = "org/Split-GGUF"
    loopback_hub.add_repo(repo)
    for i, part in enumerate((tensors[:150], tensors[150:])):
        name = f"Q8_0/Split-Q8_0-{i + 1:05d}-of-00002.gguf"
        path = tmp_path / f"s{i}.gguf"
        write_gguf(path, "llama", part, kv=LLAMA_KV if i == 0 else {}, file_type=quants.F.MOSTLY_Q8_0,
                   extra_kv={"split.no": i, "split.count": 2, "split.tensors.count": len(tensors)})
        loopback_hub.add_file(repo, name, path, sha256="0" * 64)
    meta = read_gguf_remote(repo, "Q8_0/Split-Q8_0-00001-of-00002.gguf")
    assert len(meta.tensors) == len(tensors) and len(meta.shards) == 2
    assert meta.tensor_bytes == sum(t.n_bytes for t in quants.predict_tensors(LLAMA_8B, "Q8_0"))
    assert meta.bytes_fetched == loopback_hub.bytes_served(repo)


def test_remote_404(loopback_hub) -> None:
    loopback_hub.add_repo("org/Here-GGUF")
    with pytest.raises(NotFoundError, match="does not exist"):
        read_gguf_remote("org/Here-GGUF", "missing-Q4_K_M.gguf")
    with pytest.raises(NotFoundError, match="not found"):
        read_gguf_remote("org/Nowhere-GGUF", "x.gguf")


def test_remote_gated_names_the_license_page(loopback_hub, tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "g.gguf"
    big_model(path, n_tokens=10)
    loopback_hub.add_repo("org/Gated-GGUF", gated=True, tokens={"hf_ok"})
    loopback_hub.add_file("org/Gated-GGUF", "g-Q4_K_M.gguf", path, sha256="0" * 64)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(GatedRepoError) as info:
        read_gguf_remote("org/Gated-GGUF", "g-Q4_K_M.gguf")
    assert f"{loopback_hub.url}/org/Gated-GGUF" in info.value.fix
    with pytest.raises(GatedRepoError, match="not been granted"):
        read_gguf_remote("org/Gated-GGUF", "g-Q4_K_M.gguf", token="hf_wrong")
    assert read_gguf_remote("org/Gated-GGUF", "g-Q4_K_M.gguf", token="hf_ok").quant == "Q4_K_M"


def test_server_ignoring_range_is_stopped(big_on_hub) -> None:
    hub, size, _header = big_on_hub
    hub.ignore_range(True)
    with pytest.raises(RangeNotSupportedError, match="ignores byte ranges"):
        read_gguf_remote(REPO, FILE)
    # Camelid hung up instead of reading on: at most what the kernel had already queued.
    assert hub.bytes_served(REPO, FILE) < 64 * 1024 * 1024 < size


def test_remote_truncated_and_not_gguf(loopback_hub, starter_model: Path) -> None:
    loopback_hub.add_repo("org/Odd-GGUF")
    loopback_hub.add_file("org/Odd-GGUF", "cut.gguf", starter_model.read_bytes()[:50_000])
    loopback_hub.add_file("org/Odd-GGUF", "page.gguf", b"<!doctype html><title>login</title>" * 10)
    with pytest.raises(TruncatedGGUFError):
        read_gguf_remote("org/Odd-GGUF", "cut.gguf")
    with pytest.raises(NotGGUFError):
        read_gguf_remote("org/Odd-GGUF", "page.gguf")


def test_read_gguf_url_with_explicit_session(big_on_hub) -> None:
    import httpx2

    hub, _size, _header = big_on_hub
    with httpx2.Client() as session:
        meta = read_gguf_url(hub.file_url(REPO, FILE), session=session)
    assert meta.n_layer == 32 and meta.tensors[0].ggml_type == T.Q4_K


def test_unknown_architecture_header_is_approximate(tmp_path: Path) -> None:
    arch = ArchConstants("brandnew", 2, 256, 4, 4, 512, 1000)
    path = tmp_path / "new.gguf"
    write_gguf(path, "brandnew", [(t.name, t.shape, t.ggml_type) for t in quants.predict_tensors(arch, "F16")],
               kv={"block_count": 2, "embedding_length": 256, "attention.head_count": 4, "vocab_size": 1000})
    meta = read_gguf(path)
    assert meta.approximate and meta.n_head_kv == 4 and gguf_meta.ModelMeta is type(meta)


def test_header_record_round_trips(starter_model: Path) -> None:
    """`to_record` / `from_record` (what catalogs store for a model not on disk): the same layer kinds,
    state sizes, MLA flag and tensor bytes as reading the file, for a real file and 2026 hybrids."""
    from tests.fixtures import arch_gguf

    paths = [starter_model, arch_gguf.arch_gguf("qwen3next", "toy"), arch_gguf.arch_gguf("deepseek2", "toy"),
             arch_gguf.arch_gguf("granitehybrid", "toy")]
    for path in paths:
        meta = read_gguf(path)
        again = gguf_meta.ModelMeta.from_record(json.loads(json.dumps(meta.to_record())))
        for field_name in ("architecture", "n_layer", "n_embd", "n_head", "n_head_kv", "head_dim_k", "n_vocab",
                           "layer_kinds", "state_r", "state_s", "mla", "tensor_bytes", "tied_embeddings",
                           "swa_pattern", "file_type", "header_bytes", "file_size"):
            assert getattr(again, field_name) == getattr(meta, field_name), (path.name, field_name)
        assert "tokenizer.ggml.tokens" not in meta.to_record()["metadata"]


def test_malformed_header_record_is_a_typed_error() -> None:
    with pytest.raises(ModelFileError, match="malformed"):
        gguf_meta.ModelMeta.from_record({"metadata": {}, "tensors": [["x", "not a shape"]]})
    with pytest.raises(ModelFileError, match="unknown tensor type"):
        gguf_meta.ModelMeta.from_record({"metadata": {"general.architecture": "llama"}, "tensors": [["x", [4], 9999]]})
