"""ChildEngine: the chat engine in a child process, on the real SmolLM2-135M model.

The child must answer exactly as an in-process Engine does (a fixed seed evaluates every prompt
afresh, so both take the same evaluation path and may be compared), stream on the calling thread,
stop and cancel across the pipe, bring errors back as their own classes, and when it dies (here
SIGKILL, or a setup that exits, as llama.cpp's RPC backend does when a machine fails) say so in a
sentence naming the machines while this process goes on.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest

from app.core.chat.chats import ChatStore
from app.core.chat.conversation import send_message
from app.core.chat.engine import Engine, GenerateOptions, LoadParams
from app.core.chat.sampling import SamplingSettings
from app.core.cluster.child import ChildEngine
from app.core.errors import (
    CamelidError,
    ChatTemplateError,
    GenerationError,
    ModelLoadError,
    PromptTooLongError,
    UsageError,
)

pytestmark = pytest.mark.slow

PARAMS = LoadParams(n_ctx=512)
LABEL = "the machines 10.0.0.2:50052 and 10.0.0.3:50052"
SEEDED = SamplingSettings(temperature=0.7, max_tokens=32, seed=1234)
GREEDY = SamplingSettings(temperature=0.0, max_tokens=24)
QUESTION = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Name three colours."}]
LONG = [{"role": "user", "content": "Write a long story about camels crossing the desert."}]


# -- setups run in the child (top-level, so they pickle) ----------------------------------------
def mark_setup(path: str) -> None:
    """Write this process's id to `path` and set an environment variable, as a registration would."""
    Path(path).write_text(str(os.getpid()))
    os.environ["CAMELID_CHILD_SETUP"] = "ran"


def refusing_setup() -> None:
    raise ModelLoadError("The machine 10.0.0.9:50052 refused the connection.", "Start rpc-server there.")


def exiting_setup() -> None:
    os._exit(3)  # what llama.cpp's abort does to the process, without a core file


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def child(starter_model: Path) -> ChildEngine:
    e = ChildEngine(label=LABEL)
    e.load(starter_model, PARAMS)
    yield e
    e.close()


@pytest.fixture(scope="module")
def local(starter_model: Path) -> Engine:
    e = Engine()
    e.load(starter_model, PARAMS)
    yield e
    e.unload()


def no_zombie(pid: int) -> bool:
    """True when `pid` is gone (not a zombie still waiting for its parent)."""
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        return True
    return "zombie" not in status.read_text().lower()


# -- answers ----------------------------------------------------------------------------------
def test_child_loads_and_mirrors_the_engines_state(child: ChildEngine, local: Engine,
                                                   starter_model: Path) -> None:
    assert child.loaded and child.pid is not None and child.pid != os.getpid()
    assert child.model_path == starter_model
    assert child.n_ctx == local.n_ctx == 512
    assert child.template_source == local.template_source
    assert child.architecture == local.architecture
    assert child.report is not None and child.report.params == local.report.params
    assert child.count_text("hello world, camels") == local.count_text("hello world, camels")
    assert child.count_tokens(QUESTION) == local.count_tokens(QUESTION)
    assert child.render(QUESTION) == local.render(QUESTION)
    assert child.tokenize_prompt(QUESTION) == local.tokenize_prompt(QUESTION)


def test_a_seeded_reply_streams_and_equals_the_in_process_engines(child: ChildEngine,
                                                                   local: Engine) -> None:
    pieces: list[str] = []
    threads: set[int] = set()

    def on_text(piece: str) -> None:
        pieces.append(piece)
        threads.add(threading.get_ident())

    reply = child.chat(QUESTION, SEEDED, on_text=on_text)
    expected = local.chat(QUESTION, SEEDED)
    assert reply.text.strip() and "".join(pieces) == reply.text
    assert threads == {threading.get_ident()}  # callbacks on the calling thread, as in Engine
    assert reply.text == expected.text
    assert (reply.stats.prompt_tokens, reply.stats.completion_tokens, reply.stats.stop_reason,
            reply.stats.seed) == (expected.stats.prompt_tokens, expected.stats.completion_tokens,
                                  expected.stats.stop_reason, expected.stats.seed)
    assert reply.window is not None and reply.window.prompt_tokens == expected.window.prompt_tokens


def test_complete_and_options_cross_the_pipe(child: ChildEngine, local: Engine) -> None:
    options = GenerateOptions(stop=("\n",), logprobs=2)
    reply = child.complete("The capital of France is", SEEDED, options=options)
    expected = local.complete("The capital of France is", SEEDED, options=options)
    assert reply.text == expected.text and reply.stop_sequence == expected.stop_sequence
    assert reply.logprobs is not None and len(reply.logprobs) == len(expected.logprobs or [])
    assert [t.raw for t in reply.logprobs] == [t.raw for t in expected.logprobs or []]


# -- stop and cancel --------------------------------------------------------------------------
def test_stop_from_another_thread_ends_a_long_reply_quickly(child: ChildEngine) -> None:
    started = threading.Event()
    stopped_at: list[float] = []

    def stopper() -> None:
        started.wait(60)
        time.sleep(0.3)
        stopped_at.append(time.monotonic())
        child.stop()

    thread = threading.Thread(target=stopper)
    thread.start()
    reply = child.chat(LONG, GREEDY.with_(max_tokens=400), on_text=lambda _p: started.set())
    ended = time.monotonic()
    thread.join(10)
    assert reply.stats.stop_reason == "cancelled"
    assert 0 < reply.stats.completion_tokens < 400
    assert ended - stopped_at[0] < 3.0
    after = child.chat(QUESTION, GREEDY)  # the model stays loaded and the stop is not kept
    assert after.stats.stop_reason in ("stop", "length") and after.text.strip()


def test_a_stop_after_reserve_and_before_the_call_stops_that_reply(child: ChildEngine,
                                                                    tmp_path: Path) -> None:
    for _ in range(5):
        ticket = child.reserve_reply()
        child.stop()
        reply = child.chat(LONG, GREEDY.with_(max_tokens=200), ticket=ticket)
        assert reply.stats.stop_reason == "cancelled"
        assert reply.stats.completion_tokens == reply.stats.prompt_tokens_evaluated == 0
    # Through the conversation layer, as the CLI and the GUI call it.
    with ChatStore(tmp_path / "chats.db") as store:
        conversation = store.create_conversation(model="SmolLM2")
        ticket = child.reserve_reply()
        child.stop()
        reply, message = send_message(child, store, conversation.id, "Tell me a story.", GREEDY,
                                      ticket=ticket)
        assert reply.stats.stop_reason == "cancelled" and reply.text == ""
        assert message.state == "stopped"
    child.stop()  # nothing runs or waits: not kept for the next reply
    after = child.chat(QUESTION, GREEDY)
    assert after.stats.stop_reason in ("stop", "length") and after.text.strip()


def test_cancel_of_a_queued_ticket_leaves_the_others(child: ChildEngine) -> None:
    first, second = child.reserve_reply(), child.reserve_reply()
    child.cancel(first)
    assert child.chat(LONG, GREEDY, ticket=first).stats.stop_reason == "cancelled"
    kept = child.chat(QUESTION, GREEDY, ticket=second)
    assert kept.stats.stop_reason in ("stop", "length") and kept.text.strip()
    # And the running one, from another thread.
    ticket = child.reserve_reply()
    started = threading.Event()
    thread = threading.Thread(target=lambda: (started.wait(60), child.cancel(ticket)))
    thread.start()
    reply = child.chat(LONG, GREEDY.with_(max_tokens=400), ticket=ticket,
                       on_text=lambda _p: started.set())
    thread.join(10)
    assert reply.stats.stop_reason == "cancelled" and reply.stats.completion_tokens < 400


def test_an_on_text_error_ends_the_reply_and_is_raised_here(child: ChildEngine) -> None:
    def broken(_piece: str) -> None:
        raise KeyError("the window closed")

    with pytest.raises(KeyError, match="the window closed"):
        child.chat(LONG, GREEDY.with_(max_tokens=400), on_text=broken)
    after = child.chat(QUESTION, GREEDY)
    assert after.stats.stop_reason in ("stop", "length")


# -- errors -----------------------------------------------------------------------------------
def test_errors_in_the_child_arrive_as_their_own_class(child: ChildEngine) -> None:
    with pytest.raises(UsageError, match="ends with a user message") as caught:
        child.chat([{"role": "assistant", "content": "Hello."}], GREEDY)
    assert type(caught.value) is UsageError
    with pytest.raises(PromptTooLongError) as too_long:
        child.complete("camel " * 2000, GREEDY)
    assert too_long.value.fix and "shorter prompt" in too_long.value.fix
    with pytest.raises(ChatTemplateError, match="not valid Jinja"):
        child.set_chat_template("{% for %}")
    source = child.template_source
    child.set_chat_template("{% for m in messages %}{{ m['content'] }}\n{% endfor %}")
    assert child.template_source != source and "m['content']" in (child.template_source or "")
    child.set_chat_template(None)
    assert child.template_source == source
    assert child.chat(QUESTION, GREEDY).text.strip()


# -- setup and the child's death --------------------------------------------------------------
def test_setup_runs_in_the_child_before_the_load(starter_model: Path, tmp_path: Path) -> None:
    marker = tmp_path / "setup-pid"
    for setup in (functools.partial(mark_setup, str(marker)),
                  ("tests.core.cluster.test_child", "mark_setup", (str(marker),))):
        marker.unlink(missing_ok=True)
        e = ChildEngine(setup, label=LABEL)
        try:
            e.load(starter_model, PARAMS)
            assert marker.read_text() == str(e.pid) and e.pid != os.getpid()
            assert e.environ()["CAMELID_CHILD_SETUP"] == "ran"
            assert "CAMELID_CHILD_SETUP" not in os.environ
        finally:
            e.close()


def test_a_failing_setup_is_a_load_error(starter_model: Path) -> None:
    e = ChildEngine(refusing_setup, label=LABEL)
    with pytest.raises(ModelLoadError, match="refused the connection") as caught:
        e.load(starter_model, PARAMS)
    assert caught.value.fix == "Start rpc-server there."
    assert not e.loaded and e.pid is None
    e = ChildEngine(exiting_setup, label=LABEL)
    with pytest.raises(ModelLoadError) as died:
        e.load(starter_model, PARAMS)
    assert LABEL in str(died.value) and "exit code 3" in str(died.value)
    assert "Camelid is still running" in str(died.value)
    assert not e.loaded
    with pytest.raises(GenerationError, match="exit code 3"):
        e.chat(QUESTION, GREEDY)


def test_a_child_killed_mid_reply_is_a_sentence_and_the_app_goes_on(starter_model: Path) -> None:
    import signal

    e = ChildEngine(label=LABEL)
    e.load(starter_model, PARAMS)
    pid = e.pid
    assert pid is not None
    killed_at: list[float] = []

    def kill(_piece: str) -> None:
        if not killed_at:
            killed_at.append(time.monotonic())
            os.kill(pid, signal.SIGKILL)

    with pytest.raises(GenerationError) as caught:
        e.chat(LONG, GREEDY.with_(max_tokens=400), on_text=kill)
    assert time.monotonic() - killed_at[0] < 5.0
    text = str(caught.value)
    assert text.startswith(f"The model split across {LABEL} stopped: one of those machines failed")
    assert "SIGKILL" in text and "Camelid is still running" in text
    assert not e.loaded and e.report is None and e.model_path is None and e.pid is None
    assert no_zombie(pid)
    with pytest.raises(GenerationError, match="SIGKILL"):
        e.chat(QUESTION, GREEDY)  # every later call says so too
    with pytest.raises(GenerationError, match="SIGKILL"):
        e.count_text("camels")
    e.stop()  # harmless
    # The parent keeps working: a new ChildEngine loads, and so does the same one again.
    fresh = ChildEngine(label=LABEL)
    try:
        fresh.load(starter_model, PARAMS)
        assert fresh.chat(QUESTION, GREEDY).text.strip()
    finally:
        fresh.close()
    e.load(starter_model, PARAMS)
    assert e.loaded and e.failure is None and e.chat(QUESTION, GREEDY).text.strip()
    e.close()


def test_a_load_can_be_cancelled_and_close_leaves_no_process(starter_model: Path) -> None:
    e = ChildEngine(label=LABEL)
    try:
        cancel = threading.Event()
        with pytest.raises(ModelLoadError, match="cancelled"):
            e.load(starter_model, PARAMS, progress=lambda f: cancel.set() if f > 0.2 else None,
                   cancel=cancel)
        assert not e.loaded
        with pytest.raises(ModelLoadError, match="cancelled"):
            e.load(starter_model, PARAMS, progress=lambda f: f < 0.2)
        fractions: list[float] = []
        e.load(starter_model, PARAMS, progress=fractions.append)
        assert fractions and fractions[-1] == 1.0 and e.loaded
        pid = e.pid
        assert pid is not None
    finally:
        e.close()
    assert not e.loaded and e.pid is None and no_zombie(pid)
    assert pid not in [p.pid for p in multiprocessing.active_children()]
    with pytest.raises(ModelLoadError, match="No model is loaded"):
        e.chat(QUESTION, GREEDY)
    e.stop()
    e.cancel(1)


# -- the real thing: a llama.cpp RPC worker that dies -----------------------------------------
def serve_rpc(port: int) -> None:
    """A llama.cpp RPC worker on 127.0.0.1:`port` (its own process: start_server blocks in C)."""
    from app.core.cluster import rpc

    rpc.start_server("127.0.0.1", port, threads=1)


def rpc_setup(endpoint: str) -> None:
    """Register the worker, as Camelid will; no core file when llama.cpp aborts this process."""
    from app.core.cluster import rpc

    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):  # Windows has no core files to stop
        pass
    rpc.add_servers([endpoint])


def test_a_real_rpc_worker_killed_mid_reply_ends_only_the_child(starter_model: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import signal
    import socket

    from app.core.cluster import rpc
    from app.core.cluster.probe import probe

    if not rpc.supported():
        pytest.skip("this llama.cpp build has no RPC backend")
    monkeypatch.setenv("GGML_NO_BACKTRACE", "1")  # ggml's abort would run gdb for a backtrace
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"127.0.0.1:{port}"
    worker = multiprocessing.get_context("spawn").Process(target=serve_rpc, args=(port,), daemon=True)
    worker.start()
    e = ChildEngine(("tests.core.cluster.test_child", "rpc_setup", (endpoint,)),
                    label=f"the machine {endpoint}")
    try:
        for _ in range(200):
            try:
                probe(endpoint, timeout=1.0, status=False)
                break
            except Exception:
                time.sleep(0.1)
        report = e.load(starter_model, PARAMS.with_(n_gpu_layers=-1))
        assert report.params.n_gpu_layers == -1 and not report.attempts  # every layer on the worker
        assert e.chat(QUESTION, GREEDY).text.strip()
        killed_at: list[float] = []

        def kill(_piece: str) -> None:
            if not killed_at:
                killed_at.append(time.monotonic())
                os.kill(worker.pid, signal.SIGKILL)

        with pytest.raises(GenerationError) as caught:
            e.chat(LONG, GREEDY.with_(max_tokens=400), on_text=kill)
        assert time.monotonic() - killed_at[0] < 10.0
        text = str(caught.value)
        assert text.startswith(f"The model split across the machine {endpoint} stopped")
        assert "Camelid is still running" in text
        assert not e.loaded
        worker.join(5)
        # Loading again while the machine is still down: registration's probe says so, no abort.
        with pytest.raises(CamelidError, match="Nothing answers at"):
            e.load(starter_model, PARAMS.with_(n_gpu_layers=-1))
        assert not e.loaded
    finally:
        e.close()
        if worker.is_alive():
            worker.kill()
        worker.join(5)


# -- tickets across child starts, and EngineThread on top (the GUI's and the server's path) -----
def test_tickets_reserved_before_the_child_starts_keep_their_stop(starter_model: Path) -> None:
    e = ChildEngine(label=LABEL)
    try:
        stopped = e.reserve_reply()
        e.stop()  # pressed while the load was still queued
        kept, cancelled = e.reserve_reply(), e.reserve_reply()
        e.cancel(cancelled)
        e.load(starter_model, PARAMS)
        assert e.chat(LONG, GREEDY, ticket=stopped).stats.stop_reason == "cancelled"
        assert e.chat(LONG, GREEDY, ticket=cancelled).stats.stop_reason == "cancelled"
        reply = e.chat(QUESTION, GREEDY, ticket=kept)
        assert reply.stats.stop_reason in ("stop", "length") and reply.text.strip()
        assert e.reserve_reply() == cancelled + 1  # the parent's and the child's numbers agree
    finally:
        e.close()


def test_engine_thread_over_a_child_never_loses_a_stop_right_after_send(starter_model: Path) -> None:
    from app.core.chat.engine import EngineThread, plan_params
    from app.core.fit import LoadChoices

    worker = EngineThread(ChildEngine(label=LABEL))  # type: ignore[arg-type]
    try:
        params, plan, _notices = plan_params(starter_model, LoadChoices(n_ctx=512))
        report = worker.load(starter_model, params, plan=plan).result(120)
        assert report.plan == plan and report.memory is not None and report.memory.reported
        outcomes = []
        for _ in range(5):
            future = worker.chat(LONG, GREEDY.with_(max_tokens=200))
            worker.stop()
            outcomes.append(future.result(60).stats)
        assert [s.stop_reason for s in outcomes] == ["cancelled"] * 5
        assert all(s.completion_tokens == 0 and s.prompt_tokens_evaluated == 0 for s in outcomes)
        first, second = worker.chat(LONG, GREEDY), worker.chat(LONG, GREEDY)
        worker.stop()
        assert first.result(60).stats.stop_reason == second.result(60).stats.stop_reason == "cancelled"
        worker.stop()
        after = worker.chat(QUESTION, GREEDY).result(60)
        assert after.stats.stop_reason in ("stop", "length") and after.text.strip()
    finally:
        worker.close()
    assert not worker.engine.loaded and worker.engine.pid is None


def test_a_child_that_stops_answering_is_ended_after_stop(starter_model: Path) -> None:
    """llama.cpp blocked on a machine that no longer answers never reads the stop flag: after
    `stop_timeout` the child is ended and the call says so (SIGSTOP freezes the child here)."""
    import signal

    e = ChildEngine(label=LABEL, stop_timeout=1.0)
    e.load(starter_model, PARAMS)
    pid = e.pid
    assert pid is not None
    frozen = threading.Event()

    def freeze(_piece: str) -> None:
        if not frozen.is_set():
            os.kill(pid, signal.SIGSTOP)
            frozen.set()

    def press_stop() -> None:
        frozen.wait(60)
        time.sleep(0.2)
        e.stop()

    thread = threading.Thread(target=press_stop)
    thread.start()
    started = time.monotonic()
    try:
        with pytest.raises(GenerationError, match="answered nothing for 1 seconds after Stop") as caught:
            e.chat(LONG, GREEDY.with_(max_tokens=400), on_text=freeze)
        assert time.monotonic() - started < 15.0
        assert str(caught.value).startswith(f"The model split across {LABEL} stopped")
        assert not e.loaded and e.pid is None and no_zombie(pid)
    finally:
        thread.join(10)
        e.close()
