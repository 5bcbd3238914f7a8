"""The Machines page with real `camelid worker`s on 127.0.0.1: add, probe, remove, and a model split
across this machine and a worker from the Chat page's Load, then the worker killed."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from app import paths
from app.core.settings import Settings
from app.ui.chat_view import ChatView
from app.ui.machines_view import MachinesView
from tests.core.cluster.test_worker import free_port_pair, start_worker, stop, wait_ready
from tests.fixtures import ui
from tests.fixtures.ui import close_window

pytestmark = pytest.mark.slow


@pytest.fixture
def worker() -> Iterator[tuple[object, str]]:
    port = free_port_pair()
    proc = start_worker("--port", str(port), "--json")
    try:
        wait_ready(proc)
        yield proc, f"127.0.0.1:{port}"
    finally:
        stop(proc)


@pytest.fixture
def installed_model(starter_model: Path) -> Path:
    dest = paths.models_dir() / starter_model.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(starter_model, dest)
    return dest


def send(qtbot, chat: ChatView, text: str, bubbles: int) -> None:
    """Type and send; wait until the reply (or its failure) is shown and `bubbles` messages are on the page."""
    chat.input.setPlainText(text)
    qtbot.keyClick(chat.input, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: chat.reply_job is None and (len(chat.bubbles) == bubbles
                                                          or chat.error.isVisibleTo(chat)), timeout=120_000)


def add(qtbot, page: MachinesView, address: str) -> None:
    page.address_edit.setText(address)
    qtbot.mouseClick(page.add_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.add_job is None, timeout=15_000)


def test_add_probe_and_remove_machines(qtbot, worker) -> None:
    _proc, endpoint = worker
    window = ui.open_window(qtbot)
    page: MachinesView = window.pages["Machines"]
    assert page.rows == {} and not page.use_box.isEnabled() and page.empty_hint.isVisibleTo(page)
    assert "no password" in page.security.text() and "ssh -N -L 50052:127.0.0.1:50052" in page.tunnel_block.code
    assert "camelid worker --host 0.0.0.0" in page.open_block.code

    # Not an address: a sentence, nothing probed or saved.
    add(qtbot, page, "worker-1:99999")
    assert "is not a port number" in page.add_error.text() and page.rows == {}

    # A closed port: the probe's sentence, and it is not added.
    closed = f"127.0.0.1:{free_port_pair()}"
    add(qtbot, page, closed)
    assert page.add_error.isVisibleTo(page) and f"Nothing answers at {closed}" in page.add_error.text()
    assert page.rows == {} and Settings()["rpc_workers"] == ""

    # The real worker: probed, shown with its device and memory, saved.
    add(qtbot, page, endpoint)
    assert not page.add_error.isVisibleTo(page)
    row = page.rows[endpoint]
    assert row.state_label.text().startswith("Reachable · protocol 7.0.0 ·") and "round trip" in row.state_label.text()
    devices = row.devices_label.text()
    assert devices.startswith("CPU: ") and " free of " in devices and "measured by the worker" in devices
    assert Settings()["rpc_workers"] == endpoint and page.address_edit.text() == ""

    # Added twice: a sentence. Probe again: the same answer.
    add(qtbot, page, endpoint)
    assert "in the list already" in page.add_error.text()
    job = page.probe(endpoint)
    assert job is not None and row.state_label.text() == "Probing…"
    qtbot.waitUntil(lambda: job.done.is_set() and row.probe_button.isEnabled(), timeout=15_000)
    assert row.usable and "CPU: " in row.devices_label.text()

    # The switch: loads plan with the machine while on; off keeps the list.
    assert page.use_box.isEnabled() and window.state.engine_host().machines == []
    page.set_use(True)
    assert window.state.engine_host().machines == [endpoint]
    page.set_use(False)
    assert window.state.engine_host().machines == [] and Settings()["rpc_workers"] == endpoint

    # Remove: gone from the page and from the saved setting.
    qtbot.mouseClick(row.remove_button, Qt.MouseButton.LeftButton)
    assert page.rows == {} and Settings()["rpc_workers"] == ""
    assert page.empty_hint.isVisibleTo(page) and not page.use_box.isEnabled()
    close_window(window)


def test_a_model_split_across_a_worker_then_the_worker_killed(qtbot, worker, installed_model: Path) -> None:
    proc, endpoint = worker
    window = ui.open_window(qtbot, context_length=1024)
    page: MachinesView = window.pages["Machines"]
    chat: ChatView = window.pages["Chat"]
    add(qtbot, page, endpoint)
    assert page.rows[endpoint].usable
    page.set_use(True)

    # The Load button's own path: planned with the worker, loaded in a child process.
    qtbot.waitUntil(lambda: chat.model_picker.findData(str(installed_model)) >= 0, timeout=10_000)
    chat.model_picker.setCurrentIndex(chat.model_picker.findData(str(installed_model)))
    qtbot.mouseClick(chat.load_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: chat.load_job is None, timeout=180_000)
    assert not chat.error.isVisibleTo(chat), chat.error.text()
    if shots := os.environ.get("CAMELID_TEST_SHOTS"):  # a look at the Chat page (not checked)
        window.show_page("Chat")
        window.grab().save(f"{shots}/chat-split.png")
    engine = chat.host.engine
    assert engine.loaded and engine.split and engine.endpoints == [endpoint]
    report = chat.host.report
    remote = [d for d in report.plan.devices if d.kind == "rpc"]
    assert remote and all(d.layers for d in remote) and endpoint in remote[0].name
    assert "split across this machine and 1 other" in chat.verdict.text()
    assert " holds " in chat.notice.text() and endpoint in chat.notice.text()
    assert window.state.model is not None and window.state.model["backend"] == "RPC"
    # The server's runner reads the same engine object.
    assert window.state.engine_host().runner().engine is engine

    # While the model is loaded the worker serves this Camelid: Probe again says so, not "busy".
    row = page.rows[endpoint]
    job = page.probe(endpoint)
    qtbot.waitUntil(lambda: job.done.is_set() and row.probe_button.isEnabled(), timeout=15_000)
    assert row.state_label.text().startswith("In use"), row.state_label.text()

    choose = chat.sampling
    chat.sampling = lambda: choose().with_(max_tokens=8)
    send(qtbot, chat, "Say hello.", 2)
    assert not chat.error.isVisibleTo(chat), chat.error.text()
    assert [b.role for b in chat.bubbles] == ["user", "assistant"] and chat.bubbles[-1].text.strip()

    # The worker dies: the next reply is the sentence naming it, and Camelid carries on.
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    send(qtbot, chat, "And again.", 99)
    message = chat.error.text()
    assert f"the machine {endpoint} stopped" in message and "Camelid is still running" in message
    assert "Traceback" not in message
    assert not engine.loaded and window.state.model is None and chat.verdict.text() == "No model loaded"
    assert window.model_label.text() == "No model loaded"
    job = page.probe(endpoint)  # the page says it is gone too
    qtbot.waitUntil(lambda: job.done.is_set() and row.probe_button.isEnabled(), timeout=15_000)
    assert f"Nothing answers at {endpoint}" in row.error.text() and not row.usable

    # This machine only again: the same Load works locally.
    page.set_use(False)
    qtbot.mouseClick(chat.load_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: chat.load_job is None, timeout=120_000)
    assert not chat.error.isVisibleTo(chat), chat.error.text()
    assert engine.loaded and not engine.split and "Loaded" in chat.verdict.text()
    assert "split" not in chat.verdict.text() and not any(d.kind == "rpc" for d in chat.host.report.plan.devices)
    send(qtbot, chat, "Hello.", 5)
    assert not chat.error.isVisibleTo(chat), chat.error.text()
    assert chat.bubbles[-1].role == "assistant" and chat.bubbles[-1].text.strip()

    # Machines on again with the worker still dead: the probe's sentence, and the local model stays.
    page.set_use(True)
    qtbot.mouseClick(chat.load_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: chat.load_job is None, timeout=60_000)
    assert f"Nothing answers at {endpoint}" in chat.error.text()
    assert engine.loaded and not engine.split and chat.verdict.text().startswith("Loaded")
    assert window.state.model is not None
    close_window(window)
