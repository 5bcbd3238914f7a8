"""Planning across other machines' devices (llama.cpp RPC workers): budgets, layer split, network cost."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from app.core.fit import plan_memory, read_gguf
from app.core.fit.speed import (
    RPC_OVERHEAD_BYTES,
    RPC_TRIPS_PER_DEVICE,
    plan_network_seconds,
    rpc_seconds_per_token,
)
from app.core.machine import GiB, HardwareProfile, RemoteDevice


def _cpu_machine(ram_gb: int = 16) -> HardwareProfile:
    from app.core.machine import BackendInfo, CpuInfo, RamInfo

    return HardwareProfile(os="Linux", arch="x86_64", cpu=CpuInfo(name="test CPU", cores_physical=8, cores_logical=16),
                         ram=RamInfo(total_bytes=ram_gb * GiB, available_bytes=(ram_gb - 2) * GiB),
                         backend=BackendInfo(compiled=["CPU", "RPC"], gpu_offload=True, available=True))


def _worker(port: int, free_gb: float, *, total_gb: float = 64, source: str = "status",
            latency: float = 0.0005) -> RemoteDevice:
    return RemoteDevice(endpoint=f"10.0.0.{port % 250}:{port}", index=0, kind="cpu", total_bytes=int(total_gb * GiB),
                        free_bytes=int(free_gb * GiB), source=source, latency_s=latency)


def test_remote_devices_come_first_and_share_the_layers_by_budget(starter_model: Path) -> None:
    hw = replace(_cpu_machine(), remote=[_worker(50052, 30), _worker(50053, 10)])
    budgets = hw.budgets()
    assert [b.kind for b in budgets.gpus] == ["rpc", "rpc"] and budgets.gpus[0].name == "CPU on 10.0.0.52:50052"
    plan = plan_memory(read_gguf(starter_model), hw, n_ctx=2048)
    assert plan.verdict == "full_gpu" and plan.n_gpu_layers == plan.n_layers + 1
    first, second, ram = plan.devices
    assert (first.kind, second.kind, ram.kind) == ("rpc", "rpc", "ram")
    assert first.backend == second.backend == "RPC"
    total = sum(g.budget_bytes for g in budgets.gpus)
    assert plan.tensor_split == pytest.approx([g.budget_bytes / total for g in budgets.gpus], abs=1e-3)
    assert first.layers > second.layers and second.output  # the output layer goes to the last device
    assert plan.remote_total == first.total + second.total and plan.total_bytes >= plan.remote_total
    assert any(r.startswith("CPU on 10.0.0.52:50052 holds") for r in plan.reasons)
    assert "2 devices (2 on other machines)" in plan.reasons[0]


def test_a_cpu_worker_without_status_is_planned_on_half_its_ram() -> None:
    hw = replace(_cpu_machine(), remote=[_worker(50052, 64, total_gb=64, source="rpc")])
    budget = hw.budgets().gpus[0]
    assert budget.free_bytes == 32 * GiB and budget.budget_bytes < 32 * GiB


def test_workers_make_a_model_fit_that_this_machine_cannot_hold(tmp_path: Path) -> None:
    from app.core.fit.architectures import ArchConstants
    from tests.fixtures.synthetic_gguf import LLAMA_KV, big_model

    seventy = ArchConstants("llama", 80, 8192, 64, 8, 28672, 128256, rope_freqs=True, n_ctx_train=131072)
    kv = {**LLAMA_KV, "block_count": 80, "embedding_length": 8192, "attention.head_count": 64,
          "feed_forward_length": 28672}
    path = tmp_path / "Llama-3.3-70B-Instruct-Q4_K_M.gguf"
    big_model(path, arch=seventy, kv=kv)
    meta = read_gguf(path)
    alone = plan_memory(meta, _cpu_machine(16), n_ctx=4096)
    assert alone.verdict == "no_fit"
    pooled = plan_memory(meta, replace(_cpu_machine(16), remote=[_worker(50052, 30), _worker(50053, 30)]),
                         n_ctx=4096)
    assert pooled.fits and pooled.remote_total > 35 * GiB
    assert sum(d.layers for d in pooled.devices if d.kind == "rpc") >= 70


def test_network_cost_per_token() -> None:
    one = rpc_seconds_per_token([(0.001, False)], n_embd=4096, n_vocab=128256, link_bytes_per_s=125e6)
    assert one == pytest.approx(RPC_TRIPS_PER_DEVICE * 0.001 + (2 * 4096 * 4 + RPC_OVERHEAD_BYTES) / 125e6)
    two = rpc_seconds_per_token([(0.001, False), (0.001, True)], n_embd=4096, n_vocab=128256,
                                link_bytes_per_s=125e6)
    assert two == pytest.approx(2 * one + 128256 * 4 / 125e6)


def test_network_seconds_of_a_plan(starter_model: Path) -> None:
    hw = replace(_cpu_machine(), remote=[_worker(50052, 30, latency=0.002)])
    plan = plan_memory(read_gguf(starter_model), hw, n_ctx=2048)
    assert plan_network_seconds(plan, hw) == pytest.approx(
        rpc_seconds_per_token([(0.002, True)], n_embd=576, n_vocab=49152))
    assert plan_network_seconds(plan_memory(read_gguf(starter_model), _cpu_machine(), n_ctx=2048), hw) == 0.0


def test_remote_devices_survive_a_hardware_file_round_trip() -> None:
    hw = replace(_cpu_machine(), remote=[_worker(50052, 30)])
    again = HardwareProfile.from_dict(hw.to_dict())
    assert again.remote == hw.remote
