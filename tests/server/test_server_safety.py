"""The server under hostile or careless use, over raw HTTP: keys, body caps, a full queue, clients that
leave, models that do not fit, ports in use. Every refusal is a status and a sentence in the API's shape."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from app.core.errors import UsageError
from app.core.server import ServerConfig
from tests.server.conftest import CHAT_MODEL, LiveServer, start_server, stop_server

pytestmark = pytest.mark.slow

CHAT = "/v1/chat/completions"


def _chat(max_tokens: int = 5, **extra: object) -> dict:
    return {"model": CHAT_MODEL, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "Tell me a very long story about a dragon."}], **extra}


#: A reply that cannot end early: the grammar allows no end before a thousand numbers.
ENDLESS = {"response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {
    "type": "array", "items": {"type": "integer"}, "minItems": 1000}}}}


def _wait(condition, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


# -- keys ----------------------------------------------------------------------------------
def test_a_network_bind_needs_a_key() -> None:
    with pytest.raises(UsageError) as err:
        ServerConfig(host="0.0.0.0")
    assert "needs an API key" in str(err.value)
    assert not ServerConfig(host="127.0.0.1").lan and not ServerConfig(host="::1").lan


def test_401_without_the_key_on_a_lan_bind(library: Path) -> None:
    live = start_server(library, host="0.0.0.0", api_key="sesame")
    try:
        base = f"http://127.0.0.1:{live.handle.port}"
        with httpx.Client(base_url=base, timeout=30) as http:
            denied = http.get("/v1/models")
            assert denied.status_code == 401
            assert "needs an API key" in denied.json()["error"]["message"]
            assert http.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert http.get("/v1/models", headers={"Authorization": "Bearer sesame"}).status_code == 200
            assert http.get("/v1/models", headers={"x-api-key": "sesame"}).status_code == 200
            # Each API's own error shape.
            anthropic = http.post("/v1/messages", json={})
            assert anthropic.status_code == 401 and anthropic.json()["type"] == "error"
            assert anthropic.json()["error"]["type"] == "authentication_error"
            ollama = http.get("/api/tags")
            assert ollama.status_code == 401 and isinstance(ollama.json()["error"], str)
    finally:
        stop_server(live)


def test_generated_key_is_kept_as_a_0600_hash(camelid_home: Path) -> None:
    from app.core.server.runner import key_matches, key_path, new_api_key

    key = new_api_key()
    path = key_path()
    assert path.stat().st_mode & 0o777 == 0o600
    assert key not in path.read_text() and key_matches(key) and not key_matches(key + "x")


# -- bodies -----------------------------------------------------------------------------------
def test_413_for_a_huge_body(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        big = b'{"model": "x", "messages": [{"role": "user", "content": "' + b"a" * (9 << 20) + b'"}]}'
        response = http.post(CHAT, content=big, headers={"content-type": "application/json"})
        assert response.status_code == 413
        assert "larger than this server accepts" in response.json()["error"]["message"]

        def chunks():  # no Content-Length: the cap applies to what arrives
            for _ in range(10):
                yield b"a" * (1 << 20)

        streamed = http.post(CHAT, content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413


def test_bad_json_and_bad_fields_are_sentences(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        garbage = http.post(CHAT, content=b"{not json", headers={"content-type": "application/json"})
        assert garbage.status_code == 400 and garbage.json()["error"]["message"] == "The request body is not valid JSON."
        wrong = http.post(CHAT, json={"model": CHAT_MODEL, "messages": [{"role": "user", "content": "x"}],
                                      "temperature": 9})
        assert wrong.status_code == 400 and "temperature" in wrong.json()["error"]["message"]
        unknown = http.get("/v1/nothing")
        assert unknown.status_code == 404 and "There is no GET /v1/nothing" in unknown.json()["error"]["message"]
        ollama_404 = http.get("/api/nothing")
        assert ollama_404.json() == {"error": "There is no GET /api/nothing here."}


# -- the queue ------------------------------------------------------------------------------
def test_429_when_the_queue_is_full(library: Path) -> None:
    live = start_server(library, queue_limit=1)
    gate = threading.Event()
    try:
        # The engine's owner thread is busy (as with a long reply): the next request waits in the queue.
        live.runner.call(lambda: gate.wait(60))
        waiting: list[httpx.Response] = []
        first = threading.Thread(target=lambda: waiting.append(httpx.post(live.url + CHAT, json=_chat(),
                                                                          timeout=120)))
        first.start()
        _wait(lambda: live.service.active == 1)
        refused = httpx.post(live.url + CHAT, json=_chat(), timeout=30)
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert "limit is 1" in refused.json()["error"]["message"]
        gate.set()
        first.join(120)
        assert waiting and waiting[0].status_code == 200  # the queued one was not lost
        assert httpx.post(live.url + CHAT, json=_chat(), timeout=60).status_code == 200
    finally:
        gate.set()
        stop_server(live)


def test_requests_queue_in_arrival_order(server: LiveServer) -> None:
    """Eight clients waiting at once: all answered, none lost, served in the order they arrived.

    The engine is held busy while they arrive one by one (each admitted before the next is sent),
    so the arrival order is known; prompts of growing length tell the log lines apart.
    """
    gate = threading.Event()
    server.runner.call(lambda: gate.wait(60))
    before = len(server.service.log)
    statuses: list[int] = []
    threads = []
    try:
        for i in range(8):
            body = {"model": CHAT_MODEL, "max_tokens": 2, "seed": i,
                    "messages": [{"role": "user", "content": "hello " * (i + 1)}]}
            t = threading.Thread(target=lambda b=body: statuses.append(
                httpx.post(server.url + CHAT, json=b, timeout=120).status_code))
            t.start()
            threads.append(t)
            _wait(lambda n=i + 1: server.service.active == n)
    finally:
        gate.set()
    for t in threads:
        t.join(120)
    assert statuses == [200] * 8
    served = [r.prompt_tokens for r in list(server.service.log)[before:] if r.route == CHAT]
    assert len(served) == 8 and served == sorted(served) and len(set(served)) == 8


# -- clients that leave ------------------------------------------------------------------------
def test_a_client_that_disconnects_frees_the_engine(server: LiveServer) -> None:
    before = len(server.service.log)
    with httpx.Client(base_url=server.url, timeout=60) as http, \
            http.stream("POST", CHAT, json=_chat(4000, stream=True, **ENDLESS)) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        next(lines)
    # The stream is closed: the engine stops that reply and is free for the next request.
    _wait(lambda: server.service.active == 0)
    _wait(lambda: any(r.status == 499 for r in list(server.service.log)[before:]))
    gone = next(r for r in list(server.service.log)[before:] if r.status == 499)
    assert gone.stop_reason == "cancelled" and gone.completion_tokens < 4000
    assert httpx.post(server.url + CHAT, json=_chat(), timeout=60).status_code == 200


def test_a_non_streaming_client_that_disconnects_is_cancelled(server: LiveServer) -> None:
    before = len(server.service.log)
    body = json.dumps(_chat(4000, **ENDLESS)).encode()
    with socket.create_connection(("127.0.0.1", server.handle.port), timeout=30) as sock:
        sock.sendall(b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        _wait(lambda: server.service.active == 1)
    _wait(lambda: server.service.active == 0)
    _wait(lambda: any(r.status == 499 for r in list(server.service.log)[before:]))
    gone = next(r for r in list(server.service.log)[before:] if r.status == 499)
    assert gone.stop_reason == "cancelled"


# -- models that do not fit --------------------------------------------------------------------
def test_a_model_that_does_not_fit_is_refused_with_its_reason(tmp_path: Path) -> None:
    from app.core.fit.architectures import ArchConstants
    from tests.fixtures.synthetic_gguf import LLAMA_KV, big_model

    seventy = ArchConstants("llama", 80, 8192, 64, 8, 28672, 128256, rope_freqs=True, n_ctx_train=131072)
    kv = {**LLAMA_KV, "block_count": 80, "embedding_length": 8192, "attention.head_count": 64,
          "feed_forward_length": 28672}
    big_model(tmp_path / "Llama-3.3-70B-Instruct-Q4_K_M.gguf", arch=seventy, kv=kv)  # sparse, ~42 GB
    live = start_server(tmp_path)
    try:
        response = httpx.post(live.url + CHAT, json={**_chat(), "model": "Llama-3.3-70B-Instruct-Q4_K_M"},
                              timeout=60)
        assert response.status_code == 507
        message = response.json()["error"]["message"]
        assert "does not fit on this machine" in message and "needs about" in message
        assert live.service.engine.model_path is None  # nothing was loaded
    finally:
        stop_server(live)


def test_port_in_use_is_a_sentence(server: LiveServer, library: Path) -> None:
    from app.core.server import ModelService, ServerHandle

    handle = ServerHandle(server.service, ServerConfig(port=server.handle.port))
    with pytest.raises(UsageError) as err:
        handle.start()
    assert "already in use" in str(err.value)
    assert isinstance(server.service, ModelService)


def test_cors_is_off_unless_origins_are_given(server: LiveServer, library: Path) -> None:
    origin = "http://localhost:3000"
    plain = httpx.get(server.url + "/v1/models", headers={"origin": origin}, timeout=30)
    assert "access-control-allow-origin" not in plain.headers
    live = start_server(library, cors=(origin,))
    try:
        allowed = httpx.options(live.url + "/v1/models", timeout=30, headers={
            "origin": origin, "access-control-request-method": "GET"})
        assert allowed.headers.get("access-control-allow-origin") == origin
        other = httpx.get(live.url + "/v1/models", headers={"origin": "http://evil.example"}, timeout=30)
        assert "access-control-allow-origin" not in other.headers
    finally:
        stop_server(live)


def test_idle_unload_frees_a_model_the_server_loaded(library: Path) -> None:
    live = start_server(library, idle_unload_s=0.3)
    try:
        assert httpx.post(live.url + CHAT, json=_chat(), timeout=60).status_code == 200
        _wait(lambda: live.service.engine.model_path is None, timeout=30)
        assert live.service.status()["chat"] is None
    finally:
        stop_server(live)
