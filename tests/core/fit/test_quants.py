"""Tensor types, file-type mixes and file sizes predicted from architecture constants.

The synthetic GGUFs below carry the real tensor shapes of four published
models, written out here from their configs, with tensor types chosen by the
mix rules as REFERENCE section 2 states them (an independent, explicit copy of
those rules). The predictor works from architecture constants alone.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from gguf import GGMLQuantizationType as T

from app.core.fit import quants
from app.core.fit.architectures import ArchConstants
from app.core.fit.gguf_meta import read_gguf
from tests.fixtures.synthetic_gguf import write_gguf

# -- section 1: bytes per block -------------------------------------------------------

REFERENCE_BLOCKS = {
    "F32": (1, 4), "F16": (1, 2), "BF16": (1, 2), "Q8_0": (32, 34), "Q6_K": (256, 210), "Q5_K": (256, 176),
    "Q5_1": (32, 24), "Q5_0": (32, 22), "Q4_K": (256, 144), "Q4_1": (32, 20), "Q4_0": (32, 18),
    "IQ4_NL": (32, 18), "IQ4_XS": (256, 136), "Q3_K": (256, 110), "IQ3_S": (256, 110), "IQ3_XXS": (256, 98),
    "Q2_K": (256, 84), "IQ2_S": (256, 82), "IQ2_XS": (256, 74), "IQ2_XXS": (256, 66), "IQ1_M": (256, 56),
    "IQ1_S": (256, 50),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_BLOCKS))
def test_block_layouts_match_reference(name: str) -> None:
    t = quants.parse_type(name)
    assert (quants.block_size(t), quants.type_size(t)) == REFERENCE_BLOCKS[name]
    assert quants.tensor_nbytes(t, [256 * 4, 3]) == 12 * REFERENCE_BLOCKS[name][1] * 256 // REFERENCE_BLOCKS[name][0]


def test_bits_per_weight() -> None:
    assert quants.bits_per_weight(T.Q4_K) == 4.5
    assert quants.bits_per_weight(T.Q6_K) == 6.5625
    assert quants.bits_per_weight(T.IQ1_S) == 1.5625


@pytest.mark.parametrize(("wanted", "row", "expected"), [
    (T.Q4_K, 576, T.Q5_0), (T.Q5_K, 576, T.Q5_1), (T.Q6_K, 576, T.Q8_0), (T.Q2_K, 576, T.IQ4_NL),
    (T.Q3_K, 896, T.IQ4_NL), (T.IQ2_XS, 576, T.IQ4_NL), (T.IQ4_XS, 576, T.IQ4_NL), (T.Q4_K, 100, T.F16),
    (T.Q4_K, 4096, T.Q4_K),
])
def test_row_length_fallbacks(wanted: T, row: int, expected: T) -> None:
    assert quants.fallback_type(wanted, row) == expected


def test_file_type_names_round_trip() -> None:
    for name in ("Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_0", "Q4_1", "Q4_K_S", "Q4_K_M", "Q5_0", "Q5_1",
                 "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0", "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M",
                 "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M", "IQ4_NL", "IQ4_XS", "F16", "BF16"):
        ft = quants.parse_file_type(name)
        assert ft is not None and quants.file_type_name(ft) == name
        assert ft in quants.FILE_TYPE_BASE
    assert quants.parse_file_type("q4_k_m") == quants.F.MOSTLY_Q4_K_M
    assert quants.parse_file_type("UD-Q4_K_XL") is None


def test_quality_table_and_ladder() -> None:
    q4 = quants.quality("Q4_K_M")
    assert q4 is not None and q4.delta_ppl == 0.175 and q4.kl_divergence == 0.0313
    assert quants.quality("q8_0").same_top_token == 0.977
    assert quants.quality("Q9_Z") is None
    # Each step down the ladder costs quality where both are measured.
    measured = [q for q in ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K")]
    losses = [quants.quality(q).kl_divergence for q in measured]
    assert losses == sorted(losses)
    assert quants.next_smaller("Q4_K_M") == "Q4_K_S"
    assert quants.next_smaller("Q8_0") == "Q6_K"
    assert quants.next_smaller("BF16") == "Q8_0"
    assert quants.next_smaller("IQ1_M") is None


# -- section 2: mixes, written out explicitly ---------------------------------------------


def _more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def expected_type(kind: str, layer: int, n_layer: int, quant: str, n_gqa: int) -> T:
    """REFERENCE section 2 for one 2-D tensor of a dense transformer."""
    base = {"Q4_K_M": T.Q4_K, "Q4_K_S": T.Q4_K, "Q5_K_M": T.Q5_K, "Q6_K": T.Q6_K, "Q8_0": T.Q8_0,
            "Q3_K_M": T.Q3_K, "Q2_K": T.Q2_K}[quant]
    if kind == "output":
        return T.Q8_0 if quant == "Q8_0" else T.Q6_K
    if kind == "token_embd":
        return base
    if quant in ("Q4_K_M", "Q5_K_M") and kind in ("attn_v", "ffn_down") and _more_bits(layer, n_layer):
        return T.Q6_K
    if quant == "Q4_K_S":
        if kind == "attn_v" and layer < 4:
            return T.Q5_K
        if kind == "ffn_down" and layer < n_layer // 8:
            return T.Q5_K
    if quant == "Q3_K_M":
        if kind == "attn_v":
            return T.Q5_K if layer < 2 else T.Q4_K
        if kind == "ffn_down":
            return T.Q5_K if layer < n_layer // 16 else T.Q4_K
        if kind == "attn_output":
            return T.Q4_K
    if quant == "Q2_K":
        if kind == "attn_v":
            return T.Q4_K if n_gqa >= 4 else T.Q3_K
        if kind in ("ffn_down", "attn_output"):
            return T.Q3_K
    return base


# Real shapes from each model's config.json: (arch, layers, d_model, heads, kv heads, head dim,
# ffn, vocab, tied, extras)
MODELS = {
    "Llama-3.1-8B": ("llama", 32, 4096, 32, 8, 128, 14336, 128256, False, {"rope_freqs"}),
    "Qwen2.5-7B": ("qwen2", 28, 3584, 28, 4, 128, 18944, 152064, False, {"qkv_bias"}),
    "Gemma-2-9B": ("gemma2", 42, 3584, 16, 8, 256, 14336, 256000, True, {"post_norms"}),
    "Mistral-7B-v0.3": ("llama", 32, 4096, 32, 8, 128, 14336, 32768, False, set()),
}


def real_tensor_table(model: str, quant: str) -> list[tuple[str, list[int], T]]:
    _arch, n, d, h, kv, hd, ff, vocab, tied, extras = MODELS[model]
    gqa = h // kv
    table: list[tuple[str, list[int], T]] = [("token_embd.weight", [d, vocab],
                                              expected_type("output" if tied else "token_embd", 0, n, quant, gqa))]
    if "rope_freqs" in extras:
        table.append(("rope_freqs.weight", [hd // 2], T.F32))
    for i in range(n):
        p = f"blk.{i}."
        table.append((p + "attn_norm.weight", [d], T.F32))
        for kind, shape in (("attn_q", [d, h * hd]), ("attn_k", [d, kv * hd]), ("attn_v", [d, kv * hd]),
                            ("attn_output", [h * hd, d]), ("ffn_gate", [d, ff]), ("ffn_up", [d, ff]),
                            ("ffn_down", [ff, d])):
            table.append((p + kind + ".weight", shape, expected_type(kind, i, n, quant, gqa)))
        if "qkv_bias" in extras:
            table += [(p + "attn_q.bias", [h * hd], T.F32), (p + "attn_k.bias", [kv * hd], T.F32),
                      (p + "attn_v.bias", [kv * hd], T.F32)]
        table.append((p + "ffn_norm.weight", [d], T.F32))
        if "post_norms" in extras:
            table += [(p + "post_attention_norm.weight", [d], T.F32), (p + "post_ffw_norm.weight", [d], T.F32)]
    table.append(("output_norm.weight", [d], T.F32))
    if not tied:
        table.append(("output.weight", [d, vocab], expected_type("output", 0, n, quant, gqa)))
    return table


def header_kv(model: str) -> dict[str, int]:
    _arch, n, d, h, kv, hd, ff, vocab, _tied, _extras = MODELS[model]
    return {"block_count": n, "embedding_length": d, "attention.head_count": h, "attention.head_count_kv": kv,
            "attention.key_length": hd, "attention.value_length": hd, "feed_forward_length": ff,
            "vocab_size": vocab, "context_length": 8192}


def constants(model: str) -> ArchConstants:
    arch, n, d, h, kv, hd, ff, vocab, tied, extras = MODELS[model]
    return ArchConstants(arch, n, d, h, kv, ff, vocab, head_dim_k=hd, tied_embeddings=tied,
                         rope_freqs="rope_freqs" in extras)


CASES = [(m, q) for m in MODELS for q in ("Q4_K_M", "Q4_K_S", "Q5_K_M", "Q6_K", "Q8_0", "Q3_K_M", "Q2_K")]


@pytest.mark.parametrize(("model", "quant"), CASES)
def test_predicted_size_matches_tensor_table(tmp_path: Path, model: str, quant: str) -> None:
    table = real_tensor_table(model, quant)
    path = tmp_path / f"{model}-{quant}.gguf"
    ft = quants.parse_file_type(quant)
    size = write_gguf(path, MODELS[model][0], table, file_type=ft, kv=header_kv(model))
    meta = read_gguf(path)
    assert meta.file_size == size and meta.quant == quant
    table_bytes = meta.tensor_bytes
    predicted = sum(t.n_bytes for t in quants.predict_tensors(constants(model), quant))
    assert abs(predicted - table_bytes) <= 0.005 * table_bytes
    # The table's own arithmetic is exact: the rules are the same ones.
    assert predicted == table_bytes


def test_llama_31_8b_q4_k_m_published_size() -> None:
    arch = constants("Llama-3.1-8B")
    predicted = quants.predict_tensors(arch, "Q4_K_M")
    # llama.cpp's loader prints these counts for the published file.
    assert Counter(t.ggml_type.name for t in predicted) == {"F32": 66, "Q4_K": 193, "Q6_K": 33}
    published = 4_920_739_232
    estimate = quants.predict_file_size(arch, "Q4_K_M")
    assert abs(estimate - published) <= 0.0005 * published
    data = quants.predict_file_size(arch, "Q4_K_M", header=False)
    assert 0 < published - data < 10_000_000  # the rest is the header (tokenizer)


@pytest.mark.parametrize(("quant", "bpw"), [("Q2_K", 3.16), ("Q3_K_M", 4.0), ("Q4_K_S", 4.67), ("Q4_K_M", 4.89),
                                            ("Q6_K", 6.56), ("Q8_0", 8.50), ("F16", 16.0)])
def test_effective_bits_per_weight_llama_31_8b(quant: str, bpw: float) -> None:
    tensors = quants.predict_tensors(constants("Llama-3.1-8B"), quant)
    params = sum(_prod(t.shape) for t in tensors)
    assert sum(t.n_bytes for t in tensors) * 8 / params == pytest.approx(bpw, abs=0.01)


def _prod(shape: tuple[int, ...]) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


def test_smollm2_file_is_predicted_from_constants(starter_model: Path) -> None:
    """A 576-wide model: k-quants do not fit its rows, so the tied output falls back to Q8_0."""
    meta = read_gguf(starter_model)
    arch = ArchConstants("llama", 30, 576, 9, 3, 1536, 49152, tied_embeddings=True)
    predicted = quants.predict_tensors(arch, "Q4_1")
    assert sum(t.n_bytes for t in predicted) == meta.tensor_bytes
    real = {t.name: t.ggml_type for t in meta.tensors}
    assert {t.name: int(t.ggml_type) for t in predicted} == real
    assert real["token_embd.weight"] == T.Q8_0
    # In a Q4_K_M of the same model every 576-long row falls back (Q4_K -> Q5_0, Q6_K -> Q8_0);
    # only ffn_down, with 1536-long rows, keeps k-quants.
    k_m = quants.predict_tensors(arch, "Q4_K_M")
    assert {t.ggml_type for t in k_m if len(t.shape) > 1 and t.shape[0] == 576} == {T.Q5_0, T.Q8_0}
    assert {t.ggml_type for t in k_m if t.shape[0] == 1536} == {T.Q4_K, T.Q6_K}


def test_moe_counts_every_expert() -> None:
    arch = ArchConstants("qwen3moe", 48, 2048, 32, 4, 6144, 151936, head_dim_k=128, n_expert=128,
                         n_expert_used=8, n_ff_exp=768)
    tensors = {t.name: t for t in quants.predict_tensors(arch, "Q8_0")}
    experts = tensors["blk.0.ffn_up_exps.weight"]
    assert experts.shape == (2048, 768, 128)
    assert experts.n_bytes == 2048 * 768 * 128 * 34 // 32
    assert tensors["blk.0.ffn_gate_inp.weight"].ggml_type == T.F32  # the router is never quantized
    total_params = sum(_prod(t.shape) for t in tensors.values())
    assert 30.0e9 < total_params < 31.0e9  # Qwen3-30B-A3B: all 128 experts are in the file
