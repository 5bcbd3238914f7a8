"""`camelid --self-test`: prove an installed (or frozen) Camelid works, offline.

Loads the starter model, generates a few tokens, answers one request through the
API server on a free loopback port, starts the GUI offscreen,
prints one line and returns 0; on any failure it prints one line that says
what failed and returns 1. It works in a temporary CAMELID_HOME so the
user's chats and settings are never touched.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from app import __version__, paths


def _starter() -> Path:
    bundled = paths.bundled_starter_model()
    if bundled:
        return bundled
    installed = paths.starter_model_path()
    if installed.is_file():
        return installed
    from app.core.errors import ModelFileError

    raise ModelFileError(f"The starter model is missing (looked in {installed}).",
                         "Install it with `camelid starter --install-from FILE.gguf`, or reinstall Camelid.")


def _check_model(model: Path) -> str:
    from app.core.chat import Engine, LoadParams, SamplingSettings

    engine = Engine()
    report = engine.load(model, LoadParams(n_ctx=512))
    try:
        reply = engine.chat([{"role": "user", "content": "Say hello in three words."}],
                            SamplingSettings(temperature=0.0, seed=1, max_tokens=8))
    finally:
        engine.unload()
    if reply.stats.completion_tokens < 1 or not reply.text.strip():
        raise RuntimeError("the model loaded but generated no text")
    where = "CPU" if report.params.n_gpu_layers == 0 else f"{report.params.n_gpu_layers} GPU layers"
    speed = f" at {reply.stats.tokens_per_s:.0f} tok/s" if reply.stats.tokens_per_s else ""
    return (f"{model.name} loaded on {where} in {report.seconds:.2f} s, "
            f"{reply.stats.completion_tokens} tokens{speed}")


def _check_server(model: Path) -> str:
    """The API server answers one OpenAI-style request on a free loopback port (proves uvicorn is bundled)."""
    import json
    import urllib.request

    from app.core.models.library import find_library_model
    from app.core.server import ModelService, ServerConfig, ServerHandle, ThreadRunner

    entry = find_library_model(str(model))
    runner = ThreadRunner()
    service = ModelService(runner, models=lambda: [entry], idle_unload_s=0)
    handle = ServerHandle(service, ServerConfig(port=0))
    started = time.perf_counter()
    try:
        handle.start()
        body = json.dumps({"model": entry.name, "max_tokens": 4,
                           "messages": [{"role": "user", "content": "Hi"}]}).encode()
        request = urllib.request.Request(handle.url + "/v1/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.loads(response.read(1 << 20))
        if not answer.get("choices"):
            raise RuntimeError("the API server answered without a reply")
    finally:
        handle.stop()
        service.close()
        runner.close()
    return f"API server answered in {time.perf_counter() - started:.2f} s"


def _check_gui() -> str:
    os.environ["QT_QPA_PLATFORM"] = "offscreen"  # a self-test must not need a screen
    started = time.perf_counter()
    from app.ui.platform_check import problem

    refused = problem()  # Qt would abort the process; say why instead
    if refused:
        raise RuntimeError(refused)
    from PySide6.QtWidgets import QApplication

    from app.ui.main_window import create_window

    window = create_window()
    window.show()
    QApplication.processEvents()
    if not window.isVisible():
        raise RuntimeError("the main window did not show")
    window.close()
    QApplication.processEvents()
    return f"GUI started offscreen in {time.perf_counter() - started:.2f} s"


def run_self_test() -> int:
    """Run the checks; print one line; 0 when everything works."""
    previous_home = os.environ.get("CAMELID_HOME")
    step = "finding the starter model"
    try:
        model = _starter()
        with tempfile.TemporaryDirectory(prefix="camelid-selftest-") as home:
            os.environ["CAMELID_HOME"] = home
            step = "loading the starter model and generating"
            model_line = _check_model(model)
            step = "starting the API server"
            server_line = _check_server(model)
            step = "starting the GUI"
            gui_line = _check_gui()
    except Exception as exc:  # one line, whatever broke
        print(f"Camelid {__version__} self-test FAILED while {step}: {exc}")
        return 1
    finally:
        if previous_home is None:
            os.environ.pop("CAMELID_HOME", None)
        else:
            os.environ["CAMELID_HOME"] = previous_home
    print(f"Camelid {__version__} self-test OK: {model_line}; {server_line}; {gui_line}.")
    return 0
