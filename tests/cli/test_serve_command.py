"""`camelid serve` as a user runs it: a real process, its printed URL, a request, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]


def _serve(home: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "CAMELID_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "app", "serve", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _first_line(process: subprocess.Popen[str], timeout: float = 120) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.strip():
            return line
        if process.poll() is not None:
            break
    raise AssertionError(f"no output from camelid serve (exit {process.poll()}): "
                         f"{process.stderr.read() if process.stderr else ''}")


@pytest.mark.slow
def test_serve_prints_its_url_answers_and_stops_on_ctrl_c(starter_model: Path, camelid_home: Path) -> None:
    process = _serve(camelid_home, "--port", "0", "--json", "--model", str(starter_model))
    try:
        started = json.loads(_first_line(process))
        assert started["event"] == "started" and started["url"].startswith("http://127.0.0.1:")
        assert started["model"] == starter_model.name.removesuffix(".gguf") and started["lan"] is False
        assert "curl " in started["curl"] and "/v1/chat/completions" in started["curl"]
        reply = httpx.post(started["openai"] + "/chat/completions", timeout=120, json={
            "model": started["model"], "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]})
        assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"] is not None
        logged = json.loads(_first_line(process))
        assert logged["event"] == "request" and logged["status"] == 200 and logged["completion_tokens"] >= 1
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "Traceback" not in err
    assert json.loads(out.strip().splitlines()[-1]) == {"event": "stopping"}


def test_serve_on_the_network_without_a_key_is_refused(camelid_home: Path) -> None:
    process = _serve(camelid_home, "--host", "0.0.0.0", "--port", "0")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "needs an API key" in out + err and "Traceback" not in out + err


def test_serve_a_model_that_is_not_there_is_one_sentence(camelid_home: Path) -> None:
    process = _serve(camelid_home, "--port", "0", "--model", "no-such-model")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "no-such-model" in out + err and "Traceback" not in out + err
