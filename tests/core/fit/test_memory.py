"""The memory plan: against llama.cpp's own buffer sizes, and its rules on synthetic models."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.errors import UsageError
from app.core.fit import quants
from app.core.fit.architectures import ArchConstants
from app.core.fit.gguf_meta import ModelMeta, read_gguf
from app.core.fit.llama_log import LlamaLogCapture, parse_buffer_sizes
from app.core.fit.memory import KV_PAD, layer_kv_bytes, plan_for_architecture, plan_memory
from app.core.machine import llama_cpp_module
from app.core.machine.hardware import (
    AppleInfo,
    CpuInfo,
    GiB,
    GpuInfo,
    HardwareProfile,
    MiB,
    RamInfo,
    assumed_backend,
)
from app.core.machine.simulate import preset_profile


def _close(planned: int, measured_mib: float) -> bool:
    """REFERENCE proof rule: within 5% or 8 MiB."""
    measured = measured_mib * MiB
    return abs(planned - measured) <= max(0.05 * measured, 8 * MiB)


def cpu_machine(ram_gb: float = 64) -> HardwareProfile:
    ram = int(ram_gb * GiB)
    return HardwareProfile(os="linux", arch="x86_64", cpu=CpuInfo(), ram=RamInfo(ram, ram - 4 * GiB),
                           backend=assumed_backend([], unified=False))


def gpu_machine(*vram_gb: float, ram_gb: float = 64) -> HardwareProfile:
    gpus = [GpuInfo(vendor="nvidia", name=f"GPU{i}", vram_total_bytes=int(v * GiB), vram_free_bytes=int(v * GiB),
                    index=i) for i, v in enumerate(vram_gb)]
    ram = int(ram_gb * GiB)
    return HardwareProfile(os="linux", arch="x86_64", cpu=CpuInfo(), ram=RamInfo(ram, ram - 4 * GiB), gpus=gpus,
                           backend=assumed_backend(gpus, unified=False))


# -- against llama.cpp itself -----------------------------------------------------------


@pytest.mark.parametrize(("n_ctx", "flash_attn"), [(512, False), (2048, False), (8192, False),
                                                   (2048, True), (8192, True)])
def test_plan_matches_llama_cpp_log(starter_model: Path, n_ctx: int, flash_attn: bool) -> None:
    llama_cpp = llama_cpp_module()

    with LlamaLogCapture() as log:
        llm = llama_cpp.Llama(str(starter_model), n_ctx=n_ctx, flash_attn=flash_attn, n_threads=1, verbose=False)
        del llm
    measured = log.buffer_sizes()
    assert measured.n_ctx == n_ctx and measured.flash_attn is flash_attn
    meta = read_gguf(starter_model)
    # llama-cpp-python's defaults: n_batch 512, n_ubatch 512.
    plan = plan_memory(meta, cpu_machine(), n_ctx=n_ctx, flash_attn=flash_attn, n_batch=512, n_ubatch=512)
    ram = plan.devices[-1]
    assert plan.verdict == "cpu" and ram.name == "RAM"
    assert _close(ram.weights, measured.total("model")), (ram.weights / MiB, measured.model)
    assert _close(ram.kv_cache, measured.total("kv")), (ram.kv_cache / MiB, measured.kv)
    assert _close(ram.compute, measured.total("compute") + measured.total("output")), \
        (ram.compute / MiB, measured.compute)
    # The engine reproduces the plan with exactly these arguments.
    kwargs = plan.llama_kwargs()
    assert kwargs["n_ctx"] == n_ctx and kwargs["flash_attn"] is flash_attn and kwargs["n_gpu_layers"] == 0


def test_quantized_cache_matches_llama_cpp(starter_model: Path) -> None:
    llama_cpp = llama_cpp_module()

    meta = read_gguf(starter_model)
    plan = plan_memory(meta, cpu_machine(), n_ctx=2048, cache_type_k="q8_0", cache_type_v="q8_0", n_batch=512)
    assert plan.flash_attn is True  # a q8_0 V cache needs it, so the plan turned it on
    assert any("needs it" in r for r in plan.reasons)
    with LlamaLogCapture() as log:
        llm = llama_cpp.Llama(str(starter_model), n_threads=1, verbose=False, **plan.llama_kwargs())
        del llm
    measured = log.buffer_sizes()
    assert measured.flash_attn is True
    assert _close(plan.kv_cache_bytes, measured.total("kv"))
    assert plan.kv_cache_bytes == 2048 * 30 * 2 * (192 * 34 // 32)


def test_reference_dry_run_numbers(starter_model: Path) -> None:
    """llama-fit-params --fit-print for SmolLM2 on CPU (REFERENCE section 3), MiB."""
    meta = read_gguf(starter_model)
    for n_ctx, (model, context, compute) in {512: (92, 11, 98), 2048: (92, 45, 102), 8192: (92, 180, 98)}.items():
        plan = plan_memory(meta, cpu_machine(), n_ctx=n_ctx, flash_attn=True, n_batch=512)
        assert abs(plan.weights_bytes / MiB - model) < 1
        assert abs(plan.kv_cache_bytes / MiB - context) < 1
        assert _close(plan.compute_bytes, compute)


def test_log_parser_reads_every_device() -> None:
    text = (
        "load_tensors: offloaded 20/33 layers to GPU\n"
        "load_tensors:        CUDA0 model buffer size =  2500.00 MiB\n"
        "load_tensors:   CPU_Mapped model buffer size =  1900.50 MiB\n"
        "llama_context: n_ctx         = 4096\n"
        "llama_context: flash_attn    = enabled\n"
        "llama_context:  CUDA_Host  output buffer size =     0.49 MiB\n"
        "llama_kv_cache:      CUDA0 KV buffer size =   320.00 MiB\n"
        "llama_kv_cache:        CPU KV buffer size =   192.00 MiB\n"
        "llama_kv_cache:      CUDA0 KV buffer size =    64.00 MiB\n"
        "sched_reserve:      CUDA0 compute buffer size =   296.00 MiB\n"
        "sched_reserve:  CUDA_Host compute buffer size =    16.01 MiB\n"
        "~llama_context:      CUDA0 compute buffer size is 296.0000 MiB, matches expectation of 296.0000 MiB\n"
    )
    sizes = parse_buffer_sizes(text)
    assert sizes.model == {"CUDA0": 2500.0, "CPU_Mapped": 1900.5}
    assert sizes.kv == {"CUDA0": 384.0, "CPU": 192.0}
    assert sizes.compute == {"CUDA0": 296.0, "CUDA_Host": 16.01}
    assert (sizes.layers_offloaded, sizes.layers_total, sizes.n_ctx, sizes.flash_attn) == (20, 33, 4096, True)
    assert sizes.bytes("kv") == 576 * MiB


def test_nested_captures_both_see_the_log(starter_model: Path) -> None:
    llama_cpp = llama_cpp_module()

    with LlamaLogCapture() as outer:
        with LlamaLogCapture() as inner:
            llm = llama_cpp.Llama(str(starter_model), n_ctx=512, n_threads=1, verbose=False)
            del llm
        assert inner.buffer_sizes().total("kv") == pytest.approx(11.25)
    assert outer.buffer_sizes().total("kv") == pytest.approx(11.25)
    assert "model buffer size" in outer.text


# -- placement ----------------------------------------------------------------------------

LLAMA_8B = ArchConstants("llama", 32, 4096, 32, 8, 14336, 128256, rope_freqs=True, n_ctx_train=131072)


def _meta(arch: ArchConstants = LLAMA_8B, quant: str = "Q4_K_M") -> ModelMeta:
    return ModelMeta.from_architecture(arch, quant)


def _bytes(meta: ModelMeta, pred) -> int:
    return sum(t.n_bytes for t in meta.tensors if pred(t))


@pytest.mark.parametrize("k", [1, 2, 10, 32, 33])
def test_output_layer_goes_first_then_last_blocks(k: int) -> None:
    meta = _meta()
    plan = plan_memory(meta, gpu_machine(80), n_ctx=4096, n_gpu_layers=k)
    gpu, ram = plan.devices
    on_gpu = set(range(32 - (k - 1), 32))
    expected_gpu = _bytes(meta, lambda t: t.name.startswith("output") or (t.layer in on_gpu))
    expected_ram = _bytes(meta, lambda t: (t.layer is None and not t.name.startswith("output"))
                          or (t.layer is not None and t.layer not in on_gpu))
    assert gpu.weights == expected_gpu and ram.weights == expected_ram
    assert gpu.layers == k - 1 and gpu.output and not ram.output
    per_layer = layer_kv_bytes(meta, 0, _settings(4096))
    assert gpu.kv_cache == (k - 1) * per_layer and ram.kv_cache == (32 - (k - 1)) * per_layer
    # the token embedding never leaves the CPU
    assert ram.weights >= _bytes(meta, lambda t: t.name == "token_embd.weight")
    assert plan.verdict == ("full_gpu" if k == 33 else "partial")


def _settings(n_ctx: int):
    from app.core.fit.memory import _effective

    return _effective(n_ctx, 2048, 512, flash_attn=False, cache_type_k="f16", cache_type_v="f16", swa_full=False)


def test_one_gpu_layer_is_the_output_layer_only() -> None:
    meta = _meta()
    gpu = plan_memory(meta, gpu_machine(80), n_ctx=4096, n_gpu_layers=1).devices[0]
    assert gpu.weights == _bytes(meta, lambda t: t.name in ("output.weight", "output_norm.weight"))
    assert gpu.kv_cache == 0 and gpu.layers == 0
    # the logits of a micro-batch are computed where the output layer is
    assert gpu.compute >= 512 * 128256 * 4


def test_tied_embeddings_are_duplicated_on_the_gpu() -> None:
    arch = ArchConstants("llama", 16, 2048, 32, 8, 8192, 128256, tied_embeddings=True, n_ctx_train=131072)
    meta = _meta(arch)
    embd = _bytes(meta, lambda t: t.name == "token_embd.weight")
    cpu_only = plan_memory(meta, gpu_machine(24), n_ctx=4096, n_gpu_layers=0)
    full = plan_memory(meta, gpu_machine(24), n_ctx=4096, n_gpu_layers=17)
    assert cpu_only.weights_bytes == meta.tensor_bytes
    assert full.weights_bytes == meta.tensor_bytes + embd
    assert full.devices[0].weights >= embd and full.devices[1].weights == embd


def test_gqa_kv_uses_kv_heads_not_attention_heads() -> None:
    plan = plan_memory(_meta(), gpu_machine(80), n_ctx=8192)
    # 32 layers x 8192 cells x 8 KV heads x 128 x (K + V) x 2 bytes = 1 GiB (32 heads would be 4 GiB)
    assert plan.kv_cache_bytes == 1 * GiB
    assert plan.kv_bytes_per_token == 128 * 1024


def test_context_is_padded_to_256() -> None:
    plan = plan_memory(_meta(), gpu_machine(80), n_ctx=1000)
    assert plan.kv_cells == 1024 and plan.n_ctx == 1000
    assert plan.kv_cache_bytes == 1024 * 128 * 1024


def test_per_layer_kv_heads() -> None:
    arch = ArchConstants("llama", 4, 1024, 16, [8, 0, 4, 2], 4096, 32000, n_ctx_train=4096)
    meta = _meta(arch)
    # Flash attention on: without it llama.cpp pads every layer's V to the widest (test_layer_kinds).
    plan = plan_memory(meta, cpu_machine(), n_ctx=4096, flash_attn=True)
    assert plan.kv_cache_bytes == 4096 * (8 + 0 + 4 + 2) * 64 * 2 * 2


def test_sliding_window_layers_hold_only_the_window() -> None:
    gemma2 = ArchConstants("gemma2", 42, 3584, 16, 8, 14336, 256000, head_dim_k=256, n_ctx_train=8192)
    meta = _meta(gemma2)
    assert sum(meta.swa_pattern) == 21 and meta.sliding_window == 4096
    per_cell = 8 * 256 * 2 * 2
    plan = plan_memory(meta, gpu_machine(80), n_ctx=8192)
    assert plan.kv_cache_bytes == 21 * 8192 * per_cell + 21 * (4096 + 512) * per_cell
    full = plan_memory(meta, gpu_machine(80), n_ctx=8192, swa_full=True)
    assert full.kv_cache_bytes == 42 * 8192 * per_cell
    assert any("sliding window" in r for r in plan.reasons)


def test_gemma3_27b_at_32k_reference() -> None:
    gemma3 = ArchConstants("gemma3", 62, 5376, 32, 16, 21504, 262144, head_dim_k=128, sliding_window=1024,
                           n_ctx_train=131072)
    plan = plan_memory(_meta(gemma3), gpu_machine(80, 80), n_ctx=32768)
    assert plan.kv_cache_bytes / GiB == pytest.approx(3.1, abs=0.05)
    naive = plan_memory(_meta(gemma3), gpu_machine(80, 80), n_ctx=32768, swa_full=True)
    assert naive.kv_cache_bytes / GiB == pytest.approx(15.5, abs=0.05)


@pytest.mark.parametrize(("cache", "ratio"), [("q8_0", 34 / 64), ("q4_0", 18 / 64)])
def test_quantized_kv_cache(cache: str, ratio: float) -> None:
    f16 = plan_memory(_meta(), gpu_machine(80), n_ctx=8192, flash_attn=True)
    q = plan_memory(_meta(), gpu_machine(80), n_ctx=8192, flash_attn=True, cache_type_k=cache, cache_type_v=cache)
    assert q.kv_cache_bytes == pytest.approx(f16.kv_cache_bytes * ratio)


def test_quantized_k_alone_keeps_flash_attention_off() -> None:
    plan = plan_memory(_meta(), gpu_machine(80), n_ctx=4096, cache_type_k="q8_0")
    assert plan.flash_attn is False and plan.cache_type_v == "f16"


def test_flash_attention_drops_the_attention_matrix_on_cpu() -> None:
    off = plan_memory(_meta(), cpu_machine(128), n_ctx=32768)
    on = plan_memory(_meta(), cpu_machine(128), n_ctx=32768, flash_attn=True)
    # 32 heads x 32768 x 512 floats = 2 GiB of scores without flash attention
    assert off.compute_bytes - on.compute_bytes > 1.5 * GiB


def test_compute_scales_with_ubatch() -> None:
    small = plan_memory(_meta(), gpu_machine(80), n_ctx=512, n_ubatch=256)
    big = plan_memory(_meta(), gpu_machine(80), n_ctx=512, n_ubatch=512)
    assert big.devices[0].compute == pytest.approx(2 * small.devices[0].compute, rel=0.01)
    # REFERENCE: Llama-3-8B, n_ubatch 512, n_ctx 512 on CUDA: 258.5 MiB
    assert _close(big.devices[0].compute, 258.5)


def test_moe_weights_count_every_expert() -> None:
    moe = ArchConstants("qwen3moe", 48, 2048, 32, 4, 6144, 151936, head_dim_k=128, n_expert=128,
                        n_expert_used=8, n_ff_exp=768, n_ctx_train=32768)
    meta = _meta(moe)
    plan = plan_memory(meta, cpu_machine(128), n_ctx=4096)
    assert plan.weights_bytes == meta.tensor_bytes
    assert meta.n_params > 30e9


# -- choosing layers and context -----------------------------------------------------------------


def test_auto_layers_is_the_most_that_fit() -> None:
    meta = _meta(quant="Q8_0")
    machine = preset_profile("rtx-4060-8gb")
    plan = plan_memory(meta, machine, n_ctx=4096)
    assert plan.verdict == "partial" and 0 < plan.n_gpu_layers < 33
    one_more = plan_memory(meta, machine, n_ctx=4096, n_gpu_layers=plan.n_gpu_layers + 1)
    assert one_more.verdict == "no_fit"
    assert one_more.devices[0].total > one_more.devices[0].budget
    assert plan.devices[0].total <= plan.devices[0].budget
    assert any("layers fit" in r for r in plan.reasons)


def test_auto_context_is_the_longest_that_keeps_the_placement() -> None:
    meta = _meta(quant="Q4_K_M")
    machine = gpu_machine(6.2)
    plan = plan_memory(meta, machine, ctx_cap=131072)
    assert plan.verdict == "full_gpu" and plan.max_ctx == plan.n_ctx
    assert 4096 <= plan.n_ctx < 131072
    longer = plan_memory(meta, machine, n_ctx=plan.n_ctx + KV_PAD, n_gpu_layers=33)
    assert longer.verdict == "no_fit"


def test_auto_context_respects_cap_and_training() -> None:
    plan = plan_memory(_meta(), gpu_machine(80))
    assert plan.n_ctx == 8192  # the default cap
    assert plan_memory(_meta(), gpu_machine(80), ctx_cap=65536).n_ctx == 65536
    short = ArchConstants("llama", 32, 4096, 32, 8, 14336, 32768, n_ctx_train=2048)
    assert plan_memory(_meta(short), gpu_machine(80)).n_ctx == 2048


def test_cpu_only_machine() -> None:
    plan = plan_memory(_meta(), cpu_machine(32))
    assert plan.verdict == "cpu" and plan.n_gpu_layers == 0 and len(plan.devices) == 1
    assert "no GPU" in plan.reasons[0]


def test_gpu_layers_asked_for_without_a_gpu_run_on_the_cpu() -> None:
    plan = plan_memory(_meta(), cpu_machine(32), n_gpu_layers=33)
    assert plan.n_gpu_layers == 0 and plan.verdict == "cpu"


def test_does_not_fit_says_why_and_what_would_help() -> None:
    big = ArchConstants("llama", 80, 8192, 64, 8, 28672, 128256, n_ctx_train=131072)
    plan = plan_memory(_meta(big), preset_profile("laptop-8gb-cpu"))
    assert plan.verdict == "no_fit"
    assert any("RAM" in r for r in plan.reasons)
    changes = {i["change"] for i in plan.improvements}
    assert "free_memory" in changes
    free = next(i for i in plan.improvements if i["change"] == "free_memory")
    assert free["bytes"] > 30 * GiB


def test_improvements_are_real_replans() -> None:
    meta = _meta(quant="Q8_0")
    machine = preset_profile("rtx-4060-8gb")
    plan = plan_memory(meta, machine, n_ctx=8192)
    assert plan.verdict == "partial"
    by_change = {i["change"]: i for i in plan.improvements}
    assert {"n_ctx", "quant", "free_memory"} <= set(by_change)
    smaller = by_change["quant"]
    replanned = plan_memory(meta.with_file_type("Q6_K"), machine, n_ctx=8192)
    assert (replanned.verdict, replanned.n_gpu_layers) == (smaller["verdict"], smaller["n_gpu_layers"])
    assert replanned.n_gpu_layers > plan.n_gpu_layers
    shorter = by_change["n_ctx"]
    again = plan_memory(meta, machine, n_ctx=shorter["n_ctx"])
    assert again.n_gpu_layers == shorter["n_gpu_layers"] > plan.n_gpu_layers


# -- unified memory and several GPUs ---------------------------------------------------------------


def test_apple_unified_memory_is_one_pool() -> None:
    meta = _meta(ArchConstants("llama", 32, 4096, 32, 8, 14336, 32768, n_ctx_train=32768))
    mac = preset_profile("m2-air-16gb")
    plan = plan_memory(meta, mac, n_ctx=4096)
    gpu, ram = plan.devices
    assert plan.unified and gpu.kind == "unified" and plan.verdict == "full_gpu"
    assert plan.weights_bytes == meta.tensor_bytes  # never counted twice
    budgets = mac.budgets()
    assert gpu.total <= mac.apple.metal_budget_bytes
    assert gpu.total + ram.total <= budgets.ram.budget_bytes
    assert gpu.overhead == 0 and ram.budget == budgets.ram.budget_bytes - gpu.total


def test_unified_pool_limits_by_free_ram_not_the_metal_budget() -> None:
    meta = _meta(ArchConstants("llama", 32, 4096, 32, 8, 14336, 32768, n_ctx_train=32768))
    verdicts = {}
    for free_gb in (6, 9):
        mac = HardwareProfile(os="darwin", arch="arm64", cpu=CpuInfo(name="Apple M2"),
                              ram=RamInfo(16 * GiB, free_gb * GiB), unified_memory=True,
                              apple=AppleInfo("Apple M2", 10 * GiB, "rule"),
                              gpus=[GpuInfo(vendor="apple", name="Apple M2 GPU", vram_total_bytes=10 * GiB)],
                              backend=assumed_backend([], unified=True))
        plan = plan_memory(meta, mac, n_ctx=4096)
        verdicts[free_gb] = plan.verdict
        if plan.verdict != "no_fit":
            assert plan.gpu_total + plan.ram_total <= mac.budgets().ram.budget_bytes
        else:
            assert "RAM" in plan.reasons[0]
    # The Metal budget (10 GiB) would hold the 5 GiB model; 6 GiB free RAM (4.4 after the reserve) does not.
    assert verdicts == {6: "no_fit", 9: "full_gpu"}


def test_two_gpus_split_layers_by_budget() -> None:
    seventy = ArchConstants("llama", 80, 8192, 64, 8, 28672, 128256, n_ctx_train=131072)
    meta = _meta(seventy)
    plan = plan_memory(meta, preset_profile("dual-rtx-3090"), n_ctx=4096)
    gpu0, gpu1, _ram = plan.devices
    assert plan.verdict == "full_gpu" and plan.tensor_split == [0.5, 0.5]
    # 81 offloadable layers (80 blocks + output) cut at half, as llama.cpp does: 41 and 40
    assert (gpu0.layers, gpu1.layers + 1) == (41, 40)
    assert gpu1.output and not gpu0.output  # the output layer is the last offloaded layer
    assert gpu0.overhead == gpu1.overhead > 0
    assert plan.llama_kwargs()["tensor_split"] == [0.5, 0.5]
    uneven = plan_memory(meta, gpu_machine(48, 24), n_ctx=4096, n_gpu_layers=81)
    assert uneven.devices[0].layers > uneven.devices[1].layers
    assert uneven.tensor_split[0] > 0.6


def test_unknown_architecture_is_planned_approximately() -> None:
    odd = ArchConstants("brandnew", 24, 2048, 16, 16, 8192, 50000, n_ctx_train=4096)
    meta = _meta(odd)
    assert meta.approximate and "brandnew" in meta.warnings[0]
    plan = plan_memory(meta, cpu_machine())
    assert plan.approximate and any("approximate" in r for r in plan.reasons)
    assert plan.to_dict()["approximate"] is True


def test_plan_for_architecture_and_json_shape() -> None:
    plan = plan_for_architecture(LLAMA_8B, "Q4_K_M", preset_profile("rtx-4090"))
    data = plan.to_dict()
    assert set(data) >= {"model", "n_ctx", "n_layers", "n_gpu_layers", "verdict", "bytes", "devices", "reasons",
                         "improvements"}
    assert set(data["bytes"]) == {"weights", "repack", "kv_cache", "recurrent_state", "compute", "overhead",
                                  "gpu_total", "ram_total"}
    for device in data["devices"]:
        assert {"name", "budget", "weights", "kv_cache", "compute", "overhead", "total"} <= set(device)
        assert device["total"] == sum(device[part] for part in ("weights", "repack", "kv_cache", "recurrent_state",
                                                                 "compute", "overhead"))
    assert data["bytes"]["weights"] == sum(d["weights"] for d in data["devices"])
    assert data["verdict"] == "full_gpu" and data["n_gpu_layers"] == 33 and data["n_layers"] == 32
    assert quants.file_type_name(ModelMeta.from_architecture(LLAMA_8B, "Q4_K_M").file_type) == "Q4_K_M"


def test_no_fit_still_fills_the_gpu_and_counts_the_ram_shortfall() -> None:
    big = ArchConstants("llama", 80, 8192, 64, 8, 28672, 128256, n_ctx_train=131072)
    machine = preset_profile("rtx-4060-8gb")
    plan = plan_memory(_meta(big), machine)
    gpu, ram = plan.devices
    assert plan.verdict == "no_fit" and plan.n_ctx == 512  # shorter contexts were tried first
    assert plan.n_gpu_layers > 0 and gpu.total <= gpu.budget and ram.total > ram.budget
    free = next(i for i in plan.improvements if i["change"] == "free_memory")
    assert free["bytes"] == ram.total - machine.budgets().ram.budget_bytes
    assert all(i["verdict"] != "no_fit" for i in plan.improvements)


# -- a mixture of experts with its experts in RAM (--n-cpu-moe) ------------------------------------


def _moe_q4() -> ModelMeta:
    """Qwen3-30B-A3B's shapes (48 blocks, 128 experts of 768, 8 used) at Q4_K_M, from the constants."""
    arch = ArchConstants(architecture="qwen3moe", n_layer=48, n_embd=2048, n_head=32, n_head_kv=4, n_ff=6144,
                         n_vocab=151936, head_dim_k=128, head_dim_v=128, n_ctx_train=40960, n_expert=128,
                         n_expert_used=8, n_ff_exp=768)
    return ModelMeta.from_architecture(arch, "Q4_K_M")


def test_moe_keeps_every_layer_on_the_gpu_and_the_fewest_experts_in_ram() -> None:
    meta = _moe_q4()  # ~17.3 GiB: over an 8 GB card's 7.5 GiB
    hw = preset_profile("rtx-4060-8gb")
    plan = plan_memory(meta, hw, n_ctx=8192, flash_attn=True)
    n = plan.cpu_moe
    assert plan.verdict == "partial" and plan.n_gpu_layers == meta.n_layer + 1 and 0 < n < meta.n_layer
    gpu, ram = plan.devices[0], plan.devices[-1]
    assert gpu.total <= gpu.budget and ram.total <= ram.budget
    # The GPU holds every block but the first n blocks' experts; those are the bulk of RAM's weights.
    experts = [sum(t.n_bytes for t in meta.tensors if t.layer == il and "_exps." in t.name) for il in range(n)]
    everything = sum(t.n_bytes for t in meta.tensors)
    input_layer = sum(t.n_bytes for t in meta.tensors if t.layer is None and not t.name.startswith("output"))
    assert gpu.weights == everything - input_layer - sum(experts)
    assert ram.weights + ram.repack >= sum(experts)
    # n is the fewest: one block's experts fewer and the GPU overflows.
    tighter = plan_memory(meta, hw, n_ctx=8192, flash_attn=True, cpu_moe=n - 1, n_gpu_layers=meta.n_layer + 1)
    assert tighter.devices[0].total > tighter.devices[0].budget
    assert plan.llama_kwargs()["cpu_moe"] == n and plan.to_dict()["settings"]["cpu_moe"] == n
    assert any("experts of the first" in r for r in plan.reasons)


def test_moe_expert_placement_only_when_asked_or_chosen() -> None:
    meta = _moe_q4()
    hw = preset_profile("rtx-4060-8gb")
    layerwise = plan_memory(meta, hw, n_ctx=8192, flash_attn=True, cpu_moe=0)
    assert layerwise.cpu_moe == 0 and layerwise.n_gpu_layers < meta.n_layer + 1
    fixed = plan_memory(meta, hw, n_ctx=8192, flash_attn=True, n_gpu_layers=10)
    assert fixed.cpu_moe == 0 and fixed.n_gpu_layers == 10  # a layer count the user chose is kept as is
    assert plan_memory(meta, preset_profile("rtx-4090"), n_ctx=8192, flash_attn=True).cpu_moe == 0  # fits whole
    assert plan_memory(meta, preset_profile("workstation-64gb-cpu"), n_ctx=8192).cpu_moe == 0  # no GPU
    with pytest.raises(UsageError):
        plan_memory(meta, hw, cpu_moe=-1)


def test_moe_expert_placement_reads_the_used_experts_from_ram() -> None:
    from app.core.fit import Bandwidth, estimate_speed, token_cost

    meta = _moe_q4()
    plan = plan_memory(meta, preset_profile("rtx-4060-8gb"), n_ctx=8192, flash_attn=True)
    cost = token_cost(meta)
    gpu, cpu = Bandwidth(272.0, "spec", 0.7), Bandwidth(60.0, "assumed", 0.6)
    moved = estimate_speed(cost, n_gpu_layers=plan.n_gpu_layers, gpus=[(gpu, 1.0)], cpu=cpu,
                           cpu_expert_layers=plan.cpu_moe)
    assert moved.cpu_bytes == sum(cost.expert_bytes[:plan.cpu_moe])
    layerwise = plan_memory(meta, preset_profile("rtx-4060-8gb"), n_ctx=8192, flash_attn=True, cpu_moe=0)
    split = estimate_speed(cost, n_gpu_layers=layerwise.n_gpu_layers, gpus=[(gpu, 1.0)], cpu=cpu)
    assert moved.tokens_per_s > split.tokens_per_s  # attention and shared weights all read at GPU speed
