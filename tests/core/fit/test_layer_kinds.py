"""Per-layer memory kinds: attention, recurrent state, both; MLA's K-only cache.

The proof runs llama.cpp itself: every architecture of tests/fixtures/arch_gguf.py
(real metadata keys, the tensor table llama.cpp's load_tensors requires, zero data)
is loaded at several settings and the plan's weights, KV cache, recurrent
state and compute buffer are compared with llama.cpp's own buffer log.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from app.core.errors import ModelFileError
from app.core.fit.architectures import ATTENTION, BOTH, NO_CACHE, RECURRENT
from app.core.fit.gguf_meta import read_gguf
from app.core.fit.layers import _effective, layer_kv_bytes, layer_state_bytes
from app.core.fit.llama_log import LlamaLogCapture, parse_buffer_sizes
from app.core.fit.memory import plan_memory
from app.core.machine import llama_cpp_module
from app.core.machine.hardware import CpuInfo, GiB, HardwareProfile, MiB, RamInfo, assumed_backend
from tests.fixtures import arch_gguf
from tests.fixtures.synthetic_gguf import write_gguf

A, R, B, N = ATTENTION, RECURRENT, BOTH, NO_CACHE


def _cpu() -> HardwareProfile:
    ram = 64 * GiB
    return HardwareProfile(os="linux", arch="x86_64", cpu=CpuInfo(), ram=RamInfo(ram, ram - 4 * GiB),
                           backend=assumed_backend([], unified=False))


@pytest.fixture(scope="module")
def folder() -> Path:
    return arch_gguf.default_dir()


def _settings(n_ctx: int = 4096, fa: bool = True, cache: str = "f16") -> Any:
    return _effective(n_ctx, 512, 512, flash_attn=fa, cache_type_k=cache, cache_type_v=cache, swa_full=False)


# -- what the header says each layer is -------------------------------------------------------------

KINDS = {
    "qwen3next": [R, R, R, A, R, R, R, A],
    "qwen35": [R, R, R, A, R, R, R, A],
    "qwen35moe": [R, R, A, R, R, A],
    "granitehybrid": [R, R, A, R, R, A],
    "nemotron_h": [R, N, A, R, N, N],
    "nemotron_h_moe": [R, N, A, R, N, N],
    "lfm2": [R, R, A, R, A, R],
    "lfm2moe": [R, R, A, R, A, R],
    "falcon-h1": [B] * 4,
    "mamba": [R] * 4,
    "mamba2": [R] * 4,
    "jamba": [R, A, R, R],
    "kimi-linear": [R, R, A, R],
    "deepseek2": [A] * 4,
    "qwen3moe": [A] * 4,
}


@pytest.mark.parametrize("name", sorted(KINDS))
def test_layer_kinds_follow_llama_cpp(name: str, folder: Path) -> None:
    meta = read_gguf(arch_gguf.arch_gguf(name, "toy", folder))
    assert meta.layer_kinds == KINDS[name]
    # Every architecture here has a rule for each of its layers: nothing approximate.
    assert not meta.approximate and not meta.unpriced_layers and not meta.warnings
    s = _settings()
    for il, kind in enumerate(meta.layer_kinds):
        assert (layer_kv_bytes(meta, il, s) > 0) == (kind in (A, B)), il
        assert (layer_state_bytes(meta, il, s) > 0) == (kind in (R, B)), il


def test_state_sizes_are_llama_cpps_n_embd_r_and_s(folder: Path) -> None:
    qwen = read_gguf(arch_gguf.arch_gguf("qwen3next", "wide", folder))
    # Qwen3-Next-80B: conv (4-1) x (4096 + 2*16*128), delta-net 128 x 4096, f32, one sequence.
    assert (qwen.state_r, qwen.state_s) == (3 * 8192, 128 * 4096)
    assert layer_state_bytes(qwen, 0, _settings()) == 4 * (3 * 8192 + 128 * 4096)
    lfm = read_gguf(arch_gguf.arch_gguf("lfm2", "toy", folder))
    assert (lfm.state_r, lfm.state_s) == (128 * 2, 0)  # n_embd x (l_cache - 1), no SSM state
    kimi = read_gguf(arch_gguf.arch_gguf("kimi-linear", "toy", folder))
    assert (kimi.state_r, kimi.state_s) == (3 * 3 * 4 * 16, 16 * 16 * 4)
    mamba = read_gguf(arch_gguf.arch_gguf("mamba", "toy", folder))
    assert (mamba.state_r, mamba.state_s) == (3 * 256, 16 * 256)  # Mamba-1: no groups


def test_mla_caches_k_only(folder: Path) -> None:
    meta = read_gguf(arch_gguf.arch_gguf("deepseek2", "wide", folder))
    assert meta.mla and not meta.approximate
    for fa in (False, True):
        # DeepSeek-V2-Lite: 576 = kv_lora_rank 512 + RoPE key 64, one "head", f16, no V.
        assert layer_kv_bytes(meta, 0, _settings(4096, fa)) == 4096 * 576 * 2
    legacy = read_gguf(arch_gguf.arch_gguf("deepseek2@legacy", "toy", folder))
    assert not legacy.mla  # no key_length_mla: llama.cpp stores full K and V per head
    assert layer_kv_bytes(legacy, 0, _settings(4096)) == 4096 * 4 * (96 + 64) * 2


def test_mamba_plans_instead_of_being_refused(folder: Path) -> None:
    meta = read_gguf(arch_gguf.arch_gguf("mamba", "toy", folder))
    assert meta.n_head == 0
    plan = plan_memory(meta, _cpu(), n_ctx=4096)
    ram = plan.devices[-1]
    assert plan.verdict == "cpu" and ram.kv_cache == 0
    assert ram.recurrent_state == 4 * 4 * (3 * 256 + 16 * 256)


def test_v_is_padded_to_the_widest_layer_without_flash_attention() -> None:
    from app.core.fit.architectures import ArchConstants
    from app.core.fit.gguf_meta import ModelMeta

    meta = ModelMeta.from_architecture(ArchConstants("llama", 4, 128, 4, [4, 2, 2, 1], 256, 256), "F16")
    # Measured: llama.cpp 0.3.36 allocates K 2.25 MiB + V 4.00 MiB (FA off) / 2.25 MiB (FA on) at 4096 cells.
    assert sum(layer_kv_bytes(meta, il, _settings(4096, False)) for il in range(4)) == int(6.25 * MiB)
    assert sum(layer_kv_bytes(meta, il, _settings(4096, True)) for il in range(4)) == int(4.5 * MiB)


# -- bad headers: a typed error with a fix, or an approximate plan that names the layers ------------

def _write(tmp_path: Path, arch: str, kv: dict[str, Any], tensors: list | None = None) -> Path:
    path = tmp_path / f"{arch}.gguf"
    base = {"block_count": 4, "embedding_length": 64, "attention.head_count": 4, "attention.head_count_kv": 2,
            "context_length": 4096, "feed_forward_length": 128}
    write_gguf(path, arch, tensors or [], kv={**base, **kv}, n_tokens=16)
    return path


_SSM = {"ssm.conv_kernel": 4, "ssm.inner_size": 128, "ssm.state_size": 16, "ssm.time_step_rank": 4,
        "ssm.group_count": 2}


@pytest.mark.parametrize(("arch", "kv", "says"), [
    ("qwen3next", {**_SSM, "full_attention_interval": 8}, "larger than its 4 layers"),
    ("qwen3next", {**_SSM, "full_attention_interval": 0}, "full_attention_interval is 0"),
    ("qwen3next", {**_SSM, "attention.recurrent_layers": [1, 1, 0]}, "3 entries for 4 layers"),
    ("qwen3next", {**_SSM, "attention.recurrent_layers": [1, 2, 1, 0]}, "every entry must be a whole number from 0 to 1"),
    ("granitehybrid", {**_SSM, "attention.head_count_kv": [0, 0, 2]}, "3 entries for 4 layers"),
    ("nemotron_h", {**_SSM, "feed_forward_length": [0, 0, 0, 0, 0]}, "5 entries for 4 layers"),
    ("mamba2", {**_SSM, "ssm.state_size": 1 << 24}, "outside any real model's range"),
    ("mamba2", {k: v for k, v in _SSM.items() if k != "ssm.inner_size"}, "lacks mamba2.ssm.inner_size"),
    ("lfm2", {"attention.head_count_kv": [0, 2, 0, 2]}, "lacks lfm2.shortconv.l_cache"),
    ("qwen35", {**_SSM, "attention.head_count_kv": [2, 2, 2, 0]}, "layer 3 is an attention layer with 0 KV"),
])
def test_contradictory_hybrid_metadata_is_a_typed_error(tmp_path: Path, arch: str, kv: dict, says: str) -> None:
    with pytest.raises(ModelFileError) as info:
        read_gguf(_write(tmp_path, arch, kv))
    assert says in info.value.message, info.value.message
    assert info.value.fix


def test_negative_ssm_size_is_a_typed_error(tmp_path: Path) -> None:
    from gguf import GGUFWriter

    path = tmp_path / "neg.gguf"
    writer = GGUFWriter(path, "mamba")
    for key, value in {"block_count": 2, "embedding_length": 64, "context_length": 4096,
                       "ssm.conv_kernel": 4, "ssm.inner_size": 128, "ssm.time_step_rank": 4}.items():
        writer.add_uint32(f"mamba.{key}", value)
    writer.add_int32("mamba.ssm.state_size", -16)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    with pytest.raises(ModelFileError, match="state_size is -16"):
        read_gguf(path)


def test_hybrid_without_rules_is_approximate_and_names_the_layers(tmp_path: Path) -> None:
    meta = read_gguf(_write(tmp_path, "plamo2", _SSM))
    assert meta.approximate and meta.unpriced_layers == [0, 1, 2, 3]
    assert any("layers 0-3" in w for w in meta.warnings)
    plan = plan_memory(meta, _cpu(), n_ctx=4096)
    assert plan.approximate and any("layers 0-3" in r for r in plan.reasons)


def test_unknown_architecture_with_state_keys_says_its_state_is_not_counted(tmp_path: Path) -> None:
    meta = read_gguf(_write(tmp_path, "mystery-ssm", _SSM))
    assert meta.approximate and meta.unpriced_layers == [0, 1, 2, 3]
    assert any("not counted" in w for w in meta.warnings)


def test_plain_transformer_stays_exact(tmp_path: Path) -> None:
    meta = read_gguf(_write(tmp_path, "qwen3moe", {"expert_count": 4, "expert_used_count": 2}))
    assert not meta.approximate and meta.layer_kinds == [A] * 4


# -- against llama.cpp's own buffers ----------------------------------------------------------------

_RS_RE = re.compile(r"^\S*llama_memory_recurrent\w*:\s+(\S+) RS buffer size =\s+([\d.]+) MiB", re.M)

#: (n_ctx, flash_attn, cache type); a quantized V cache needs flash attention.
SETTINGS = [(n, fa, c) for n in (512, 4096, 16384) for fa, c in ((False, "f16"), (True, "f16"), (True, "q8_0"))]


def _rs_mib(text: str) -> float:
    sizes = parse_buffer_sizes(text)
    rs = getattr(sizes, "rs", None)
    if isinstance(rs, dict):
        return sum(rs.values())
    return sum(float(mib) for _, mib in _RS_RE.findall(text))


def measure(path: Path, n_ctx: int, fa: bool, cache: str) -> dict[str, Any]:
    """Plan one setting and load it with llama.cpp: MiB per component, planned and measured."""
    meta = read_gguf(path)
    plan = plan_memory(meta, _cpu(), n_ctx=n_ctx, flash_attn=fa, cache_type_k=cache, cache_type_v=cache,
                       n_batch=512, n_ubatch=512)
    llama_cpp = llama_cpp_module()
    kwargs = plan.llama_kwargs()
    assert kwargs["n_ctx"] == n_ctx and kwargs["flash_attn"] is fa
    with LlamaLogCapture() as log:
        llm = llama_cpp.Llama(str(path), n_threads=1, verbose=False, **kwargs)
        del llm
    measured = parse_buffer_sizes(log.text)
    ram = plan.devices[-1]
    return {"weights": (ram.weights / MiB, measured.total("model")),
            "kv_cache": (ram.kv_cache / MiB, measured.total("kv")),
            "recurrent_state": (ram.recurrent_state / MiB, _rs_mib(log.text)),
            "compute": (ram.compute / MiB, measured.total("compute") + measured.total("output"))}


def _close(planned: float, measured: float) -> bool:
    """The proof rule alone: within 5 % or 8 MiB."""
    return abs(planned - measured) <= max(0.05 * measured, 8.0)


def _within(planned: float, measured: float) -> bool:
    """The proof rule (5 % or 8 MiB) and, tighter, the log's own rounding (2 decimals of MiB)."""
    return abs(planned - measured) <= max(0.05 * measured, 8.0) and abs(planned - measured) <= max(
        0.011, 0.001 * measured)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "width"), arch_gguf.arch_names())
def test_plan_matches_llama_cpp_buffers(name: str, width: str, folder: Path) -> None:
    path = arch_gguf.arch_gguf(name, width, folder)
    bad = []
    for n_ctx, fa, cache in SETTINGS:
        for component, (planned, measured) in measure(path, n_ctx, fa, cache).items():
            # Buffers the plan sums exactly must match to the log's rounding; compute is the replayed
            # allocator's peak (or, for layer kinds without a replayed graph, a closed form): the proof rule.
            ok = _close(planned, measured) if component == "compute" else _within(planned, measured)
            if not ok:
                bad.append(f"{n_ctx} fa={fa} {cache} {component}: plan {planned:.3f} MiB, llama.cpp {measured:.3f}")
    assert not bad, "\n".join(bad)
