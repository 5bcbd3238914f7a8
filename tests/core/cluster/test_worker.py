"""A real `camelid worker` (llama.cpp's RPC server in a subprocess), probed and registered."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.cluster.probe import PROTOCOL, WorkerError, probe, read_status

REPO_ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.slow


def free_port_pair() -> int:
    """A port P with P+1 free too (the status side channel)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port < 65535:
            with socket.socket() as s2:
                try:
                    s2.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port pair")


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def start_worker(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "app.cli.worker", "--threads", "1", *args],
                            cwd=REPO_ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def stop(proc: subprocess.Popen) -> tuple[str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return out, err


def wait_ready(proc: subprocess.Popen, timeout: float = 60) -> dict:
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the 'ready' JSON line, printed before llama.cpp listens
    if not line:
        out, err = stop(proc)
        pytest.fail(f"the worker ended before it was ready: {out}\n{err}")
    ready = json.loads(line)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # then wait until llama.cpp listens
        try:
            socket.create_connection(("127.0.0.1", ready["port"]), timeout=1).close()
            return ready
        except OSError:
            time.sleep(0.1)
    pytest.fail("the worker never listened")


@pytest.fixture
def worker() -> Iterator[tuple[subprocess.Popen, dict]]:
    port = free_port_pair()
    proc = start_worker("--port", str(port), "--json")
    try:
        yield proc, wait_ready(proc)
    finally:
        stop(proc)


def test_probe_a_real_worker(worker) -> None:
    _proc, ready = worker
    assert ready["event"] == "ready" and ready["protocol"] == list(PROTOCOL)
    assert ready["rpc"] == [f"--rpc 127.0.0.1:{ready['port']}"] and ready["warning"] is None
    time.sleep(0.2)  # the knock in wait_ready is still being let go by the server
    info = probe(f"127.0.0.1:{ready['port']}", timeout=5)
    assert info.version == PROTOCOL
    assert len(info.devices) >= 1
    dev = info.devices[0]
    assert dev.total_bytes > 0 and 0 < dev.free_bytes <= dev.total_bytes
    assert info.status is not None
    measured = info.status["devices"][0]
    assert 0 < measured["free_bytes"] <= measured["total_bytes"]
    assert dev.free_source == "status" and dev.name == "CPU" and dev.kind == "cpu"
    assert info.status["threads"] == 1 and info.status["protocol"] == list(PROTOCOL)
    assert 0 < info.latency_s < 0.5

    # A client holding the worker: a second one waits, and the probe says it is busy.
    held = socket.create_connection(("127.0.0.1", ready["port"]), timeout=5)
    try:
        held.sendall(b"\x0e" + (24).to_bytes(8, "little") + bytes(24))
        assert int.from_bytes(held.recv(8), "little") == 28
        with pytest.raises(WorkerError) as err:
            probe(f"127.0.0.1:{ready['port']}", timeout=0.5)
        assert err.value.reason == "timeout"
        status = read_status("127.0.0.1", ready["port"] + 1)
        assert status is not None and status["busy"] is True
    finally:
        held.close()
    time.sleep(0.3)
    assert probe(f"127.0.0.1:{ready['port']}", timeout=5).version == PROTOCOL


def test_register_the_worker_in_a_subprocess(worker) -> None:
    """llama.cpp aborts a process whose worker fails: never register in the pytest process."""
    _, ready = worker
    endpoint = f"127.0.0.1:{ready['port']}"
    script = textwrap.dedent(f"""
        import json
        from app.core.cluster import rpc
        first = rpc.add_servers([{endpoint!r}])
        again = rpc.add_servers([{endpoint!r}])
        print(json.dumps({{"first": first, "again": again,
                          "devices": [d.to_dict() for d in rpc.rpc_devices()],
                          "local": [d.to_dict() for d in rpc.local_devices()]}}))
    """)
    time.sleep(0.2)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["first"] == [endpoint] and out["again"] == []
    assert len(out["devices"]) == 1  # registered once: not duplicated
    dev = out["devices"][0]
    assert dev["name"].startswith("RPC") and dev["description"] == endpoint
    assert dev["total_bytes"] > 0
    # ggml's own list has them after the local ones (llama.cpp's model device list puts them first)
    assert dev["index"] >= len(out["local"])
    assert all(not d["name"].startswith("RPC") for d in out["local"])


def test_add_servers_probes_first_and_raises_a_sentence() -> None:
    port = free_port_pair()
    script = textwrap.dedent(f"""
        from app.core.cluster import rpc
        from app.core.cluster.probe import WorkerError
        try:
            rpc.add_servers(["127.0.0.1:{port}"])
        except WorkerError as exc:
            print(exc)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"Nothing answers at 127.0.0.1:{port}" in done.stdout


def test_any_other_host_prints_the_warning() -> None:
    port = free_port_pair()
    proc = start_worker("--host", "0.0.0.0", "--port", str(port))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.1)
    finally:
        out, err = stop(proc)
    text = out + err
    assert "WARNING: this worker listens on 0.0.0.0" in text, text
    assert "no authentication" in text
    assert f"ssh -N -L {port}:127.0.0.1:{port} user@worker" in text
    assert f"--rpc 127.0.0.1:{port}" in text
    assert "Worker stopped." in out


def test_port_in_use_is_a_sentence() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = int(taken.getsockname()[1])
        done = subprocess.run([sys.executable, "-m", "app.cli.worker", "--port", str(port)],
                              cwd=REPO_ROOT, env=env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"Port {port} on 127.0.0.1 is already in use" in done.stderr
    assert "Traceback" not in done.stderr


def test_unknown_device_is_a_sentence() -> None:
    port = free_port_pair()
    done = subprocess.run([sys.executable, "-m", "app.cli.worker", "--port", str(port),
                           "--devices", "NOPE0"], cwd=REPO_ROOT, env=env(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert "no llama.cpp device named 'NOPE0'" in done.stderr and "CPU" in done.stderr


def test_a_model_loads_across_the_worker(worker, starter_model) -> None:
    """Every layer on the worker's RPC device, and a reply: the registry Llama() reads is ours."""
    _, ready = worker
    endpoint = f"127.0.0.1:{ready['port']}"
    script = textwrap.dedent(f"""
        from app.core.cluster import rpc
        from app.core.machine import llama_cpp_module
        rpc.add_servers([{endpoint!r}])
        llama_cpp = llama_cpp_module()
        llm = llama_cpp.Llama(model_path={str(starter_model)!r}, n_gpu_layers=-1, n_ctx=256,
                              n_threads=1, verbose=True, seed=1)
        print("REPLY", repr(llm("The capital of France is", max_tokens=4)["choices"][0]["text"]))
    """)
    time.sleep(0.2)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env(),
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "assigned to device RPC0" in done.stderr
    assert "assigned to device CPU" not in done.stderr
    assert "REPLY" in done.stdout
