"""Compute buffers: the largest set of live activations llama.cpp's graph needs for one micro-batch.

`memory.plan_memory` reserves the per-device peak of these.
"""

from __future__ import annotations

from app.core.fit.gguf_meta import ModelMeta
from app.core.fit.layers import _n_ff, _Settings, layer_cells


def _block_compute(meta: ModelMeta, layer: int, s: _Settings) -> int:
    """Peak live activations while one block runs (the attention or the FFN phase), bytes."""
    ub, e = s.n_ubatch, meta.n_embd
    n_kv = layer_cells(meta, layer, s)
    heads_kv = meta.kv_heads(layer)
    q_dim = meta.n_head * meta.head_dim_k
    kv_dim = heads_kv * (meta.head_dim_k + meta.head_dim_v)
    # Residual, norm output and attention output stay live alongside q, k, v.
    activations = ub * 4 * (3 * e + q_dim + kv_dim)
    if s.flash_attn:
        # The fused kernel never materialises scores; the mask (f32 and its f16 copy) remains.
        attention = activations + n_kv * ub * 6
    else:
        # Scores n_head x n_kv x n_ubatch (soft_max runs in place) plus the f32 mask.
        attention = activations + (meta.n_head * n_kv * ub + n_kv * ub) * 4
    if meta.n_expert > 1:
        ff = meta.n_ff_exp or _n_ff(meta, layer)
        ffn = ub * 4 * (3 * max(1, meta.n_expert_used) * ff + meta.n_expert + 2 * e)
    else:
        ffn = ub * 4 * (3 * _n_ff(meta, layer) + 2 * e)
    return max(attention, ffn)


def _logits_compute(meta: ModelMeta, s: _Settings, *, cpu: bool) -> int:
    """The output phase: logits for every token of the micro-batch, plus the final norm's output.

    Measured: the CPU backend keeps two n_embd-wide activations beside the
    logits (SmolLM2: 98.25 MiB at n_ubatch 512), CUDA one (Llama-3-8B: 258.5 MiB).
    """
    return s.n_ubatch * 4 * (meta.n_vocab + (2 if cpu else 1) * meta.n_embd)
