"""Ollama's API, driven by the official `ollama` client (its pydantic models validate every answer)
against a real server, and by raw HTTP for the NDJSON stream itself.

The 135M model's words are not the point (and round differently per CPU): the tests check shapes,
counts, durations, grammars and refusals the server guarantees, never the text.
"""

from __future__ import annotations

import json
import math
import time

import httpx
import ollama
import pytest

from app import __version__
from tests.server.conftest import CHAT_MODEL, EMBED_MODEL, LiveServer

pytestmark = pytest.mark.slow

HELLO = [{"role": "user", "content": "Say hello."}]
SHORT = {"num_predict": 8}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 24}},
                   "required": ["city"]}}}


@pytest.fixture(scope="module")
def client(server: LiveServer) -> ollama.Client:
    return ollama.Client(host=server.url, timeout=120)


def _assert_final(part: ollama.ChatResponse | ollama.GenerateResponse, limit: int) -> None:
    assert part.done is True and part.done_reason in ("stop", "length")
    assert isinstance(part.prompt_eval_count, int) and part.prompt_eval_count > 0
    assert isinstance(part.eval_count, int) and 1 <= part.eval_count <= limit
    for field in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        value = getattr(part, field)
        assert isinstance(value, int) and value >= 0, field
    assert part.total_duration is not None and part.eval_duration is not None
    assert part.total_duration >= part.eval_duration > 0
    assert isinstance(part.created_at, str) and part.created_at.endswith("Z")


def test_chat(client: ollama.Client, server: LiveServer) -> None:
    reply = client.chat(model=CHAT_MODEL, messages=[{"role": "system", "content": "You are brief."}, *HELLO],
                        options=SHORT)
    assert reply.model == CHAT_MODEL
    assert reply.message.role == "assistant" and isinstance(reply.message.content, str)
    assert not reply.message.tool_calls
    _assert_final(reply, 8)
    assert any(r.route == "/api/chat" and r.status == 200 for r in server.service.log)


def test_chat_with_the_tag(client: ollama.Client) -> None:
    reply = client.chat(model=CHAT_MODEL + ":latest", messages=HELLO, options={"num_predict": 2})
    assert reply.model == CHAT_MODEL + ":latest" and reply.done


def test_chat_stream(client: ollama.Client) -> None:
    parts = list(client.chat(model=CHAT_MODEL, messages=HELLO, options=SHORT, stream=True))
    assert len(parts) >= 2
    assert all(p.done is False and p.message.role == "assistant" for p in parts[:-1])
    assert all(isinstance(p.message.content, str) for p in parts)
    _assert_final(parts[-1], 8)
    assert parts[-1].message.content == ""
    assert "".join(p.message.content or "" for p in parts)


def test_ndjson_stream_is_the_default(server: LiveServer) -> None:
    """Without "stream", Ollama streams: one JSON object per line, the last with done true."""
    body = {"model": CHAT_MODEL, "messages": HELLO, "options": SHORT}
    with httpx.stream("POST", server.url + "/api/chat", json=body, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        raw = response.read().decode()
    assert raw.endswith("\n")
    lines = raw.split("\n")[:-1]
    objects = [json.loads(line) for line in lines]  # every line is one whole object
    assert len(objects) >= 2
    assert [o["done"] for o in objects] == [False] * (len(objects) - 1) + [True]
    assert all(o["model"] == CHAT_MODEL and o["message"]["role"] == "assistant" for o in objects)
    assert objects[-1]["done_reason"] in ("stop", "length") and objects[-1]["eval_count"] >= 1
    plain = httpx.post(server.url + "/api/chat", json={**body, "stream": False}, timeout=120)
    assert plain.headers["content-type"].startswith("application/json") and plain.json()["done"] is True


def test_generate(client: ollama.Client) -> None:
    reply = client.generate(model=CHAT_MODEL, prompt="Name a colour.", system="Answer in one word.",
                            options=SHORT)
    assert isinstance(reply.response, str) and reply.model == CHAT_MODEL
    _assert_final(reply, 8)
    parts = list(client.generate(model=CHAT_MODEL, prompt="Once upon a time", raw=True, options=SHORT,
                                 stream=True))
    assert all(not p.done and isinstance(p.response, str) for p in parts[:-1])
    _assert_final(parts[-1], 8)
    # raw: the prompt is the text itself, no chat template around it.
    templated = client.generate(model=CHAT_MODEL, prompt="Once upon a time", options={"num_predict": 1})
    assert parts[-1].prompt_eval_count is not None and templated.prompt_eval_count is not None
    assert parts[-1].prompt_eval_count < templated.prompt_eval_count


def test_generate_refusals(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model=CHAT_MODEL, prompt="def f(", suffix="return 1")
    assert err.value.status_code == 400 and "suffix" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model=CHAT_MODEL, prompt="What is this?", images=[b"\x89PNG\r\n\x1a\n"])
    assert err.value.status_code == 400 and "images" in err.value.error and "text only" in err.value.error


def test_images_in_chat_are_refused(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model=CHAT_MODEL, messages=[{"role": "user", "content": "What is this?",
                                                 "images": [b"\x89PNG\r\n\x1a\n"]}])
    assert err.value.status_code == 400
    assert "images" in err.value.error and err.value.error.rstrip().endswith(".")


def test_format_schema(client: ollama.Client) -> None:
    schema = {"type": "object", "properties": {"sunny": {"type": "boolean"},
                                               "colour": {"type": "string", "enum": ["red", "green", "blue"]}},
              # No other keys: an extra key's string is unbounded and could outrun num_predict.
              "required": ["sunny", "colour"], "additionalProperties": False}
    reply = client.chat(model=CHAT_MODEL, messages=[{"role": "user", "content": "Describe the sky as JSON."}],
                        format=schema, options={"num_predict": 60})
    data = json.loads(reply.message.content or "")
    assert isinstance(data["sunny"], bool) and data["colour"] in ("red", "green", "blue")
    generated = client.generate(model=CHAT_MODEL, prompt="The sky as JSON.", format=schema,
                                options={"num_predict": 60})
    assert set(json.loads(generated.response or "")) == {"sunny", "colour"}


def test_tools_are_accepted(client: ollama.Client) -> None:
    """The 135M model does not call tools reliably: a request with tools gives a valid reply."""
    reply = client.chat(model=CHAT_MODEL, messages=[{"role": "user", "content": "Weather in Paris?"}],
                        tools=[WEATHER], options={"num_predict": 40})
    assert reply.done and reply.message.role == "assistant"
    for call in reply.message.tool_calls or []:
        assert call.function.name == "get_weather" and isinstance(call.function.arguments, dict)
    # A conversation with a call and its result, as Ollama clients send them back.
    follow = client.chat(model=CHAT_MODEL, tools=[WEATHER], options=SHORT, messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "Sunny, 21 degrees", "tool_name": "get_weather"}])
    assert follow.done and isinstance(follow.message.content, str)


def test_tags(client: ollama.Client) -> None:
    listing = client.list()
    names = {m.model for m in listing.models}
    assert {CHAT_MODEL + ":latest", EMBED_MODEL + ":latest"} <= names
    chat = next(m for m in listing.models if m.model == CHAT_MODEL + ":latest")
    assert chat.size is not None and chat.size > 50_000_000
    assert chat.digest is not None and len(chat.digest) == 64 and int(chat.digest, 16) >= 0
    assert chat.modified_at is not None and chat.modified_at.tzinfo is not None
    assert chat.details is not None and chat.details.format == "gguf" and chat.details.family == "llama"
    assert chat.details.quantization_level == "Q4_1"
    assert chat.details.parameter_size and chat.details.parameter_size.endswith("M")
    embed = next(m for m in listing.models if m.model == EMBED_MODEL + ":latest")
    assert embed.details is not None and embed.details.family == "bert"


def test_show(client: ollama.Client) -> None:
    shown = client.show(CHAT_MODEL)
    assert shown.capabilities is not None and "completion" in shown.capabilities
    assert "embedding" not in shown.capabilities
    assert shown.modelinfo is not None and shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["llama.context_length"] == 8192
    assert isinstance(shown.modelinfo["general.parameter_count"], int)
    assert not any(k.startswith("tokenizer.") for k in shown.modelinfo)
    assert shown.template and "im_start" in shown.template
    assert shown.details is not None and shown.details.family == "llama"
    embed = client.show(EMBED_MODEL + ":latest")
    assert embed.capabilities == ["embedding"]
    with pytest.raises(ollama.ResponseError) as err:
        client.show("no-such-model")
    assert err.value.status_code == 404 and "no model called" in err.value.error


def test_ps_after_a_chat(client: ollama.Client) -> None:
    client.chat(model=CHAT_MODEL, messages=HELLO, options={"num_predict": 1})
    running = client.ps()
    chat = next(m for m in running.models if m.model == CHAT_MODEL + ":latest")
    assert chat.name == CHAT_MODEL + ":latest" and chat.expires_at is not None
    assert isinstance(chat.context_length, int) and chat.context_length > 0
    assert chat.size is not None and chat.size > 0 and chat.details is not None


def test_version(server: LiveServer) -> None:
    response = httpx.get(server.url + "/api/version", timeout=30)
    assert response.status_code == 200 and response.json() == {"version": __version__}


def test_embed(client: ollama.Client) -> None:
    result = client.embed(model=EMBED_MODEL, input=["The sky is blue.", "Grass is green."])
    assert result.model == EMBED_MODEL and len(result.embeddings) == 2
    for vector in result.embeddings:
        assert len(vector) == 384
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, abs_tol=1e-3)
    assert result.prompt_eval_count is not None and result.prompt_eval_count > 4
    assert isinstance(result.total_duration, int) and isinstance(result.load_duration, int)
    one = client.embed(model=EMBED_MODEL, input="One text.")
    assert len(one.embeddings) == 1 and len(one.embeddings[0]) == 384
    old = client.embeddings(model=EMBED_MODEL, prompt="One text.")
    assert len(old.embedding) == 384
    running = {m.model: m for m in client.ps().models}
    assert EMBED_MODEL + ":latest" in running and running[EMBED_MODEL + ":latest"].expires_at is not None
    with pytest.raises(ollama.ResponseError) as err:
        client.embed(model=EMBED_MODEL, input="x " * 2000, truncate=False)
    assert err.value.status_code == 400
    assert len(client.embed(model=EMBED_MODEL, input="x " * 2000).embeddings[0]) == 384  # truncated


def test_num_ctx_that_does_not_fit(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model=CHAT_MODEL, messages=HELLO, options={"num_ctx": 100_000_000})
    assert err.value.status_code == 507
    assert "does not fit" in err.value.error


def test_num_ctx_reloads(client: ollama.Client, server: LiveServer) -> None:
    reply = client.chat(model=CHAT_MODEL, messages=HELLO, options={"num_ctx": 2048, "num_predict": 2})
    assert reply.done and server.service.status()["chat"]["n_ctx"] == 2048
    client.chat(model=CHAT_MODEL, messages=HELLO, options={"num_predict": 2})  # no num_ctx: kept
    assert server.service.status()["chat"]["n_ctx"] == 2048


def test_load_and_keep_alive_zero(client: ollama.Client, server: LiveServer) -> None:
    unloaded = client.generate(model=CHAT_MODEL, prompt="", keep_alive=0)
    assert unloaded.done and unloaded.done_reason == "unload"
    assert server.service.status()["chat"] is None
    loaded = client.generate(model=CHAT_MODEL)
    assert loaded.done and loaded.done_reason == "load" and loaded.response == ""
    assert server.service.status()["chat"]["name"] == CHAT_MODEL
    reply = client.chat(model=CHAT_MODEL, messages=HELLO, options={"num_predict": 2}, keep_alive="0s")
    assert reply.done
    deadline = time.monotonic() + 10
    while server.service.status()["chat"] is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.service.status()["chat"] is None
    assert client.chat(model=CHAT_MODEL, messages=HELLO, options={"num_predict": 2}).done  # loads again


def test_errors_in_ollama_shape(client: ollama.Client, server: LiveServer) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="no-such-model", messages=HELLO)
    assert err.value.status_code == 404 and "no model called" in err.value.error
    bad = httpx.post(server.url + "/api/chat", json={"model": CHAT_MODEL, "messages": HELLO,
                                                     "options": {"temperature": -1}}, timeout=30)
    assert bad.status_code == 400 and set(bad.json()) == {"error"} and "temperature" in bad.json()["error"]
    pull = httpx.post(server.url + "/api/pull", json={"model": "llama3"}, timeout=30)
    assert pull.status_code == 501 and "camelid download" in pull.json()["error"]
