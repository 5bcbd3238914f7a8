"""How fast a planned model will write: tokens/s from memory bandwidth.

Generating one token reads every weight the token passes through once (all
of a dense model; the attention, router and *used* experts of a mixture of
experts) plus the KV cache filled so far. On a single user's machine that
read, not arithmetic, is the limit, so

    seconds per token = sum over devices of bytes read there / bandwidth there

with the layers placed as llama.cpp places them (the output layer and the
last k-1 blocks on the GPU, the rest on the CPU). Bandwidths come from
resources/hardware.json (GPUs, Apple chips) or a DDR estimate for the CPU,
times an efficiency: llama.cpp reaches about 70% of a GPU's or Apple chip's
spec-sheet bandwidth when decoding and about 60% of a desktop's DDR
bandwidth. The result is an estimate for a single stream, good to about +-30%.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.core.machine import GiB, HardwareProfile, find_gpu, known_hardware

GPU_EFFICIENCY = 0.70
APPLE_EFFICIENCY = 0.70
CPU_EFFICIENCY = 0.60
#: One core streams about this much from DRAM; few cores cannot saturate many channels.
PER_CORE_GBS = 12.0
#: A GPU whose bandwidth is unknown and has no known card of its size: an RTX 3060's.
FALLBACK_GPU_GBS = 360.0

#: Typical DRAM bandwidth (GB/s) by CPU name, first match wins: channels x
#: transfer rate x 8 bytes for the memory such machines ship with.
_CPU_MEMORY: tuple[tuple[str, float, str], ...] = (
    (r"threadripper", 102.0, "4-channel DDR4-3200"),
    (r"epyc", 204.0, "8-channel DDR4-3200"),
    (r"xeon", 60.0, "server DDR4, shared"),
    (r"ryzen.* [789]\d{3}", 83.0, "dual-channel DDR5-5200"),
    (r"ryzen", 51.0, "dual-channel DDR4-3200"),
    (r"core\(tm\) ultra|core ultra", 90.0, "LPDDR5X"),
    (r"1[2-4]th gen|i[3579]-1[2-4]\d{3}", 60.0, "dual-channel DDR4/DDR5"),
    (r"i[3579]-\d{4}", 38.0, "dual-channel DDR4-2400"),
)
_DEFAULT_CPU_GBS = (40.0, "dual-channel DDR4 (assumed)")


@dataclass(frozen=True)
class Bandwidth:
    """Spec-sheet memory bandwidth of one device and where the number came from."""

    gbs: float
    source: str  # e.g. "NVIDIA GeForce RTX 4090 spec sheet", "assumed"
    efficiency: float

    @property
    def effective_bytes_per_s(self) -> float:
        return self.gbs * 1e9 * self.efficiency


def gpu_bandwidth(name: str, vram_bytes: int | None = None) -> Bandwidth:
    """A discrete GPU's bandwidth by card name; by cards of the same size when unknown."""
    found = find_gpu(name)
    if found and found[1].get("bandwidth_gbs"):
        return Bandwidth(float(found[1]["bandwidth_gbs"]), f"{found[0]} spec sheet", GPU_EFFICIENCY)
    if vram_bytes:
        size = round(vram_bytes / GiB)
        same = [spec["bandwidth_gbs"] for spec in known_hardware()["gpus"].values()
                if spec.get("vram_gb") == size and spec.get("bandwidth_gbs")]
        if same:
            return Bandwidth(float(statistics.median(same)),
                             f"assumed: the median of known {size} GB cards", GPU_EFFICIENCY)
    return Bandwidth(FALLBACK_GPU_GBS, "assumed", GPU_EFFICIENCY)


def apple_bandwidth(chip: str) -> Bandwidth:
    """Unified memory bandwidth of an Apple chip ("Apple M3 Pro")."""
    found = find_gpu(chip)
    if found and found[1].get("vendor") == "apple" and found[1].get("bandwidth_gbs"):
        return Bandwidth(float(found[1]["bandwidth_gbs"]), f"{found[0]} spec sheet", APPLE_EFFICIENCY)
    return Bandwidth(100.0, "assumed (base M-series chip)", APPLE_EFFICIENCY)


def cpu_bandwidth(hardware: HardwareProfile) -> Bandwidth:
    """System RAM bandwidth as the CPU sees it: the chip's on Apple, a DDR estimate elsewhere."""
    if hardware.unified_memory and hardware.apple is not None:
        apple = apple_bandwidth(hardware.apple.chip)
        return Bandwidth(apple.gbs, apple.source, CPU_EFFICIENCY)
    name = hardware.cpu.name.lower()
    gbs, kind = _DEFAULT_CPU_GBS
    for pattern, value, memory in _CPU_MEMORY:
        if re.search(pattern, name):
            gbs, kind = value, memory
            break
    cores = max(1, hardware.cpu.cores_physical)
    if cores * PER_CORE_GBS < gbs:
        return Bandwidth(cores * PER_CORE_GBS, f"{kind}, limited by {cores} cores", CPU_EFFICIENCY)
    return Bandwidth(gbs, f"{kind} (estimate)", CPU_EFFICIENCY)


@dataclass(frozen=True)
class TokenCost:
    """Bytes one generated token reads, by where they live in the model."""

    #: Per repeating block, in block order (only the used experts of a MoE).
    block_bytes: tuple[int, ...]
    #: The output matrix (the logits read it whole every token).
    output_bytes: int
    #: Per block, the part of `block_bytes` that is the used experts (what --n-cpu-moe reads from RAM).
    expert_bytes: tuple[int, ...] = ()

    @property
    def total_bytes(self) -> int:
        return sum(self.block_bytes) + self.output_bytes


def token_cost(meta: Any) -> TokenCost:
    """Bytes per token from a `ModelMeta`'s tensor table.

    Every block tensor is read once, expert tensors (`*_exps`) only for the
    used experts; the logits read the whole output matrix (the token
    embedding when tied). The embedding lookup itself reads one row: nothing.
    """
    blocks = [0] * int(meta.n_layer)
    experts = [0] * int(meta.n_layer)
    output = 0
    has_output = any(t.name == "output.weight" for t in meta.tensors)
    for t in meta.tensors:
        layer = t.layer
        if layer is not None and layer < len(blocks):
            n = t.n_bytes
            if "_exps." in t.name and meta.n_expert:
                n = n * meta.n_expert_used // meta.n_expert
                experts[layer] += n
            blocks[layer] += n
        elif t.name == "output.weight" or (t.name == "token_embd.weight" and not has_output):
            output += t.n_bytes
    return TokenCost(tuple(blocks), output, tuple(experts))


@dataclass(frozen=True)
class SpeedEstimate:
    tokens_per_s: float
    gpu_bytes: int
    cpu_bytes: int
    #: Fraction of the per-token read served from system RAM by the CPU.
    cpu_share: float
    bandwidths: tuple[Bandwidth, ...]

    def to_dict(self) -> dict[str, object]:
        return {"tokens_per_s": round(self.tokens_per_s, 1), "gpu_bytes": self.gpu_bytes,
                "cpu_bytes": self.cpu_bytes, "cpu_share": round(self.cpu_share, 3),
                "bandwidths": [{"gbs": b.gbs, "source": b.source, "efficiency": b.efficiency}
                               for b in self.bandwidths]}


#: Round trips per token to each RPC device that holds layers. Measured (bench/bench_cluster.py, a
#: counting proxy parsing the protocol): the client waits only on one GET_TENSOR per device per token
#: (the next device's activations, or the logits); SET_TENSOR and GRAPH_RECOMPUTE are one-way.
RPC_TRIPS_PER_DEVICE = 1
#: Bytes per device per token besides activations and logits: tensor descriptors (296 bytes each),
#: positions, KV indices and the attention mask (measured 2-4 kB at a short context).
RPC_OVERHEAD_BYTES = 4096
#: The link to other machines when nothing better is known: gigabit Ethernet (125 MB/s).
DEFAULT_LINK_BYTES_PER_S = 125e6


def rpc_seconds_per_token(devices: Sequence[tuple[float, bool]], *, n_embd: int, n_vocab: int,
                          link_bytes_per_s: float = DEFAULT_LINK_BYTES_PER_S) -> float:
    """Network time one generated token costs: for each remote device used, (round-trip latency in
    seconds, whether it holds the output layer). Each device's blocks get the token's activations
    (n_embd float32) and return them; the one with the output layer returns the logits (n_vocab float32)."""
    seconds = 0.0
    for latency, output in devices:
        payload = 2 * n_embd * 4 + (n_vocab * 4 if output else 0) + RPC_OVERHEAD_BYTES
        seconds += RPC_TRIPS_PER_DEVICE * max(latency, 0.0) + payload / link_bytes_per_s
    return seconds


def plan_network_seconds(plan: Any, hardware: HardwareProfile) -> float:
    """Network seconds per token for a plan's remote devices (latencies from the workers' probes)."""
    remote = [d for d in plan.devices if d.kind == "rpc" and (d.layers or d.output)]
    if not remote:
        return 0.0
    latencies = {r.label: r.latency_s for r in hardware.remote}
    devices = [(latencies.get(d.name) or 0.001, bool(d.output)) for d in remote]
    n_embd = int(plan.model.get("n_embd") or 4096)
    n_vocab = int(plan.model.get("n_vocab") or 32000)
    return rpc_seconds_per_token(devices, n_embd=n_embd, n_vocab=n_vocab)


def estimate_speed(
    cost: TokenCost,
    *,
    n_gpu_layers: int,
    gpus: Sequence[tuple[Bandwidth, float]],
    cpu: Bandwidth,
    kv_read_bytes: int = 0,
    cpu_expert_layers: int = 0,
    network_s: float = 0.0,
) -> SpeedEstimate:
    """Tokens/s for a placement: `n_gpu_layers` as llama.cpp counts them.

    `gpus` pairs each GPU's bandwidth with its share of the offloaded layers
    (llama.cpp splits layers in proportion to free memory and runs the GPUs
    one after the other, so their times add). `kv_read_bytes` is the KV cache
    read per token, split like the layers. `cpu_expert_layers`: blocks 0..N-1 keep their
    experts in RAM (--n-cpu-moe), so the used experts of those blocks are read by the CPU
    even where the rest of the block is on a GPU.
    """
    n_blocks = len(cost.block_bytes)
    on_gpu = max(0, min(n_gpu_layers, n_blocks + 1)) if gpus else 0
    # llama.cpp offloads the output layer first, then the LAST k-1 blocks.
    gpu_blocks = max(0, on_gpu - 1)
    gpu_bytes = sum(cost.block_bytes[n_blocks - gpu_blocks:]) if gpu_blocks else 0
    if on_gpu >= 1:
        gpu_bytes += cost.output_bytes
    if cpu_expert_layers and cost.expert_bytes:
        first_gpu = n_blocks - gpu_blocks
        gpu_bytes -= sum(cost.expert_bytes[first_gpu:max(first_gpu, min(cpu_expert_layers, n_blocks))])
    cpu_bytes = cost.total_bytes - gpu_bytes
    if kv_read_bytes and n_blocks:
        gpu_kv = kv_read_bytes * gpu_blocks // n_blocks
        gpu_bytes += gpu_kv
        cpu_bytes += kv_read_bytes - gpu_kv
    # Other machines' devices add their network round trips to every token (rpc_seconds_per_token).
    seconds = cpu_bytes / cpu.effective_bytes_per_s + max(network_s, 0.0)
    total_share = sum(share for _, share in gpus) or 1.0
    for bandwidth, share in gpus:
        seconds += gpu_bytes * (share / total_share) / bandwidth.effective_bytes_per_s
    total = gpu_bytes + cpu_bytes
    return SpeedEstimate(
        tokens_per_s=1.0 / seconds if seconds > 0 else float("inf"),
        gpu_bytes=gpu_bytes, cpu_bytes=cpu_bytes,
        cpu_share=cpu_bytes / total if total else 0.0,
        bandwidths=(*(b for b, _ in gpus), cpu),
    )
