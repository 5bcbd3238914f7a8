"""Tokens/s from memory bandwidth: bandwidth lookups, layer placement, MoE reads."""

from __future__ import annotations

import pytest

from app.core.fit.speed import (
    CPU_EFFICIENCY,
    GPU_EFFICIENCY,
    Bandwidth,
    TokenCost,
    apple_bandwidth,
    cpu_bandwidth,
    estimate_speed,
    gpu_bandwidth,
    token_cost,
)
from app.core.machine.hardware import GiB
from app.core.machine.simulate import preset_profile
from app.core.models.catalog import load_catalog


def test_gpu_bandwidth_by_card_name() -> None:
    assert gpu_bandwidth("NVIDIA GeForce RTX 4090").gbs == 1008
    assert gpu_bandwidth("RTX 3060").gbs == 360
    assert "spec sheet" in gpu_bandwidth("NVIDIA Tesla T4").source


def test_unknown_gpu_is_assumed_from_cards_of_its_size() -> None:
    unknown = gpu_bandwidth("Simulated 12 GB GPU", 12 * GiB)
    assert "assumed" in unknown.source
    assert 360 <= unknown.gbs <= 504  # the known 12 GB cards span 360..504
    assert gpu_bandwidth("Mystery card").source == "assumed"


def test_apple_chip_bandwidth() -> None:
    assert apple_bandwidth("Apple M3 Pro").gbs == 150
    assert apple_bandwidth("Apple M3 Max").gbs == 400
    assert apple_bandwidth("Apple M9 Hyper").source.startswith("assumed")


@pytest.mark.parametrize(("preset", "gbs", "word"), [
    ("workstation-64gb-cpu", 83, "DDR5"),  # Ryzen 9 7950X: dual-channel DDR5
    ("dual-rtx-3090", 102, "4-channel"),  # Threadripper 3960X
    ("laptop-8gb-cpu", 38, "DDR4-2400"),  # i5-8250U
    ("t4-16gb", 24, "2 cores"),  # a 4 vCPU cloud VM cannot pull a server's bandwidth
    ("m1-8gb", 68, "Apple M1"),  # unified memory: the chip's bandwidth
])
def test_cpu_bandwidth_estimates(preset: str, gbs: float, word: str) -> None:
    bw = cpu_bandwidth(preset_profile(preset))
    assert bw.gbs == gbs and word in bw.source and bw.efficiency == CPU_EFFICIENCY


def _bw(gbs: float, eff: float = 1.0) -> Bandwidth:
    return Bandwidth(gbs, "test", eff)


def test_placement_is_output_first_then_the_last_blocks() -> None:
    cost = TokenCost(block_bytes=(1, 2, 3, 4), output_bytes=10)
    gpu, cpu = [(_bw(1000), 1.0)], _bw(1)
    assert estimate_speed(cost, n_gpu_layers=0, gpus=gpu, cpu=cpu).gpu_bytes == 0
    assert estimate_speed(cost, n_gpu_layers=1, gpus=gpu, cpu=cpu).gpu_bytes == 10
    two = estimate_speed(cost, n_gpu_layers=2, gpus=gpu, cpu=cpu)
    assert (two.gpu_bytes, two.cpu_bytes) == (14, 6)  # output + the LAST block
    full = estimate_speed(cost, n_gpu_layers=5, gpus=gpu, cpu=cpu)
    assert full.cpu_bytes == 0 and full.cpu_share == 0
    assert full.tokens_per_s == pytest.approx(1000e9 / 20)
    # More layers on the faster device: faster.
    speeds = [estimate_speed(cost, n_gpu_layers=k, gpus=gpu, cpu=cpu).tokens_per_s for k in range(6)]
    assert speeds == sorted(speeds)


def test_speed_is_bandwidth_over_bytes_and_gpus_add_up() -> None:
    cost = TokenCost(block_bytes=(10**9,) * 4, output_bytes=0)
    cpu_only = estimate_speed(cost, n_gpu_layers=0, gpus=[], cpu=_bw(40, 0.5))
    assert cpu_only.tokens_per_s == pytest.approx(20e9 / 4e9)
    # Two GPUs run one after the other: the bytes split, the times add.
    two = estimate_speed(cost, n_gpu_layers=5, gpus=[(_bw(100), 1.0), (_bw(100), 1.0)], cpu=_bw(40))
    assert two.tokens_per_s == pytest.approx(100e9 / 4e9)
    # The KV read is split like the layers.
    kv = estimate_speed(cost, n_gpu_layers=3, gpus=[(_bw(100), 1.0)], cpu=_bw(10), kv_read_bytes=4 * 10**8)
    assert kv.gpu_bytes == 2 * 10**9 + 2 * 10**8 and kv.cpu_bytes == 2 * 10**9 + 2 * 10**8


def test_token_cost_reads_only_the_used_experts() -> None:
    catalog = load_catalog()
    moe = token_cost(catalog.get("qwen3-30b-a3b").meta("Q4_K_M"))
    dense = token_cost(catalog.get("qwen3-32b").meta("Q4_K_M"))
    total_moe = catalog.get("qwen3-30b-a3b").meta("Q4_K_M").tensor_bytes
    # 8 of 128 experts: about an eighth of a dense model's read, a tenth of its own size.
    assert moe.total_bytes < 0.15 * total_moe
    assert moe.total_bytes < dense.total_bytes / 6
    assert len(moe.block_bytes) == 48


def test_token_cost_counts_the_output_or_the_tied_embedding() -> None:
    catalog = load_catalog()
    untied = catalog.get("llama-3.1-8b").meta("Q8_0")
    cost = token_cost(untied)
    output = next(t.n_bytes for t in untied.tensors if t.name == "output.weight")
    assert cost.output_bytes == output
    # The token embedding is looked up, not read whole: it is not in the per-token bytes.
    embd = next(t.n_bytes for t in untied.tensors if t.name == "token_embd.weight")
    assert cost.total_bytes < untied.tensor_bytes - embd + 1
    tied = catalog.get("llama-3.2-1b").meta("Q8_0")
    assert token_cost(tied).output_bytes == next(t.n_bytes for t in tied.tensors if t.name == "token_embd.weight")


def test_a_known_speed_is_in_the_right_range() -> None:
    """Llama-3.1-8B Q4_K_M on an RTX 4090 decodes at ~130-150 tokens/s in llama.cpp."""
    meta = load_catalog().get("llama-3.1-8b").meta("Q4_K_M")
    tps = estimate_speed(token_cost(meta), n_gpu_layers=33,
                         gpus=[(gpu_bandwidth("RTX 4090"), 1.0)], cpu=_bw(80, 0.6)).tokens_per_s
    assert 110 < tps < 170
    assert GPU_EFFICIENCY == 0.70
