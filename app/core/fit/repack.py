"""CPU weight repacking: which matrices llama.cpp copies into its CPU_REPACK buffer, and what the CPU buffers hold.

llama.cpp's CPU backend offers "extra" buffer types before its plain one. The
repack buffer (ggml/src/ggml-cpu/repack.cpp, `CPU_REPACK`) stores a matrix
interleaved for faster kernels; a matrix goes there when, on a CPU-placed
layer, all of these hold (the rules below cite where each comes from):

- the buffer types are in play: `llama_model_params.use_extra_bufts` (default
  true; llama-model.cpp `make_cpu_buft_list`), and no GPU backend's host buffer
  comes first: CUDA/HIP/SYCL/Vulkan/CANN offer one (`get_host_buffer_type`),
  it is tried before the extra types unless `no_host`, and it supports every
  matrix, so on those builds with a GPU present nothing is repacked;
- the tensor is used by a matrix multiplication (llama-model-loader.cpp
  `weight_buft_supported` builds the tensor's op from llama-arch.cpp's
  LLM_TENSOR_INFOS: token_embd and the other GET_ROWS tensors are not);
- MUL_MAT with a 2-D weight or MUL_MAT_ID with a 3-D one (repack.cpp
  `extra_buffer_type::supports_op`, `ggml_n_dims`);
- `ggml_repack_get_optimal_repack_type` has a layout for the tensor's type on
  this CPU code with ne[1] (rows) a multiple of the layout's row interleave.

The CPU features are those the CPU library was *compiled* for
(`ggml_cpu_has_avx2()` is `#if defined(__AVX2__)`, ggml-cpu.c): the variant a
portable build chose (machine/backends.py X86_VARIANTS), else the build's
system_info, else the processor's own flags.

The repacked copy is as large as the original (get_alloc_size is ggml_nbytes;
block_q4_0x8 is 8 block_q4_0). What the plain CPU buffer then reports
(llama-model.cpp `load_tensors`): with mmap on, `CPU_Mapped` maps the file
range from the first to the last byte of the tensors it still holds
(`get_mapping_range`), so repacked matrices lying between them stay inside the
mapping and their pages stay resident after repacking read them (llama.cpp
issues #16761, #19578: two copies); with mmap off, `CPU` allocates each tensor
it holds, padded to 32 bytes (TENSOR_ALIGNMENT), and the repacked matrices
exist once.

Not modelled: the AMX buffer type (ggml-cpu/amx, only in a build whose CPU code
has AMX_INT8 and AVX512_VNNI: the sapphirerapids variant), which comes before
CPU_REPACK and takes Q4_0/Q4_1/Q8_0/Q4_K/Q5_K/Q6_K/IQ4_XS matrices in its own
layout; KleidiAI and SpacemiT buffers (not in Camelid's builds).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import lru_cache

from app.core.fit.gguf_meta import ModelMeta, TensorInfo

#: The ways a load can hold CPU-placed weights (the `cpu_repack` setting).
#: repack: repacked, mmap off (one copy); repack_mmap: repacked, mmap on (the
#: file pages of repacked matrices stay mapped too); off: no repacking, mmap on.
MODES = ("repack", "repack_mmap", "off")
#: Chosen from bench/bench_repack.py (docs/BENCHMARKS.md, "CPU weight repacking").
DEFAULT_MODE = "repack"

#: ggml's TENSOR_ALIGNMENT (ggml-impl.h): CPU and CPU_REPACK buffers place tensors at multiples of it.
TENSOR_ALIGNMENT = 32

#: GGML types (ggml.h enum ggml_type) the rules name.
Q4_0, Q8_0, Q2_K, Q4_K, Q5_K, Q6_K, IQ4_NL, MXFP4, Q1_0 = 2, 8, 10, 12, 13, 14, 20, 39, 41

#: GPU backends whose device has a host (pinned) buffer type, which llama.cpp puts
#: before the CPU's extra buffer types (ggml-cuda.cu, ggml-vulkan.cpp, ggml-sycl.cpp,
#: ggml-cann.cpp `get_host_buffer_type`; HIP is the CUDA code). Metal has none.
HOST_BUFFER_BACKENDS = frozenset({"CUDA", "HIP", "SYCL", "Vulkan", "CANN"})

#: Tensors llama-arch.cpp's LLM_TENSOR_INFOS uses with GET_ROWS (or no op): never a matmul.
_NOT_MATMUL = ("token_embd.", "position_embd.", "token_types.", "per_layer_token_embd.",
               "masked_embd_", "d2t", "markov_w1", "selector_", ".attn_rel_b", ".cross_attn_rel_b",
               ".attn_compressor_ape", ".indexer_compressor_ape", ".ffn_gate_tid2eid", ".nextn.embed_tokens")


@dataclass(frozen=True)
class RepackRule:
    """Whether and how the CPU repacks on one load: the compiled CPU features and the switch."""

    #: ggml feature names the CPU code was compiled with (AVX2, AVX512, NEON, DOTPROD, I8MM, SVE...).
    features: frozenset[str] = frozenset()
    #: use_extra_bufts, and no GPU host buffer in front of the extra buffer types.
    enabled: bool = True
    #: mmap on: the plain CPU buffer maps the file (CPU_Mapped).
    use_mmap: bool = True

    def has(self, *names: str) -> bool:
        return all(n in self.features for n in names)


def layout(rule: RepackRule, ggml_type: int, rows: int) -> str | None:
    """The repacked layout llama.cpp picks for a (type, ne[1]) on this CPU, or None.

    repack.cpp `ggml_repack_get_optimal_repack_type`, branch by branch (RISC-V's
    vector layouts and SVE's 256-bit vector length check are left out: Camelid
    ships no RISC-V build, and SVE needs a 256-bit machine we cannot probe).
    """
    f = rule.has
    x86 = f("AVX2")
    neon_i8mm = f("NEON", "I8MM")
    neon_dot = f("NEON", "DOTPROD")
    if ggml_type == Q4_0:
        if x86 and rows % 8 == 0:
            return "q4_0_8x8"
        if neon_i8mm and rows % 4 == 0:
            return "q4_0_4x8"
        if neon_dot and rows % 4 == 0:
            return "q4_0_4x4"
    elif ggml_type == Q4_K:
        if (x86 or neon_i8mm) and rows % 8 == 0:
            return "q4_K_8x8"
        if neon_dot and rows % 8 == 0:
            return "q4_K_8x4"
    elif ggml_type == Q2_K:
        if f("AVX512") and rows % 8 == 0:
            return "q2_K_8x8"
    elif ggml_type in (Q5_K, Q6_K):
        name = "q5_K" if ggml_type == Q5_K else "q6_K"
        if neon_i8mm and rows % 8 == 0:
            return f"{name}_8x8"
        if neon_dot and rows % 8 == 0:
            return f"{name}_8x4"
    elif ggml_type == IQ4_NL:
        if x86 and rows % 8 == 0:
            return "iq4_nl_8x8"
        if neon_dot and rows % 4 == 0:
            return "iq4_nl_4x4"
    elif ggml_type == MXFP4:
        if x86 and rows % 8 == 0:
            return "mxfp4_8x8"
        if neon_dot and rows % 4 == 0:
            return "mxfp4_4x4"
    elif ggml_type in (Q8_0, Q1_0):
        name = "q8_0" if ggml_type == Q8_0 else "q1_0"
        if neon_i8mm and rows % 4 == 0:
            return f"{name}_4x8"
        if neon_dot and rows % 4 == 0:
            return f"{name}_4x4"
    return None


def _n_dims(shape: tuple[int, ...]) -> int:
    """ggml_n_dims: the dimensions up to the last one larger than 1 (at least 1)."""
    n = len(shape)
    while n > 1 and int(shape[n - 1]) == 1:
        n -= 1
    return max(n, 1)


def is_matmul_weight(name: str) -> bool:
    """Whether llama.cpp uses this tensor as a matrix multiplication's weight (llama-arch.cpp LLM_TENSOR_INFOS)."""
    if not name.endswith(".weight") or any(part in name for part in _NOT_MATMUL):
        return False
    return not name.endswith(("_norm.weight", ".norm.weight"))


def repacks(t: TensorInfo, rule: RepackRule, *, name: str | None = None) -> bool:
    """Whether llama.cpp puts tensor `t` (on a CPU layer) into CPU_REPACK under `rule`.

    `name` overrides the tensor's name: the tied output is token_embd loaded as
    the output (llama-model-loader.cpp TENSOR_DUPLICATED), so it is a matmul.
    """
    if not rule.enabled or not t.shape:
        return False
    return _repacks(rule, _kind(name or t.name), tuple(t.shape), t.ggml_type)


@lru_cache(maxsize=1 << 14)
def _kind(name: str) -> str:
    """'exps' (a MUL_MAT_ID weight), 'matmul' or '' for a tensor name (cached: names repeat)."""
    if not is_matmul_weight(name):
        return ""
    return "exps" if "_exps." in name else "matmul"


@lru_cache(maxsize=1 << 14)
def _repacks(rule: RepackRule, kind: str, shape: tuple[int, ...], ggml_type: int) -> bool:
    if not kind:
        return False
    # MUL_MAT_ID (the experts, llama-arch.cpp *_EXPS) needs a 3-D weight, MUL_MAT a 2-D one.
    want = 3 if kind == "exps" else 2
    if _n_dims(shape) != want:
        return False
    rows = int(shape[1]) if len(shape) > 1 else 1
    return layout(rule, ggml_type, rows) is not None


def _pad(n: int) -> int:
    return (n + TENSOR_ALIGNMENT - 1) // TENSOR_ALIGNMENT * TENSOR_ALIGNMENT


def _has_offsets(tensors: list[TensorInfo]) -> bool:
    """A header read from a file has data offsets; a predicted meta (from_architecture) has none."""
    return len(tensors) > 1 and any(t.offset for t in tensors)


def _with_offsets(tensors: list[TensorInfo]) -> list[TensorInfo]:
    """The tensors with their data offsets; a predicted table gets the ones a GGUF writer gives it.

    gguf-py and llama.cpp's writers lay tensor data out in table order, each
    padded to general.alignment (32 by default).
    """
    if _has_offsets(tensors) or len(tensors) < 2:
        return tensors
    out, offset = [], 0
    for t in tensors:
        out.append(replace(t, offset=offset))
        offset += _pad(t.n_bytes)
    return out


def _mapped_span(tensors: Iterable[TensorInfo]) -> int:
    """CPU_Mapped's size: per shard, from the first tensor's first byte to the last one's last (get_mapping_range)."""
    spans: dict[int, tuple[int, int]] = {}
    for t in tensors:
        lo, hi = spans.get(t.shard, (t.offset, t.offset + t.n_bytes))
        spans[t.shard] = (min(lo, t.offset), max(hi, t.offset + t.n_bytes))
    return sum(hi - lo for lo, hi in spans.values())


def _placed(meta: ModelMeta, rule: RepackRule) -> list[tuple[TensorInfo, int, str, bool, bool]]:
    """Per tensor (with offsets): its block, where it sits (block / output / input), whether it is an
    expert matrix and whether `rule` repacks it; once per header and rule (a plan's layer search
    asks for many placements of the same table)."""
    key = ("repack_placed", rule.features, rule.enabled)  # mmap does not change what repacks
    cached = meta.memo.get(key)
    if cached is None:
        cached = []
        offsets = meta.memo.get("tensors_with_offsets")
        if offsets is None:
            offsets = meta.memo["tensors_with_offsets"] = _with_offsets(meta.tensors)
        for t in offsets:
            layer = t.layer
            if layer is not None and layer < meta.n_layer:
                place = "block"
            elif t.name.startswith("output"):
                place, layer = "output", -1
            else:
                place, layer = "input", -1
            cached.append((t, layer, place, "_exps." in t.name, repacks(t, rule)))
        meta.memo[key] = cached
    return cached


@dataclass(frozen=True)
class CpuWeights:
    """The CPU's model buffers for one placement: the plain buffer and CPU_REPACK, in bytes."""

    #: CPU_Mapped (mmap on: the mapped file range) or CPU (mmap off: the tensors it holds).
    weights: int
    #: CPU_REPACK: the repacked matrices.
    repack: int
    #: Bytes of repacked matrices whose file pages also stay mapped (mmap on), counted in `weights`.
    mapped_twice: int = 0


def cpu_weights(meta: ModelMeta, rule: RepackRule, n_cpu_blocks: int, output_on_cpu: bool, *,
                cpu_expert_layers: int = 0) -> CpuWeights:
    """The CPU buffers when blocks 0..n_cpu_blocks-1 (and the output layer if `output_on_cpu`) run on the CPU.

    The input layer (token_embd...) is always on the CPU (llama-model.cpp dev_input).
    Blocks from n_cpu_blocks on, and the output layer otherwise, are on a GPU and
    not in these buffers, except the expert matrices of blocks below
    `cpu_expert_layers` (--n-cpu-moe): an override to the CPU buffer type, for which
    llama.cpp still considers the CPU's extra (repacking) buffer types
    (llama-model-loader.cpp "when overriding to a CPU buffer").
    """
    key = ("cpu_weights", rule, n_cpu_blocks, output_on_cpu, cpu_expert_layers)
    cached = meta.memo.get(key)
    if cached is not None:
        return cached
    plain: list[TensorInfo] = []
    repacked: list[TensorInfo] = []
    for t, layer, place, is_expert, packs in _placed(meta, rule):
        if place == "block":
            on_cpu = layer < n_cpu_blocks or (layer < cpu_expert_layers and is_expert)
        elif place == "output":
            on_cpu = output_on_cpu
        else:
            on_cpu = True  # the input layer (and any tensor llama.cpp treats like it)
        if not on_cpu:
            continue
        (repacked if packs else plain).append(t)
    extra_repack = 0
    if meta.tied_embeddings and output_on_cpu:
        embd = next((t for t in meta.tensors if t.name == "token_embd.weight"), None)
        # The output's copy of token_embd: the same tensor when it lands in token_embd's
        # own buffer type, a second (repacked) one when CPU_REPACK takes it as a matmul.
        if embd is not None and repacks(embd, rule, name="output.weight"):
            extra_repack = _pad(embd.n_bytes)
    repack_bytes = sum(_pad(t.n_bytes) for t in repacked) + extra_repack
    mapped_twice = 0
    if rule.use_mmap:
        weights = _mapped_span(plain) if plain else 0
        if plain:
            lo = min(t.offset for t in plain)
            hi = max(t.offset + t.n_bytes for t in plain)
            mapped_twice = sum(t.n_bytes for t in repacked if lo <= t.offset and t.offset + t.n_bytes <= hi)
    else:
        weights = sum(_pad(t.n_bytes) for t in plain)
    result = CpuWeights(weights=weights, repack=repack_bytes, mapped_twice=mapped_twice)
    meta.memo[key] = result
    return result


# -- the CPU features -----------------------------------------------------------------


#: /proc/cpuinfo-derived names (machine/probes.py) that mean a ggml feature.
_FEATURE_ALIASES = {"AVX512F": "AVX512", "ASIMD": "NEON", "ASIMDDP": "DOTPROD"}


def _normalise(names: Iterable[str]) -> frozenset[str]:
    return frozenset(_FEATURE_ALIASES.get(n.upper(), n.upper()) for n in names)


def features_from_system_info(system_info: str) -> frozenset[str]:
    """The CPU features a llama.cpp build reports (`llama_print_system_info`: "AVX2 = 1 | NEON = 1 ...")."""
    found = set()
    for part in system_info.replace("\n", "|").split("|"):
        name, _, value = part.partition("=")
        name = name.strip().split(":")[-1].strip()
        if name and value.strip() == "1":
            found.add(name)
    return _normalise(found)


def cpu_features(hardware: object | None = None) -> frozenset[str]:
    """The features the CPU code llama.cpp runs was compiled with, for `hardware` (None: this process).

    A portable build's variant (`backend.cpu_variant`, e.g. zen4) decides on
    x86; without one, the build's system_info; without that (a simulated
    machine), the processor's flags (`cpu.features`), which a native build
    would be compiled for.
    """
    from app.core.machine.backends import X86_VARIANTS

    if hardware is None:
        from app.core.machine import backends

        state = backends.state()
        if state is not None and state.cpu_variant in X86_VARIANTS:
            return _normalise(X86_VARIANTS[state.cpu_variant])
        from app.core.machine import detect

        hardware = detect()
    backend = getattr(hardware, "backend", None)
    variant = getattr(backend, "cpu_variant", None)
    if variant in X86_VARIANTS:
        return _normalise(X86_VARIANTS[variant])
    info = features_from_system_info(getattr(backend, "system_info", "") or "")
    if info:
        return info
    cpu = getattr(hardware, "cpu", None)
    return _normalise(getattr(cpu, "features", None) or [])


def host_buffer_first(gpu_backends: Iterable[str], has_gpus: bool) -> bool:
    """Whether a GPU backend's host buffer type takes CPU weights before CPU_REPACK (llama-model.cpp make_cpu_buft_list)."""
    return has_gpus and any(b in HOST_BUFFER_BACKENDS for b in gpu_backends)


def mode_settings(mode: str) -> tuple[bool, bool]:
    """(use_mmap, use_extra_bufts) for a `cpu_repack` mode."""
    if mode not in MODES:
        raise ValueError(mode)
    return {"repack": (False, True), "repack_mmap": (True, True), "off": (True, False)}[mode]
