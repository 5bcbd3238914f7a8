"""Sample content for screenshots: a simulated machine, a short conversation, a demo download."""

from __future__ import annotations

from PySide6.QtWidgets import QWidget


def prepare(window: QWidget, page: str) -> None:
    """Fill `page` of the main window with sample content, where the page has a demo mode."""
    widget = getattr(window, "pages", {}).get(page.capitalize())
    if widget is not None and hasattr(widget, "show_demo"):
        widget.show_demo()


def open_wizard(window, page: int | None = None):
    """The hardware-fit wizard over `window`, walked to `page` (default: the recommendation)."""
    from app.ui.wizard import PAGE_PICKS, SCREENSHOT_SIZE

    wizard = window.open_wizard()
    wizard.resize(*SCREENSHOT_SIZE)
    wizard.show_demo(PAGE_PICKS if page is None else page)
    return wizard


DEMO_CONVERSATION = (
    ("user", "How do I read a file line by line in Python?"),
    ("assistant", "Open it with a `with` block and iterate over the file object; Python reads one "
                  "line at a time, so even a huge file never sits in memory at once:\n\n"
                  "```python\nwith open(\"notes.txt\", encoding=\"utf-8\") as f:\n"
                  "    for line in f:\n        print(line.rstrip())\n```\n\n"
                  "- `rstrip()` drops the trailing newline.\n"
                  "- Pass `errors=\"replace\"` if the file may hold invalid UTF-8."),
    ("user", "And how many lines does it have?"),
    ("assistant", "Count them while iterating: `sum(1 for _ in f)`. It streams the file too, "
                  "so it works on files larger than your RAM."),
)
#: The model the Chat screenshot shows loaded, and the tokens its sample conversation holds.
DEMO_MODEL = ("Qwen/Qwen2.5-32B-Instruct", "Q4_K_M")
DEMO_CONTEXT = 8192
DEMO_USED_TOKENS = 211
from app.ui.screenshot import DEMO_PRESET  # noqa: E402  (one demo machine for every screenshot)


def demo_speed(model: str = DEMO_MODEL[0], quant: str = DEMO_MODEL[1], *, preset: str = DEMO_PRESET,
               n_ctx: int = DEMO_CONTEXT, used_tokens: int = DEMO_USED_TOKENS) -> float:
    """Tokens/s the speed model expects for `model` at `quant` on the simulated `preset` machine.

    The screenshot's figures come from here, so they are what Camelid itself would
    promise on that machine, never a hand-typed number.
    """
    from app.core.fit import (
        LoadChoices,
        cpu_bandwidth,
        estimate_speed,
        gpu_bandwidth,
        plan_with_choices,
        token_cost,
    )
    from app.core.machine import preset_profile
    from app.core.models import load_catalog

    hardware = preset_profile(preset)
    meta = load_catalog(include_user=False).get(model).meta(quant)
    plan = plan_with_choices(meta, hardware, LoadChoices(n_ctx=n_ctx), improvements=False)
    budgets = hardware.budgets()
    gpus = [(gpu_bandwidth(g.name, g.total_bytes), float(g.budget_bytes)) for g in budgets.gpus]
    # The KV cache read per token: the part of the context the conversation fills.
    kv_read = plan.kv_cache_bytes * used_tokens // max(1, plan.n_ctx)
    speed = estimate_speed(token_cost(meta), n_gpu_layers=int(plan.n_gpu_layers), gpus=gpus,
                           cpu=cpu_bandwidth(hardware), kv_read_bytes=kv_read, cpu_expert_layers=plan.cpu_moe)
    return round(speed.tokens_per_s, 1)


def demo_stats(reply: str, speed: float) -> dict[str, object]:
    """A finished reply's stats line: the speed model's tokens/s, and no first-token time (nothing models it)."""
    # About four characters a token for English prose and code (Qwen's tokenizer).
    return {"completion_tokens": max(1, round(len(reply) / 4)), "tokens_per_s": speed, "ttft_s": None,
            "stop_reason": "stop"}


def fill_chat(view) -> None:
    """The Chat page with a finished sample conversation and a model shown as loaded."""
    from PySide6.QtWidgets import QListWidgetItem

    for title in ("Reading files in Python", "Trip ideas for Lisbon", "Explain KV cache"):
        view.list.addItem(QListWidgetItem(title))
    view.list.setCurrentRow(0)
    view.model_picker.addItem("Qwen2.5-32B-Instruct-Q4_K_M", "demo")
    view.model_picker.setCurrentIndex(0)
    view.verdict.setText("Loaded · all on GPU · 8,192 tokens of context")
    speed = demo_speed()
    for role, text in DEMO_CONVERSATION:
        bubble = view._add_bubble(role, text)
        if role == "assistant":
            bubble.set_stats(demo_stats(text, speed))
    view.bubbles[-1].regenerate_button.setVisible(True)
    view.context_meter.setRange(0, DEMO_CONTEXT)
    view.context_meter.setValue(DEMO_USED_TOKENS)
    view.context_label.setText(f"{DEMO_USED_TOKENS:,} of {DEMO_CONTEXT:,} tokens")
    view.state.set_model({"name": "Qwen2.5-32B-Instruct-Q4_K_M", "verdict_text": "all on GPU",
                          "backend": "CUDA"})


def fill_models(view) -> None:
    """The Models page's Installed tab with a few sample models (sizes of the real files)."""
    from pathlib import Path

    from app.core.models import LibraryModel

    root = Path("~/.local/share/Camelid/models").expanduser()
    samples = (
        ("Qwen2.5-32B-Instruct-Q4_K_M", "Qwen/Qwen2.5-32B-Instruct-GGUF", "Q4_K_M", 19_851_336_256, "full_gpu",
         "camelid"),
        ("Qwen2.5-Coder-14B-Instruct-Q6_K", "bartowski/Qwen2.5-Coder-14B-Instruct-GGUF", "Q6_K",
         12_124_684_480, "full_gpu", "camelid"),
        ("Llama-3.3-70B-Instruct-Q4_K_M", "bartowski/Llama-3.3-70B-Instruct-GGUF", "Q4_K_M",
         42_520_398_432, "partial", "lmstudio"),
        ("SmolLM2-135M-Instruct.Q4_1", None, "Q4_1", 98_362_432, "full_gpu", "camelid"),
    )
    models = []
    for name, repo, quant, size, verdict, source in samples:
        path = root / (repo or "") / f"{name}.gguf"
        models.append(LibraryModel(name=name, path=path, files=(path,), size_bytes=size, source=source,
                                   repo_id=repo, quant=quant, verdict=verdict))
    view._show_installed(models)


def fill_server(view) -> None:
    """The Local server page running, with the demo model loaded and a few finished requests."""
    import time

    from app.core.server.service import RequestRecord
    from app.ui.server_view import serving_text

    name = "Qwen2.5-32B-Instruct-Q4_K_M"
    speed = demo_speed()
    view.url_field.set_text("http://127.0.0.1:1234")
    view.state_label.setText("Running on port 1234")
    view.switch.setText("Stop server")
    view.switch.setProperty("primary", False)
    view.switch.style().unpolish(view.switch)
    view.switch.style().polish(view.switch)
    view.switch.setEnabled(True)
    for widget in (view.port_box, view.cors_edit, view.lan_box):
        widget.setEnabled(False)
    view.state.set_model({"name": name, "verdict_text": "all on GPU", "backend": "CUDA"})
    view.serving_label.setText(serving_text(1))
    now = time.time()
    for ago, method, route, prompt, completion, status in (
            (95, "GET", "/v1/models", 0, 0, 200),
            (80, "POST", "/v1/chat/completions", 412, 96, 200),
            (41, "POST", "/api/chat", 128, 240, 200),
            (12, "POST", "/v1/chat/completions", 1_024, 310, 200)):
        view.add_record(RequestRecord(at=now - ago, method=method, route=route, model=name if prompt else None,
                                      prompt_tokens=prompt, completion_tokens=completion,
                                      tokens_per_s=speed if completion else None, status=status))
    view._names = [name]
    view._refresh_snippets()


def fill_documents(view) -> None:
    """The Documents page with two sample collections, the first one's files listed (no index, no model)."""
    from pathlib import Path

    from app.core.docs.store import Collection, Document

    root = Path("~/Documents").expanduser()
    handbook = root / "Team handbook"
    files = (
        ("Onboarding.pdf", "pdf", 24, 61, None),
        ("Expenses policy.docx", "docx", None, 18, None),
        ("Security checklist.md", "markdown", None, 9, None),
        ("Office map.pdf", "pdf", None, 0,
         "Office map.pdf has no text layer (it looks like a scan). Run it through OCR, then add it again."),
        ("Release notes.html", "html", None, 27, None),
    )
    documents = [Document(id=i, path=str(handbook / name), sha256="", size=0, mtime=0.0, kind=kind, pages=pages,
                          chars=0, tokens=0, chunks=chunks, problem=problem)
                 for i, (name, kind, pages, chunks, problem) in enumerate(files, start=1)]
    collections = [
        Collection(id=1, name="Team handbook", embedder="Qwen3-Embedding-0.6B-Q8_0", dims=1024,
                   documents=len(documents), chunks=sum(d.chunks for d in documents), sources=(str(handbook),)),
        Collection(id=2, name="Research papers", embedder="Qwen3-Embedding-0.6B-Q8_0", dims=1024, documents=42,
                   chunks=3_918, sources=(str(root / "Papers"),)),
    ]
    view.embed_note.show_text("")
    view.embed_edit.setText("Qwen3-Embedding-0.6B-Q8_0")
    view._fill((None, collections), "Team handbook")
    view._show_documents(documents)


def fill_machines(view) -> None:
    """The Machines page with two workers that answered (one through an SSH tunnel) and one that is off."""
    from app.core.cluster.probe import PROTOCOL, WorkerDevice, WorkerInfo
    from app.ui.machines_view import Probed

    GiB = 1 << 30
    samples = (
        ("127.0.0.1:50052", [WorkerDevice(0, "CUDA0", int(21.7 * GiB), 24 * GiB, "gpu", "status")], 0.0004),
        ("192.168.1.20:50052", [WorkerDevice(0, "CPU", int(41.2 * GiB), 64 * GiB, "cpu", "status")], 0.0011),
    )
    for endpoint, devices, latency in samples:
        host, port = endpoint.rsplit(":", 1)
        info = WorkerInfo(endpoint, host, int(port), PROTOCOL, devices, latency)
        view._add_row(endpoint).show_result(Probed(endpoint, info=info))
    off = "192.168.1.31:50052"
    view._add_row(off).show_result(Probed(off, error="Nothing answers at 192.168.1.31:50052: start `camelid "
                                               "worker` there, or check the address.", reason="refused"))
    view.use_box.setChecked(True)
    view._refresh()
