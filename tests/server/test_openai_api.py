"""The OpenAI-compatible routes, driven by the official `openai` client against a real server.

The 135M model's words are not the point (and round differently per CPU): the tests check shapes,
counts, grammars and tool calls that the server guarantees, and compare replies only with bare
llama-cpp-python given the same parameters on the same evaluation path.
"""

from __future__ import annotations

import json
import math

import openai
import pytest

from tests.server.conftest import CHAT_MODEL, EMBED_MODEL, LiveServer

pytestmark = pytest.mark.slow

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city",
    # Bounded, so a forced call always closes within max_tokens whatever is sampled.
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 24},
                                                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"]}}}


@pytest.fixture(scope="module")
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_models_lists_the_library(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert CHAT_MODEL in ids and EMBED_MODEL in ids
    assert client.models.retrieve(CHAT_MODEL).id == CHAT_MODEL
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("no-such-model")
    assert "no model called" in str(err.value)


def test_chat_completion(client: openai.OpenAI, server: LiveServer) -> None:
    reply = client.chat.completions.create(
        model=CHAT_MODEL, max_tokens=12, temperature=0,
        messages=[{"role": "system", "content": "You are brief."}, {"role": "user", "content": "Say hello."}])
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and reply.model == CHAT_MODEL
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage is not None and reply.usage.prompt_tokens > 5
    assert 1 <= reply.usage.completion_tokens <= 12
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    # The model the server loaded is the engine's, and the log has the request.
    assert server.service.status()["chat"]["name"] == CHAT_MODEL
    assert any(r.route == "/v1/chat/completions" and r.status == 200 for r in server.service.log)


def test_streaming_equals_the_non_streamed_reply(client: openai.OpenAI) -> None:
    """Same seed, same settings, same (fresh) evaluation path: the stream's text is the plain reply's."""
    kwargs = {"model": CHAT_MODEL, "max_tokens": 16, "seed": 7, "temperature": 0.8,
              "messages": [{"role": "user", "content": "Name three colours."}]}
    plain = client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True},
                                                 **kwargs))  # type: ignore[call-overload]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [plain.choices[0].finish_reason]
    usage = chunks[-1].usage
    assert usage is not None and not chunks[-1].choices
    assert usage.completion_tokens == plain.usage.completion_tokens  # type: ignore[union-attr]


def test_reply_equals_bare_llama_cpp(client: openai.OpenAI, server: LiveServer, starter_model) -> None:  # type: ignore[no-untyped-def]
    """Greedy through the server = greedy with bare llama-cpp-python: same prompt, load parameters, sampling."""
    from app.core.machine import llama_cpp_module

    llama_cpp = llama_cpp_module()
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    reply = client.chat.completions.create(model=CHAT_MODEL, max_tokens=10, temperature=0, seed=1,
                                           top_p=1, extra_body={"top_k": 1, "min_p": 0, "repeat_penalty": 1},
                                           messages=messages)  # type: ignore[arg-type]
    engine = server.service.engine
    prompt = server.runner.call(lambda: engine.render(messages)).result()
    assert engine.report is not None
    llm = llama_cpp.Llama(str(starter_model), seed=1, **engine.report.params.llama_kwargs())
    tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
    assert reply.usage is not None and reply.usage.prompt_tokens == len(tokens)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    out: list[int] = []
    for token in llm.generate(tokens, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0):
        if llama_cpp.llama_vocab_is_eog(vocab, token) or len(out) == 10:
            break
        out.append(token)
    assert reply.choices[0].message.content == llm.detokenize(out).decode("utf-8", errors="replace")
    llm.close()


def test_stop_strings_end_the_reply(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Count from 1 to 20, one number per line."}]
    full = client.chat.completions.create(model=CHAT_MODEL, messages=messages, max_tokens=40, seed=3)  # type: ignore[arg-type]
    text = full.choices[0].message.content or ""
    assert len(text) > 4
    stop = text[len(text) // 2: len(text) // 2 + 2]
    cut = client.chat.completions.create(model=CHAT_MODEL, messages=messages, max_tokens=40, seed=3, stop=[stop])  # type: ignore[arg-type]
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == text[:text.index(stop)]


def test_json_schema_response_parses(client: openai.OpenAI) -> None:
    # Bounded strings and list: the reply always closes within max_tokens whatever is sampled.
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 30},
                                               "age": {"type": "integer", "minimum": 0, "maximum": 150},
                                               "tags": {"type": "array", "maxItems": 3,
                                                        "items": {"type": "string", "maxLength": 20}}},
              "required": ["name", "age", "tags"], "additionalProperties": False}
    reply = client.chat.completions.create(
        model=CHAT_MODEL, max_tokens=200, temperature=0.7,
        messages=[{"role": "user", "content": "Invent a person."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}})
    assert reply.choices[0].finish_reason == "stop"
    data = json.loads(reply.choices[0].message.content or "")
    assert set(data) == {"name", "age", "tags"}
    assert isinstance(data["name"], str) and isinstance(data["age"], int) and isinstance(data["tags"], list)


def test_schema_strings_cannot_hold_raw_control_characters() -> None:
    """JSON forbids a raw newline inside a string; llama-cpp-python's converter allows it, Camelid's grammar not."""
    from app.core.server.generation import schema_grammar

    rule = next(line for line in schema_grammar({"type": "object", "properties": {"a": {"type": "string"}}})
                .splitlines() if line.startswith("char ::="))
    assert "\\x00-\\x1F" in rule


def test_json_object_response_parses(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=CHAT_MODEL, max_tokens=120, response_format={"type": "json_object"},
                                           messages=[{"role": "user", "content": "A JSON object about cats."}])
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(reply.choices[0].message.content or ""), dict)


def test_tool_call_round_trip(client: openai.OpenAI) -> None:
    messages: list = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(model=CHAT_MODEL, messages=messages, tools=[WEATHER],  # type: ignore[list-item]
                                           tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                           max_tokens=80)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    args = json.loads(call.function.arguments)
    assert isinstance(args["city"], str) and args["unit"] in ("celsius", "fahrenheit")
    # The result goes back as a tool message; the model answers in words.
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21})}]
    second = client.chat.completions.create(model=CHAT_MODEL, messages=messages, tools=[WEATHER],  # type: ignore[list-item]
                                            tool_choice="none", max_tokens=20)
    assert second.choices[0].message.tool_calls is None
    assert second.choices[0].message.content
    # The call and its result are in the prompt: longer than the question alone.
    alone = client.chat.completions.create(model=CHAT_MODEL, messages=messages[:1], max_tokens=1)
    assert second.usage.prompt_tokens > alone.usage.prompt_tokens + 10  # type: ignore[union-attr]


def test_required_tool_call_streams(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "Weather in Oslo?"}], tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="required", max_tokens=80, stream=True))
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert len(calls) == 1 and calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert "city" in json.loads(calls[0].function.arguments)  # type: ignore[union-attr, arg-type]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_logprobs(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=CHAT_MODEL, max_tokens=6, logprobs=True, top_logprobs=3,
                                           messages=[{"role": "user", "content": "Hi"}])
    items = reply.choices[0].logprobs.content  # type: ignore[union-attr]
    assert len(items) == reply.usage.completion_tokens  # type: ignore[arg-type, union-attr]
    for item in items:  # type: ignore[union-attr]
        assert item.logprob <= 0 and len(item.top_logprobs) == 3
        ranked = [t.logprob for t in item.top_logprobs]
        assert ranked == sorted(ranked, reverse=True) and ranked[0] >= item.logprob - 1e-6
        assert sum(math.exp(t.logprob) for t in item.top_logprobs) <= 1 + 1e-6
    assert "".join(i.token for i in items) == reply.choices[0].message.content  # type: ignore[union-attr]


def test_completions(client: openai.OpenAI) -> None:
    prompt = "The capital of France is"
    reply = client.completions.create(model=CHAT_MODEL, prompt=prompt, max_tokens=6, logprobs=2, echo=True)
    choice = reply.choices[0]
    # echo=True returns the prompt itself first, then whatever the model wrote (not checked: CPU-dependent).
    assert choice.text.startswith(prompt) and len(choice.text) > len(prompt)
    assert choice.logprobs is not None and len(choice.logprobs.tokens) == reply.usage.completion_tokens  # type: ignore[arg-type, union-attr]
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=CHAT_MODEL, prompt="One, two,", max_tokens=5, stream=True) if c.choices)
    assert streamed


def test_embeddings(client: openai.OpenAI) -> None:
    # The client asks for base64 unless told otherwise; both encodings must decode to the same unit vectors.
    texts = ["The cat sits on the mat.", "A feline rests on a rug.", "Stock prices fell sharply."]
    b64 = client.embeddings.create(model=EMBED_MODEL, input=texts)
    floats = client.embeddings.create(model=EMBED_MODEL, input=texts, encoding_format="float")
    assert [d.index for d in b64.data] == [0, 1, 2] and b64.usage.prompt_tokens > 10
    vectors = [d.embedding for d in floats.data]
    assert all(len(v) == 384 for v in vectors)
    for a, b in zip(vectors, (d.embedding for d in b64.data), strict=True):
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-6
        assert abs(sum(x * x for x in a) - 1) < 1e-4

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2])


def test_embedding_with_a_chat_model_is_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model=CHAT_MODEL, input="x")
    assert "not an embedding model" in str(err.value)


def test_errors_in_openai_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-17", messages=[{"role": "user", "content": "x"}])
    assert "no model called 'gpt-17'" in str(missing.value)
    body = missing.value.body
    assert isinstance(body, dict) and body.get("type") == "not_found_error"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=CHAT_MODEL, messages=[{"role": "user", "content": "x"}], n=2)
    assert "one reply per request" in str(bad.value)
    with pytest.raises(openai.BadRequestError) as image:
        client.chat.completions.create(model=CHAT_MODEL, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}])
    assert "text only" in str(image.value)


def test_prompt_longer_than_the_context_is_a_400(client: openai.OpenAI, server: LiveServer) -> None:
    n_ctx = server.service.status()["chat"]["n_ctx"]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=CHAT_MODEL, max_tokens=5,
                                       messages=[{"role": "user", "content": "word " * (n_ctx + 100)}])
    assert "context holds" in str(err.value) and "Send a shorter prompt" in str(err.value)
