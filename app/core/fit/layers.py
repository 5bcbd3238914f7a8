"""Per-layer memory of a model at given settings: KV cells and bytes of each layer.

The rules follow llama.cpp's llama-kv-cache.cpp; `memory.plan_memory` places
these bytes on devices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.core.fit import quants
from app.core.fit.gguf_meta import ModelMeta

#: llama.cpp pads the context (the KV cache's cell count) to this many tokens.
KV_PAD = 256


def pad(n: int, to: int = KV_PAD) -> int:
    return -(-int(n) // to) * to


@dataclass(frozen=True)
class _Settings:
    n_ctx: int
    n_batch: int
    n_ubatch: int
    flash_attn: bool
    cache_type_k: str
    cache_type_v: str
    swa_full: bool

    @property
    def cells(self) -> int:
        return pad(self.n_ctx)


def _effective(n_ctx: int, n_batch: int, n_ubatch: int, **rest: Any) -> _Settings:
    # llama-cpp-python clamps these before llama.cpp sees them.
    batch = min(n_ctx, n_batch)
    return _Settings(n_ctx=n_ctx, n_batch=batch, n_ubatch=min(batch, n_ubatch), **rest)


def _cache_row_bytes(cache_type: str, n: int) -> float:
    """Bytes of one cell's `n` elements in a cache of this type."""
    t = quants.parse_type(cache_type)
    return quants.tensor_nbytes(t, [n]) if n % quants.block_size(t) == 0 else n * 2


def layer_cells(meta: ModelMeta, layer: int, s: _Settings) -> int:
    """KV cells one layer holds: the whole context, or the sliding window plus one micro-batch."""
    if meta.is_swa(layer) and meta.sliding_window and not s.swa_full:
        return min(s.cells, pad(meta.sliding_window + s.n_ubatch))
    return s.cells


def _v_width(meta: ModelMeta, layer: int, s: _Settings) -> int:
    """V elements per cell: none under MLA; without flash attention (V stored transposed) llama.cpp pads
    every layer's V to the widest layer's (llama-kv-cache.cpp, TAG_V_CACHE_VARIABLE)."""
    if meta.mla:
        return 0
    if not s.flash_attn:
        key = ("v_width_max",)
        widest = meta.memo.get(key)
        if widest is None:
            widest = meta.memo[key] = max((meta.kv_heads(il) * meta.head_dim_v for il in range(meta.n_layer)),
                                          default=0)
        return int(widest)
    return meta.kv_heads(layer) * meta.head_dim_v


def layer_kv_bytes(meta: ModelMeta, layer: int, s: _Settings) -> int:
    """KV cache bytes of one layer: K and V, K only under MLA, nothing for recurrent-only layers."""
    if not meta.has_kv(layer):
        return 0
    heads = meta.kv_heads(layer)
    v = _v_width(meta, layer, s)
    per_cell = _cache_row_bytes(s.cache_type_k, heads * meta.head_dim_k)
    if v:
        per_cell += _cache_row_bytes(s.cache_type_v, v)
    return int(layer_cells(meta, layer, s) * per_cell)


def _n_ff(meta: ModelMeta, layer: int) -> int:
    if isinstance(meta.n_ff, list):
        return int(meta.n_ff[min(layer, len(meta.n_ff) - 1)]) if meta.n_ff else 4 * meta.n_embd
    return int(meta.n_ff or 4 * meta.n_embd)


#: llama.cpp's recurrent state types (llama-model.cpp create_memory: GGML_TYPE_F32 for r and s).
STATE_BYTES_PER_ELEMENT = 4
#: Sequences a context holds state for: llama-cpp-python leaves n_seq_max at 1 (rs_size = max(1, n_seq_max)),
#: and n_rs_seq (rollback snapshots) at 0.
STATE_SEQUENCES = 1


def layer_state_bytes(meta: ModelMeta, layer: int, s: _Settings) -> int:
    """Recurrent state bytes of one layer (llama.cpp's RS buffer: conv rows r and SSM rows s, f32, per
    sequence); attention layers hold none. Independent of the context length."""
    if not meta.has_state(layer):
        return 0
    return (meta.state_r + meta.state_s) * STATE_BYTES_PER_ELEMENT * STATE_SEQUENCES
