"""The Local server page: started from the window, answering with the window's engine (the real SmolLM2)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PySide6.QtCore import QThread
from PySide6.QtWidgets import QApplication

from app import paths
from app.ui import theme
from app.ui.chat_view import ChatView
from app.ui.main_window import MainWindow
from app.ui.server_view import ServerView, snippets
from app.ui.workers import OwnerClosed, OwnerThread, run_job
from tests.fixtures import ui
from tests.fixtures.ui import close_window

MODEL = "SmolLM2-135M-Instruct.Q4_1"


@pytest.fixture
def installed_model(starter_model: Path) -> Path:
    """The starter model in this test's models folder (a hard link: no 98 MB copy)."""
    dest = paths.models_dir() / starter_model.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(starter_model, dest)
    except OSError:
        shutil.copyfile(starter_model, dest)
    return dest


def open_window(qtbot) -> MainWindow:
    return ui.open_window(qtbot, "desktop-16gb-cpu", context_length=2048)


def start(qtbot, server: ServerView, port: int = 0) -> None:
    server.port_box.setValue(port)
    server.switch.click()
    qtbot.waitUntil(lambda: server.job is None, timeout=30_000)


def stop(qtbot, server: ServerView) -> None:
    server.switch.click()
    qtbot.waitUntil(lambda: not server.running and server.job is None, timeout=30_000)


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def save_screenshots(window: MainWindow, name: str) -> None:
    """With CAMELID_SHOTS=DIR, the window light and dark (to look at the page with live content)."""
    folder = os.environ.get("CAMELID_SHOTS")
    app = QApplication.instance()
    if not folder or not isinstance(app, QApplication):
        return
    before = app.property("camelid_theme_choice") or "light"
    for look in ("light", "dark"):
        theme.apply_theme(app, look)
        QApplication.processEvents()
        window.grab().save(str(Path(folder) / f"{name}-{look}.png"))
    theme.apply_theme(app, str(before))


@pytest.mark.slow
def test_a_request_to_the_page_s_server_uses_the_window_s_engine(qtbot, installed_model: Path) -> None:
    window = open_window(qtbot)
    server: ServerView = window.pages["Server"]
    chat: ChatView = window.pages["Chat"]
    window.show_page("Server")
    seen: list[int] = []
    server.active_changed.connect(seen.append)

    start(qtbot, server)
    assert server.running and not server.error.isVisible()
    port = server.handle.port
    assert port and server.url_field.text() == f"http://127.0.0.1:{port}"
    assert server.state_label.text() == f"Running on port {port}"
    # The snippets carry the real address and a model of the library.
    code = server.snippet_blocks["Python (openai)"].code
    assert f'base_url="http://127.0.0.1:{port}/v1"' in code and MODEL in code
    assert f"curl http://127.0.0.1:{port}/v1/chat/completions" in server.snippet_blocks["curl"].code

    body = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 5}
    with ThreadPoolExecutor(1) as pool:
        reply = pool.submit(httpx.post, f"{server.url_field.text()}/v1/chat/completions", json=body, timeout=180)
        qtbot.waitUntil(reply.done, timeout=200_000)
    response = reply.result()
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] <= 5

    qtbot.waitUntil(lambda: any(row[6] == "200" and row[3] == MODEL and row[2] == "/v1/chat/completions"
                                for row in server.log_rows()), timeout=10_000)
    row = server.log_rows()[0]
    assert row[1] == "POST" and "out" in row[4]
    # The Chat page shows the model the server loaded on the shared engine, and so does the status bar.
    qtbot.waitUntil(lambda: chat.verdict.text().startswith("Loaded"), timeout=10_000)
    assert chat.host.engine.model_path == installed_model
    assert window.state.model is not None and window.state.model["name"] == MODEL
    assert MODEL in window.model_label.text()
    assert MODEL in server.model_label.text() and "loaded by the server" in server.model_label.text()
    # "Serving 1 request" while it ran, back to none after.
    qtbot.waitUntil(lambda: server.serving_label.text() == "Idle", timeout=10_000)
    assert 1 in seen and seen[-1] == 0
    assert not chat.serving.isVisible()
    save_screenshots(window, "server-live")

    stop(qtbot, server)
    assert server.state_label.text() == "Stopped" and server.url_field.text() == ""
    assert port_is_free(port)
    # Stopping unloads what the server loaded; the Chat page follows.
    qtbot.waitUntil(lambda: chat.verdict.text() == "No model loaded", timeout=20_000)
    assert window.state.model is None

    # Closing the window with the server running stops it before the engine goes.
    start(qtbot, server)
    again = server.handle.port
    assert server.running
    close_window(window)
    assert port_is_free(again)


def test_the_chat_page_shows_how_many_requests_the_server_serves(qtbot) -> None:
    window = open_window(qtbot)
    server: ServerView = window.pages["Server"]
    chat: ChatView = window.pages["Chat"]
    server._on_event("active", 2)  # as the service's listener delivers it
    assert chat.serving.isVisible() and chat.serving.text() == "Serving 2 requests from the local server"
    assert server.serving_label.text() == "Serving 2 requests"
    server._on_event("active", 0)
    assert not chat.serving.isVisible()
    close_window(window)


def test_serving_on_the_network_warns_and_shows_a_key_once(qtbot) -> None:
    from app.core.server.runner import key_matches

    window = open_window(qtbot)
    server: ServerView = window.pages["Server"]
    window.show_page("Server")
    assert not server.lan_warning.isVisible() and server.key_row.isHidden()
    server.lan_box.setChecked(True)
    qtbot.waitUntil(lambda: server.key_field.text().startswith("camelid-"), timeout=5000)
    key = server.key_field.text()
    assert "network" in server.lan_warning.text() and server.lan_warning.isVisible()
    assert server.key_row.isVisible() and "will not be shown again" in server.key_note.text()
    assert key_matches(key)
    # The snippets never repeat the key itself.
    assert all(key not in block.code and "YOUR-API-KEY" in block.code for block in server.snippet_blocks.values())
    save_screenshots(window, "server-lan")
    # Started, it listens on every address and asks for the key.
    start(qtbot, server)
    assert server.running and server.handle.config.host == "0.0.0.0"
    url = server.url_field.text()
    assert httpx.get(f"{url}/v1/models", timeout=10).status_code == 401
    assert httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code == 200
    assert server.key_field.text() == key
    stop(qtbot, server)
    server.lan_box.setChecked(False)
    assert not server.lan_warning.isVisible() and server.key_field.text() == ""
    close_window(window)


def test_a_port_in_use_is_a_sentence_on_the_page(qtbot) -> None:
    window = open_window(qtbot)
    server: ServerView = window.pages["Server"]
    window.show_page("Server")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        start(qtbot, server, port)
    assert not server.running
    assert server.error.isVisible()
    sentence = server.error.text()
    assert f"Port {port}" in sentence and "already in use" in sentence
    assert "--port" not in sentence and "Traceback" not in sentence
    assert server.switch.text() == "Start server" and server.switch.isEnabled()
    close_window(window)


def test_the_port_and_network_choice_are_kept(qtbot) -> None:
    window = open_window(qtbot)
    server: ServerView = window.pages["Server"]
    server.port_box.setValue(4321)
    server.cors_edit.setText("http://localhost:3000")
    server._remember()
    close_window(window)
    again = open_window(qtbot)
    kept: ServerView = again.pages["Server"]
    assert kept.port_box.value() == 4321 and kept.cors_edit.text() == "http://localhost:3000"
    assert not kept.lan_box.isChecked()
    close_window(again)


def test_snippets_name_the_address_and_the_model() -> None:
    code = snippets("http://127.0.0.1:1234", "Qwen3-8B-Q4_K_M", None)
    assert 'OpenAI(base_url="http://127.0.0.1:1234/v1"' in code["Python (openai)"][1]
    assert '"model": "Qwen3-8B-Q4_K_M"' in code["curl"][1]
    assert 'Client(host="http://127.0.0.1:1234")' in code["Ollama clients"][1]
    assert 'Anthropic(base_url="http://127.0.0.1:1234"' in code["Python (anthropic)"][1]
    for name, (language, text) in code.items():  # each runs as written (tested live by hand: all four answer)
        if language == "python":
            compile(text, name, "exec")
    assert json.loads(code["curl"][1].split("-d '", 1)[1].rsplit("'", 1)[0])["model"] == "Qwen3-8B-Q4_K_M"
    keyed = snippets("http://127.0.0.1:1234", "m", "secret")
    assert "Authorization: Bearer YOUR-API-KEY" in keyed["curl"][1] and "secret" not in str(keyed)


def test_owner_thread_call_runs_in_order_from_any_thread(qtbot) -> None:
    owner = OwnerThread("test-owner")
    order: list[str] = []
    gate = threading.Event()
    run_job(lambda: gate.wait(5) and order.append("job"), where=owner)
    outcome: dict[str, object] = {}

    def elsewhere() -> None:  # a plain Python thread, as uvicorn's is
        outcome["name"] = owner.call(lambda: order.append("call") or QThread.currentThread().objectName())
        failing = owner.call(lambda: 1 / 0)
        gate.set()
        outcome["value"] = outcome["name"].result(5)  # type: ignore[attr-defined]
        try:
            failing.result(5)
        except ZeroDivisionError:
            outcome["error"] = True

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join(10)
    assert order == ["job", "call"] and outcome["value"] == "test-owner" and outcome["error"]
    assert owner.shutdown()
    with pytest.raises(OwnerClosed, match="closing"):
        owner.call(lambda: 1).result(1)
