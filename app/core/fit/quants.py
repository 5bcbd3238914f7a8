"""GGUF tensor types, llama.cpp file types (quant mixes) and the quality each quant costs.

Block sizes and bytes per block come from the `gguf` package
(`gguf.GGML_QUANT_SIZES`), which tracks ggml itself, so a new type there is a
new type here. What `gguf` lacks is the knowledge of *mixes*: a "Q4_K_M file"
is not all Q4_K. `tensor_type()` reproduces llama.cpp's
`llama_tensor_get_type()` (src/llama-quant.cpp) so that the type of every
tensor, and with it the exact file size, follows from the tensor names and
shapes alone (see `app.core.fit.architectures` for the names and shapes).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

from app.core.fit.architectures import ArchConstants

# Variables, not type aliases: `T[name]` looks a member up by name.
T: type[GGMLQuantizationType] = GGMLQuantizationType
F: type[LlamaFileType] = LlamaFileType

#: The super-block length of the k-quants and i-quants.
QK_K = 256


# -- tensor types --------------------------------------------------------------------


def block_size(ggml_type: int) -> int:
    """Weights per block of a ggml type (1 for F32/F16/BF16, 32 for Q8_0, 256 for K/IQ types)."""
    return GGML_QUANT_SIZES[T(ggml_type)][0]


def type_size(ggml_type: int) -> int:
    """Bytes per block of a ggml type."""
    return GGML_QUANT_SIZES[T(ggml_type)][1]


def bits_per_weight(ggml_type: int) -> float:
    """Bits per weight of a ggml type (Q4_K: 4.5)."""
    blck, size = GGML_QUANT_SIZES[T(ggml_type)]
    return size * 8 / blck


def type_name(ggml_type: int) -> str:
    """The ggml name of a type: ``Q4_K``, ``BF16``; ``type_42`` for a type this gguf does not know."""
    try:
        return T(ggml_type).name
    except ValueError:
        return f"type_{ggml_type}"


def parse_type(name: str) -> GGMLQuantizationType:
    """``q8_0`` / ``Q8_0`` -> GGMLQuantizationType.Q8_0 (KeyError when unknown)."""
    return T[name.strip().upper()]


def tensor_nbytes(ggml_type: int, shape: Sequence[int]) -> int:
    """Bytes of a tensor of `shape` (ggml order: shape[0] is the row length).

    ggml stores whole blocks per row, so a row length that is not a multiple of
    the block size cannot be stored in that type (llama.cpp falls back first,
    see `fallback_type`); we round up rather than fail, since a header read from
    the network must never crash the planner.
    """
    # A plain dict by type id: building the enum for every tensor of every plan showed in profiles.
    blck, size = _SIZES_BY_ID.get(int(ggml_type)) or GGML_QUANT_SIZES[T(ggml_type)]
    if not shape:
        return size  # a scalar tensor
    row = -(-int(shape[0]) // blck) * size
    return row * math.prod(int(d) for d in shape[1:])


_SIZES_BY_ID: dict[int, tuple[int, int]] = {int(t): sizes for t, sizes in GGML_QUANT_SIZES.items()}


def fallback_type(ggml_type: int, row_length: int) -> GGMLQuantizationType:
    """The type llama.cpp stores a tensor in when its rows do not fit `ggml_type`'s blocks.

    IQ and low K types fall back to IQ4_NL (Q4_0's size), Q4_K to Q5_0,
    Q5_K to Q5_1, Q6_K to Q8_0, and anything whose rows still do not divide to F16.
    """
    t = T(ggml_type)
    if row_length % block_size(t) == 0:
        return t
    if t in (T.TQ1_0, T.TQ2_0):
        new = T.Q4_0
    elif t in (T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS, T.IQ3_S, T.IQ1_S, T.IQ1_M,
               T.Q2_K, T.Q3_K, T.IQ4_XS):
        new = T.IQ4_NL
    elif t == T.Q4_K:
        new = T.Q5_0
    elif t == T.Q5_K:
        new = T.Q5_1
    elif t == T.Q6_K:
        new = T.Q8_0
    else:
        new = T.F16
    return new if row_length % block_size(new) == 0 else T.F16


# -- file types -----------------------------------------------------------------------

#: The default tensor type of each llama file type (llama.cpp's `default_type` switch).
FILE_TYPE_BASE: dict[LlamaFileType, GGMLQuantizationType] = {
    F.ALL_F32: T.F32, F.MOSTLY_F16: T.F16, F.MOSTLY_BF16: T.BF16,
    F.MOSTLY_Q4_0: T.Q4_0, F.MOSTLY_Q4_1: T.Q4_1, F.MOSTLY_Q5_0: T.Q5_0, F.MOSTLY_Q5_1: T.Q5_1,
    F.MOSTLY_Q8_0: T.Q8_0,
    F.MOSTLY_Q2_K: T.Q2_K, F.MOSTLY_Q2_K_S: T.Q2_K,
    F.MOSTLY_Q3_K_S: T.Q3_K, F.MOSTLY_Q3_K_M: T.Q3_K, F.MOSTLY_Q3_K_L: T.Q3_K,
    F.MOSTLY_Q4_K_S: T.Q4_K, F.MOSTLY_Q4_K_M: T.Q4_K,
    F.MOSTLY_Q5_K_S: T.Q5_K, F.MOSTLY_Q5_K_M: T.Q5_K,
    F.MOSTLY_Q6_K: T.Q6_K,
    F.MOSTLY_IQ1_S: T.IQ1_S, F.MOSTLY_IQ1_M: T.IQ1_M,
    F.MOSTLY_IQ2_XXS: T.IQ2_XXS, F.MOSTLY_IQ2_XS: T.IQ2_XS, F.MOSTLY_IQ2_S: T.IQ2_XS,
    F.MOSTLY_IQ2_M: T.IQ2_S,
    F.MOSTLY_IQ3_XXS: T.IQ3_XXS, F.MOSTLY_IQ3_XS: T.IQ3_S, F.MOSTLY_IQ3_S: T.IQ3_S,
    F.MOSTLY_IQ3_M: T.IQ3_S,
    F.MOSTLY_IQ4_NL: T.IQ4_NL, F.MOSTLY_IQ4_XS: T.IQ4_XS,
    F.MOSTLY_TQ1_0: T.TQ1_0, F.MOSTLY_TQ2_0: T.TQ2_0,
    F.MOSTLY_MXFP4_MOE: T.MXFP4,
}

#: Aliases people (and file names) use for file types.
_FILE_TYPE_ALIASES = {"FP16": "F16", "FP32": "F32", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M", "Q3_K": "Q3_K_M",
                      "MXFP4": "MXFP4_MOE"}


def file_type_name(ftype: int) -> str:
    """``LlamaFileType.MOSTLY_Q4_K_M`` (or 15) -> ``Q4_K_M``."""
    try:
        name = F(int(ftype)).name
    except ValueError:
        return f"ftype_{int(ftype)}"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def parse_file_type(name: str) -> LlamaFileType | None:
    """``Q4_K_M`` / ``q4_k_m`` / ``F16`` -> LlamaFileType; None for a name llama.cpp has no file type for."""
    key = name.strip().upper().removeprefix("UD-")
    key = _FILE_TYPE_ALIASES.get(key, key)
    for prefix in ("MOSTLY_", "ALL_"):
        if prefix + key in F.__members__:
            return F[prefix + key]
    return None


def file_type_names() -> list[str]:
    """Every file type a predictor can be asked for, smallest bits first-ish (enum order)."""
    return [file_type_name(f) for f in FILE_TYPE_BASE]


@dataclass(frozen=True)
class MixContext:
    """What llama.cpp's quantizer knows about the model while choosing tensor types."""

    architecture: str
    n_layer: int
    n_head: int
    n_head_kv: int
    n_expert: int = 0
    #: False when the model has no output.weight (tied embeddings).
    has_output: bool = True
    #: Number of attn_v / attn_qkv / attn_kv_b tensors (usually n_layer).
    n_attention_wv: int | None = None
    #: Whether an importance matrix was used (changes a few IQ / Q4_0 choices).
    has_imatrix: bool = False
    #: llama.cpp's "70B" model type bumps attn_v of Q3_K/Q4_K to Q5_K.
    is_70b: bool = False

    @property
    def n_gqa(self) -> int:
        return self.n_head // self.n_head_kv if self.n_head_kv else 1


_IQ_LOW = (F.MOSTLY_IQ2_XXS, F.MOSTLY_IQ2_XS, F.MOSTLY_IQ1_S, F.MOSTLY_IQ2_S, F.MOSTLY_IQ2_M,
           F.MOSTLY_IQ1_M)
_NOT_QUANTIZED_PARTS = ("_norm.weight", "ffn_gate_inp.weight", "altup", "laurel", "time_mix_first.weight",
                        "time_mix_w0.weight", "time_mix_w1.weight", "time_mix_w2.weight",
                        "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight",
                        "time_mix_a0.weight", "time_mix_a1.weight", "time_mix_a2.weight",
                        "time_mix_g1.weight", "time_mix_g2.weight", "time_mix_decay_w1.weight",
                        "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight",
                        "ssm_conv1d.weight", "shortconv.conv.weight", "attn_rel_b.weight")
_LAYER_RE = re.compile(r"^blk\.(\d+)\.")


def is_quantizable(name: str, shape: Sequence[int]) -> bool:
    """Whether llama-quantize converts this tensor at all (1-D tensors, norms, routers stay as they are)."""
    if len(shape) < 2:
        return False
    return _quantizable_name(_block_suffix(name))


@functools.lru_cache(maxsize=4096)
def _quantizable_name(name: str) -> bool:
    # Keyed by the name without its "blk.N." prefix, so one answer serves every layer.
    if name in ("position_embd.weight", "token_types.weight"):
        return False
    return not any(part in name for part in _NOT_QUANTIZED_PARTS)


def _block_suffix(name: str) -> str:
    """"blk.12.attn_q.weight" -> "attn_q.weight"; other names unchanged."""
    if name.startswith("blk."):
        end = name.find(".", 4)
        if end > 4:
            return name[end + 1:]
    return name


def _more_bits(i_layer: int, n_layer: int) -> bool:
    """llama.cpp's use_more_bits: the first and last eighth, and every third layer between."""
    return i_layer < n_layer // 8 or i_layer >= 7 * n_layer // 8 or (i_layer - n_layer // 8) % 3 == 2


def _layer_of(name: str, counter: int) -> int:
    match = _LAYER_RE.match(name)
    return int(match.group(1)) if match else counter


class _Counters:
    def __init__(self) -> None:
        self.attention_wv = 0
        self.ffn_down = 0
        self.ffn_gate = 0
        self.ffn_up = 0


def assign_types(tensors: Sequence[tuple[str, Sequence[int]]], ftype: int, ctx: MixContext,
                 *, source_type: int = T.F32) -> list[GGMLQuantizationType]:
    """The ggml type llama-quantize gives each (name, shape) of a model for file type `ftype`.

    Tensors are visited in llama.cpp's order (by layer number, then name),
    since the attn_v rules count occurrences rather than read layer numbers.
    `source_type` is the type of the unquantized 2-D tensors that are never
    quantized (routers, position embeddings): F32 as convert_hf_to_gguf writes them.
    """
    ft = F(int(ftype))
    base = FILE_TYPE_BASE.get(ft)
    if base is None:
        raise ValueError(f"no default tensor type for file type {ft.name}")
    order = sorted(range(len(tensors)), key=lambda i: (_sort_layer(tensors[i][0]), tensors[i][0]))
    n_wv = ctx.n_attention_wv if ctx.n_attention_wv is not None else sum(
        1 for name, _ in tensors if any(p in name for p in ("attn_v.weight", "attn_qkv.weight", "attn_kv_b.weight")))
    ctx = MixContext(**{**ctx.__dict__, "n_attention_wv": n_wv})
    counters = _Counters()
    result: list[GGMLQuantizationType] = [T.F32] * len(tensors)
    for i in order:
        name, shape = tensors[i]
        if len(shape) < 2 or name.endswith("_norm.weight") or name.endswith(".bias"):
            result[i] = T.F32
        elif not is_quantizable(name, shape):
            result[i] = T(source_type)
        elif base in (T.F32, T.F16, T.BF16):
            result[i] = base
        else:
            result[i] = fallback_type(_mix_type(name, shape, ft, base, ctx, counters), int(shape[0]))
    return result


def _sort_layer(name: str) -> int:
    if not name.startswith("blk."):
        return -1
    end = name.find(".", 4)
    digits = name[4:end] if end > 4 else ""
    return int(digits) if digits.isdigit() else -1


def _mix_type(name: str, shape: Sequence[int], ft: LlamaFileType, new: GGMLQuantizationType,
              ctx: MixContext, c: _Counters) -> GGMLQuantizationType:
    """llama.cpp's llama_tensor_get_type(): the per-tensor exceptions of a quant mix."""
    arch = ctx.architecture
    n_expert = max(1, ctx.n_expert)
    nx = int(shape[0])
    if name == "output.weight" or (not ctx.has_output and name == "token_embd.weight"):
        if ft == F.MOSTLY_MXFP4_MOE or arch == "falcon" or nx % block_size(new) != 0:
            return T.Q8_0
        if ft in _IQ_LOW:
            return T.Q5_K
        return new if new == T.Q8_0 else T.Q6_K
    if ft == F.MOSTLY_MXFP4_MOE:
        return T.MXFP4 if len(shape) > 2 and shape[2] > 1 else T.Q8_0
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        if ft in (F.MOSTLY_IQ2_XXS, F.MOSTLY_IQ2_XS, F.MOSTLY_IQ1_S, F.MOSTLY_IQ1_M):
            return T.Q2_K
        if ft in (F.MOSTLY_IQ2_S, F.MOSTLY_IQ2_M, F.MOSTLY_IQ3_XXS):
            return T.IQ3_S
        if ft in (F.MOSTLY_TQ1_0, F.MOSTLY_TQ2_0):
            return T.Q4_K
        return new
    iq_s_m = ft in (F.MOSTLY_IQ2_S, F.MOSTLY_IQ2_M)
    if ft in _IQ_LOW:
        if "attn_v.weight" in name:
            c.attention_wv += 1
            if ctx.n_gqa >= 4 or ctx.n_expert >= 4:
                return T.Q4_K
            return T.IQ3_S if iq_s_m else T.Q2_K
        if ctx.n_expert == 8 and "attn_k.weight" in name:
            return T.Q4_K
        if "ffn_down" in name:
            i = c.ffn_down
            c.ffn_down += 1
            if i < ctx.n_layer // 8:
                return T.IQ3_S if iq_s_m else T.Q2_K
            return new
        if "attn_output.weight" in name:
            if ctx.n_expert == 8:
                return T.Q5_K
            if ft in (F.MOSTLY_IQ1_S, F.MOSTLY_IQ1_M):
                return T.IQ2_XXS
            if iq_s_m:
                return T.IQ3_S
        return new
    if "attn_v.weight" in name:
        i = c.attention_wv
        c.attention_wv += 1
        n_wv = ctx.n_attention_wv or ctx.n_layer
        if ft == F.MOSTLY_Q2_K:
            new = T.Q4_K if ctx.n_gqa >= 4 else T.Q3_K
        elif ft == F.MOSTLY_Q2_K_S and ctx.n_gqa >= 4:
            new = T.Q4_K
        elif ft == F.MOSTLY_IQ3_XXS:
            new = T.Q4_K if ctx.n_gqa >= 4 else (T.IQ3_XXS if ctx.has_imatrix else T.IQ3_S)
        elif (ft in (F.MOSTLY_IQ3_XS, F.MOSTLY_IQ3_S) and ctx.n_gqa >= 4) or ft == F.MOSTLY_IQ3_M:
            new = T.Q4_K
        elif ft == F.MOSTLY_Q3_K_M:
            new = T.Q5_K if i < 2 else T.Q4_K
        elif ft == F.MOSTLY_Q3_K_L or (ft in (F.MOSTLY_IQ4_NL, F.MOSTLY_IQ4_XS) and ctx.n_gqa >= 4):
            new = T.Q5_K
        elif ft in (F.MOSTLY_Q4_K_M, F.MOSTLY_Q5_K_M) and _more_bits(i, n_wv):
            new = T.Q6_K
        elif ft == F.MOSTLY_Q4_K_S and i < 4:
            new = T.Q5_K
        if ctx.is_70b and new in (T.Q3_K, T.Q4_K):
            new = T.Q5_K
        if ctx.n_expert == 8:
            new = T.Q8_0
        return new
    if "attn_k.weight" in name:
        if ctx.n_expert == 8:
            return T.Q8_0
        if ft == F.MOSTLY_IQ3_XS:
            return T.IQ3_XXS
        if ft == F.MOSTLY_IQ3_XXS:
            return T.IQ2_S
        return new
    if "attn_q.weight" in name:
        if ft == F.MOSTLY_IQ3_XS:
            return T.IQ3_XXS
        if ft == F.MOSTLY_IQ3_XXS:
            return T.IQ2_S
        return new
    if "ffn_down" in name:
        i_layer = _layer_of(name, c.ffn_down) if n_expert > 1 else c.ffn_down
        n_layer = ctx.n_layer
        c.ffn_down += 1
        falcon = arch == "falcon"
        if ft == F.MOSTLY_Q2_K:
            return T.Q3_K
        if ft == F.MOSTLY_Q2_K_S:
            return T.Q4_K if i_layer < n_layer // 8 else new
        if ft == F.MOSTLY_IQ3_XXS and not ctx.has_imatrix:
            return T.Q4_K if i_layer < n_layer // 8 else T.Q3_K
        if ft == F.MOSTLY_Q3_K_M:
            if i_layer < n_layer // 16:
                return T.Q5_K
            return T.Q4_K if not falcon or _more_bits(i_layer, n_layer) else T.Q3_K
        if ft == F.MOSTLY_IQ3_M and (i_layer < n_layer // 8
                                     or (ctx.n_expert == 8 and _more_bits(i_layer, n_layer))):
            return T.Q4_K
        if ft == F.MOSTLY_Q3_K_L:
            return T.Q4_K if falcon else T.Q5_K
        if ft == F.MOSTLY_Q4_K_M:
            if falcon:
                if i_layer < n_layer // 16:
                    return T.Q6_K
                return T.Q5_K if _more_bits(i_layer, n_layer) else T.Q4_K
            return T.Q6_K if _more_bits(i_layer, n_layer) else new
        if i_layer < n_layer // 8 and ft in (F.MOSTLY_IQ4_NL, F.MOSTLY_IQ4_XS) and not ctx.has_imatrix:
            return T.Q5_K
        if ft == F.MOSTLY_Q5_K_M and _more_bits(i_layer, n_layer):
            return T.Q6_K
        if ft == F.MOSTLY_Q4_K_S and not falcon and i_layer < n_layer // 8:
            return T.Q5_K
        if ft in (F.MOSTLY_Q4_0, F.MOSTLY_Q5_0) and ctx.has_imatrix and i_layer < n_layer // 8:
            return T.Q4_1 if ft == F.MOSTLY_Q4_0 else T.Q5_1
        return new
    if "attn_output.weight" in name:
        if arch != "falcon":
            if ctx.n_expert == 8:
                if ft in (F.MOSTLY_Q2_K, F.MOSTLY_IQ3_XS, F.MOSTLY_IQ3_XXS, F.MOSTLY_Q3_K_S, F.MOSTLY_Q3_K_M,
                          F.MOSTLY_IQ4_NL, F.MOSTLY_Q4_K_S, F.MOSTLY_Q4_K_M, F.MOSTLY_IQ3_S, F.MOSTLY_IQ3_M,
                          F.MOSTLY_IQ4_XS):
                    return T.Q5_K
                return new
            return {F.MOSTLY_Q2_K: T.Q3_K, F.MOSTLY_IQ3_XXS: T.IQ3_S, F.MOSTLY_Q3_K_M: T.Q4_K,
                    F.MOSTLY_Q3_K_L: T.Q5_K, F.MOSTLY_IQ3_M: T.Q4_K}.get(ft, new)
        return T.Q4_K if ft == F.MOSTLY_Q3_K_L else new
    if "attn_qkv.weight" in name:
        c.attention_wv += 1
        if ft in (F.MOSTLY_Q3_K_M, F.MOSTLY_Q3_K_L, F.MOSTLY_IQ3_M):
            return T.Q4_K
        if ft == F.MOSTLY_Q4_K_M:
            return T.Q5_K
        if ft == F.MOSTLY_Q5_K_M:
            return T.Q6_K
        return new
    for part, attr in (("ffn_gate", "ffn_gate"), ("ffn_up", "ffn_up")):
        if part in name:
            counter = getattr(c, attr)
            i_layer = _layer_of(name, counter) if n_expert > 1 else counter
            setattr(c, attr, counter + 1)
            if ft == F.MOSTLY_IQ3_XS and ctx.n_layer // 8 <= i_layer < 7 * ctx.n_layer // 8:
                return T.IQ3_XXS
            return new
    return new


# -- quality ----------------------------------------------------------------------------


@dataclass(frozen=True)
class QuantQuality:
    """Quality lost by a quant vs F16 (Llama-3-8B, wikitext-2; F16 perplexity 6.233)."""

    quant: str
    #: Perplexity increase over F16.
    delta_ppl: float
    #: Mean KL divergence of the token distribution from F16's.
    kl_divergence: float
    #: How often the most likely token is the same as F16's (None: not measured).
    same_top_token: float | None = None
    #: Whether the measurement used an importance matrix.
    imatrix: bool = False


#: REFERENCE section 4. F16 / BF16 lose nothing by definition.
QUALITY: dict[str, QuantQuality] = {q.quant: q for q in (
    QuantQuality("F16", 0.0, 0.0, 1.0),
    QuantQuality("BF16", 0.0, 0.0, 1.0),
    QuantQuality("Q8_0", 0.003, 0.0014, 0.977),
    QuantQuality("Q6_K", 0.022, 0.0055, 0.960),
    QuantQuality("Q5_K_M", 0.057, 0.0108),
    QuantQuality("Q4_K_M", 0.175, 0.0313, 0.919),
    QuantQuality("Q4_K_S", 0.269, 0.0431),
    QuantQuality("IQ4_XS", 0.228, 0.0363, imatrix=True),
    QuantQuality("Q4_0", 0.469, 0.0719),
    QuantQuality("Q3_K_M", 0.657, 0.1019),
    QuantQuality("IQ3_M", 0.667, 0.1025, imatrix=True),
    QuantQuality("Q3_K_S", 1.632, 0.2282),
    QuantQuality("Q2_K", 3.520, 0.4451, 0.711),
    QuantQuality("IQ2_M", 2.369, 0.3260, imatrix=True),
    QuantQuality("IQ1_M", 19.26, 1.393, imatrix=True),
)}


def quality(quant: str) -> QuantQuality | None:
    """The measured quality loss of a quant, or None when it was not measured."""
    key = quant.strip().upper().removeprefix("UD-")
    return QUALITY.get(_FILE_TYPE_ALIASES.get(key, key))


#: Typical whole-file bits per weight of an 8B model (REFERENCE section 2), smallest first:
#: the ladder "the next smaller quant" walks down.
QUANT_LADDER: tuple[str, ...] = ("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_K_S", "IQ4_XS",
                                 "Q3_K_M", "IQ3_M", "Q3_K_S", "Q2_K", "IQ2_M", "IQ1_M")


def next_smaller(quant: str) -> str | None:
    """The next quant down the usual ladder (Q4_K_M -> Q4_K_S), or None at the bottom."""
    key = quant.strip().upper()
    key = _FILE_TYPE_ALIASES.get(key, key)
    if key == "BF16" or key == "F32":
        key = "F16"
    if key not in QUANT_LADDER:
        # Off-ladder quants: the ladder step just below their bits per weight.
        below = {"Q5_1": "Q5_K_M", "Q5_0": "Q4_K_M", "Q5_K_S": "Q4_K_M", "Q4_1": "Q4_K_M",
                 "Q4_0": "IQ4_XS", "IQ4_NL": "IQ4_XS", "Q3_K_L": "Q3_K_M", "IQ3_S": "Q3_K_S",
                 "IQ3_XS": "Q3_K_S", "IQ3_XXS": "Q2_K", "Q2_K_S": "IQ2_M", "IQ2_S": "IQ1_M",
                 "IQ2_XS": "IQ1_M", "IQ2_XXS": "IQ1_M"}
        return below.get(key)
    i = QUANT_LADDER.index(key)
    return QUANT_LADDER[i + 1] if i + 1 < len(QUANT_LADDER) else None


# -- file size from architecture constants ------------------------------------------------

#: GGUF aligns every tensor's data to this many bytes unless general.alignment says otherwise.
GGUF_ALIGNMENT = 32

#: Header bytes per vocabulary entry. Most of a GGUF header is the tokenizer: a
#: BPE tokenizer (GPT-2 style: tokens, types and ~2.2 merges per token) costs about
#: 61 bytes per token (Llama-3.1-8B-Instruct: 7.84 MB for 128,256 tokens); a
#: SentencePiece one (tokens, scores, types, no merges) about 23.
HEADER_BYTES_PER_TOKEN = {"bpe": 61, "spm": 23}


def tokenizer_kind(architecture: str, n_vocab: int) -> str:
    """A guess at the tokenizer family from the architecture, for header size estimates."""
    if architecture.startswith("gemma") or n_vocab <= 32_768:
        return "spm"
    return "bpe"


@dataclass(frozen=True)
class PredictedTensor:
    """One tensor of a predicted file: its name, ggml shape, type and bytes."""

    name: str
    shape: tuple[int, ...]
    ggml_type: GGMLQuantizationType
    n_bytes: int


def predict_tensors(arch: ArchConstants, ftype: int | str) -> list[PredictedTensor]:
    """Every tensor, with its type and bytes, of `arch` quantized as `ftype`."""
    ft = parse_file_type(ftype) if isinstance(ftype, str) else F(int(ftype))
    if ft is None:
        raise ValueError(f"unknown file type {ftype!r}")
    table = arch.tensors()
    ctx = MixContext(architecture=arch.architecture, n_layer=arch.n_layer, n_head=arch.n_head,
                     n_head_kv=arch.n_head_kv_max, n_expert=arch.n_expert,
                     has_output=not arch.tied_embeddings, is_70b=arch.n_layer == 80)
    types = assign_types(table, ft, ctx)
    return [PredictedTensor(name, tuple(shape), t, tensor_nbytes(t, shape)) for (name, shape), t in zip(table, types, strict=True)]


def predict_file_size(arch: ArchConstants, ftype: int | str, *, header: bool = True,
                      tensors: Sequence[PredictedTensor] | None = None) -> int:
    """Bytes of the GGUF file llama-quantize would write for `arch` at `ftype`.

    Tensor data is exact (types per llama.cpp's rules, each tensor padded to the
    32-byte alignment); the header (mostly the tokenizer) is estimated with
    `HEADER_BYTES_PER_TOKEN` unless `header=False`. `tensors`: the result of
    `predict_tensors(arch, ftype)` when the caller has it already.
    """
    if tensors is None:
        tensors = predict_tensors(arch, ftype)
    data = sum(-(-t.n_bytes // GGUF_ALIGNMENT) * GGUF_ALIGNMENT for t in tensors)
    if not header:
        return data
    kind = tokenizer_kind(arch.architecture, arch.n_vocab)
    return data + HEADER_BYTES_PER_TOKEN[kind] * arch.n_vocab
