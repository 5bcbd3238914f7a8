"""A model split across two real `camelid worker`s on 127.0.0.1: planned, loaded in a child process,
checked against llama.cpp's own buffer log, compared with a local load, stopped, and a worker killed.

Both workers run llama.cpp's CPU backend of this build (same machine, same CPU variant), so the split
model computes with the same kernels as a local load without CPU weight repacking: the comparison is
on the same evaluation path.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.chat import Engine, SamplingSettings
from app.core.chat.engine import plan_params
from app.core.cluster.machines import engine_for, with_workers
from app.core.cluster.probe import WorkerError
from app.core.errors import CamelidError
from app.core.fit import LoadChoices
from app.core.machine import MiB, detect
from tests.core.cluster.test_worker import free_port_pair, start_worker, stop, wait_ready

pytestmark = pytest.mark.slow

GREEDY = SamplingSettings(temperature=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, max_tokens=16,
                          seed=1)
MESSAGES = [{"role": "user", "content": "Name three animals that live in the desert."}]


def _workers(n: int) -> tuple[list[str], list]:  # type: ignore[type-arg]
    endpoints, procs = [], []
    for _ in range(n):
        port = free_port_pair()
        proc = start_worker("--port", str(port), "--json")
        procs.append(proc)
        wait_ready(proc)
        endpoints.append(f"127.0.0.1:{port}")
    return endpoints, procs


@pytest.fixture(scope="module")
def two_workers() -> Iterator[list[str]]:
    endpoints, procs = _workers(2)
    yield endpoints
    for proc in procs:
        stop(proc)


def _plan(model: Path, endpoints: list[str]):  # type: ignore[no-untyped-def]
    hardware = with_workers(detect(), endpoints)
    params, plan, _notes = plan_params(model, LoadChoices(n_ctx=1024), hardware=hardware)
    return hardware, params, plan


def test_the_model_splits_across_both_workers_as_planned(two_workers: list[str], starter_model: Path) -> None:
    hardware, params, plan = _plan(starter_model, two_workers)
    remote = [d for d in plan.devices if d.kind == "rpc"]
    assert len(remote) == 2 and all(d.layers for d in remote)
    assert plan.n_gpu_layers == plan.n_layers + 1 and params.tensor_split is not None
    engine = engine_for(hardware)
    try:
        report = engine.load(starter_model, params, plan=plan)
        assert report.memory is not None
        model_buffers = report.memory.buffers["model"]
        # llama.cpp names a worker's buffer RPC<device on that worker>[host:port]; its log lists them in no
        # fixed order, so each is matched by endpoint. The plan's device i is the i-th registered worker.
        rpc = [k for k in model_buffers if k.startswith("RPC")]
        assert len(rpc) == 2, model_buffers
        for device, endpoint in zip(remote, two_workers, strict=True):
            assert device.name.endswith(f" on {endpoint}")
            key = next(k for k in rpc if k.endswith(f"[{endpoint}]"))
            measured = model_buffers[key] * MiB
            assert abs(measured - device.weights) <= max(0.05 * device.weights, 8 * MiB), (key, measured, device)

        pieces: list[str] = []
        split = engine.chat(MESSAGES, GREEDY, on_text=pieces.append)
        assert split.text and "".join(pieces) == split.text

        # A reply stops on request, as a local one does.
        timer = threading.Timer(0.3, engine.stop)
        timer.start()
        long = engine.chat(MESSAGES, GREEDY.with_(max_tokens=4000, temperature=1.0, top_k=40))
        timer.cancel()
        assert long.stats.stop_reason in ("cancelled", "stop")
        assert long.stats.stop_reason == "cancelled" or long.stats.completion_tokens < 4000
    finally:
        engine.unload()

    # The same prompt, settings and seed on this machine alone, with the CPU kernels the workers use.
    local = Engine()
    local.load(starter_model, params.with_(n_gpu_layers=0, tensor_split=None, use_extra_bufts=False))
    try:
        assert local.chat(MESSAGES, GREEDY).text == split.text
    finally:
        local.unload()


def test_a_closed_port_is_a_sentence_before_anything_loads() -> None:
    port = free_port_pair()
    with pytest.raises(WorkerError) as err:
        with_workers(detect(), [f"127.0.0.1:{port}"])
    assert "Nothing answers at 127.0.0.1:" in str(err.value)


def test_a_worker_killed_after_load_is_reported_and_the_app_goes_on(starter_model: Path) -> None:
    endpoints, procs = _workers(1)
    try:
        hardware, params, plan = _plan(starter_model, endpoints)
        engine = engine_for(hardware)
        engine.load(starter_model, params, plan=plan)
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        with pytest.raises(CamelidError) as err:
            engine.chat(MESSAGES, GREEDY)
        assert endpoints[0] in str(err.value) and "Camelid is still running" in str(err.value)
        assert not engine.loaded
        engine.unload()
        # This process was never touched: a local model loads and answers.
        local = Engine()
        local.load(starter_model, params.with_(n_gpu_layers=0, tensor_split=None))
        assert local.chat(MESSAGES, GREEDY.with_(max_tokens=4)).stats.completion_tokens >= 1
        local.unload()
    finally:
        for proc in procs:
            stop(proc)
