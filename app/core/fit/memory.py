"""The memory plan: where every byte of a model goes, how many layers the GPU takes, the verdict.

`plan_memory(meta, hardware)` follows llama.cpp's own placement and counting
(llama-model.cpp, llama-kv-cache.cpp, llama-context.cpp):

- Weights are exact, from the tensor table. With n_gpu_layers = k the output
  layer goes to the GPU first, then the last k-1 blocks; the token embedding
  always stays on the CPU; a tied output (no output.weight) is a second copy
  of the token embedding on the GPU. MoE tensors hold every expert.
- KV cache: per layer, cells x KV heads x (head_dim_k x bytes_k + head_dim_v x
  bytes_v) on that layer's device; cells = n_ctx padded to 256; sliding-window
  layers hold min(cells, window + n_ubatch padded to 256).
- Compute buffers: the largest set of live activations of llama.cpp's graph,
  reserved for one micro-batch: logits (n_vocab x n_ubatch floats) on the
  output's device, and without flash attention the attention scores
  (n_head x n_kv x n_ubatch floats) on each device holding blocks.
- Overhead: each GPU backend's context, and the runtime in RAM.

Matching llama-cpp-python 0.3.x: `Llama(flash_attn=False)` (its default)
passes LLAMA_FLASH_ATTN_TYPE_DISABLED, not llama.cpp's own "auto", so flash
attention is off unless asked for; it clamps n_batch to n_ctx and n_ubatch to
n_batch. The engine loads with exactly the plan's n_ctx, n_gpu_layers,
flash_attn, cache types, batch sizes, swa_full and tensor_split.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from typing import Any

from app.core.errors import UsageError
from app.core.fit import quants, repack
from app.core.fit.compute import _block_compute, _logits_compute
from app.core.fit.gguf_meta import ModelMeta
from app.core.fit.layers import KV_PAD, _effective, _Settings, layer_kv_bytes, layer_state_bytes
from app.core.machine import BACKEND_VENDORS, Budgets, DeviceBudget, HardwareProfile

MiB = 1024**2
GiB = 1024**3

#: The context a plan starts from when it picks n_gpu_layers on its own: enough
#: for a conversation; the context then grows as far as that placement allows.
PLACEMENT_CTX = 4096
#: The smallest context a plan offers before declaring "does not fit".
MIN_CTX = 512
#: Default cap on the context Camelid chooses on its own (longer costs memory users rarely need).
DEFAULT_CTX_CAP = 8192

#: Memory a GPU backend's runtime takes on its device before any model buffer
#: (the CUDA context and cuBLAS workspace: 100-550 MiB by card; Ollama reserves
#: 457 MiB, which we follow). Metal shares RAM and has no separate context.
BACKEND_OVERHEAD = {"CUDA": 457 * MiB, "HIP": 457 * MiB, "SYCL": 457 * MiB, "Vulkan": 256 * MiB, "Metal": 0}
#: RAM the process needs besides the model's buffers: Python, llama.cpp's
#: libraries and Camelid itself (measured: ~41 MiB for python + llama_cpp;
#: the desktop app's Qt adds the rest).
RUNTIME_RAM = 128 * MiB

#: KV cache element types llama.cpp accepts (bytes per element follow from ggml's block sizes).
CACHE_TYPES = ("f16", "f32", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
VERDICTS = ("full_gpu", "partial", "cpu", "no_fit")


# -- the plan ------------------------------------------------------------------------


@dataclass
class DevicePlan:
    """What one device holds, in bytes, and its budget."""

    name: str
    kind: str  # gpu | unified | ram
    budget: int
    #: Model weights in the device's own buffer (CPU_Mapped / CPU / CUDA0 / Metal...).
    weights: int = 0
    #: CPU only: repacked copies of matrices for faster CPU kernels (llama.cpp's CPU_REPACK buffer).
    repack: int = 0
    kv_cache: int = 0
    #: Recurrent layers' conv and SSM state (llama.cpp's RS buffer): fixed size, not per token.
    recurrent_state: int = 0
    compute: int = 0
    overhead: int = 0
    #: Repeating blocks on this device, and whether it holds the output layer.
    layers: int = 0
    output: bool = False
    backend: str = "CPU"

    @property
    def total(self) -> int:
        return self.weights + self.repack + self.kv_cache + self.recurrent_state + self.compute + self.overhead

    @property
    def headroom(self) -> int:
        """Budget left (negative: over budget)."""
        return self.budget - self.total

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "backend": self.backend, "budget": self.budget,
                "weights": self.weights, "repack": self.repack, "kv_cache": self.kv_cache,
                "recurrent_state": self.recurrent_state, "compute": self.compute,
                "overhead": self.overhead, "total": self.total, "headroom": self.headroom,
                "layers": self.layers, "output": self.output}


@dataclass
class MemoryPlan:
    """Where a model's bytes go on one machine, with the settings that produce exactly that."""

    model: dict[str, Any]
    n_ctx: int
    #: Repeating blocks (llama.cpp's n_layer); the output layer makes n_layers + 1 offloadable layers.
    n_layers: int
    n_gpu_layers: int
    verdict: str
    devices: list[DevicePlan]
    flash_attn: bool
    cache_type_k: str
    cache_type_v: str
    n_batch: int
    n_ubatch: int
    #: llama.cpp's swa_full: False keeps sliding-window layers' caches at window size.
    swa_full: bool = False
    #: Fraction of the offloaded layers per GPU (None: a single GPU or none).
    tensor_split: list[float] | None = None
    unified: bool = False
    approximate: bool = False
    reasons: list[str] = field(default_factory=list)
    improvements: list[dict[str, Any]] = field(default_factory=list)
    #: The KV cache's cells (n_ctx padded) and its bytes per token of context.
    kv_cells: int = 0
    kv_bytes_per_token: float = 0.0
    #: The largest context the chosen placement allows (None when n_ctx was given).
    max_ctx: int | None = None
    #: How CPU-placed weights are held (repack.MODES, the `cpu_repack` setting) and the two
    #: llama.cpp switches that produce it: use_mmap, and llama_model_params.use_extra_bufts.
    cpu_repack: str = repack.DEFAULT_MODE
    use_mmap: bool = True
    use_extra_bufts: bool = True
    #: Mixture of experts: blocks 0..cpu_moe-1 keep their experts in RAM while the rest of each block
    #: (attention, router, shared experts) is on the GPU (llama.cpp's --n-cpu-moe; the engine sets a
    #: tensor buffer override). 0: experts go where their block goes.
    cpu_moe: int = 0
    #: The machine's whole memory (RAM plus discrete GPUs' VRAM, free or not); 0 when unknown.
    #: A plan over it can never load, whatever else is closed (the engine refuses it before loading).
    capacity_bytes: int = 0

    @property
    def impossible(self) -> bool:
        """Whether what this plan allocates besides the weights (KV cache, state, compute) exceeds the
        machine's whole memory. Mapped weights larger than RAM still load (slowly, paged from disk);
        these buffers cannot."""
        return self.verdict == "no_fit" and 0 < self.capacity_bytes < self.total_bytes - self.weights_bytes

    # -- sums -------------------------------------------------------------------------
    def _sum(self, part: str, kinds: tuple[str, ...] | None = None) -> int:
        return sum(getattr(d, part) for d in self.devices if kinds is None or d.kind in kinds)

    @property
    def weights_bytes(self) -> int:
        return self._sum("weights")

    @property
    def repack_bytes(self) -> int:
        return self._sum("repack")

    @property
    def kv_cache_bytes(self) -> int:
        return self._sum("kv_cache")

    @property
    def recurrent_state_bytes(self) -> int:
        return self._sum("recurrent_state")

    @property
    def compute_bytes(self) -> int:
        return self._sum("compute")

    @property
    def overhead_bytes(self) -> int:
        return self._sum("overhead")

    @property
    def gpu_total(self) -> int:
        return sum(d.total for d in self.devices if d.kind in ("gpu", "unified", "rpc"))

    @property
    def remote_total(self) -> int:
        """Bytes on other machines' devices (llama.cpp RPC workers)."""
        return sum(d.total for d in self.devices if d.kind == "rpc")

    @property
    def ram_total(self) -> int:
        return sum(d.total for d in self.devices if d.kind == "ram")

    @property
    def total_bytes(self) -> int:
        return self.gpu_total + self.ram_total

    @property
    def headroom(self) -> int:
        """The smallest budget left on any device (negative: something is over)."""
        return min((d.headroom for d in self.devices), default=0)

    @property
    def fits(self) -> bool:
        return self.verdict != "no_fit"

    def to_dict(self) -> dict[str, Any]:
        """The `camelid plan --json` document."""
        return {
            "model": self.model, "n_ctx": self.n_ctx, "n_layers": self.n_layers,
            "n_gpu_layers": self.n_gpu_layers, "verdict": self.verdict,
            "bytes": {"weights": self.weights_bytes, "repack": self.repack_bytes,
                      "kv_cache": self.kv_cache_bytes, "recurrent_state": self.recurrent_state_bytes,
                      "compute": self.compute_bytes, "overhead": self.overhead_bytes,
                      "gpu_total": self.gpu_total, "ram_total": self.ram_total},
            "devices": [d.to_dict() for d in self.devices],
            "headroom": self.headroom,
            "settings": {"flash_attn": self.flash_attn, "cache_type_k": self.cache_type_k,
                         "cache_type_v": self.cache_type_v, "n_batch": self.n_batch,
                         "n_ubatch": self.n_ubatch, "swa_full": self.swa_full,
                         "tensor_split": self.tensor_split, "cpu_repack": self.cpu_repack,
                         "use_mmap": self.use_mmap, "use_extra_bufts": self.use_extra_bufts,
                         "cpu_moe": self.cpu_moe},
            "kv_cells": self.kv_cells, "kv_bytes_per_token": self.kv_bytes_per_token,
            "max_ctx": self.max_ctx, "unified": self.unified, "approximate": self.approximate,
            "reasons": list(self.reasons), "improvements": list(self.improvements),
        }

    def llama_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `llama_cpp.Llama` that reproduce this plan.

        `use_extra_bufts` is a field of llama_model_params that llama-cpp-python's
        `Llama()` does not take (its **kwargs swallow it): a loader must set it on
        `model_params`, as the engine's `_load_llama` does. It is only present when
        False (llama.cpp's default is True), so a bare `Llama` reproduces the default.
        `cpu_moe` (experts of the first blocks in RAM) is a tensor buffer override, set the same way.
        """
        kwargs: dict[str, Any] = {"n_ctx": self.n_ctx, "n_gpu_layers": self.n_gpu_layers,
                                  "flash_attn": self.flash_attn, "n_batch": self.n_batch,
                                  "n_ubatch": self.n_ubatch, "swa_full": self.swa_full,
                                  "use_mmap": self.use_mmap}
        if not self.use_extra_bufts:
            kwargs["use_extra_bufts"] = False
        if self.cache_type_k != "f16":
            kwargs["type_k"] = int(quants.parse_type(self.cache_type_k))
        if self.cache_type_v != "f16":
            kwargs["type_v"] = int(quants.parse_type(self.cache_type_v))
        if self.tensor_split:
            kwargs["tensor_split"] = list(self.tensor_split)
        if self.cpu_moe:
            kwargs["cpu_moe"] = self.cpu_moe
        return kwargs


# -- the arithmetic ------------------------------------------------------------------------


def _weights_by_place(meta: ModelMeta) -> tuple[int, list[int], int, int]:
    """(input bytes, bytes per block, output-layer bytes, token-embedding bytes), once per header."""
    cached = meta.memo.get("weights_by_place")
    if cached is None:
        cached = meta.memo["weights_by_place"] = _sum_weights(meta)
    return cached


def _expert_bytes(meta: ModelMeta) -> list[int]:
    """Bytes of each block's expert matrices (`*_exps`), the part --n-cpu-moe keeps in RAM."""
    cached = meta.memo.get("expert_bytes")
    if cached is None:
        cached = [0] * meta.n_layer
        for t in meta.tensors:
            if "_exps." in t.name and t.layer is not None and t.layer < meta.n_layer:
                cached[t.layer] += t.n_bytes
        meta.memo["expert_bytes"] = cached
    return list(cached)


def _moe_cpu_compute(meta: ModelMeta, s: _Settings) -> int:
    """The CPU's compute buffer while it runs the experts of GPU blocks: the micro-batch's input
    copied to the host, gate, up and their product for the used experts, and the experts' outputs.
    A closed form from build_moe_ffn's shapes; not calibrated (that split needs a GPU to measure)."""
    used = max(1, meta.n_expert_used)
    ff = meta.n_ff_exp or 0
    return s.n_ubatch * 4 * (meta.n_embd * (1 + used) + 3 * ff * used)


def _layer_costs(meta: ModelMeta, s: _Settings) -> tuple[list[int], list[int], list[int]]:
    """(KV cache, recurrent state, peak compute) bytes per block at settings `s`, once per header and settings.

    A plan's layer search allocates the same settings many times; the sums per
    block do not change between those calls.
    """
    key = ("layer_costs", s)
    cached = meta.memo.get(key)
    if cached is None:
        cached = meta.memo[key] = ([layer_kv_bytes(meta, il, s) for il in range(meta.n_layer)],
                                   [layer_state_bytes(meta, il, s) for il in range(meta.n_layer)],
                                   [_block_compute(meta, il, s) for il in range(meta.n_layer)])
    return cached


def _sum_weights(meta: ModelMeta) -> tuple[int, list[int], int, int]:
    blocks = [0] * meta.n_layer
    input_bytes = output_bytes = embd = 0
    for t in meta.tensors:
        layer = t.layer
        if layer is not None and layer < meta.n_layer:
            blocks[layer] += t.n_bytes
        elif t.name.startswith("output"):
            output_bytes += t.n_bytes
        else:
            input_bytes += t.n_bytes
            if t.name == "token_embd.weight":
                embd = t.n_bytes
    return input_bytes, blocks, output_bytes, embd


def _backend_for(hardware: HardwareProfile, budget: DeviceBudget) -> str:
    if budget.kind == "unified":
        return "Metal"
    if budget.kind == "rpc":
        return "RPC"
    vendor = next((g.vendor for g in hardware.gpus if g.index == budget.index), None)
    for backend in hardware.backend.gpu_backends:
        if vendor in BACKEND_VENDORS.get(backend, frozenset()):
            return backend
    return hardware.backend.gpu_backends[0] if hardware.backend.gpu_backends else "CPU"


@dataclass
class _Machine:
    budgets: Budgets
    gpu_backends: list[str]
    #: How the CPU holds the weights of CPU-placed layers (repack.py): CPU_REPACK, mmap.
    cpu: repack.RepackRule = field(default_factory=repack.RepackRule)
    #: Blocks 0..cpu_moe-1 keep their expert matrices in RAM (llama.cpp's --n-cpu-moe, a tensor
    #: buffer override), whichever device holds the rest of the block.
    cpu_moe: int = 0

    @property
    def gpus(self) -> list[DeviceBudget]:
        return self.budgets.gpus


def _split(machine: _Machine) -> list[float]:
    """Cumulative split points over the GPUs, in proportion to their budgets (llama.cpp's tensor_split)."""
    weights = [max(g.budget_bytes, 0) for g in machine.gpus]
    total = sum(weights) or len(weights)
    acc, out = 0.0, []
    for w in weights:
        acc += (w if sum(weights) else 1) / total
        out.append(acc)
    return out


def _layer_device(il: int, n_layer: int, k: int, splits: list[float]) -> int:
    """llama.cpp's get_layer_buft_list: -1 for the CPU, else the GPU index (il == n_layer is the output)."""
    i_gpu_start = max(n_layer + 1 - k, 0)
    act = min(k, n_layer + 1)
    if il < i_gpu_start or (il - i_gpu_start) >= act or not splits:
        return -1
    x = (il - i_gpu_start) / act
    for i, point in enumerate(splits):  # upper_bound: first split point greater than x
        if point > x:
            return i
    return len(splits) - 1


def _allocate(meta: ModelMeta, machine: _Machine, k: int, s: _Settings) -> list[DevicePlan]:
    """Bytes per device for k offloaded layers at settings s."""
    gpus = [DevicePlan(name=g.name, kind=g.kind, budget=g.budget_bytes, backend=machine.gpu_backends[i],
                       overhead=BACKEND_OVERHEAD.get(machine.gpu_backends[i], 0))
            for i, g in enumerate(machine.gpus)]
    ram = DevicePlan(name="RAM", kind="ram", budget=machine.budgets.ram.budget_bytes, overhead=RUNTIME_RAM)
    splits = _split(machine) if gpus else []
    _input, blocks, output_bytes, embd = _weights_by_place(meta)  # the input layer: repack.cpu_weights
    kv_bytes, state_bytes, compute_bytes = _layer_costs(meta, s)
    k = max(0, min(k, meta.n_layer + 1)) if gpus else 0
    experts = _expert_bytes(meta) if machine.cpu_moe else []
    moved = 0  # blocks on a GPU whose experts stay in RAM

    def device(il: int) -> DevicePlan:
        i = _layer_device(il, meta.n_layer, k, splits)
        return ram if i < 0 else gpus[i]

    block_peak: dict[int, int] = {}
    for il in range(meta.n_layer):
        dev = device(il)
        if dev is not ram:
            dev.weights += blocks[il]
            if il < machine.cpu_moe:
                dev.weights -= experts[il]
                moved += 1
        dev.kv_cache += kv_bytes[il]
        dev.recurrent_state += state_bytes[il]
        dev.layers += 1
        block_peak[id(dev)] = max(block_peak.get(id(dev), 0), compute_bytes[il])
    out_dev = device(meta.n_layer)
    out_dev.output = True
    if out_dev is not ram:
        out_dev.weights += output_bytes
        if meta.tied_embeddings:
            out_dev.weights += embd  # the output's copy of the tied token embedding
    # The CPU's buffers: CPU_Mapped / CPU for what stays as in the file, CPU_REPACK for the
    # repacked matrices (input layer, CPU blocks - a prefix - and the output when it is here).
    cpu = repack.cpu_weights(meta, machine.cpu, ram.layers, out_dev is ram,
                             cpu_expert_layers=machine.cpu_moe if moved else 0)
    ram.weights += cpu.weights
    ram.repack += cpu.repack
    if moved:
        block_peak[id(ram)] = max(block_peak.get(id(ram), 0), _moe_cpu_compute(meta, s))
    for dev in gpus:
        if not dev.layers and not dev.output:
            dev.overhead = 0  # a GPU given nothing to hold is left alone
    for dev in [*gpus, ram]:
        peak = block_peak.get(id(dev), 0)
        if dev.output:
            peak = max(peak, _logits_compute(meta, s, cpu=dev is ram))
        if dev is ram and not dev.output and not dev.layers:
            # All offloaded: the host still stages the token embeddings and inputs of a micro-batch.
            peak = max(peak, 2 * s.n_ubatch * meta.n_embd * 4)
        dev.compute = peak
    # The logits of the last token, copied back to the host after each decode.
    ram.compute += meta.n_vocab * 4
    return [*gpus, ram]


def _fits(devices: list[DevicePlan], unified: bool) -> bool:
    gpu = [d for d in devices if d.kind != "ram"]
    ram = devices[-1]
    if any(d.total > d.budget for d in gpu):
        return False
    if unified:  # this machine's GPU and CPU share one pool; other machines' devices are their own
        return sum(d.total for d in devices if d.kind != "rpc") <= ram.budget
    return ram.total <= ram.budget


# -- choosing -------------------------------------------------------------------------------


def _max_layers(meta: ModelMeta, machine: _Machine, s: _Settings) -> tuple[int, bool]:
    """The most layers whose GPU share fits, and whether the rest then fits in RAM.

    GPU use only grows with the layer count, so a binary search finds it.
    """
    if not machine.gpus:
        return 0, _fits(_allocate(meta, machine, 0, s), machine.budgets.unified)

    def gpu_ok(k: int) -> bool:
        return all(d.total <= d.budget for d in _allocate(meta, machine, k, s)[:-1])

    lo, hi = 0, meta.n_layer + 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if gpu_ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo, _fits(_allocate(meta, machine, lo, s), machine.budgets.unified)


def _max_ctx(meta: ModelMeta, machine: _Machine, k: int, lo: int, hi: int, base: _Settings) -> int:
    """The largest context in [lo, hi] (multiples of 256 unless hi itself) at which k layers still fit."""
    def ok(c: int) -> bool:
        s = _effective(c, base.n_batch, base.n_ubatch, flash_attn=base.flash_attn,
                       cache_type_k=base.cache_type_k, cache_type_v=base.cache_type_v, swa_full=base.swa_full)
        return _fits(_allocate(meta, machine, k, s), machine.budgets.unified)

    if ok(hi):
        return hi
    best = lo
    a, b = lo // KV_PAD, hi // KV_PAD
    while a <= b:
        mid = (a + b) // 2
        if ok(mid * KV_PAD):
            best, a = mid * KV_PAD, mid + 1
        else:
            b = mid - 1
    return best


def plan_memory(meta: ModelMeta, hardware: HardwareProfile | None = None, *, n_ctx: int | None = None,
                n_gpu_layers: int | None = None, n_batch: int = 2048, n_ubatch: int = 512,
                flash_attn: bool | None = False, cache_type_k: str = "f16", cache_type_v: str = "f16",
                ctx_cap: int = DEFAULT_CTX_CAP, swa_full: bool = False,
                cpu_repack: str = repack.DEFAULT_MODE, improvements: bool = True,
                cpu_moe: int | None = None) -> MemoryPlan:
    """Plan how `meta` sits on `hardware` (this machine when None).

    n_ctx / n_gpu_layers None: chosen (the most layers that fit at a
    conversation-sized context, then the longest context up to the trained one
    and `ctx_cap` that keeps them). flash_attn None means llama.cpp's "auto",
    which every backend Camelid plans for supports, so it resolves to on;
    False is llama-cpp-python's default. A quantized V cache needs flash
    attention, so asking for one turns it on (the plan says so). `cpu_repack`
    (repack.MODES) decides how CPU layers hold their weights; "repack" loads
    without mmap only when something is repacked, else the file stays mapped.

    A mixture of experts that does not fit whole on the GPU keeps every block on the GPU and moves
    the experts of its first blocks to RAM instead (llama.cpp's --n-cpu-moe): a token reads only
    its few used experts from RAM, but every byte of attention and the shared parts from the GPU,
    which beats leaving whole blocks behind. `cpu_moe` None does that when the layer count is
    chosen (n_gpu_layers None); 0 never; N keeps the experts of blocks 0..N-1 in RAM.
    """
    if hardware is None:
        from app import paths
        from app.core.machine import detect

        hardware = detect(models_dir=paths.models_dir())
    cache_type_k, cache_type_v = cache_type_k.lower(), cache_type_v.lower()
    for name, value in (("K", cache_type_k), ("V", cache_type_v)):
        if value not in CACHE_TYPES:
            raise UsageError(f"Unknown {name} cache type {value!r}.", f"Use one of {', '.join(CACHE_TYPES)}.")
    if n_ctx is not None and n_ctx < 16:
        raise UsageError(f"A context of {n_ctx} tokens is too small to chat.", "Use at least 256 tokens.")
    if ctx_cap < 256:
        raise UsageError(f"A context cap of {ctx_cap:,} tokens leaves no room to chat.",
                         f"Use at least 256 tokens (the default is {DEFAULT_CTX_CAP:,}).")
    if n_batch < 1 or n_ubatch < 1:
        raise UsageError("Batch sizes must be at least 1.", "Leave n_batch and n_ubatch at their defaults.")
    notes: list[str] = []
    fa = True if flash_attn is None else bool(flash_attn)
    if flash_attn is None:
        notes.append("Flash attention: auto, which llama.cpp turns on for this backend.")
    v_needs_fa = cache_type_v not in ("f16", "f32", "bf16")
    if flash_attn is False and not v_needs_fa:
        # Chat loads with Settings' flash attention (on unless turned off); say that this bill is not that one.
        notes.append("Planned with flash attention off; chat loads with it on unless Settings turn it off, "
                     "which needs less compute memory, so this bill is a little higher than chat's.")
    if cache_type_v not in ("f16", "f32", "bf16") and not fa:
        fa = True
        notes.append(f"Flash attention is on because a {cache_type_v} V cache needs it.")

    if cpu_repack not in repack.MODES:
        raise UsageError(f"Unknown CPU weight mode {cpu_repack!r}.", f"Use one of {', '.join(repack.MODES)}.")
    budgets = hardware.budgets()
    machine = _Machine(budgets, [_backend_for(hardware, g) for g in budgets.gpus])
    use_mmap, use_extra_bufts = repack.mode_settings(cpu_repack)
    host_first = repack.host_buffer_first(machine.gpu_backends, bool(machine.gpus))
    machine.cpu = repack.RepackRule(repack.cpu_features(hardware), use_extra_bufts and not host_first, use_mmap)
    n_offloadable = meta.n_layer + 1
    if n_gpu_layers is not None and n_gpu_layers < 0:
        n_gpu_layers = n_offloadable  # llama.cpp's -1: everything
    if n_gpu_layers and not machine.gpus:
        notes.append(_no_gpu_reason(hardware) + " The GPU layers asked for run on the CPU.")
        n_gpu_layers = 0

    trained = meta.n_ctx_train or ctx_cap
    target = min(trained, ctx_cap) if n_ctx is None else n_ctx
    if n_ctx is not None:
        notes += context_notes(meta.n_ctx_train, n_ctx=n_ctx, ctx_cap=ctx_cap)

    def settings(c: int) -> _Settings:
        return _effective(c, n_batch, n_ubatch, flash_attn=fa, cache_type_k=cache_type_k,
                          cache_type_v=cache_type_v, swa_full=swa_full)

    if cpu_moe is not None and cpu_moe < 0:
        raise UsageError("The count of blocks whose experts stay in RAM cannot be negative.",
                         "Give 0 (experts follow their block) or a count of blocks.")
    if cpu_moe and meta.n_expert > 1 and machine.gpus:
        machine.cpu_moe = min(int(cpu_moe), meta.n_layer)
    auto_moe = cpu_moe is None and n_gpu_layers is None and meta.n_expert > 1 and bool(machine.gpus)

    def expert_placement(s: _Settings) -> bool:
        """Every layer on the GPU with the fewest blocks' experts in RAM that fits; False if none does."""
        if not auto_moe or _fits(_allocate(meta, machine, n_offloadable, s), budgets.unified):
            return False
        lo, hi = 1, meta.n_layer
        machine.cpu_moe = hi
        if not all(d.total <= d.budget for d in _allocate(meta, machine, n_offloadable, s)[:-1]):
            machine.cpu_moe = 0
            return False
        while lo < hi:  # GPU use falls as more blocks' experts move to RAM
            machine.cpu_moe = (lo + hi) // 2
            if all(d.total <= d.budget for d in _allocate(meta, machine, n_offloadable, s)[:-1]):
                hi = machine.cpu_moe
            else:
                lo = machine.cpu_moe + 1
        machine.cpu_moe = lo
        if not _fits(_allocate(meta, machine, n_offloadable, s), budgets.unified):
            machine.cpu_moe = 0
            return False
        return True

    max_ctx = None
    if n_ctx is not None:
        s = settings(n_ctx)
        if expert_placement(s):
            k = n_offloadable
        else:
            k = n_gpu_layers if n_gpu_layers is not None else _max_layers(meta, machine, s)[0]
    else:
        start = min(target, PLACEMENT_CTX)
        s = settings(start)
        if n_gpu_layers is not None:
            k = n_gpu_layers
        elif expert_placement(s):
            k = n_offloadable
        else:
            k, ok = _max_layers(meta, machine, s)
            while not ok and start > MIN_CTX:
                # Nothing fits at a conversation-sized context: try shorter ones before giving up.
                start = max(MIN_CTX, start // 2)
                s = settings(start)
                k, ok = _max_layers(meta, machine, s)
        if _fits(_allocate(meta, machine, k, s), budgets.unified):
            max_ctx = _max_ctx(meta, machine, k, start, target, s)
            s = settings(max_ctx)
    k_final = min(k, n_offloadable)
    devices = _allocate(meta, machine, k_final, s)
    if not machine.cpu.use_mmap and not devices[-1].repack:
        # Nothing is repacked at this placement: reading the file into RAM would gain nothing.
        use_mmap = True
        machine.cpu = replace(machine.cpu, use_mmap=True)
        devices = _allocate(meta, machine, k_final, s)
    if host_first and use_extra_bufts and repack.cpu_weights(
            meta, replace(machine.cpu, enabled=True), meta.n_layer, True).repack and devices[-1].layers:
        notes.append(f"The {machine.gpu_backends[0]} build keeps CPU layers' weights in its host buffer, "
                     "so llama.cpp does not repack them for the CPU's faster kernels.")
    if devices[-1].repack:
        twice = repack.cpu_weights(meta, machine.cpu, devices[-1].layers, devices[-1].output).mapped_twice
        notes.append(f"CPU layers: {gib(devices[-1].repack)} of matrices are repacked for the CPU's faster kernels"
                     + (f"; with mmap on their {gib(twice)} of file pages stay mapped too (counted in the weights)."
                        if twice else ", read once (mmap off)."))
    fits = _fits(devices, budgets.unified)
    if machine.cpu_moe and k_final:
        in_ram = sum(_expert_bytes(meta)[:machine.cpu_moe])
        notes.append(f"Every layer runs on the GPU except the experts of the first {machine.cpu_moe} of "
                     f"{meta.n_layer} blocks ({gib(in_ram)}), which stay in RAM: a token reads only the "
                     f"{meta.n_expert_used} experts it uses there, and everything else from the GPU.")
    if not fits:
        verdict = "no_fit"
    elif machine.gpus and k_final == n_offloadable and not machine.cpu_moe:
        verdict = "full_gpu"
    elif k_final > 0:
        verdict = "partial"
    else:
        verdict = "cpu"
    if budgets.unified and machine.gpus:
        # Show the RAM side's budget as what the shared pool leaves after the GPU's share.
        devices[-1].budget = max(0, budgets.ram.budget_bytes - sum(d.total for d in devices[:-1]
                                                                   if d.kind != "rpc"))
    plan = MemoryPlan(
        model=_model_summary(meta), n_ctx=s.n_ctx, n_layers=meta.n_layer, n_gpu_layers=k_final,
        verdict=verdict, devices=devices, flash_attn=fa, cache_type_k=cache_type_k, cache_type_v=cache_type_v,
        n_batch=s.n_batch, n_ubatch=s.n_ubatch, swa_full=swa_full,
        tensor_split=_tensor_split(machine) if len(machine.gpus) > 1 else None,
        unified=budgets.unified and bool(machine.gpus), approximate=meta.approximate, kv_cells=s.cells,
        kv_bytes_per_token=sum(_layer_costs(meta, settings(KV_PAD))[0]) / KV_PAD,
        max_ctx=max_ctx, cpu_repack=cpu_repack, use_mmap=use_mmap, use_extra_bufts=use_extra_bufts,
        cpu_moe=machine.cpu_moe if k_final else 0,
        capacity_bytes=hardware.ram.total_bytes + (0 if budgets.unified else sum(
            g.vram_total_bytes or 0 for g in hardware.gpus)),
    )
    plan.reasons = _reasons(plan, meta, hardware, machine, trained, target, n_ctx is None) + notes + list(meta.warnings)
    if improvements and verdict != "full_gpu":
        plan.improvements = _improvements(plan, meta, hardware, dict(
            n_ctx=n_ctx, n_gpu_layers=None, n_batch=n_batch, n_ubatch=n_ubatch, flash_attn=flash_attn,
            cache_type_k=cache_type_k, cache_type_v=cache_type_v, ctx_cap=ctx_cap, swa_full=swa_full,
            cpu_repack=cpu_repack))
    return plan


def plan_for_architecture(arch: Any, ftype: int | str, hardware: HardwareProfile | None = None,
                          **options: Any) -> MemoryPlan:
    """Plan a model that is not downloaded, from its ArchConstants and a file type (e.g. ``Q4_K_M``)."""
    return plan_memory(ModelMeta.from_architecture(arch, ftype), hardware, **options)


def _tensor_split(machine: _Machine) -> list[float]:
    total = sum(max(g.budget_bytes, 0) for g in machine.gpus) or 1
    return [round(max(g.budget_bytes, 0) / total, 4) for g in machine.gpus]


def _model_summary(meta: ModelMeta) -> dict[str, Any]:
    return {"name": meta.name, "architecture": meta.architecture, "quant": meta.quant,
            "file_size": meta.file_size, "tensor_bytes": meta.tensor_bytes, "n_params": meta.n_params,
            "n_ctx_train": meta.n_ctx_train, "n_layers": meta.n_layer, "n_head": meta.n_head,
            "n_embd": meta.n_embd, "n_vocab": meta.n_vocab,
            "n_head_kv": meta.n_head_kv, "n_expert": meta.n_expert, "sliding_window": meta.sliding_window,
            "tied_embeddings": meta.tied_embeddings, "shards": len(meta.shards) or 1,
            "bytes_fetched": meta.bytes_fetched}


# -- words ---------------------------------------------------------------------------------


def gib(n: float) -> str:
    """Bytes as GiB with one decimal (MiB below 1 GiB), for sentences."""
    return f"{n / GiB:.1f} GiB" if abs(n) >= GiB else f"{n / MiB:.0f} MiB"


def _no_gpu_reason(hardware: HardwareProfile) -> str:
    if hardware.gpus and not hardware.backend.gpu_offload:
        return ("This llama.cpp build has no GPU backend (CPU only), so the GPU is not used; "
                "a CUDA, Metal or Vulkan build would use it.")
    if hardware.gpus:
        return "No GPU here can be used by this llama.cpp build."
    return "There is no GPU llama.cpp can use here: everything runs on the CPU from RAM."


def _reasons(plan: MemoryPlan, meta: ModelMeta, hardware: HardwareProfile, machine: _Machine,
             trained: int, target: int, auto_ctx: bool) -> list[str]:
    out: list[str] = []
    ram = plan.devices[-1]
    gpus = plan.devices[:-1]
    total_layers = meta.n_layer + 1
    remote = [d for d in gpus if d.kind == "rpc"]
    if plan.verdict == "full_gpu":
        spare = min(d.headroom for d in gpus)
        where = gpus[0].name if len(gpus) == 1 else f"{len(gpus)} GPUs" if not remote else \
            f"{len(gpus)} devices ({len(remote)} on other machines)"
        out.append(f"All {total_layers} layers ({meta.n_layer} blocks + output) fit on {where} "
                   f"with {gib(spare)} to spare.")
    elif plan.verdict == "partial" and plan.cpu_moe:
        budget = sum(d.budget for d in gpus)
        out.append(f"All {total_layers} layers run on the GPU, but with {gib(budget)} there the experts of "
                   f"{plan.cpu_moe} of {meta.n_layer} blocks stay in RAM (a mixture of experts reads only a "
                   "few of them per token, so this is faster than leaving whole layers on the CPU).")
    elif plan.verdict == "partial":
        budget = sum(d.budget for d in gpus)
        out.append(f"Only {plan.n_gpu_layers} of {total_layers} layers fit in the GPU budget of {gib(budget)}; "
                   f"the other {total_layers - plan.n_gpu_layers} run on the CPU from RAM, which is slower.")
    elif plan.verdict == "cpu":
        if not machine.gpus:
            out.append(_no_gpu_reason(hardware))
        else:
            out.append(f"Not even the output layer fits in the GPU budget of {gib(sum(d.budget for d in gpus))}: "
                       "everything runs on the CPU from RAM.")
    else:
        over = [d for d in gpus if d.total > d.budget]
        if over:
            d = over[0]
            out.append(f"{plan.n_gpu_layers} layers need {gib(d.total)} on {d.name}, over its budget of "
                       f"{gib(d.budget)}.")
        need = ram.total + (sum(d.total for d in gpus) if plan.unified else 0)
        have = hardware.budgets().ram.budget_bytes
        if need > have:
            out.append(f"Needs {gib(need)} of RAM even at {plan.n_ctx} tokens of context, but only {gib(have)} "
                       "is free for models (after what the system keeps).")
    for d in remote:
        if d.layers or d.output:
            held = f"{d.layers} layers" + (" and the output layer" if d.output else "")
            out.append(f"{d.name} holds {held}: {gib(d.weights)} of weights and {gib(d.kv_cache)} of KV cache "
                       f"({gib(d.total)} of its {gib(d.budget)} budget).")
    if plan.unified:
        out.append("Apple unified memory: the GPU's share and the CPU's share come out of one pool, "
                   "counted once.")
    if auto_ctx:
        if plan.n_ctx >= target:
            limit = "the cap Camelid uses by default" if target < trained else "what the model was trained for"
            out.append(f"Context: {plan.n_ctx:,} tokens ({limit}; trained {trained:,}).")
        elif plan.verdict != "no_fit":
            out.append(f"Context: {plan.n_ctx:,} tokens, the longest that keeps this placement "
                       f"(target {target:,}).")
    swa = sum(meta.swa_pattern)
    if swa and meta.sliding_window:
        out.append(f"{swa} of {meta.n_layer} layers use a {meta.sliding_window:,}-token sliding window and keep "
                   "only that much KV cache.")
    out.append(f"KV cache: {plan.kv_bytes_per_token / 1024:.1f} KiB per token ({plan.cache_type_k}/"
               f"{plan.cache_type_v}, {meta.n_head_kv_max} KV heads of {meta.n_head}).")
    return out


def context_notes(n_ctx_train: int | None, *, n_ctx: int | None, ctx_cap: int) -> list[str]:
    """What to say about a context asked for against the model's trained length (silent when nothing is capped)."""
    if not n_ctx_train:
        return []
    if n_ctx is not None and n_ctx > n_ctx_train:
        times = n_ctx / n_ctx_train
        factor = f"{times:.0f}×" if times >= 2 else f"{times:.1f}×"
        return [f"A context of {n_ctx:,} tokens is {factor} the {n_ctx_train:,} this model was trained for; "
                f"past {n_ctx_train:,} tokens its replies may lose track or turn to nonsense."]
    if n_ctx is None and ctx_cap > n_ctx_train:
        return [f"The context is at most {n_ctx_train:,} tokens, the length this model was trained for "
                f"(Settings ask for up to {ctx_cap:,})."]
    return []


def _improvements(plan: MemoryPlan, meta: ModelMeta, hardware: HardwareProfile,
                  options: dict[str, Any]) -> list[dict[str, Any]]:
    """The cheapest changes that would give a better verdict or more GPU layers, each re-planned."""
    rank = {"no_fit": 0, "cpu": 1, "partial": 2, "full_gpu": 3}
    out: list[dict[str, Any]] = []

    def better(p: MemoryPlan) -> bool:
        if p.verdict == "no_fit":
            return False
        if rank[p.verdict] != rank[plan.verdict]:
            return rank[p.verdict] > rank[plan.verdict]
        return p.n_gpu_layers > plan.n_gpu_layers

    def attempt(change: str, text: str, m: ModelMeta = meta, **overrides: Any) -> bool:
        try:
            p = plan_memory(m, hardware, **{**options, **overrides, "improvements": False})
        except UsageError:
            return False
        if not better(p):
            return False
        out.append({"change": change, "text": f"{text}: {_verdict_words(p)}", "verdict": p.verdict,
                    "n_gpu_layers": p.n_gpu_layers, "n_ctx": p.n_ctx})
        return True

    for c in (plan.n_ctx // 2, plan.n_ctx // 4, 2048, 1024):
        if MIN_CTX <= c < plan.n_ctx and attempt("n_ctx", f"Use a {c:,}-token context", n_ctx=c):
            break
    if plan.cache_type_k == "f16" and plan.kv_cache_bytes > 0:
        attempt("cache_type", "Use a q8_0 KV cache (with flash attention)", flash_attn=True,
                cache_type_k="q8_0", cache_type_v="q8_0", n_ctx=plan.n_ctx)
    if not plan.flash_attn:
        attempt("flash_attn", "Turn on flash attention", flash_attn=True, n_ctx=plan.n_ctx)
    deficit = _deficit(plan, meta, hardware, options)
    if deficit:
        where, amount = deficit
        fixed = "full_gpu" if where != "RAM" else ("partial" if plan.n_gpu_layers else "cpu")
        out.append({"change": "free_memory", "verdict": fixed,
                    "text": (f"Free {gib(amount)} more {'VRAM' if where != 'RAM' else 'RAM'}"
                             f" ({'close apps using the GPU' if where != 'RAM' else 'close other apps'})"
                             f" to run it {'all on the GPU' if where != 'RAM' else 'at all'}"),
                    "bytes": amount, "device": where})
    smaller = quants.next_smaller(meta.quant or "") if meta.quant else None
    if smaller and meta.tensors:
        with contextlib.suppress(ValueError):
            attempt("quant", f"Choose the next smaller quant, {smaller}", m=meta.with_file_type(smaller),
                    n_ctx=plan.n_ctx)
    return out


def _deficit(plan: MemoryPlan, meta: ModelMeta, hardware: HardwareProfile,
             options: dict[str, Any]) -> tuple[str, int] | None:
    """How much more free memory would move the verdict up (to all-on-GPU, or to fitting at all)."""
    gpus = plan.devices[:-1]
    if plan.verdict in ("partial", "cpu") and gpus:
        full = plan_memory(meta, hardware, **{**options, "n_ctx": plan.n_ctx,
                                               "n_gpu_layers": meta.n_layer + 1, "improvements": False})
        over = max((d.total - d.budget for d in full.devices[:-1]), default=0)
        return (full.devices[0].name, over) if over > 0 else None
    if plan.verdict == "no_fit":
        ram = plan.devices[-1]
        need = ram.total + (sum(d.total for d in gpus) if plan.unified else 0)
        have = hardware.budgets().ram.budget_bytes
        return ("RAM", need - have) if need > have else None
    return None


def _verdict_words(p: MemoryPlan) -> str:
    total = p.n_layers + 1
    return {"full_gpu": f"all {total} layers on the GPU",
            "partial": f"{p.n_gpu_layers} of {total} layers on the GPU",
            "cpu": "runs on the CPU", "no_fit": "still does not fit"}[p.verdict] + f" at {p.n_ctx:,} tokens"

