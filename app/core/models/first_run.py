"""The first-run wizard's decisions, kept out of the GUI: when to show it, context choices, the starter.

The wizard (app/ui/wizard.py) asks what the model is for and how long the
conversations get, recommends, downloads, and opens the chat. When the Hub
cannot be reached or the download is refused, it offers the starter model
(SmolLM2-135M-Instruct), which is small enough for any machine, so the first
run always ends in a chat.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app import paths


@dataclass(frozen=True)
class ContextChoice:
    """One answer to "how long are your conversations?"."""

    key: str
    label: str
    n_ctx: int
    help: str


CONTEXT_CHOICES: tuple[ContextChoice, ...] = (
    ContextChoice("short", "Short", 4096, "Quick questions and answers (4k tokens, about 3,000 words)."),
    ContextChoice("normal", "Normal", 8192, "Conversations that go back and forth (8k tokens, about 6,000 words)."),
    ContextChoice("long", "Long", 32768,
                  "Long documents and long sessions (32k tokens, about 24,000 words); the KV cache "
                  "grows with it, so a smaller model may be picked."),
)
CONTEXT_BY_KEY = {c.key: c for c in CONTEXT_CHOICES}


def context_choice_for(n_ctx: int) -> ContextChoice:
    """The choice closest to a context length, by ratio (the settings' value preselects the wizard)."""
    return min(CONTEXT_CHOICES, key=lambda c: abs(math.log(c.n_ctx / max(n_ctx, 1))))


def should_show_wizard(settings: Any, *, demo: bool = False) -> bool:
    """Whether opening the app should open the first-run wizard: not yet finished or skipped, not a demo."""
    return not demo and not bool(settings["first_run_done"])


def starter_candidates() -> list[Path]:
    """Where the starter model may be, best first: the models folder, then a copy bundled with the app."""
    found = [paths.starter_model_path()]
    bundled = paths.bundled_starter_model()
    if bundled is not None:
        found.append(bundled)
    return found


def find_starter(library: Iterable[Any] = ()) -> Path | None:
    """The starter model's file, or None when it is nowhere on this machine.

    Looks where `camelid starter` installs it, then inside a frozen app, then
    among `library` (LibraryModel entries, e.g. a copy in the Hugging Face
    cache) for a complete file with the starter's name.
    """
    for path in starter_candidates():
        if path.is_file():
            return path
    wanted = Path(paths.STARTER_MODEL_FILE).stem.lower()
    for model in library:
        path = Path(model.path)
        if path.stem.lower() == wanted and getattr(model, "complete", True) and path.is_file():
            return path
    return None


def locate_starter() -> Path | None:
    """`find_starter` over the whole library (scans folders: run it off the GUI thread)."""
    found = find_starter()
    if found is not None:
        return found
    from app.core.models.library import scan_models

    return find_starter(scan_models())


def hub_file_for(repo_id: str, filename: str, quant: str) -> Any:
    """The Hub's QuantFile for a recommended file: by its path in the repo, else by its quant.

    Real sizes and hashes come from the listing, so the download is verified
    against what the Hub says, not against the catalog's prediction.
    """
    from app.core.models.hub import repo_files, select_quant

    files = repo_files(repo_id)
    if any(f.path == filename for q in files.quants for f in q.files):
        return select_quant(files, filename)
    return select_quant(files, quant)


STARTER_MISSING = ("The starter model is not installed either, so there is nothing to chat with yet. "
                   "Run `make run` (or `camelid starter --install-from FILE.gguf`), or come back to this "
                   "wizard from the Help menu when the Hub can be reached.")
