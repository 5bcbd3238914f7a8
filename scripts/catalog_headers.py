"""Write resources/catalog_headers.json.gz: the tensor tables of the catalog's newer architectures.

The shipped catalog prices hybrid, recurrent, MLA and other non-plain models from
a GGUF header (`ModelMeta.to_record`) rather than from a few constants. No weights
are needed for that, only the header: this script derives each model's GGUF
metadata from its config.json numbers the way llama.cpp's converter
(`convert_hf_to_gguf.py` / `conversion/*.py` in llama-cpp-python 0.3.36's sdist)
writes it for that architecture, and asks llama.cpp itself which tensors, of which
shapes, a file with that metadata holds.

Matrices are stored as F16 and vectors as F32 with ``general.file_type`` 1 (what
the converter writes for ``--outtype f16``), so that `ModelMeta.with_file_type(quant)`
re-types them the way llama-quantize would.

The output is deterministic (sorted keys, gzip mtime 0): running the script twice
gives byte-identical files, and `--check` says whether the committed file is
current.

    PYTHONPATH=. .venv/bin/python scripts/catalog_headers.py [--check] [--only KEY ...]
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "resources" / "catalog_headers.json.gz"

# The tensor-table discovery lives in the test fixture that builds structure-faithful GGUFs for the
# fit engine's tests (llama_model_init_from_user, then dropping optional tensors until llama.cpp
# loads the file). Importing it keeps one implementation of that llama.cpp handshake: the catalog's
# headers and the fit tests then agree by construction on what llama.cpp builds for a metadata set.
sys.path.insert(0, str(ROOT))
from tests.fixtures.arch_gguf import required_tensors, tensor_type  # noqa: E402

# -- metadata per architecture, as the converter writes it ------------------------------------


def _base(n_layer: int, n_embd: int, n_head: int, n_head_kv: int | list[int], n_ff: int | list[int],
          n_vocab: int, context: int, *, eps: float = 1e-6, head_dim: int | None = None,
          rope_dims: int | None = None, rope_base: float | None = None) -> dict[str, Any]:
    kv: dict[str, Any] = {"block_count": n_layer, "context_length": context, "embedding_length": n_embd,
                          "feed_forward_length": n_ff, "attention.head_count": n_head,
                          "attention.head_count_kv": n_head_kv, "attention.layer_norm_rms_epsilon": eps,
                          "vocab_size": n_vocab}
    if head_dim is not None:
        kv["attention.key_length"] = head_dim
        kv["attention.value_length"] = head_dim
    if rope_dims is not None:
        kv["rope.dimension_count"] = rope_dims
    if rope_base is not None:
        kv["rope.freq_base"] = rope_base
    return kv


def _delta_net(lin_k_heads: int, lin_v_heads: int, *, k_dim: int = 128, v_dim: int = 128,
               conv: int = 4, interval: int = 4) -> dict[str, Any]:
    """Gated DeltaNet keys, as conversion/qwen.py Qwen3NextModel.set_gguf_parameters writes them."""
    return {"ssm.conv_kernel": conv, "ssm.state_size": k_dim, "ssm.group_count": lin_k_heads,
            "ssm.time_step_rank": lin_v_heads, "ssm.inner_size": v_dim * lin_v_heads,
            "full_attention_interval": interval}


def qwen35(n_layer: int, n_embd: int, n_head: int, n_head_kv: int, n_ff: int, lin_k: int, lin_v: int,
           *, n_expert: int = 0, n_used: int = 0, ff_exp: int = 0, ff_shexp: int = 0) -> dict[str, Any]:
    """Qwen3.5 / 3.6 text model (qwen35, qwen35moe): head_dim 256, partial rotary 0.25, MRoPE
    sections [11, 11, 10, 0] (the converter's default), 248,320 tokens."""
    kv = _base(n_layer, n_embd, n_head, n_head_kv, n_ff, 248320, 262144, head_dim=256, rope_dims=64,
               rope_base=1e7)
    kv["rope.dimension_sections"] = [11, 11, 10, 0]
    kv.update(_delta_net(lin_k, lin_v))
    if n_expert:
        kv.update({"expert_count": n_expert, "expert_used_count": n_used,
                   "expert_feed_forward_length": ff_exp, "expert_shared_feed_forward_length": ff_shexp})
    return kv


def qwen3next() -> dict[str, Any]:
    kv = _base(48, 2048, 16, 2, 5120, 151936, 262144, head_dim=256, rope_dims=64, rope_base=1e7)
    kv.update(_delta_net(16, 32))
    kv.update({"expert_count": 512, "expert_used_count": 10, "expert_feed_forward_length": 512,
               "expert_shared_feed_forward_length": 512})
    return kv


def _kv_per_layer(n_layer: int, attention: Iterable[int], n_head_kv: int) -> list[int]:
    at = set(attention)
    return [n_head_kv if i in at else 0 for i in range(n_layer)]


def granite_h(n_layer: int, n_embd: int, n_head: int, n_head_kv: int, attention: Iterable[int],
              mamba_heads: int, *, n_ff_shexp: int, n_expert: int = 0, n_used: int = 0,
              ff_exp: int = 0) -> dict[str, Any]:
    """Granite 4.0-H (granitehybrid): Mamba-2 layers have head_count_kv 0; d_state 128, one group,
    expand 2, conv 4; NoPE attention; the dense/shared FFN width is shared_intermediate_size."""
    kv = _base(n_layer, n_embd, n_head, _kv_per_layer(n_layer, attention, n_head_kv), ff_exp or n_ff_shexp,
               100352, 131072, eps=1e-5, rope_dims=n_embd // n_head)
    kv.update({"ssm.conv_kernel": 4, "ssm.inner_size": 2 * n_embd, "ssm.state_size": 128,
               "ssm.time_step_rank": mamba_heads, "ssm.group_count": 1,
               "expert_shared_feed_forward_length": n_ff_shexp})
    if n_expert:
        kv.update({"expert_count": n_expert, "expert_used_count": n_used, "expert_feed_forward_length": ff_exp})
    return kv


def nemotron3_nano() -> dict[str, Any]:
    """NVIDIA-Nemotron-3-Nano-30B-A3B (nemotron_h_moe) from hybrid_override_pattern: M = Mamba-2,
    E = MoE FFN, * = attention (conversion/nemotron.py: per-layer head_count_kv and
    feed_forward_length, moe_intermediate_size on the E layers)."""
    pattern = "MEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEMEM*EMEMEMEME"
    n = len(pattern)
    kv = _base(n, 2688, 32, [2 if c == "*" else 0 for c in pattern],
               [1856 if c == "E" else 0 for c in pattern], 131072, 1048576, eps=1e-5, head_dim=128)
    kv.update({"ssm.conv_kernel": 4, "ssm.inner_size": 64 * 64, "ssm.state_size": 128,
               "ssm.time_step_rank": 64, "ssm.group_count": 8,
               "expert_count": 128, "expert_used_count": 6, "expert_feed_forward_length": 1856,
               "expert_shared_feed_forward_length": 3712, "expert_shared_count": 1,
               "attention.layer_norm_epsilon": 1e-5})
    return kv


def lfm2(n_layer: int, n_embd: int, n_head: int, attention: Iterable[int], n_ff: int, *,
         n_expert: int = 0, n_used: int = 0, ff_exp: int = 0, dense_lead: int = 0) -> dict[str, Any]:
    """LFM2 / LFM2.5 (lfm2, lfm2moe): short-convolution layers have head_count_kv 0, L_cache 3;
    n_ff is block_ff_dim after the converter's auto-adjust (2/3, rounded up to 256)."""
    kv = _base(n_layer, n_embd, n_head, _kv_per_layer(n_layer, attention, 8), n_ff, 65536, 128000, eps=1e-5)
    kv["shortconv.l_cache"] = 3
    if n_expert:
        kv.update({"expert_count": n_expert, "expert_used_count": n_used, "expert_feed_forward_length": ff_exp,
                   "leading_dense_block_count": dense_lead, "expert_gating_func": 2})
    return kv


def gpt_oss(n_layer: int, n_expert: int) -> dict[str, Any]:
    """gpt-oss (openai_moe in llama.cpp, 'gpt-oss' in GGUF): 2880 wide, 64 heads of 64, 8 KV heads,
    experts 2880 wide, sliding window 128 on every other layer."""
    kv = _base(n_layer, 2880, 64, 8, 2880, 201088, 131072, eps=1e-5, head_dim=64, rope_dims=64,
               rope_base=150000.0)
    kv.update({"expert_count": n_expert, "expert_used_count": 4, "expert_feed_forward_length": 2880,
               "attention.sliding_window": 128})
    return kv


def glm45_air() -> dict[str, Any]:
    """GLM-4.5-Air (glm4moe): 46 layers + 1 MTP layer (nextn_predict_layers 1, block_count 47),
    first layer dense, partial rotary 0.5."""
    kv = _base(47, 4096, 96, 8, 10944, 151552, 131072, eps=1e-5, head_dim=128, rope_dims=64)
    kv.update({"expert_count": 128, "expert_used_count": 8, "expert_feed_forward_length": 1408,
               "expert_shared_count": 1, "leading_dense_block_count": 1, "nextn_predict_layers": 1,
               "expert_gating_func": 2, "expert_weights_norm": True, "expert_weights_scale": 1.0})
    return kv


def glm47_flash() -> dict[str, Any]:
    """GLM-4.7-Flash (glm4_moe_lite, converted as deepseek2 with MLA): kv_lora 512, q_lora 768,
    rope 64 + nope 128 per head, v 256; the MLA keys as the converter writes them since the MLA rework."""
    kv = _base(47, 2048, 20, 1, 10240, 154880, 202752, eps=1e-5, rope_dims=64)
    kv.update({"attention.q_lora_rank": 768, "attention.kv_lora_rank": 512,
               "attention.key_length": 512 + 64, "attention.value_length": 512,
               "attention.key_length_mla": 128 + 64, "attention.value_length_mla": 256,
               "expert_count": 64, "expert_used_count": 4, "expert_feed_forward_length": 1536,
               "expert_shared_count": 1, "leading_dense_block_count": 1, "expert_gating_func": 2,
               "expert_weights_norm": True, "expert_weights_scale": 1.8})
    return kv


def mistral3(n_layer: int, n_embd: int, n_ff: int, *, context: int = 262144) -> dict[str, Any]:
    """Ministral 3 / Devstral Small 2 text model (mistral3): 32 heads of 128, 8 KV heads, 131,072 tokens."""
    return _base(n_layer, n_embd, 32, 8, n_ff, 131072, context, eps=1e-5, head_dim=128, rope_dims=128,
                 rope_base=1e6)


def smollm3() -> dict[str, Any]:
    return _base(36, 2048, 16, 4, 11008, 128256, 65536, head_dim=128, rope_dims=128, rope_base=5e6)


#: key -> (architecture, metadata without the architecture prefix, tied embeddings, note)
MODELS: dict[str, tuple[str, dict[str, Any], bool]] = {
    "qwen3-next-80b-a3b": ("qwen3next", qwen3next(), False),
    "qwen3.5-0.8b": ("qwen35", qwen35(24, 1024, 8, 2, 3584, 16, 16), True),
    "qwen3.5-2b": ("qwen35", qwen35(24, 2048, 8, 2, 6144, 16, 16), True),
    "qwen3.5-4b": ("qwen35", qwen35(32, 2560, 16, 4, 9216, 16, 32), True),
    "qwen3.5-9b": ("qwen35", qwen35(32, 4096, 16, 4, 12288, 16, 32), False),
    "qwen3.5-27b": ("qwen35", qwen35(64, 5120, 24, 4, 17408, 16, 48), False),
    "qwen3.5-35b-a3b": ("qwen35moe", qwen35(40, 2048, 16, 2, 512, 16, 32, n_expert=256, n_used=8,
                                             ff_exp=512, ff_shexp=512), False),
    "qwen3.5-122b-a10b": ("qwen35moe", qwen35(48, 3072, 32, 2, 1024, 16, 64, n_expert=256, n_used=8,
                                               ff_exp=1024, ff_shexp=1024), False),
    "qwen3.5-397b-a17b": ("qwen35moe", qwen35(60, 4096, 32, 2, 1024, 16, 64, n_expert=512, n_used=10,
                                               ff_exp=1024, ff_shexp=1024), False),
    "qwen3.6-27b": ("qwen35", qwen35(64, 5120, 24, 4, 17408, 16, 48), False),
    "qwen3.6-35b-a3b": ("qwen35moe", qwen35(40, 2048, 16, 2, 512, 16, 32, n_expert=256, n_used=8,
                                             ff_exp=512, ff_shexp=512), False),
    "granite-4.0-h-micro": ("granitehybrid", granite_h(40, 2048, 32, 8, (10, 13, 17, 27), 64,
                                                       n_ff_shexp=8192), True),
    "granite-4.0-h-tiny": ("granitehybrid", granite_h(40, 1536, 12, 4, (5, 15, 25, 35), 48, n_ff_shexp=1024,
                                                      n_expert=64, n_used=6, ff_exp=512), True),
    "granite-4.0-h-small": ("granitehybrid", granite_h(40, 4096, 32, 8, (5, 15, 25, 35), 128,
                                                       n_ff_shexp=1536, n_expert=72, n_used=10, ff_exp=768),
                            True),
    "nemotron-3-nano-30b-a3b": ("nemotron_h_moe", nemotron3_nano(), False),
    "lfm2-350m": ("lfm2", lfm2(16, 1024, 16, (2, 5, 8, 10, 12, 14), 4608), True),
    "lfm2-700m": ("lfm2", lfm2(16, 1536, 24, (2, 5, 8, 10, 12, 14), 6912), True),
    "lfm2-1.2b": ("lfm2", lfm2(16, 2048, 32, (2, 5, 8, 10, 12, 14), 8192), True),
    "lfm2-8b-a1b": ("lfm2moe", lfm2(24, 2048, 32, (2, 6, 10, 14, 18, 21), 7168, n_expert=32, n_used=4,
                                    ff_exp=1792, dense_lead=2), True),
    "gpt-oss-20b": ("gpt-oss", gpt_oss(24, 32), False),
    "gpt-oss-120b": ("gpt-oss", gpt_oss(36, 128), False),
    "glm-4.5-air": ("glm4moe", glm45_air(), False),
    "glm-4.7-flash": ("deepseek2", glm47_flash(), False),
    "ministral-3-3b": ("mistral3", mistral3(26, 3072, 9216), True),
    "ministral-3-8b": ("mistral3", mistral3(34, 4096, 14336), False),
    "ministral-3-14b": ("mistral3", mistral3(40, 5120, 16384), False),
    "devstral-small-2-24b": ("mistral3", mistral3(40, 5120, 32768), False),
    "smollm3-3b": ("smollm3", smollm3(), True),
}


#: A stand-in vocabulary size for building tables (a prime no real width uses): the token
#: embedding and output rows are then patched back to the real vocabulary by name.
_VOCAB_STANDIN = 263
#: Tensors whose last dimension is the expert count (3-D expert stacks, the router, its bias).
_EXPERT_LAST = ("_exps.weight", "ffn_gate_inp.weight", "exp_probs_b.bias")


def _signature(kv: dict[str, Any], i: int) -> tuple[Any, ...]:
    """What decides layer i's tensors in llama.cpp: its per-layer values, dense-lead and MTP status."""
    n = int(kv["block_count"])
    per_layer = tuple(v[i] for v in kv.values() if isinstance(v, list) and len(v) == n)
    lead = i < int(kv.get("leading_dense_block_count", 0))
    nextn = i >= n - int(kv.get("nextn_predict_layers", 0))
    return (per_layer, lead, nextn)


def reduced(kv: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
    """A small stand-in for `kv` that llama.cpp builds the same kinds of layers for, and for each
    real layer the stand-in layer it copies.

    llama.cpp's user-model path allocates every tensor as F32, so a 9B model needs 36 GB just to
    list its tensors. The stand-in keeps one layer of each kind (one period of a
    full_attention_interval pattern), 1-2 more experts than are used and a 263-token vocabulary;
    `build_record` then copies layers and patches the expert and vocabulary dimensions back.
    tests/core/models/test_catalog.py checks that this equals the direct build on small models."""
    n = int(kv["block_count"])
    nextn = int(kv.get("nextn_predict_layers", 0))
    interval = kv.get("full_attention_interval")
    if interval:
        trunk = [i % int(interval) for i in range(n - nextn)]
        keep = list(range(int(interval)))
    else:
        first: dict[tuple[Any, ...], int] = {}
        for i in range(n - nextn):
            first.setdefault(_signature(kv, i), i)
        keep = sorted(first.values())
        trunk = [keep.index(first[_signature(kv, i)]) for i in range(n - nextn)]
    keep += list(range(n - nextn, n))
    mapping = trunk + [len(keep) - nextn + j for j in range(nextn)]
    small = {k: ([v[i] for i in keep] if isinstance(v, list) and len(v) == n else v) for k, v in kv.items()}
    small["block_count"] = len(keep)
    if "leading_dense_block_count" in kv:
        small["leading_dense_block_count"] = sum(1 for i in keep if i < int(kv["leading_dense_block_count"]))
    if kv.get("expert_count"):
        small["expert_count"] = int(kv["expert_used_count"]) + 1
    small["vocab_size"] = _VOCAB_STANDIN
    return small, mapping


def _grow(table: list[tuple[str, list[int]]], kv: dict[str, Any], small: dict[str, Any],
          mapping: list[int]) -> list[tuple[str, list[int]]]:
    """The stand-in's table at the real model's layer count, expert count and vocabulary."""
    def patch(name: str, shape: list[int]) -> list[int]:
        shape = [int(kv["vocab_size"]) if d == _VOCAB_STANDIN else d for d in shape]
        if small.get("expert_count") and name.endswith(_EXPERT_LAST):
            assert shape[-1] == small["expert_count"], (name, shape)
            shape[-1] = int(kv["expert_count"])
        return shape

    first_block = next((i for i, (n, _) in enumerate(table) if n.startswith("blk.")), len(table))
    per_block: dict[int, list[tuple[str, list[int]]]] = {}
    for n, s in table:
        if n.startswith("blk."):
            per_block.setdefault(int(n.split(".")[1]), []).append((n.split(".", 2)[2], s))
    out = [(n, patch(n, s)) for n, s in table[:first_block] if not n.startswith("blk.")]
    for i, src in enumerate(mapping):
        out += [(f"blk.{i}.{rest}", patch(rest, s)) for rest, s in per_block.get(src, [])]
    # Global tensors llama.cpp creates after the blocks keep that place.
    out += [(n, patch(n, s)) for n, s in table[first_block:] if not n.startswith("blk.")]
    return out


def llama_table(arch: str, kv: dict[str, Any], folder: Path, *, direct: bool = False,
                mtp: bool = False) -> list[tuple[str, list[int]]]:
    """The tensors a GGUF with metadata `kv` holds, as llama.cpp 0.3.36 builds them (MTP layers
    included when `mtp`, as llama-quantize keeps them)."""
    import contextlib

    from app.core.machine import llama_cpp_module

    llama_cpp = llama_cpp_module()
    default = llama_cpp.llama_model_default_params

    def params() -> Any:
        p = default()
        p.load_mtp = mtp
        return p

    # The fixture asks llama_model_default_params for its load parameters; MTP layers are only
    # created (and required) with load_mtp set.
    patched = contextlib.ExitStack()
    if mtp:
        llama_cpp.llama_model_default_params = params
        patched.callback(setattr, llama_cpp, "llama_model_default_params", default)
    with patched:
        if direct:
            return [(n, list(s)) for n, s in required_tensors(arch, kv, folder)]
        small, mapping = reduced(kv)
        table = required_tensors(arch, small, folder)
    return _grow([(n, list(s)) for n, s in table], kv, small, mapping)


#: Models whose published GGUFs keep the MTP (nextn) layer.
MTP: frozenset[str] = frozenset({"glm-4.5-air"})


def build_record(arch: str, kv: dict[str, Any], tied: bool, folder: Path, *, direct: bool = False,
                 mtp: bool = False) -> dict[str, Any]:
    """One model's header record: llama.cpp's tensor table for `kv`, F16 matrices / F32 vectors."""
    table = llama_table(arch, kv, folder, direct=direct, mtp=mtp)
    if tied:
        # load_tensors asks for output.weight as optional (falling back to token_embd); a model with
        # tie_word_embeddings has none in its GGUF.
        table = [(n, s) for n, s in table if n != "output.weight"]
    metadata: dict[str, Any] = {"general.architecture": arch, "general.file_type": 1}
    metadata.update({f"{arch}.{k}": v for k, v in kv.items()})
    tensors = [[name, list(shape), int(tensor_type(name, shape))] for name, shape in table]
    return {"metadata": metadata, "tensors": tensors, "header_bytes": 0, "file_size": None}


def build(keys: Iterable[str] | None = None, folder: Path | None = None) -> dict[str, Any]:
    """Records for `keys` (default: every model), built with llama.cpp."""
    keys = list(keys or MODELS)
    with tempfile.TemporaryDirectory(prefix="camelid-headers-") as tmp:
        where = folder or Path(tmp)
        return {k: build_record(*MODELS[k][:3], where, mtp=k in MTP) for k in keys}


def encode(records: dict[str, Any]) -> bytes:
    """The file's bytes: sorted-key JSON, gzip with mtime 0 and no file name (byte-stable)."""
    text = json.dumps(records, sort_keys=True, separators=(",", ":")).encode()
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as f:
        f.write(text)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when the committed file differs")
    ap.add_argument("--only", nargs="*", help="rebuild these keys, keep the others from the file")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    records: dict[str, Any] = {}
    if args.only:
        with gzip.open(args.out, "rt", encoding="utf-8") as f:
            records = json.load(f)
    for key in args.only or MODELS:
        print(f"building {key}", file=sys.stderr, flush=True)
        records.update(build([key]))
    data = encode(records)
    if args.check:
        same = args.out.exists() and args.out.read_bytes() == data
        print("up to date" if same else f"{args.out} is stale")
        return 0 if same else 1
    args.out.write_bytes(data)
    print(f"wrote {args.out} ({len(data)} bytes, {len(records)} headers)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
