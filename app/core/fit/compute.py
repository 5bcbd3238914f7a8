"""Compute buffers: the peak of llama.cpp's graph allocator over one micro-batch.

`memory.plan_memory` reserves the per-device peak of these.

llama.cpp sizes its compute buffer by running ggml-alloc (ggml/src/ggml-alloc.c,
`ggml_gallocr_alloc_graph_impl`) over the worst-case graph once (llama-context.cpp
`graph_reserve` with n_ubatch tokens, every one an output). That allocator:

- allocates every graph input first (token ids, positions, the KQ mask(s), the
  KV-cache row indices, the output ids) and frees each after its last reader,
  so a KQ mask stays alive until the last layer's attention;
- walks the nodes in order; a node whose op may run in place (ADD, MUL, SCALE,
  RMS_NORM, ROPE, SOFT_MAX, UNARY, CLAMP, DIV, ...) takes over a parent with
  the same layout whose only remaining reader it is; otherwise it gets the
  best-fitting free block below the top, or the top block, which grows the buffer;
- frees a tensor when its last reader has been allocated, merging free neighbours.

The buffer is the highest address ever used, which depends on the holes the
earlier tensors leave, not only on what is alive at once. So this module does
not sum "what is alive": it replays that allocator (`_Alloc`) over the nodes
llama.cpp's graph builders (src/llama-model.cpp, src/models/*.cpp,
llama-graph.cpp `build_attn`, `build_ffn`, `build_moe_ffn`) create for one
block, with the real tensor sizes. Views (reshape, permute, the k/v cache
views) own no memory; a node reading a view reads the viewed tensor. The
weights and the KV cache live in their own buffers and are not counted.

Calibrated against llama-cpp-python 0.3.36's `CPU compute buffer size` line
(tests/core/fit/test_compute.py). CUDA runs the same allocator over the nodes
it holds, so the block terms are the same there; only the host-side part of
the output phase differs (`_logits_compute(cpu=False)`): that is measured on
CPU only here, the GPU terms are kept consistent but not calibrated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.core.fit.gguf_meta import ModelMeta
from app.core.fit.layers import _n_ff, _Settings, layer_cells, pad

#: ggml-cpu's tensor alignment (ggml_backend_cpu_buffer_type_get_alignment).
_ALIGN = 32
F32 = 4


def _aligned(n: int) -> int:
    return -(-int(n) // _ALIGN) * _ALIGN


@dataclass
class _T:
    """One tensor of the replayed graph."""

    size: int
    input: bool = False
    output: bool = False
    children: int = 0
    offset: int = -1
    owner: _T | None = None  # in-place: the tensor whose memory this one took over

    def root(self) -> _T:
        t = self
        while t.owner is not None:
            t = t.owner
        return t


@dataclass
class _Node:
    tensor: _T
    srcs: tuple[_T, ...]
    #: Parents this op may overwrite (same layout, op in ggml_op_can_inplace), in src order.
    inplace: tuple[_T, ...] = ()


@dataclass
class _Graph:
    """Nodes in llama.cpp's execution order; inputs in the order the graph meets them."""

    inputs: list[_T] = field(default_factory=list)
    nodes: list[_Node] = field(default_factory=list)

    def input(self, size: int) -> _T:
        t = _T(_aligned(size), input=True)
        self.inputs.append(t)
        return t

    def op(self, size: int, *srcs: _T | None, inplace: int = -1, output: bool = False) -> _T:
        """A node of `size` bytes reading `srcs`; `inplace` = how many leading srcs it may overwrite."""
        real = tuple(s for s in srcs if s is not None)
        t = _T(_aligned(size), output=output)
        cands = real[:inplace] if inplace > 0 else ()
        self.nodes.append(_Node(t, real, cands))
        return t

    def same(self, src: _T, *more: _T | None) -> _T:
        """An in-place op (MUL by a weight, ADD, SCALE, ROPE, RMS_NORM, SOFT_MAX...) on `src`."""
        return self.op(src.size, src, *more, inplace=2 if more and more[0] is not None and
                       more[0].size == src.size else 1)

    def view(self, src: _T) -> _T:
        """A view owns no memory: readers of the view read `src`."""
        return src


class _Alloc:
    """ggml_dyn_tallocr: best fit among the free blocks below the top, else the top block."""

    def __init__(self) -> None:
        self.free: list[list[int]] = []  # [offset, size], sorted, all below `top`
        self.top = 0  # start of the endless last block
        self.peak = 0

    def alloc(self, size: int) -> int:
        best = -1
        for i, (_off, sz) in enumerate(self.free):
            if sz >= size and (best < 0 or sz <= self.free[best][1]):
                best = i
        if best < 0:
            off = self.top
            self.top += size
            self.peak = max(self.peak, self.top)
            return off
        off, sz = self.free[best]
        if sz == size:
            del self.free[best]
        else:
            self.free[best] = [off + size, sz - size]
        return off

    def release(self, off: int, size: int) -> None:
        end = off + size
        if end == self.top:
            self.top = off
            if self.free and self.free[-1][0] + self.free[-1][1] == self.top:
                self.top = self.free.pop()[0]
            return
        for i, blk in enumerate(self.free):
            if blk[0] + blk[1] == off:
                blk[1] += size
                if i + 1 < len(self.free) and self.free[i + 1][0] == end:
                    blk[1] += self.free.pop(i + 1)[1]
                return
            if blk[0] == end:
                blk[0], blk[1] = off, blk[1] + size
                return
            if blk[0] > end:
                self.free.insert(i, [off, size])
                return
        self.free.append([off, size])


def _replay(g: _Graph) -> int:
    """The allocator's peak (bytes) over graph `g` (ggml_gallocr_alloc_graph_impl)."""
    for n in g.nodes:
        for s in n.srcs:
            s.children += 1
    a = _Alloc()
    for t in g.inputs:
        t.offset = a.alloc(t.size)
    live: set[int] = {id(t) for t in g.inputs}
    for n in g.nodes:
        t = n.tensor
        for p in n.inplace:
            if p.output or p.children != 1 or p.size < t.size:
                continue
            t.owner, t.offset = p, p.offset
            live.discard(id(p))
            live.add(id(t))
            break
        else:
            if t.size:  # size 0: a view (SET_ROWS into the cache) owns no memory
                t.offset = a.alloc(t.size)
                live.add(id(t))
        for p in n.srcs:
            p.children -= 1
            if p.children == 0 and not p.output and id(p) in live:
                live.discard(id(p))
                a.release(p.offset, p.size)
    return a.peak


# -- the graph of one block ---------------------------------------------------------------


def _md(meta: ModelMeta, key: str, default: Any = 0) -> Any:
    """A model key ModelMeta does not expose (read from the raw header metadata)."""
    return meta.metadata.get(f"{meta.architecture}.{key}", default)


def _shapes(meta: ModelMeta) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, built once per header (the graph asks about tensors thousands of times)."""
    shapes = meta.memo.get("tensor_shapes")
    if shapes is None:
        shapes = meta.memo["tensor_shapes"] = {t.name: tuple(t.shape) for t in meta.tensors}
    return shapes


def _has(meta: ModelMeta, layer: int, suffix: str) -> bool:
    return f"blk.{layer}.{suffix}" in _shapes(meta)


def _tensor_rows(meta: ModelMeta, layer: int, suffix: str) -> int | None:
    shape = _shapes(meta).get(f"blk.{layer}.{suffix}")
    return int(shape[1]) if shape is not None and len(shape) >= 2 else None


@dataclass
class _Inputs:
    tokens: _T
    pos: _T
    masks: dict[bool, _T]  # by "is the sliding-window cache"
    k_idxs: dict[bool, _T]
    v_idxs: dict[bool, _T]
    out_ids: _T


def _swa_model(meta: ModelMeta, s: _Settings) -> bool:
    return any(meta.is_swa(i) for i in range(meta.n_layer)) and bool(meta.sliding_window)


def _inputs(g: _Graph, meta: ModelMeta, s: _Settings) -> _Inputs:
    """The graph inputs, allocated before any node (ggml-alloc: "allocate all graph inputs first").

    KQ mask: n_kv x n_ubatch, f16 with flash attention (the fused kernel's format), f32 without.
    A model with sliding-window layers has two KV caches and two masks, both alive until the
    last layer that reads them. V row indices: one per token, or, with the transposed V cache
    (no flash attention), one int64 per V element (llama_kv_cache::build_input_v_idxs).
    """
    ub = s.n_ubatch
    tokens = g.input(ub * 4)
    # inp_embd: the vector-embeddings path (build_inp_embd); an input read by no node of a token
    # batch's graph, so it is never freed: one n_embd-wide f32 activation alive through the graph.
    g.input(meta.n_embd * ub * F32)
    pos = g.input(ub * 4 * (4 if meta.architecture.startswith("qwen2vl") else 1))
    if any(meta.has_state(i) for i in range(meta.n_layer)):
        g.input(4 * 1)  # rs_s_copy: one int32 per state row (n_rs: one sequence)
    attends = [i for i in range(meta.n_layer) if meta.has_kv(i)]
    kinds = ([False, True] if _swa_model(meta, s) else [False]) if attends else []
    v_dim = max((meta.kv_heads(i) * meta.head_dim_v for i in range(meta.n_layer)), default=0)
    masks, k_idxs, v_idxs = {}, {}, {}
    for swa in kinds:
        k_idxs[swa] = g.input(ub * 8)
        # MLA caches K only (V is a view of it): no V row indices in its graph.
        v_idxs[swa] = g.input(0 if _is_mla(meta, 0) else ub * 8 * (1 if s.flash_attn else v_dim))
        layer = next((i for i in attends if meta.is_swa(i) == swa), attends[0])
        n_kv = layer_cells(meta, layer, s)
        masks[swa] = g.input(n_kv * ub * (2 if s.flash_attn else 4))
    out_ids = g.input(ub * 4)
    return _Inputs(tokens, pos, masks, k_idxs, v_idxs, out_ids)


def _attention(g: _Graph, meta: ModelMeta, layer: int, s: _Settings, inp: _Inputs, x: _T) -> _T:
    """Self-attention of one block (llm_build_llama and kin, build_attn -> build_attn_mha).

    Returns the attention output projection (n_embd x n_ubatch).
    """
    ub, e = s.n_ubatch, meta.n_embd
    heads, heads_kv = meta.n_head, meta.kv_heads(layer)
    q_rows = _tensor_rows(meta, layer, "attn_q.weight") or heads * meta.head_dim_k
    n_kv = layer_cells(meta, layer, s)
    swa = meta.is_swa(layer) and _swa_model(meta, s)
    # attn_norm: RMS_NORM cannot overwrite x (the residual still reads it); MUL by the weight runs in place.
    cur = g.same(g.op(e * ub * F32, x))
    fused = _has(meta, layer, "attn_qkv.weight")
    # Qwen3-Next / Qwen3.5: one Q projection yields query and gate (2 x n_head x head_dim); the query is
    # an RMS_NORM of a view (a new tensor), and the gate's CONT is built only after the attention, so the
    # joint projection stays alive through it.
    gated = meta.architecture in _GATED_Q and q_rows == 2 * heads * meta.head_dim_k
    q_full = None
    if gated:
        q_full = g.op(q_rows * ub * F32, cur)
        q = g.same(g.op(heads * meta.head_dim_k * ub * F32, q_full))
        v = g.op(heads_kv * meta.head_dim_v * ub * F32, cur)
        k = g.op(heads_kv * meta.head_dim_k * ub * F32, cur)
    elif fused:
        qkv = g.op((q_rows + heads_kv * (meta.head_dim_k + meta.head_dim_v)) * ub * F32, cur)
        q = g.op(q_rows * ub * F32, qkv)  # ggml_cont of the q view, then views for k and v
        k = v = qkv
    else:
        q = g.op(q_rows * ub * F32, cur)  # Qcur; bias, q-norm and RoPE run in place on it
        v = g.op(heads_kv * meta.head_dim_v * ub * F32, cur)  # llama.cpp builds V before K
        k = g.op(heads_kv * meta.head_dim_k * ub * F32, cur)
    if _has(meta, layer, "attn_q_norm.weight") and not gated:
        q = g.same(g.same(q))
    q = g.same(q, inp.pos)  # ROPE (a view of Qcur, reused in place)
    if _has(meta, layer, "attn_k_norm.weight"):
        k = g.same(g.same(k))
    k = g.same(k, inp.pos)
    # cpy_k / cpy_v: SET_ROWS into the cache; its result is a view of the cache (no memory).
    g.op(0, k, inp.k_idxs[swa])
    g.op(0, v, inp.v_idxs[swa])
    if fused:
        g.op(0, qkv)
    mask = inp.masks[swa]
    if s.flash_attn:
        # FLASH_ATTN_EXT: f32 output, head_dim_v x n_head x n_ubatch; scores never materialise.
        out = g.op(heads * meta.head_dim_v * ub * F32, q, mask)
    else:
        # KQ: n_kv x n_ubatch x n_head f32; soft-capping (Gemma 2) and SOFT_MAX run in place.
        kq = g.op(heads * n_kv * ub * F32, q)
        if meta.metadata.get(f"{meta.architecture}.attn_logit_softcapping"):
            kq = g.same(g.same(g.same(kq)))
        kq = g.same(kq, mask)
        kqv = g.op(heads * meta.head_dim_v * ub * F32, kq)
        out = g.op(kqv.size, kqv)  # ggml_cont_2d of the permuted KQV
    if q_full is not None:
        gate = g.same(g.op(heads * meta.head_dim_v * ub * F32, q_full))  # CONT of the gate view, SIGMOID in place
        out = g.same(out, gate)  # MUL, in place on the attention output
    return g.op(e * ub * F32, out)  # attn_output


def _mla_attention(g: _Graph, meta: ModelMeta, layer: int, s: _Settings, inp: _Inputs, x: _T) -> _T:
    """DeepSeek-2 style MLA with the absorbed k_b/v_b (llm_build_deepseek2; keys read from meta.metadata).

    q (n_head x key_length_mla) -> q_nope absorbed by k_b (n_head x kv_lora_rank) and RoPE'd q_pe
    (a strided view: a new tensor), concatenated into Qcur (n_head x (kv_lora_rank + rope));
    kv_a_mqa gives the compressed row (kv_lora_rank + rope): its norm and RoPE'd k_pe are new
    tensors, concatenated into the cached K row; V is a view of the K cache (no V indices).
    Attention returns n_head x kv_lora_rank, decompressed by v_b to n_head x value_length_mla.
    """
    ub, e, heads = s.n_ubatch, meta.n_embd, meta.n_head
    lora = int(_md(meta, "attention.kv_lora_rank", 0))
    rope = int(_md(meta, "rope.dimension_count", 0))
    hk = int(_md(meta, "attention.key_length_mla", 0) or meta.head_dim_k)
    hv = int(_md(meta, "attention.value_length_mla", 0) or meta.head_dim_v)
    q_lora = int(_md(meta, "attention.q_lora_rank", 0) or 0)
    n_kv = layer_cells(meta, layer, s)
    cur = g.same(g.op(e * ub * F32, x))  # attn_norm
    if q_lora and _has(meta, layer, "attn_q_a.weight"):
        q = g.op(heads * hk * ub * F32, g.same(g.same(g.op(q_lora * ub * F32, cur))))
    else:
        q = g.op(heads * hk * ub * F32, cur)
    q_abs = g.op(heads * lora * ub * F32, q)  # q_nope_absorbed
    q_pe = g.op(heads * rope * ub * F32, q, inp.pos)
    qcur = g.op(heads * (lora + rope) * ub * F32, q_abs, q_pe)  # CONCAT
    kv_pe = g.op((lora + rope) * ub * F32, cur)
    kv = g.same(g.op(lora * ub * F32, kv_pe))  # kv_a_norm of a strided view: a new tensor, MUL in place
    k_pe = g.op(rope * ub * F32, kv_pe, inp.pos)
    k = g.op((lora + rope) * ub * F32, kv, k_pe)  # CONCAT: the cached row
    g.op(0, k, inp.k_idxs[False])
    mask = inp.masks[False]
    if s.flash_attn:
        out = g.op(heads * lora * ub * F32, qcur, mask)
    else:
        kq = g.same(g.op(heads * n_kv * ub * F32, qcur), mask)  # KQ, SOFT_MAX in place
        v = g.op(n_kv * lora * 2, kq)  # ggml_cont of the transposed V view of the f16 cache
        out = g.op(heads * lora * ub * F32, kq, v)
    mla = g.op(heads * hv * ub * F32, out)  # v_b decompression
    return g.op(e * ub * F32, g.op(mla.size, mla))  # CONT of the permuted result, attn_output


#: Architectures whose attention layers project a gated query (src/models/qwen3next.cpp, qwen35*.cpp).
_GATED_Q = frozenset({"qwen3next", "qwen35", "qwen35moe"})


def _ssm(meta: ModelMeta) -> tuple[int, int, int, int, int]:
    """(d_conv, d_inner, d_state, dt_rank, n_group) from the `ssm.*` keys."""
    return (int(_md(meta, "ssm.conv_kernel", 0)), int(_md(meta, "ssm.inner_size", 0)),
            int(_md(meta, "ssm.state_size", 0)), int(_md(meta, "ssm.time_step_rank", 0)),
            max(1, int(_md(meta, "ssm.group_count", 1) or 1)))


def _state_rows(g: _Graph, size: int) -> _T:
    """build_rs: the SCALE that clears a state and the copy of the extra rows write views of the cache
    (no memory); GET_ROWS of this sequence's row is a new tensor."""
    return g.op(size * F32)


def _delta_net(g: _Graph, meta: ModelMeta, layer: int, s: _Settings, x: _T) -> _T:
    """A gated delta-net layer (qwen35.cpp / qwen3next.cpp build_layer_attn_linear, delta-net-base.cpp),
    nodes in the order ggml_build_forward_expand visits them: the conv-state copy pulls the QKV projection
    and the CONCAT with the conv state; the new-state copy pulls the fused GATED_DELTA_NET and its sources
    in order (the SSM_CONV output, the two L2 norms of its q and k views, the gate chain, beta, the state);
    the gate projection z is visited only by the gated norm after it, so the layer input stays alive
    until then. The fused op (CPU has it, cparams.fused_gdn_*) writes the output and the new state into
    one tensor; n_k_heads != n_v_heads needs no REPEAT there.
    """
    ub, e = s.n_ubatch, meta.n_embd
    d_conv, d_inner, d_state, n_v, n_k = _ssm(meta)
    key_dim = d_state * n_k
    channels = d_inner + 2 * key_dim
    head_v = d_inner // max(1, n_v)
    cur = g.same(g.op(e * ub * F32, x))  # attn_norm
    conv_state = _state_rows(g, (d_conv - 1) * channels)
    legacy = _has(meta, layer, "ssm_in.weight")
    if legacy:
        # ssm_in: one interleaved qkvz projection, split by CONTs and re-joined by two CONCATs; z's CONT
        # is visited last, so the projection lives through the layer.
        mixed = g.op((2 * key_dim + 2 * d_inner) * ub * F32, cur)
        qk = g.op(2 * key_dim * ub * F32, g.op(key_dim * ub * F32, mixed), g.op(key_dim * ub * F32, mixed))
        qkv = g.op(channels * ub * F32, qk, g.op(d_inner * ub * F32, mixed))
    else:
        mixed = None
        qkv = g.op(channels * ub * F32, cur)
    conv_in = g.op((d_conv - 1 + ub) * channels * F32, conv_state, qkv)  # CONCAT with the transposed view
    g.op(0, conv_in)  # CPY of its last columns into the conv cache
    state = _state_rows(g, head_v * head_v * n_v)
    conv = g.same(g.op(channels * ub * F32, conv_in))  # SSM_CONV, SILU in place
    q = g.same(g.op(key_dim * ub * F32, conv))  # l2 norm: RMS_NORM of a view (new), SCALE in place
    k = g.same(g.op(key_dim * ub * F32, conv))
    if _has(meta, layer, "ssm_ba.weight"):
        ba = g.op(2 * n_v * ub * F32, cur)  # ssm_beta_alpha
        gate = g.same(g.same(g.same(g.op(n_v * ub * F32, ba))))  # CONT of a, ADD dt, SOFTPLUS, MUL A
        beta = g.same(g.op(n_v * ub * F32, ba))  # CONT of b, SIGMOID in place
    else:
        gate = g.same(g.same(g.same(g.op(n_v * ub * F32, cur))))  # ssm_alpha, ADD dt, SOFTPLUS, MUL A
        beta = g.same(g.op(n_v * ub * F32, cur))  # ssm_beta, SIGMOID in place
    out = g.op((head_v * n_v * ub + head_v * head_v * n_v) * F32, q, k, conv, gate, beta, state)
    g.op(0, out)  # CPY of the new state into the cache
    normed = g.same(g.op(head_v * n_v * ub * F32, out))  # gated norm: RMS_NORM of the output view, MUL
    z = g.same(g.op(d_inner * ub * F32, mixed)) if mixed is not None else g.same(g.op(d_inner * ub * F32, cur))
    y = g.same(normed, z)  # MUL by SILU(z), in place
    return g.op(e * ub * F32, y)  # ssm_out


def _mamba2(g: _Graph, meta: ModelMeta, layer: int, s: _Settings, x: _T) -> _T:
    """A Mamba-2 mixer (mamba-base.cpp build_mamba2_layer), in visiting order: the conv-state copy pulls
    the in-projection zxBCdt and its CONCAT with the conv state; the SSM_SCAN pulls the SSM_CONV chain
    and the CONT of dt; the output adds x * D (a new tensor: x is one of three views of xBC) and gates
    with the CONT of z (SWIGLU: a new tensor), so zxBCdt lives until that CONT. The scan's result holds
    y and the final state."""
    ub, e = s.n_ubatch, meta.n_embd
    d_conv, d_inner, d_state, n_head, n_group = _ssm(meta)
    channels = d_inner + 2 * n_group * d_state
    cur = g.same(g.op(e * ub * F32, x))  # attn_norm
    conv_state = _state_rows(g, (d_conv - 1) * channels)
    zxbcdt = g.op((2 * d_inner + 2 * n_group * d_state + n_head) * ub * F32, cur)
    conv_in = g.op((d_conv - 1 + ub) * channels * F32, conv_state, zxbcdt)
    g.op(0, conv_in)
    xbc = g.same(g.same(g.op(channels * ub * F32, conv_in)))  # SSM_CONV, ADD bias, SILU
    dt = g.same(g.op(n_head * ub * F32, zxbcdt))  # CONT of the dt view, ADD dt bias
    y_ssm = g.op((d_inner * ub + d_state * d_inner) * F32, xbc, dt)  # SSM_SCAN (reads the state view)
    g.op(0, y_ssm)  # CPY of the final state into the cache
    y = g.same(y_ssm, g.op(d_inner * ub * F32, xbc))  # ADD y + MUL(x, D): in place on the scan result
    y = g.same(g.same(g.op(d_inner * ub * F32, g.op(d_inner * ub * F32, zxbcdt), y)))  # SWIGLU, group norm
    return g.op(e * ub * F32, y)  # ssm_out


def _mixer(meta: ModelMeta, layer: int) -> str:
    """Which graph builds this layer's token mixing: attention, mla, delta_net, mamba2 or "" (no rule)."""
    if _has(meta, layer, "attn_kv_a_mqa.weight"):
        return "mla" if _is_mla(meta, layer) else ""
    if meta.has_state(layer):
        if meta.has_kv(layer):
            return ""  # falcon-h1: attention and Mamba side by side; no rule
        if meta.architecture in _GATED_Q and _has(meta, layer, "ssm_conv1d.weight"):
            return "delta_net"
        if _has(meta, layer, "ssm_in.weight") and _has(meta, layer, "ssm_d") and _ssm(meta)[4] >= 1 \
                and meta.architecture in _MAMBA2:
            return "mamba2"
        return ""
    if meta.has_kv(layer) and meta.kv_heads(layer) > 0 and meta.head_dim_k > 0:
        return "attention"
    return ""


#: Architectures whose recurrent layers are Mamba-2 mixers followed by the usual FFN sub-block.
_MAMBA2 = frozenset({"granitehybrid", "mamba2"})


def _is_mla(meta: ModelMeta, layer: int) -> bool:
    return _has(meta, layer, "attn_kv_a_mqa.weight") and _has(meta, layer, "attn_k_b.weight")


def _ffn(g: _Graph, meta: ModelMeta, layer: int, s: _Settings, x: _T) -> _T:
    """The FFN of one block on its normalised input x (build_ffn / build_moe_ffn). Returns its output."""
    ub, e = s.n_ubatch, meta.n_embd
    if meta.n_expert > 1 and _has(meta, layer, "ffn_gate_inp.weight"):
        n_exp, used = meta.n_expert, max(1, meta.n_expert_used)
        ff = meta.n_ff_exp or _tensor_rows(meta, layer, "ffn_up_exps.weight") or _n_ff(meta, layer)
        logits = g.op(n_exp * ub * F32, x)  # ffn_moe_logits
        probs = g.same(logits)  # SOFT_MAX in place (sigmoid gating: UNARY, also in place)
        order = g.op(n_exp * ub * 4, probs)  # ARGSORT; top-k is a view of it
        weights = g.op(used * ub * F32, probs, order)  # GET_ROWS of the chosen probabilities
        if _md(meta, "expert_weights_norm", meta.architecture in ("qwen3moe", "qwen2moe", "olmoe")):
            total = g.same(g.op(ub * F32, weights))  # SUM_ROWS, CLAMP in place
            weights = g.same(weights, total)  # DIV in place
        if _has(meta, layer, "ffn_gate_up_exps.weight"):
            gate_up = g.op(2 * ff * used * ub * F32, x, order)
            act = g.op(ff * used * ub * F32, gate_up)
        else:
            gate = g.op(ff * used * ub * F32, x, order)  # MUL_MAT_ID: ff x n_used x n_ubatch
            up = g.op(ff * used * ub * F32, x, order)
            act = g.op(ff * used * ub * F32, gate, up)  # SWIGLU / GEGLU: never in place
        down = g.op(e * used * ub * F32, act, order)  # the n_used expert outputs, n_embd each
        weighted = g.same(down, weights)  # MUL by the routing weights, in place
        # The expert outputs are summed through views: the first ADD needs a new tensor, the rest run in place.
        out = g.op(e * ub * F32, weighted, weighted)
        for _ in range(used - 2):
            out = g.same(out, weighted)
        if _has(meta, layer, "ffn_up_shexp.weight"):
            sff = _tensor_rows(meta, layer, "ffn_up_shexp.weight") or ff
            sg, su = g.op(sff * ub * F32, x), g.op(sff * ub * F32, x)
            sh = g.op(e * ub * F32, g.op(sff * ub * F32, sg, su))
            if _has(meta, layer, "ffn_gate_inp_shexp.weight"):
                sh = g.same(sh, g.same(g.op(ub * F32, x)))
            out = g.same(out, sh)
        return out
    ff = _n_ff(meta, layer)
    if not _has(meta, layer, "ffn_gate.weight") and (_tensor_rows(meta, layer, "ffn_up.weight") or 0) == 2 * ff:
        act = g.op(ff * ub * F32, g.op(2 * ff * ub * F32, x))  # fused gate+up (Phi-3), SWIGLU of its halves
    elif _has(meta, layer, "ffn_gate.weight"):
        gate = g.op(ff * ub * F32, x)
        up = g.op(ff * ub * F32, x)
        act = g.op(ff * ub * F32, gate, up)  # SWIGLU / GEGLU: a new tensor
    else:
        act = g.same(g.op(ff * ub * F32, x))  # up, then GELU in place
    return g.op(e * ub * F32, act)  # ffn_down


def _block(g: _Graph, meta: ModelMeta, layer: int, s: _Settings, inp: _Inputs, x: _T, *, last: bool) -> _T:
    """One transformer block on residual x; returns the block output (the next residual)."""
    ub, e = s.n_ubatch, meta.n_embd
    mixer = _mixer(meta, layer)
    if mixer == "delta_net":
        attn = _delta_net(g, meta, layer, s, x)
    elif mixer == "mamba2":
        attn = _mamba2(g, meta, layer, s, x)
    else:
        attn = (_mla_attention if mixer == "mla" else _attention)(g, meta, layer, s, inp, x)
    if _has(meta, layer, "post_attention_norm.weight"):
        attn = g.same(g.same(attn))  # Gemma 2/3: RMS_NORM and MUL in place on the attention output
    if last:
        # The last layer keeps only the output rows (GET_ROWS by out_ids, here every token).
        attn = g.op(e * ub * F32, attn, inp.out_ids)
        x = g.op(e * ub * F32, x, inp.out_ids)
    ffn_inp = g.same(attn, x)  # ADD, in place on the attention output
    h = g.same(g.op(e * ub * F32, ffn_inp))  # ffn_norm: a new tensor (ffn_inp is read again below)
    out = _ffn(g, meta, layer, s, h)
    if _has(meta, layer, "post_ffw_norm.weight"):
        out = g.same(g.same(out))
    return g.same(out, ffn_inp)  # ADD: l_out


def _graph(meta: ModelMeta, layer: int, s: _Settings, *, output: bool) -> _Graph:
    """Inputs, the token embedding, block `layer` twice (the second as the last layer), the output head."""
    g = _Graph()
    inp = _inputs(g, meta, s)
    x = g.op(meta.n_embd * s.n_ubatch * F32, inp.tokens)  # GET_ROWS of token_embd (scaling runs in place)
    x = _block(g, meta, layer, s, inp, x, last=False)
    x = _block(g, meta, layer, s, inp, x, last=True)
    if output:
        x = g.same(g.same(x))  # output norm, in place on l_out
        g.op(meta.n_vocab * s.n_ubatch * F32, x, output=True)  # logits: a graph output, never freed
    return g


def _signature(meta: ModelMeta, layer: int) -> tuple[Any, ...]:
    suffixes = ("attn_kv_a_mqa.weight", "attn_q_a.weight", "ffn_gate_up_exps.weight", "attn_qkv.weight", "attn_q_norm.weight", "attn_k_norm.weight", "post_attention_norm.weight",
                "post_ffw_norm.weight", "ffn_gate_inp.weight", "ffn_gate.weight", "ffn_up_shexp.weight")
    return (_mixer(meta, layer), meta.kv_heads(layer), meta.is_swa(layer), _n_ff(meta, layer),
            _tensor_rows(meta, layer, "attn_q.weight"), _tensor_rows(meta, layer, "ffn_up.weight"),
            *(_has(meta, layer, x) for x in suffixes))


def _peak(meta: ModelMeta, layer: int, s: _Settings, *, output: bool) -> int:
    key = ("compute_peak", _signature(meta, layer), s, output)
    cached = meta.memo.get(key)
    if cached is None:
        cached = meta.memo[key] = _replay(_graph(meta, layer, s, output=output))
    return int(cached)


def _legacy_block(meta: ModelMeta, layer: int, s: _Settings) -> int:
    """A closed form for blocks whose graph is not replayed (Mamba-1, short convolutions, falcon-h1's
    parallel mixers, Nemotron-H's FFN-only layers, legacy MLA): the block's activations, the scores
    and mask where the layer attends, or the FFN, whichever is larger. Within 8 MiB of llama.cpp at
    toy widths (tests/core/fit/test_compute.py); these layer kinds have no wide fixture."""
    ub, e = s.n_ubatch, meta.n_embd
    n_kv = layer_cells(meta, layer, s)
    q_dim = meta.n_head * meta.head_dim_k
    kv_dim = meta.kv_heads(layer) * (meta.head_dim_k + meta.head_dim_v)
    activations = ub * 4 * (3 * e + q_dim + kv_dim)
    if not meta.has_kv(layer):
        attention = activations  # a recurrent layer without a rule: no KQ scores, no mask
    else:
        attention = activations + (n_kv * ub * 2 if s.flash_attn else (meta.n_head * n_kv * ub + n_kv * ub) * 4)
    ffn = ub * 4 * (3 * _n_ff(meta, layer) + 4 * e)
    return max(attention, ffn)


def _replayable(meta: ModelMeta, layer: int) -> bool:
    """Blocks whose graph `_block` writes: attention (plain, gated-query, MLA), gated delta-net and
    Mamba-2 mixers, each with a dense or MoE FFN."""
    return bool(_mixer(meta, layer))


def _block_compute(meta: ModelMeta, layer: int, s: _Settings) -> int:
    """Peak compute buffer while block `layer` runs (the allocator replayed over it), bytes."""
    if not _replayable(meta, layer):
        return _legacy_block(meta, layer, s)
    return _peak(meta, layer, s, output=False)


def _logits_compute(meta: ModelMeta, s: _Settings, *, cpu: bool) -> int:
    """The output phase: the last block, then the final norm and the logits of every micro-batch token.

    The logits (n_vocab x n_ubatch f32) are a graph output, never freed, and land above what
    the last block left allocated. On CPU the replay includes the host-side inputs and the
    token embedding rows (SmolLM2 at n_ubatch 512: 98.25 MiB measured). A GPU's buffer holds
    only the output head there, measured on CUDA as the logits plus one n_embd-wide
    activation (Llama-3-8B: 258.5 MiB); not calibrated here (no GPU on this machine).
    """
    if not cpu or not meta.n_layer or not _replayable(meta, meta.n_layer - 1):
        return s.n_ubatch * 4 * (meta.n_vocab + (2 if cpu else 1) * meta.n_embd)
    return _peak(meta, meta.n_layer - 1, s, output=True)


__all__ = ["_block_compute", "_logits_compute", "pad"]
