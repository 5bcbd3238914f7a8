"""How large a GGUF header's numbers may plausibly be: the one table of limits the reader enforces.

A header is a few kilobytes a hostile or damaged file can fill with anything. Every
number the planner loops over or multiplies by is bounded here, so planning costs the
same for a file that claims 10^6 layers as for one that claims 30 (it is refused in
microseconds). Each limit sits well above every real model and, where llama.cpp has a
hard limit of its own, at that limit: a file llama.cpp refuses is refused here too.

`gguf_meta` checks the structural limits while it parses (they stop a read early) and
the metadata limits when it derives a `ModelMeta` from a header, which every path
(local file, HTTP ranges, the catalog's stored records) goes through.
"""

from __future__ import annotations

import math
from typing import Any

from app.core.errors import ModelFileError

# -- structure: what the parser may read --------------------------------------------------

#: Metadata keys in one header. Real headers have 30-60; the GGUF format allows 2^64.
MAX_KV_COUNT = 65_536
#: Tensors in one file (shard). Real tables: a few hundred to ~2,000 (DeepSeek-V3); old MoE
#: files that store each expert apart reach ~20,000 (Snowflake Arctic).
MAX_TENSOR_COUNT = 65_536
#: Entries of one metadata array. The biggest are tokenizers: 262,144 tokens (Gemma 3),
#: ~500,000 merges; 2^21 is four times that.
MAX_ARRAY_LENGTH = 1 << 21
#: Bytes of a key: the GGUF specification caps keys at 65,535 bytes.
MAX_KEY_BYTES = 65_535
#: Bytes of one string value: chat templates, the longest real strings, are tens of kilobytes.
MAX_STRING_BYTES = 1 << 24
#: Bytes of a tensor name: llama.cpp's GGML_MAX_NAME is 64 with the terminating NUL.
MAX_TENSOR_NAME_BYTES = 63
#: Dimensions of a tensor: ggml's GGML_MAX_DIMS; gguf.cpp refuses more.
MAX_TENSOR_DIMS = 4
#: Elements of one tensor: the largest real ones (a 1T MoE's merged experts, a 262k x 16k
#: embedding) hold ~10^10; 2^42 is 400 times that and far from llama.cpp's int64 overflow.
MAX_TENSOR_ELEMENTS = 1 << 42
#: general.alignment: a power of two; real files use 32. Larger than 1 MiB only pads.
MAX_ALIGNMENT = 1 << 20
#: Files of a split GGUF (`-00001-of-00042.gguf`). The largest real splits have ~50 parts
#: (a 1T model in BF16 at 48 GB each); the name's five digits would allow 99,999 requests.
MAX_SHARDS = 256
#: Characters of general.architecture: llama.cpp's names are at most ~20 ("nemotron_h_moe").
MAX_ARCH_NAME = 64

# -- metadata: the `<arch>.<key>` numbers the planner reads -------------------------------

#: llama.cpp's LLAMA_MAX_LAYERS (llama-hparams.h): its per-layer arrays have 512 slots and it
#: refuses a file with more layers. The largest real models have ~126 blocks.
MAX_LAYERS = 512
#: llama.cpp's LLAMA_MAX_EXPERTS (1024 since Kimi K3); real MoEs have 8-512 experts.
MAX_EXPERTS = 1024
#: Widths: the largest real embedding is 16,384 (Llama 3.1 405B), FFNs reach ~60,000.
_WIDTH = 1 << 16
_FFN = 1 << 20
#: Attention heads: real models have at most 128 (query) heads.
_HEADS = 1 << 12
#: Per-head widths and low-rank projections (MLA's 512-wide latent, 576-wide cached K row).
_HEAD_DIM = 1 << 14
#: Vocabulary: 262,144 is the largest real one; 2^22 is sixteen times that.
MAX_VOCAB = 1 << 22
#: Tokens of context: Llama 4 Scout claims 10M (2^23.3); 2^27 leaves room for more.
MAX_CONTEXT = 1 << 27
#: Recurrent (SSM, RWKV, short-convolution) sizes: real ones are at most a few thousand.
_SSM = 1 << 20

#: key (without the architecture prefix) -> (least, most) for every integer the planner reads.
ARCH_LIMITS: dict[str, tuple[int, int]] = {
    "block_count": (1, MAX_LAYERS),
    "embedding_length": (1, _WIDTH),
    "feed_forward_length": (0, _FFN),
    "expert_feed_forward_length": (0, _FFN),
    "expert_shared_feed_forward_length": (0, _FFN),
    "attention.head_count": (0, _HEADS),
    "attention.head_count_kv": (0, _HEADS),
    "attention.key_length": (0, _HEAD_DIM),
    "attention.value_length": (0, _HEAD_DIM),
    "attention.key_length_mla": (0, _HEAD_DIM),
    "attention.value_length_mla": (0, _HEAD_DIM),
    "attention.kv_lora_rank": (0, _HEAD_DIM),
    "attention.q_lora_rank": (0, _WIDTH),
    "rope.dimension_count": (0, _HEAD_DIM),
    "expert_count": (0, MAX_EXPERTS),
    "expert_used_count": (0, MAX_EXPERTS),
    "expert_shared_count": (0, MAX_EXPERTS),
    "vocab_size": (0, MAX_VOCAB),
    "context_length": (0, MAX_CONTEXT),
    "attention.sliding_window": (0, MAX_CONTEXT),
    "attention.sliding_window_pattern": (0, MAX_LAYERS),
    "attention.recurrent_layers": (0, 1),
    "nextn_predict_layers": (0, MAX_LAYERS),
    "leading_dense_block_count": (0, MAX_LAYERS),
    "full_attention_interval": (0, MAX_LAYERS),
    "ssm.conv_kernel": (0, _SSM),
    "ssm.inner_size": (0, _SSM),
    "ssm.state_size": (0, _SSM),
    "ssm.time_step_rank": (0, _SSM),
    "ssm.group_count": (0, _SSM),
    "shortconv.l_cache": (0, _SSM),
    "wkv.head_size": (0, _SSM),
    "token_shift_count": (0, _SSM),
    "kda.head_dim": (0, _SSM),
}
#: Keys llama.cpp reads with get_key_or_arr: one value for all layers, or an array of exactly
#: block_count entries (it refuses any other length). Bool arrays count as 0/1.
PER_LAYER_KEYS = frozenset({"attention.head_count", "attention.head_count_kv", "feed_forward_length",
                            "attention.sliding_window_pattern", "attention.recurrent_layers"})

_FIX = "The file is damaged or was not written by a GGUF converter; download it again or choose another file."


def quote(value: Any, limit: int = 80) -> str:
    """`repr(value)` cut to `limit` characters, for messages (a header can hold megabyte strings)."""
    if isinstance(value, list) and len(value) > 8:
        value = value[:8]  # a repr of the whole list would be built before it is cut
    text = repr(value) if not isinstance(value, str) or len(value) <= 4 * limit else repr(value[: 4 * limit])
    return text if len(text) <= limit else text[: limit - 1] + "…"


def name(text: str, limit: int = 80) -> str:
    """A file or key name for a message, cut to `limit` characters and without control characters."""
    clean = "".join(c if c.isprintable() else "?" for c in text[: limit + 1])
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def implausible(where: str, what: str, value: Any, bound: str) -> ModelFileError:
    """The typed error for a value outside its limit: what, the value, the limit, what to do."""
    return ModelFileError(f"{name(where)} is not a usable GGUF model: its {what} is {quote(value)}, "
                          f"but {bound}.", _FIX)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_arch_value(where: str, arch: str, key: str, value: Any, n_layer: int | None,
                     array_length: int | None) -> None:
    """Raise ModelFileError unless `<arch>.<key>` holds a plausible integer (or per-layer array of them).

    `array_length` is the array's length when the parser kept only that (arrays longer than
    it keeps); `n_layer` the block count, once known, to check per-layer arrays against.
    """
    low, high = ARCH_LIMITS[key]
    full = f"{arch}.{key}"
    if array_length is not None and not isinstance(value, list):
        value = None  # an array too long to keep: only its length is known
    if isinstance(value, list) or array_length is not None:
        length = len(value) if isinstance(value, list) else int(array_length or 0)
        if key not in PER_LAYER_KEYS:
            raise implausible(where, full, value if value is not None else f"<array of {length}>",
                              "it must be one number, not a list")
        if n_layer is not None and length != n_layer:
            raise ModelFileError(f"{name(where)} is not a usable GGUF model: its {full} array has {length:,} "
                                 f"entries for {n_layer} layers (llama.cpp refuses it: wrong array length).", _FIX)
        for item in value or []:
            if isinstance(item, bool):
                continue
            if not _is_int(item) or not low <= item <= high:
                raise implausible(where, f"{full} array", value,
                                  f"every entry must be a whole number from {low:,} to {high:,}")
        return
    if isinstance(value, bool) and key == "attention.sliding_window_pattern":
        return
    if not _is_int(value):
        raise implausible(where, full, value, f"it must be a whole number from {low:,} to {high:,}")
    if not low <= value <= high:
        raise implausible(where, full, value, f"that is outside any real model's range ({low:,} to {high:,})")


def check_tensor(where: str, tensor_name: str, shape: tuple[int, ...]) -> None:
    """Raise ModelFileError for a tensor name or shape no real model (or llama.cpp) has."""
    if len(tensor_name.encode("utf-8", "replace")) > MAX_TENSOR_NAME_BYTES:
        raise implausible(where, "tensor name", tensor_name,
                          f"llama.cpp allows at most {MAX_TENSOR_NAME_BYTES} bytes")
    bound = None
    if len(shape) > MAX_TENSOR_DIMS:
        bound = f"ggml tensors have at most {MAX_TENSOR_DIMS} dimensions"
    elif any(not _is_int(d) or d < 0 for d in shape) or math.prod(shape) > MAX_TENSOR_ELEMENTS:
        bound = f"no real tensor has more than {MAX_TENSOR_ELEMENTS:,} elements"
    if bound:
        raise ModelFileError(f"{name(where)} is not a usable GGUF model: its tensor {quote(tensor_name, 60)} "
                             f"has the shape {quote(list(shape))}, but {bound}.", _FIX)
