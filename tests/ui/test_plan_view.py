"""The plan on screen: bars and arithmetic show repacked copies and fixed-size state only where a plan has them."""

from __future__ import annotations

from app.ui.widgets.plan_view import PlanBars, arithmetic_text, device_parts

MiB = 1024 * 1024


def plan_doc(*, repack: int = 0, state: int = 0) -> dict:
    ram = {"name": "RAM", "kind": "ram", "budget": 8192 * MiB, "weights": 400 * MiB, "repack": repack,
           "kv_cache": 96 * MiB, "recurrent_state": state, "compute": 80 * MiB, "overhead": 128 * MiB}
    ram["total"] = sum(v for k, v in ram.items() if k not in ("name", "kind", "budget"))
    return {"model": {"name": "Tiny"}, "n_ctx": 4096, "n_layers": 24, "n_gpu_layers": 0, "verdict": "cpu",
            "devices": [ram], "kv_bytes_per_token": 24 * 1024,
            "bytes": {"recurrent_state": state, "repack": repack}, "reasons": [], "improvements": []}


def test_plain_attention_model_shows_the_four_usual_parts(qtbot) -> None:
    doc = plan_doc()
    assert [p.key for p in device_parts(doc["devices"][0])] == ["weights", "kv_cache", "compute", "overhead"]
    text = arithmetic_text(doc)
    assert "repacked" not in text and "conversation state" not in text
    assert "each 1,000 tokens of context add 23.4 MiB of KV cache" in text


def test_repack_and_recurrent_state_get_their_own_parts_and_words(qtbot) -> None:
    doc = plan_doc(repack=300 * MiB, state=70 * MiB)
    parts = {p.key: p for p in device_parts(doc["devices"][0])}
    assert parts["repack"].bytes == 300 * MiB and parts["repack"].label == "repacked copies"
    assert parts["recurrent_state"].label == "conversation state, fixed size"
    bars = PlanBars()
    qtbot.addWidget(bars)
    bars.set_plan(doc)
    assert len(bars.bars) == 1
    text = arithmetic_text(doc)
    assert "repacked copies" in text and "70.0 MiB" in text
    assert "the conversation state (70.0 MiB) stays the same size" in text
    # The device total in the text is the sum of every part, the optional ones included.
    assert "1.0 GiB   7.0 GiB to spare" in text  # 1,074 MiB in all
