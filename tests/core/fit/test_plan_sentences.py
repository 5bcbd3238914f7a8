"""What the plan says about the settings it assumed, the context asked for, and files it cannot load
(UX findings 18, 19, 20, 25)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.errors import TruncatedGGUFError, UsageError
from app.core.fit.gguf_meta import read_gguf
from app.core.fit.loadplan import LoadChoices, load_notices, plan_with_choices
from app.core.fit.memory import context_notes, plan_memory
from app.core.machine import hardware
from app.core.machine.hardware import GiB
from app.core.machine.simulate import preset_profile


def test_context_notes_say_how_far_past_the_trained_length() -> None:
    (note,) = context_notes(8192, n_ctx=32768, ctx_cap=8192)
    assert "32,768 tokens is 4× the 8,192 this model was trained for" in note
    assert context_notes(8192, n_ctx=8192, ctx_cap=8192) == []
    assert context_notes(8192, n_ctx=4096, ctx_cap=131072) == []
    (capped,) = context_notes(8192, n_ctx=None, ctx_cap=131072)
    assert "at most 8,192 tokens" in capped and "131,072" in capped
    assert context_notes(None, n_ctx=99_999, ctx_cap=8192) == []


def test_plan_with_a_context_past_the_trained_length_says_so(starter_model: Path) -> None:
    meta = read_gguf(starter_model)
    plan = plan_memory(meta, preset_profile("workstation-64gb-cpu"), n_ctx=meta.n_ctx_train * 4)
    assert any(f"4× the {meta.n_ctx_train:,}" in r for r in plan.reasons)
    within = plan_memory(meta, preset_profile("workstation-64gb-cpu"), n_ctx=meta.n_ctx_train)
    assert not any("trained for;" in r for r in within.reasons)


def test_load_notices_say_when_settings_ask_for_more_than_the_model_knows(starter_model: Path) -> None:
    meta = read_gguf(starter_model)
    machine = preset_profile("workstation-64gb-cpu")
    choices = LoadChoices(context_length=131072)
    notices = load_notices(plan_with_choices(meta, machine, choices), choices)
    assert any(f"at most {meta.n_ctx_train:,} tokens" in n and "131,072" in n for n in notices)
    exact = LoadChoices(n_ctx=meta.n_ctx_train * 4)
    assert any("4×" in n for n in load_notices(plan_with_choices(meta, machine, exact), exact))
    plain = LoadChoices()
    assert load_notices(plan_with_choices(meta, machine, plain), plain) == []


def test_a_plan_with_flash_attention_off_says_chat_loads_it_on(starter_model: Path) -> None:
    meta = read_gguf(starter_model)
    machine = preset_profile("workstation-64gb-cpu")
    off = plan_memory(meta, machine, flash_attn=False)
    on = plan_memory(meta, machine, flash_attn=True)
    assert any("flash attention off; chat loads with it on" in r for r in off.reasons)
    assert not any("flash attention off" in r for r in on.reasons)
    # The engine's own defaults (LoadChoices) plan with it on, and that bill is chat's.
    assert plan_with_choices(meta, machine, LoadChoices()).flash_attn


def test_an_impossible_context_is_marked_before_anything_loads(starter_model: Path) -> None:
    meta = read_gguf(starter_model)
    machine = preset_profile("laptop-8gb-cpu")
    huge = plan_memory(meta, machine, n_ctx=99_999_999)
    assert huge.verdict == "no_fit" and huge.impossible
    assert huge.capacity_bytes == machine.ram.total_bytes
    assert not plan_memory(meta, machine).impossible
    # Weights bigger than RAM still load mapped (slowly); only the buffers beyond them are impossible.
    big = preset_profile("laptop-8gb-cpu")
    big.ram.total_bytes = big.ram.available_bytes = 64 * 1024**2
    small_ctx = plan_memory(meta, big, n_ctx=256)
    assert small_ctx.verdict == "no_fit"
    assert small_ctx.impossible == (small_ctx.total_bytes - small_ctx.weights_bytes > small_ctx.capacity_bytes)


def test_a_context_cap_of_zero_is_refused(starter_model: Path) -> None:
    with pytest.raises(UsageError, match="context cap of 0"):
        plan_memory(read_gguf(starter_model), preset_profile("laptop-8gb-cpu"), ctx_cap=0)


@pytest.mark.parametrize("keep", [5_000_000, 1])
def test_a_truncated_file_is_refused_by_its_tensor_table(starter_model: Path, tmp_path: Path, keep: int) -> None:
    """Cut anywhere in the tensor data (here 5 MB in, and one byte short of the end): never "fits"."""
    data = starter_model.read_bytes()
    cut = tmp_path / "trunc.gguf"
    cut.write_bytes(data[:keep] if keep > 1 else data[:-keep])
    with pytest.raises(TruncatedGGUFError, match="is incomplete") as err:
        read_gguf(cut)
    assert "Download the file again" in str(err.value)


def test_tiny_machines_keep_a_quarter_not_a_gibibyte() -> None:
    assert hardware.ram_reserve_bytes(2 * GiB) == GiB // 2
    assert hardware.ram_reserve_bytes(8 * GiB) == GiB
    assert hardware.ram_reserve_bytes(16 * GiB) == int(1.6 * GiB)
    assert hardware.ram_reserve_bytes(128 * GiB) == 4 * GiB
    assert hardware.simulated_available_ram(2 * GiB) == 2 * GiB - GiB // 2
    assert hardware.simulated_available_ram(16 * GiB) == 16 * GiB - int(2.4 * GiB)
