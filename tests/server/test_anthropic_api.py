"""Anthropic's Messages API, driven by the official `anthropic` client against a real server.

The 135M model's words are not the point (and round differently per CPU): the tests check the
shapes, counts, event order, stop reasons and tool calls the server guarantees, never the text.
"""

from __future__ import annotations

import json

import anthropic
import httpx
import pytest

from tests.server.conftest import CHAT_MODEL, LiveServer

pytestmark = pytest.mark.slow

WEATHER = {"name": "get_weather", "description": "The current weather in a city",
           "input_schema": {"type": "object",
                            # Bounded, so a forced call always closes within max_tokens whatever is sampled.
                            "properties": {"city": {"type": "string", "maxLength": 24},
                                           "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                            "required": ["city", "unit"]}}
HELLO = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def client(server: LiveServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0, timeout=120)


def _text(message: anthropic.types.Message) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


def test_message(client: anthropic.Anthropic, server: LiveServer) -> None:
    reply = client.messages.create(model=CHAT_MODEL, max_tokens=12,
                                   extra_body={"temperature": 0}, messages=HELLO,
                                   metadata={"user_id": "ignored"})
    assert reply.type == "message" and reply.role == "assistant" and reply.model == CHAT_MODEL
    assert reply.id.startswith("msg_")
    assert [b.type for b in reply.content] == ["text"] and isinstance(reply.content[0].text, str)
    assert reply.stop_reason in ("end_turn", "max_tokens") and reply.stop_sequence is None
    assert reply.usage.input_tokens > 5 and 1 <= reply.usage.output_tokens <= 12
    assert any(r.route == "/v1/messages" and r.status == 200 for r in server.service.log)


def test_max_tokens_is_the_limit(client: anthropic.Anthropic) -> None:
    reply = client.messages.create(model=CHAT_MODEL, max_tokens=2, extra_body={"temperature": 0},
                                   messages=[{"role": "user", "content": "Tell me a long story about a cat."}])
    assert reply.usage.output_tokens <= 2
    if reply.usage.output_tokens == 2:
        assert reply.stop_reason == "max_tokens"


def test_system_prompt_string_and_blocks(client: anthropic.Anthropic) -> None:
    """A system prompt is rendered into the prompt: as a string or as text blocks, the same tokens."""
    # Longer than the default system prompt SmolLM2's template writes when there is none.
    system = ("You answer every question in one short sentence, always politely, never with lists, and "
              "you never mention that you are a language model or who trained you.")
    as_string = client.messages.create(model=CHAT_MODEL, max_tokens=4, system=system, messages=HELLO)
    as_blocks = client.messages.create(model=CHAT_MODEL, max_tokens=4, messages=HELLO,
                                       system=[{"type": "text", "text": system}])
    counted = client.messages.count_tokens(model=CHAT_MODEL, system=system, messages=HELLO)
    assert as_string.usage.input_tokens == as_blocks.usage.input_tokens == counted.input_tokens
    plain = client.messages.count_tokens(model=CHAT_MODEL, messages=HELLO)
    assert 0 < plain.input_tokens < counted.input_tokens


def test_stream_helper(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model=CHAT_MODEL, max_tokens=16, messages=HELLO) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert all(isinstance(p, str) for p in pieces)
    assert _text(final) == "".join(pieces)
    assert final.stop_reason in ("end_turn", "max_tokens")
    assert final.usage.input_tokens > 5 and 1 <= final.usage.output_tokens <= 16
    assert final.id.startswith("msg_") and final.model == CHAT_MODEL


def test_create_stream_events(client: anthropic.Anthropic) -> None:
    events = list(client.messages.create(model=CHAT_MODEL, max_tokens=8, messages=HELLO, stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds[1] == "content_block_start" and kinds[-3] == "content_block_stop"
    assert set(kinds[2:-3]) <= {"content_block_delta"}
    deltas = [e for e in events if e.type == "content_block_delta"]
    assert all(e.delta.type == "text_delta" and e.index == 0 for e in deltas)
    delta = events[-2]
    assert delta.delta.stop_reason in ("end_turn", "max_tokens")
    assert 1 <= delta.usage.output_tokens <= 8


def test_sse_event_names_and_order(server: LiveServer) -> None:
    """The raw stream: `event:` names in Anthropic's documented order, each data's type its event's name."""
    body = {"model": CHAT_MODEL, "max_tokens": 6, "stream": True, "messages": HELLO}
    with httpx.stream("POST", server.url + "/v1/messages", json=body, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    frames = [f for f in text.split("\n\n") if f.strip()]
    names = []
    for frame in frames:
        lines = frame.split("\n")
        assert lines[0].startswith("event: ") and lines[1].startswith("data: ") and len(lines) == 2
        name, data = lines[0][7:], json.loads(lines[1][6:])
        assert data["type"] == name
        names.append(name)
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) <= {"content_block_delta"}
    start = json.loads(frames[0].split("\n")[1][6:])["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["role"] == "assistant"


def test_stop_sequences(client: anthropic.Anthropic) -> None:
    stops = [" ", "e", "a", "."]
    reply = client.messages.create(model=CHAT_MODEL, max_tokens=40, stop_sequences=stops,
                                   extra_body={"temperature": 0}, messages=[{"role": "user", "content": "Write a sentence about the sea."}])
    assert reply.stop_reason == "stop_sequence"
    assert reply.stop_sequence in stops
    assert not any(s in _text(reply) for s in stops)


def test_sampling_fields_in_extra_body(client: anthropic.Anthropic) -> None:
    """Newer clients have no temperature/top_p/top_k arguments; sent in extra_body they are accepted."""
    reply = client.messages.create(model=CHAT_MODEL, max_tokens=4, messages=HELLO,
                                   extra_body={"temperature": 0.5, "top_p": 0.9, "top_k": 20})
    assert reply.type == "message"
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(model=CHAT_MODEL, max_tokens=4, messages=HELLO, extra_body={"temperature": 1.5})
    assert "temperature" in str(err.value)


def test_structured_output(client: anthropic.Anthropic) -> None:
    schema = {"type": "object", "properties": {"sunny": {"type": "boolean"},
                                               "colour": {"type": "string", "enum": ["red", "green", "blue"]}},
              "required": ["sunny", "colour"], "additionalProperties": False}
    reply = client.messages.create(model=CHAT_MODEL, max_tokens=60, messages=HELLO,
                                   output_config={"format": {"type": "json_schema", "schema": schema}})
    data = json.loads(_text(reply))
    assert isinstance(data["sunny"], bool) and data["colour"] in ("red", "green", "blue")


def test_forced_tool_and_tool_result_round_trip(client: anthropic.Anthropic) -> None:
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    reply = client.messages.create(model=CHAT_MODEL, max_tokens=80, tools=[WEATHER], messages=ask,
                                   tool_choice={"type": "tool", "name": "get_weather"})
    assert reply.stop_reason == "tool_use"
    uses = [b for b in reply.content if b.type == "tool_use"]
    assert len(uses) == 1
    use = uses[0]
    assert use.name == "get_weather" and use.id.startswith("toolu_")
    assert isinstance(use.input, dict) and set(use.input) == {"city", "unit"}
    assert isinstance(use.input["city"], str) and use.input["unit"] in ("celsius", "fahrenheit")
    # The call and its result go back as the client sends them; the model answers in text.
    follow = client.messages.create(
        model=CHAT_MODEL, max_tokens=16, tools=[WEATHER],
        messages=[*ask, {"role": "assistant", "content": reply.content},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                                "content": [{"type": "text", "text": "Sunny, 21 degrees"}]}]}])
    assert follow.type == "message" and follow.usage.input_tokens > reply.usage.input_tokens
    assert all(b.type in ("text", "tool_use") for b in follow.content)


def test_streamed_forced_tool(client: anthropic.Anthropic) -> None:
    kwargs = {"model": CHAT_MODEL, "max_tokens": 80, "tools": [WEATHER],
              "tool_choice": {"type": "any"}, "messages": [{"role": "user", "content": "Weather in Oslo?"}]}
    with client.messages.stream(**kwargs) as stream:  # type: ignore[arg-type]
        assert list(stream.text_stream) == []
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [b.type for b in final.content] == ["tool_use"]
    assert final.content[0].name == "get_weather" and isinstance(final.content[0].input["city"], str)
    events = list(client.messages.create(stream=True, **kwargs))  # type: ignore[call-overload]
    json_deltas = [e for e in events if e.type == "content_block_delta"]
    assert json_deltas and all(e.delta.type == "input_json_delta" for e in json_deltas)
    assert isinstance(json.loads("".join(e.delta.partial_json for e in json_deltas)), dict)


def test_tool_choice_none_and_unknown_tool(client: anthropic.Anthropic) -> None:
    reply = client.messages.create(model=CHAT_MODEL, max_tokens=8, tools=[WEATHER], tool_choice={"type": "none"},
                                   messages=HELLO)
    assert reply.stop_reason in ("end_turn", "max_tokens") and reply.content[0].type == "text"
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(model=CHAT_MODEL, max_tokens=8, tools=[WEATHER], messages=HELLO,
                               tool_choice={"type": "tool", "name": "no_such_tool"})
    assert "no_such_tool" in str(err.value)


def test_image_block_is_refused(client: anthropic.Anthropic) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(model=CHAT_MODEL, max_tokens=8,
                               messages=[{"role": "user", "content": [image, {"type": "text", "text": "What?"}]}])
    assert err.value.status_code == 400
    body = err.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    message = body["error"]["message"]
    assert "image" in message and "text only" in message and message.endswith(".")


def test_prefilled_assistant_turn_is_refused(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(model=CHAT_MODEL, max_tokens=8,
                               messages=[*HELLO, {"role": "assistant", "content": "Hello"}])
    assert "assistant" in str(err.value)


def test_errors_in_anthropic_shape(client: anthropic.Anthropic, server: LiveServer) -> None:
    with pytest.raises(anthropic.NotFoundError) as err:
        client.messages.create(model="no-such-model", max_tokens=8, messages=HELLO)
    assert "no model called" in str(err.value)
    response = httpx.post(server.url + "/v1/messages", json={"model": CHAT_MODEL, "messages": HELLO}, timeout=30)
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]


def test_count_tokens(client: anthropic.Anthropic) -> None:
    plain = client.messages.count_tokens(model=CHAT_MODEL, messages=HELLO)
    with_tools = client.messages.count_tokens(model=CHAT_MODEL, messages=HELLO, tools=[WEATHER])
    assert 0 < plain.input_tokens < with_tools.input_tokens
    reply = client.messages.create(model=CHAT_MODEL, max_tokens=2, messages=HELLO)
    assert reply.usage.input_tokens == plain.input_tokens
