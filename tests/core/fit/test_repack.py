"""CPU weight repacking: the rule (repack.py) against llama.cpp's own buffer report, per file and mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.chat.engine import LoadParams, _load_llama
from app.core.fit import repack
from app.core.fit.gguf_meta import ModelMeta, TensorInfo, read_gguf
from app.core.fit.llama_log import LlamaLogCapture, parse_buffer_sizes
from app.core.fit.memory import plan_memory
from app.core.machine import detect, llama_cpp_module
from app.core.machine.simulate import preset_profile
from tests.fixtures.quantized import quantized

MiB = 1024**2
AVX2 = repack.RepackRule(frozenset({"AVX2"}))
AVX512 = repack.RepackRule(frozenset({"AVX2", "AVX512"}))
NEON_I8MM = repack.RepackRule(frozenset({"NEON", "DOTPROD", "I8MM"}))
NEON_DOT = repack.RepackRule(frozenset({"NEON", "DOTPROD"}))
PLAIN = repack.RepackRule(frozenset({"AVX", "F16C", "FMA"}))


@pytest.fixture(scope="session")
def smol_files(starter_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The Q4_1 test model and Q4_0 / Q4_K_M / Q4_0-with-Q4_0-embedding files made from it."""
    folder = tmp_path_factory.mktemp("quantized")
    llama_cpp_module()
    return {"Q4_1": starter_model, **{name: quantized(starter_model, name, folder)
                                      for name in ("Q4_0", "Q4_K_M", "Q4_0-embd")}}


def _close(planned: int, measured: int) -> bool:
    return abs(planned - measured) <= max(MiB, 0.02 * measured)


# -- the rule ---------------------------------------------------------------------------


def test_layouts_follow_ggml_repack_get_optimal_repack_type() -> None:
    assert repack.layout(AVX2, repack.Q4_0, 576) == "q4_0_8x8"
    assert repack.layout(AVX2, repack.Q4_0, 580) is None  # rows not a multiple of 8
    assert repack.layout(AVX2, repack.Q4_K, 1536) == "q4_K_8x8"
    assert repack.layout(AVX2, repack.IQ4_NL, 64) == "iq4_nl_8x8"
    assert repack.layout(AVX2, repack.MXFP4, 64) == "mxfp4_8x8"
    assert repack.layout(AVX2, repack.Q8_0, 64) is None  # Q8_0 repacks on ARM only
    assert repack.layout(AVX2, repack.Q2_K, 64) is None and repack.layout(AVX512, repack.Q2_K, 64) == "q2_K_8x8"
    assert repack.layout(PLAIN, repack.Q4_0, 64) is None  # no AVX2: nothing
    assert repack.layout(NEON_I8MM, repack.Q4_0, 4) == "q4_0_4x8"
    assert repack.layout(NEON_DOT, repack.Q4_0, 4) == "q4_0_4x4"
    assert repack.layout(NEON_I8MM, repack.Q8_0, 4) == "q8_0_4x8"
    assert repack.layout(NEON_DOT, repack.Q6_K, 8) == "q6_K_8x4"
    assert repack.layout(NEON_I8MM, repack.Q5_K, 8) == "q5_K_8x8"
    assert repack.layout(NEON_DOT, repack.Q4_K, 4) is None  # Q4_K needs rows % 8
    assert repack.layout(AVX2, 3, 64) is None  # Q4_1 never


def test_which_tensors_repack() -> None:
    def t(name: str, shape: tuple[int, ...], ggml_type: int = repack.Q4_0) -> TensorInfo:
        return TensorInfo(name, shape, ggml_type, 0)

    assert repack.repacks(t("blk.0.attn_q.weight", (576, 576)), AVX2)
    assert not repack.repacks(t("token_embd.weight", (576, 49152)), AVX2)  # GET_ROWS
    assert repack.repacks(t("token_embd.weight", (576, 49152)), AVX2, name="output.weight")  # the tied output
    assert repack.repacks(t("output.weight", (576, 49152)), AVX2)
    assert not repack.repacks(t("blk.0.attn_norm.weight", (576,)), AVX2)
    assert repack.repacks(t("blk.0.ffn_up_exps.weight", (2880, 2880, 32), repack.MXFP4), AVX2)
    assert not repack.repacks(t("blk.0.ffn_up_exps.weight", (2880, 2880), repack.MXFP4), AVX2)
    assert not repack.repacks(t("blk.0.attn_q.weight", (576, 576, 2)), AVX2)  # MUL_MAT wants 2-D
    assert repack.repacks(t("blk.0.attn_q.weight", (576, 576, 1)), AVX2)  # ggml_n_dims drops trailing 1s
    assert not repack.repacks(t("blk.0.attn_q.weight", (576, 576)), repack.RepackRule(AVX2.features, False))


def test_features_come_from_the_cpu_code_llama_cpp_runs() -> None:
    here = detect()
    assert repack.cpu_features(here) == repack.cpu_features(None)
    assert "AVX2" in repack.features_from_system_info("CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 0 | REPACK = 1 |")
    assert "AVX512" not in repack.features_from_system_info("CPU : AVX2 = 1 | AVX512 = 0 |")
    assert repack.cpu_features(preset_profile("m2-air-16gb")) >= {"NEON", "DOTPROD", "I8MM"}
    assert "AVX512" in repack.cpu_features(preset_profile("workstation-64gb-cpu"))  # AVX512F flag


# -- plans against llama.cpp -----------------------------------------------------------


@pytest.mark.parametrize("mode", repack.MODES)
@pytest.mark.parametrize("name", ["Q4_1", "Q4_0", "Q4_K_M", "Q4_0-embd"])
def test_plan_matches_llama_cpps_cpu_buffers(smol_files: dict[str, Path], name: str, mode: str) -> None:
    path = smol_files[name]
    hardware = detect()
    plan = plan_memory(read_gguf(path), hardware, n_ctx=512, n_gpu_layers=0, cpu_repack=mode, improvements=False)
    params = LoadParams.from_plan(plan, n_threads=2)
    with LlamaLogCapture() as log:
        llm = _load_llama(str(path), params.llama_kwargs(), lambda _f: True)
        llm.close()
    sizes = parse_buffer_sizes(log.text)
    ram = plan.devices[-1]
    assert _close(ram.weights, sizes.bytes("weights")), (ram.weights / MiB, sizes.model)
    assert _close(ram.repack, sizes.bytes("repack")), (ram.repack / MiB, sizes.model)
    mapped = "CPU_Mapped" in sizes.model
    assert mapped is plan.use_mmap
    features = repack.cpu_features(hardware)
    if "AVX2" in features and name != "Q4_1" and mode != "off" and not plan.devices[:-1]:
        # This machine repacks: the check above compared real CPU_REPACK buffers.
        assert ram.repack > 0 and sizes.bytes("repack") > 0
        assert plan.use_mmap is (mode == "repack_mmap")
    if mode == "off" or ram.repack == 0:
        assert plan.use_mmap and sizes.bytes("repack") == 0


def test_repack_without_mmap_is_one_copy_and_with_mmap_two(smol_files: dict[str, Path]) -> None:
    meta = read_gguf(smol_files["Q4_0"])
    rule = repack.RepackRule(frozenset({"AVX2"}), True, False)
    one = repack.cpu_weights(meta, rule, meta.n_layer, True)
    two = repack.cpu_weights(meta, repack.RepackRule(rule.features, True, True), meta.n_layer, True)
    none = repack.cpu_weights(meta, repack.RepackRule(rule.features, False, True), meta.n_layer, True)
    assert one.repack == two.repack > 0 and none.repack == 0
    # Without mmap: the rest + the repacked matrices are the file's tensors, once.
    assert abs(one.weights + one.repack - none.weights) < MiB
    # With mmap: the mapping still spans most repacked matrices.
    assert two.weights + two.repack > none.weights + 0.9 * two.repack
    assert two.mapped_twice > 0.9 * two.repack


def test_tied_output_copy_is_repacked_when_token_embd_is(smol_files: dict[str, Path]) -> None:
    meta = read_gguf(smol_files["Q4_0-embd"])
    embd = next(t for t in meta.tensors if t.name == "token_embd.weight")
    assert meta.tied_embeddings and embd.ggml_type == repack.Q4_0
    rule = repack.RepackRule(frozenset({"AVX2"}), True, False)
    with_output = repack.cpu_weights(meta, rule, meta.n_layer, True)
    without = repack.cpu_weights(meta, rule, meta.n_layer, False)
    assert with_output.repack - without.repack == embd.n_bytes


# -- GPU placements ----------------------------------------------------------------------


def test_offloaded_layers_put_no_repack_bytes_in_ram(smol_files: dict[str, Path]) -> None:
    meta = read_gguf(smol_files["Q4_0"])
    mac = preset_profile("m2-air-16gb")  # Metal: no host buffer, so CPU layers repack (NEON + I8MM)
    rule = repack.RepackRule(repack.cpu_features(mac), True, False)
    per_block = [sum(t.n_bytes for t in meta.tensors if t.layer == il and repack.repacks(t, rule))
                 for il in range(meta.n_layer)]
    assert all(per_block)
    cpu_only = plan_memory(meta, mac, n_ctx=512, n_gpu_layers=0, improvements=False)
    half = plan_memory(meta, mac, n_ctx=512, n_gpu_layers=11, improvements=False)
    full = plan_memory(meta, mac, n_ctx=512, n_gpu_layers=-1, improvements=False)
    # On the CPU the tied output is token_embd (Q8_0) used as a matmul: ARM repacks Q8_0, so a copy.
    embd = next(t for t in meta.tensors if t.name == "token_embd.weight")
    assert embd.ggml_type == repack.Q8_0
    assert cpu_only.devices[-1].repack == sum(per_block) + embd.n_bytes
    ram = half.devices[-1]
    assert ram.layers == 20 and ram.repack == sum(per_block[:20])  # only the CPU's 20 blocks
    assert all(d.repack == 0 for d in half.devices[:-1])
    assert full.devices[-1].repack == 0 and full.repack_bytes == 0
    # Nothing repacked, so the full offload keeps mmap on even in "repack" mode.
    assert full.use_mmap and not half.use_mmap
    assert full.llama_kwargs()["use_mmap"] is True and half.llama_kwargs()["use_mmap"] is False


def test_cuda_host_buffer_means_no_repack(smol_files: dict[str, Path]) -> None:
    meta = read_gguf(smol_files["Q4_0"])
    plan = plan_memory(meta, preset_profile("rtx-3060-12gb"), n_ctx=512, n_gpu_layers=10, improvements=False)
    assert plan.repack_bytes == 0 and plan.use_mmap
    assert any("host buffer" in r for r in plan.reasons)


def test_modes_reach_llama_kwargs_and_json(smol_files: dict[str, Path]) -> None:
    meta = read_gguf(smol_files["Q4_0"])
    hw = preset_profile("laptop-8gb-cpu")
    plans = {m: plan_memory(meta, hw, n_ctx=512, cpu_repack=m, improvements=False) for m in repack.MODES}
    assert plans["repack"].llama_kwargs()["use_mmap"] is False
    assert "use_extra_bufts" not in plans["repack"].llama_kwargs()
    assert plans["repack_mmap"].llama_kwargs()["use_mmap"] is True
    assert plans["off"].llama_kwargs()["use_extra_bufts"] is False and plans["off"].repack_bytes == 0
    doc = plans["repack_mmap"].to_dict()
    assert doc["bytes"]["repack"] == plans["repack_mmap"].repack_bytes > 0
    assert doc["settings"]["cpu_repack"] == "repack_mmap" and doc["settings"]["use_mmap"] is True
    # Two copies cost more RAM than one.
    assert plans["repack_mmap"].ram_total > plans["repack"].ram_total
    params = LoadParams.from_plan(plans["off"])
    assert params.use_extra_bufts is False and params.llama_kwargs()["use_extra_bufts"] is False
    with pytest.raises(Exception, match="CPU weight mode"):
        plan_memory(meta, hw, n_ctx=512, cpu_repack="sometimes")


def test_predicted_meta_is_laid_out_in_table_order() -> None:
    # No offsets (a model not downloaded): the writer's layout, table order, 32-byte padded.
    tensors = [TensorInfo("token_embd.weight", (64, 256), 8, 17408),
               TensorInfo("blk.0.attn_q.weight", (64, 64), repack.Q4_0, 2304),
               TensorInfo("output_norm.weight", (64,), 0, 256)]
    meta = ModelMeta(architecture="llama", n_layer=1, n_embd=64, n_head=1, n_head_kv=1, head_dim_k=64,
                     head_dim_v=64, n_vocab=256, n_ctx_train=512, tensors=tensors)
    mapped = repack.cpu_weights(meta, repack.RepackRule(frozenset({"AVX2"}), True, True), 1, True)
    # The repacked matrix lies between two mapped tensors: mapped and repacked (two copies).
    assert mapped.weights == 17408 + 2304 + 256 and mapped.repack == 2304 and mapped.mapped_twice == 2304
    read = repack.cpu_weights(meta, repack.RepackRule(frozenset({"AVX2"}), True, False), 1, True)
    assert read.weights == 17408 + 256 and read.repack == 2304


def test_setting_choices_are_the_modes() -> None:
    from app.core.settings import BY_KEY

    assert BY_KEY["cpu_repack"].choices == repack.MODES and BY_KEY["cpu_repack"].default == repack.DEFAULT_MODE


def test_log_parser_reads_repack_and_recurrent_state() -> None:
    text = ("load_tensors:   CPU_Mapped model buffer size =    85.30 MiB\n"
            "load_tensors:   CPU_REPACK model buffer size =    56.95 MiB\n"
            "llama_memory_recurrent:        CPU RS buffer size =     0.50 MiB\n"
            "llama_kv_cache:        CPU KV buffer size =    11.25 MiB\n")
    sizes = parse_buffer_sizes(text)
    assert sizes.repack == {"CPU_REPACK": 56.95} and sizes.weights == {"CPU_Mapped": 85.3}
    assert sizes.model == {"CPU_Mapped": 85.3, "CPU_REPACK": 56.95}
    assert sizes.rs == {"CPU": 0.5} and sizes.bytes("rs") == MiB // 2
    assert {"repack", "rs", "model"} <= set(sizes.to_dict())
