"""Compute buffers: the replayed graph allocator against llama.cpp's own `CPU compute buffer size`.

The wide fixtures (tests/fixtures/wide_gguf.py) carry real block widths and a
4k vocabulary, so a block, not the logits, sets the peak; SmolLM2 (the real
file) is the logits-bound case. Tolerance: within 5 % or 8 MiB.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.fit.compute import _Alloc, _block_compute, _logits_compute
from app.core.fit.gguf_meta import ModelMeta, read_gguf
from app.core.fit.layers import _effective
from app.core.fit.memory import plan_memory
from app.core.machine.hardware import CpuInfo, GiB, HardwareProfile, MiB, RamInfo, assumed_backend
from tests.fixtures.wide_gguf import WIDE, wide_model

#: (n_ctx, flash_attn, cache type, n_ubatch): every combination the plans use on CPU.
SETTINGS = [(n_ctx, fa, cache, ub) for n_ctx in (512, 4096, 16384)
            for fa, cache in ((False, "f16"), (True, "f16"), (True, "q8_0")) for ub in (512, 128)]
MODELS = ["llama3-8b", "qwen3-30b-a3b", "gemma3-12b", "gemma2-9b", "smollm2"]


def _close(planned: int, measured_mib: float) -> bool:
    measured = measured_mib * MiB
    return abs(planned - measured) <= max(0.05 * measured, 8 * MiB)


def cpu_machine() -> HardwareProfile:
    ram = 64 * GiB
    return HardwareProfile(os="linux", arch="x86_64", cpu=CpuInfo(), ram=RamInfo(ram, ram - 4 * GiB),
                           backend=assumed_backend([], unified=False))


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory, starter_model: Path) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("wide")
    files = {name: wide_model(folder / f"{name}.gguf", WIDE[name]) for name in MODELS if name in WIDE}
    files["smollm2"] = starter_model
    return files


@pytest.fixture(scope="module")
def metas(model_files: dict[str, Path]) -> dict[str, ModelMeta]:
    return {name: read_gguf(path) for name, path in model_files.items()}


def _planned_compute(meta: ModelMeta, n_ctx: int, fa: bool, cache: str, ub: int) -> int:
    plan = plan_memory(meta, cpu_machine(), n_ctx=n_ctx, flash_attn=fa, n_batch=512, n_ubatch=ub,
                       cache_type_k=cache, cache_type_v=cache)
    assert plan.verdict == "cpu" and plan.flash_attn is fa
    return plan.devices[-1].compute


# -- against llama.cpp itself ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_compute_matches_llama_cpp(model: str, model_files: dict[str, Path], metas: dict[str, ModelMeta]) -> None:
    """Every setting of one model in one test: one file, many loads (each well under a second)."""
    from app.core.fit import quants
    from app.core.fit.llama_log import LlamaLogCapture
    from app.core.machine import llama_cpp_module

    llama_cpp = llama_cpp_module()
    misses = []
    for n_ctx, fa, cache, ub in SETTINGS:
        kwargs = {} if cache == "f16" else {"type_k": int(quants.parse_type(cache)),
                                            "type_v": int(quants.parse_type(cache))}
        with LlamaLogCapture() as log:
            llm = llama_cpp.Llama(str(model_files[model]), n_ctx=n_ctx, n_batch=512, n_ubatch=ub, flash_attn=fa,
                                  n_gpu_layers=0, swa_full=False, n_threads=1, verbose=False, **kwargs)
            del llm
        measured = log.buffer_sizes()
        planned = _planned_compute(metas[model], n_ctx, fa, cache, ub)
        total = measured.total("compute") + measured.total("output")
        if not _close(planned, total):
            misses.append((n_ctx, fa, cache, ub, round(planned / MiB, 2), total))
    assert not misses, misses


# -- against recorded measurements (no llama.cpp needed) -------------------------------------

#: llama-cpp-python 0.3.36, CPU, n_gpu_layers 0, swa_full off: `CPU compute buffer size`, MiB.
RECORDED = {
    ("llama3-8b", 512, False, "f16", 512): 121.01, ("llama3-8b", 4096, False, "f16", 512): 308.01,
    ("llama3-8b", 16384, False, "f16", 512): 1100.01, ("llama3-8b", 512, True, "f16", 512): 116.51,
    ("llama3-8b", 4096, True, "f16", 512): 120.01, ("llama3-8b", 16384, True, "f16", 512): 132.01,
    ("llama3-8b", 16384, True, "q8_0", 512): 124.09, ("llama3-8b", 4096, True, "f16", 128): 30.00,
    ("qwen3-30b-a3b", 512, True, "f16", 512): 88.51, ("qwen3-30b-a3b", 4096, True, "f16", 512): 92.01,
    ("qwen3-30b-a3b", 16384, True, "f16", 512): 104.01, ("qwen3-30b-a3b", 4096, False, "f16", 512): 294.01,
    ("qwen3-30b-a3b", 16384, False, "f16", 128): 271.50,
    ("gemma3-12b", 512, False, "f16", 512): 130.51, ("gemma3-12b", 4096, False, "f16", 512): 186.01,
    ("gemma3-12b", 16384, False, "f16", 512): 594.01, ("gemma3-12b", 4096, True, "f16", 512): 126.02,
    ("gemma3-12b", 16384, True, "q8_0", 512): 138.55, ("gemma3-12b", 16384, True, "f16", 128): 34.44,
    ("gemma2-9b", 512, True, "f16", 512): 114.02, ("gemma2-9b", 4096, False, "f16", 512): 197.01,
    ("gemma2-9b", 16384, False, "f16", 512): 592.01, ("gemma2-9b", 16384, True, "f16", 512): 133.52,
    ("smollm2", 512, True, "f16", 512): 98.25, ("smollm2", 16384, False, "f16", 512): 326.38,
    ("smollm2", 16384, True, "q8_0", 512): 99.38, ("smollm2", 4096, False, "f16", 128): 24.84,
}


@pytest.mark.parametrize(("model", "n_ctx", "fa", "cache", "ub"), list(RECORDED))
def test_compute_matches_recorded(model: str, n_ctx: int, fa: bool, cache: str, ub: int,
                                  metas: dict[str, ModelMeta]) -> None:
    planned = _planned_compute(metas[model], n_ctx, fa, cache, ub)
    measured = RECORDED[(model, n_ctx, fa, cache, ub)]
    assert _close(planned, measured), (planned / MiB, measured)


#: The same log for the 2026 architectures' wide fixtures (tests/fixtures/arch_gguf.py WIDE), n_ubatch 512:
#: gated delta-net + gated-query attention (Qwen3-Next), Mamba-2 (Granite-4.0-H-Small widths), MLA.
RECORDED_ARCH = {
    ("qwen3next", 4096, True, "f16"): 66.03, ("qwen3next", 4096, False, "f16"): 178.03,
    ("qwen3next", 512, True, "q8_0"): 62.80, ("granitehybrid", 4096, True, "f16"): 114.98,
    ("granitehybrid", 16384, False, "f16"): 1101.03, ("deepseek2", 16384, True, "f16"): 96.15,
}


@pytest.fixture(scope="module")
def arch_metas() -> dict[str, ModelMeta]:
    from tests.fixtures import arch_gguf

    return {name: read_gguf(arch_gguf.arch_gguf(name, "wide")) for name in ("qwen3next", "granitehybrid",
                                                                              "deepseek2")}


@pytest.mark.parametrize(("model", "n_ctx", "fa", "cache"), list(RECORDED_ARCH))
def test_recurrent_and_mla_blocks_match_recorded(model: str, n_ctx: int, fa: bool, cache: str,
                                                 arch_metas: dict[str, ModelMeta]) -> None:
    planned = _planned_compute(arch_metas[model], n_ctx, fa, cache, 512)
    measured = RECORDED_ARCH[(model, n_ctx, fa, cache)]
    assert _close(planned, measured), (planned / MiB, measured)


def test_delta_net_layer_is_replayed_not_guessed(arch_metas: dict[str, ModelMeta]) -> None:
    """Qwen3-Next: three delta-net layers, then an attention layer; both kinds have a replayed graph,
    and with flash attention the delta-net layer (its QKV projection, conv input and fused output) is
    the larger block."""
    from app.core.fit.compute import _mixer

    meta = arch_metas["qwen3next"]
    assert [_mixer(meta, il) for il in range(4)] == ["delta_net"] * 3 + ["attention"]
    assert [_mixer(arch_metas["granitehybrid"], il) for il in (0, 4)] == ["mamba2", "attention"]
    s = _effective(4096, 512, 512, flash_attn=True, cache_type_k="f16", cache_type_v="f16", swa_full=False)
    assert _block_compute(meta, 0, s) > _block_compute(meta, 3, s)


def test_block_peak_holds_the_ffn_and_the_mask(metas: dict[str, ModelMeta]) -> None:
    """Llama-3-8B widths, flash attention: gate, up and their SwiGLU (3 x 14336 wide) above the
    residual, the never-freed embeddings input and the f16 mask; each 512 cells add the mask's share."""
    meta = metas["llama3-8b"]
    peaks = []
    for n_ctx in (512, 4096, 16384):
        s = _effective(n_ctx, 512, 512, flash_attn=True, cache_type_k="f16", cache_type_v="f16", swa_full=False)
        peaks.append(max(_block_compute(meta, il, s) for il in range(meta.n_layer)))
    assert peaks[1] - peaks[0] == (4096 - 512) * 512 * 2  # the f16 KQ mask, alive through the graph
    assert peaks[2] - peaks[1] == (16384 - 4096) * 512 * 2
    # Half the micro-batch, a quarter... every activation scales with n_ubatch.
    s128 = _effective(4096, 512, 128, flash_attn=True, cache_type_k="f16", cache_type_v="f16", swa_full=False)
    assert abs(_block_compute(meta, 0, s128) * 4 - peaks[1]) < MiB


def test_logits_bound_model_plans_logits_above_the_last_block(metas: dict[str, ModelMeta]) -> None:
    meta = metas["smollm2"]
    s = _effective(512, 512, 512, flash_attn=True, cache_type_k="f16", cache_type_v="f16", swa_full=False)
    logits = _logits_compute(meta, s, cpu=True)
    assert logits >= meta.n_vocab * 512 * 4 > max(_block_compute(meta, il, s) for il in range(meta.n_layer))
    # A GPU's output buffer: the logits and one n_embd-wide activation (measured on CUDA).
    assert _logits_compute(meta, s, cpu=False) == 512 * 4 * (meta.n_vocab + meta.n_embd)


def test_allocator_best_fit_and_merging() -> None:
    """ggml_dyn_tallocr: best fit below the top (last of equal sizes), else the top; frees merge."""
    a = _Alloc()
    x, y, z = a.alloc(100), a.alloc(50), a.alloc(100)
    assert (x, y, z, a.peak) == (0, 100, 150, 250)
    a.release(x, 100)
    assert a.alloc(40) == 0  # the 100-byte hole fits
    a.release(y, 50)  # merges with the hole's rest [40, 100)
    assert a.free == [[40, 110]]
    assert a.alloc(200) == 250 and a.peak == 450  # nothing fits: the top grows
    a.release(250, 200)
    a.release(z, 100)  # the top comes down over the merged hole
    assert a.top == 40 and a.free == []
