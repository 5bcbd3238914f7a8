"""The --rpc flag as a user meets it: plan, recommend and chat with a real `camelid worker` on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.core.cluster.test_worker import free_port_pair, start_worker, stop, wait_ready

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def worker() -> Iterator[str]:
    port = free_port_pair()
    proc = start_worker("--port", str(port), "--json")
    wait_ready(proc)
    yield f"127.0.0.1:{port}"
    stop(proc)


def camelid(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CAMELID_HOME": str(home), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def test_plan_shows_what_the_worker_holds(worker: str, starter_model: Path, camelid_home: Path) -> None:
    out = camelid(camelid_home, "plan", str(starter_model), "--ctx", "1024", "--rpc", worker, "--json")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    remote = [d for d in plan["devices"] if d["kind"] == "rpc"]
    assert len(remote) == 1 and remote[0]["layers"] > 0 and worker in remote[0]["name"]
    words = camelid(camelid_home, "plan", str(starter_model), "--ctx", "1024", "--rpc", worker)
    assert f"on {worker} holds" in words.stdout


def test_a_dead_worker_is_one_sentence(starter_model: Path, camelid_home: Path) -> None:
    closed = f"127.0.0.1:{free_port_pair()}"
    for args in (("plan", str(starter_model)), ("recommend",), ("chat", str(starter_model), "--prompt", "hi")):
        out = camelid(camelid_home, *args, "--rpc", closed)
        assert out.returncode == 2 and "Nothing answers at" in out.stdout + out.stderr, args
        assert "Traceback" not in out.stdout + out.stderr


def test_recommend_says_what_the_machines_change(worker: str, camelid_home: Path) -> None:
    out = camelid(camelid_home, "recommend", "--rpc", worker, "--top", "2")
    assert out.returncode == 0, out.stderr
    assert "the machine you added" in out.stdout.lower()


def test_chat_answers_with_the_model_split_across_the_worker(worker: str, starter_model: Path,
                                                             camelid_home: Path) -> None:
    out = camelid(camelid_home, "chat", str(starter_model), "--rpc", worker, "--ctx", "1024", "--prompt",
                  "Say hello.", "--max-tokens", "6", "--seed", "1", "--json")
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout)
    assert reply["stats"]["completion_tokens"] >= 1 and reply["load"]["n_gpu_layers"] > 0
