"""Shared fixtures. Every test runs with CAMELID_HOME in a fresh temporary folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TEST_MODEL = REPO_ROOT / ".cache" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(autouse=True)
def camelid_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every Camelid path at a private temporary folder."""
    home = tmp_path_factory.mktemp("camelid-home")
    monkeypatch.setenv("CAMELID_HOME", str(home))
    monkeypatch.delenv("CAMELID_MODELS_DIR", raising=False)
    monkeypatch.setenv("OLLAMA_MODELS", str(home / "ollama-store"))  # never the user's real Ollama store
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    return home


@pytest.fixture(autouse=True)
def gui_thread_collection(request: pytest.FixtureRequest, camelid_home: Path):
    """Qt tests run as the app does: cyclic garbage is collected on the GUI thread only (app/ui/gc_guard.py).

    Without it a worker thread's collection can delete a finished test's widgets from the wrong thread and
    crash the run. After a Qt test everything is collected here, on the GUI thread, so no Qt garbage is left
    for later tests; after the others, the thresholds decide, as they would in the app.
    """
    guard = None
    if "qtbot" in request.fixturenames or "qapp" in request.fixturenames:
        from app.ui import gc_guard

        guard = gc_guard.install(request.getfixturevalue("qapp"))
    yield
    if guard is not None:
        guard.collect(2)
    else:
        loaded = sys.modules.get("app.ui.gc_guard")  # never imported here: core tests stay free of Qt
        if loaded is not None and loaded.installed() is not None:
            loaded.installed().tick()


@pytest.fixture(scope="session")
def starter_model() -> Path:
    """The real SmolLM2-135M-Instruct Q4_1 GGUF (98 MB), fetched by `make test`."""
    path = Path(os.environ.get("CAMELID_TEST_MODEL", DEFAULT_TEST_MODEL))
    if not path.is_file():
        pytest.fail(f"The test model is missing at {path}: run `make test`, which fetches it.")
    return path


@pytest.fixture(scope="session")
def embedding_model() -> Path:
    """all-MiniLM-L6-v2 as an F16 GGUF (46 MB), converted by `make test` (scripts/embedder_gguf.py)."""
    default = REPO_ROOT / ".cache" / "models" / "all-MiniLM-L6-v2-F16.gguf"
    path = Path(os.environ.get("CAMELID_TEST_EMBEDDER", default))
    if not path.is_file():
        pytest.fail(f"The embedding test model is missing at {path}: run `make test`, which converts it.")
    return path


@pytest.fixture
def loopback_hub(monkeypatch: pytest.MonkeyPatch):
    """A real Hub-compatible HTTP server on 127.0.0.1 (tests/fixtures/loopback_hub.py).

    HF_ENDPOINT points at it and HF_TOKEN is cleared, so code that reads the
    endpoint and token at call time talks to it.
    """
    from tests.fixtures.loopback_hub import LoopbackHub

    with LoopbackHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        yield hub
