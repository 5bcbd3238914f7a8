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
DEMO_STATS = {"completion_tokens": 31, "tokens_per_s": 142.3, "ttft_s": 0.04, "prompt_tokens": 180,
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
    for role, text in DEMO_CONVERSATION:
        bubble = view._add_bubble(role, text)
        if role == "assistant":
            bubble.set_stats(DEMO_STATS)
    view.bubbles[-1].regenerate_button.setVisible(True)
    view.context_meter.setRange(0, 8192)
    view.context_meter.setValue(211)
    view.context_label.setText("211 of 8,192 tokens")
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
