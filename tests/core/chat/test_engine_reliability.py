"""The engine under hostile input and awkward timing, on the real SmolLM2 model (findings F3, F9, F16, F18, F19).

- F3/F18: a hostile chat template (set on the engine, or carried by a GGUF
  rewritten here with only its template changed) ends as a ChatTemplateError
  naming the model, or is stopped; a 20 MB prompt is trimmed with a sentence.
- F9: invalid UTF-8 never ends the session.
- F16: Stop right after Send is never lost.
- F19: a fixed seed gives the same reply within a session and in a fresh
  process. Replies are compared only across the same evaluation path (a fixed
  seed evaluates every prompt afresh) on this machine: no CPU's rounding is
  assumed (tests/fixtures/greedy.py).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from app.cli import main as cli_main
from app.core.chat.chat_template import TemplateLimits
from app.core.chat.chats import ChatStore
from app.core.chat.conversation import send_message
from app.core.chat.engine import Engine, EngineThread, LoadParams
from app.core.chat.sampling import PRESETS, SamplingSettings
from app.core.errors import ChatTemplateError, ContextOverflowError
from tests.fixtures import REPO_ROOT as REPO

pytestmark = pytest.mark.slow

PARAMS = LoadParams(n_ctx=512, n_threads=2)
GREEDY = SamplingSettings(temperature=0.0, max_tokens=24)
QUESTION = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Name three colours."}]
LONG = [{"role": "user", "content": "Write a long story about camels crossing the desert."}]
LOOP = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}<|im_start|>"


@pytest.fixture(scope="module")
def engine(starter_model: Path) -> Engine:
    e = Engine()
    e.load(starter_model, PARAMS)
    yield e
    e.unload()


def with_chat_template(source: Path, template: str, dest: Path) -> Path:
    """A copy of the GGUF `source` whose only change is its tokenizer.chat_template."""
    from gguf import GGUFReader

    reader = GGUFReader(source)
    field = reader.fields["tokenizer.chat_template"]
    start, end = field.offset, field.offset + sum(p.nbytes for p in field.parts)
    last = reader.tensors[-1].field
    infos_end = last.offset + sum(p.nbytes for p in last.parts)
    key, value = b"tokenizer.chat_template", template.encode("utf-8")
    kv = struct.pack("<Q", len(key)) + key + struct.pack("<IQ", 8, len(value)) + value  # 8: GGUF string
    with source.open("rb") as src, dest.open("wb") as out:
        head = src.read(infos_end)
        header = head[:start] + kv + head[end:]
        out.write(header + b"\0" * (-len(header) % reader.alignment))
        src.seek(reader.data_offset)
        shutil.copyfileobj(src, out, 1 << 20)
    del reader
    return dest


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile-templates")


# -- F16: Stop right after Send ---------------------------------------------------------------
def test_a_stop_right_after_send_is_never_lost(starter_model: Path) -> None:
    worker = EngineThread()
    try:
        worker.load(starter_model, PARAMS).result(120)
        outcomes = []
        for _ in range(10):
            future = worker.chat(LONG, GREEDY.with_(max_tokens=200))
            worker.stop()
            outcomes.append(future.result(60).stats)
        assert [s.stop_reason for s in outcomes] == ["cancelled"] * 10
        assert all(s.completion_tokens == 0 and s.prompt_tokens_evaluated == 0 for s in outcomes)
        # Two requests queued, then Stop: both were requested before it, both stop.
        first, second = worker.chat(LONG, GREEDY), worker.chat(LONG, GREEDY)
        worker.stop()
        assert first.result(60).stats.stop_reason == second.result(60).stats.stop_reason == "cancelled"
        # A Stop while nothing runs or waits is not kept for the next reply.
        worker.stop()
        after = worker.chat(QUESTION, GREEDY).result(60)
        assert after.stats.stop_reason in ("stop", "length") and after.text.strip()
    finally:
        worker.close()


def test_a_reserved_reply_stopped_before_it_starts_is_stored_as_stopped(engine: Engine, tmp_path: Path) -> None:
    with ChatStore(tmp_path / "chats.db") as store:
        conversation = store.create_conversation(model="SmolLM2")
        ticket = engine.reserve_reply()
        engine.stop()  # pressed while the job still waits in the queue
        reply, message = send_message(engine, store, conversation.id, "Tell me a story.", GREEDY, ticket=ticket)
        assert reply.stats.stop_reason == "cancelled" and reply.text == "" and reply.stats.prompt_tokens == 0
        assert message.state == "stopped"
        assert [m.role for m in store.conversation(conversation.id).messages] == ["user", "assistant"]
    assert engine.chat(QUESTION, GREEDY).stats.stop_reason in ("stop", "length")


# -- F3 / F18: chat templates ---------------------------------------------------------------
def test_a_looping_template_is_a_typed_error_naming_the_model(engine: Engine, starter_model: Path) -> None:
    engine.template_limits = TemplateLimits(time_s=0.5)
    try:
        engine.set_chat_template(LOOP)
        with pytest.raises(ChatTemplateError) as caught:
            engine.chat(QUESTION, GREEDY)
        assert caught.value.message.startswith(f"The chat template of {starter_model.name} took longer than")
        engine.set_chat_template("{% for m in messages %}{{ m['content'] * 100000 }}{% endfor %}")
        with pytest.raises(ChatTemplateError, match="built a value of more than"):
            engine.chat(QUESTION, GREEDY)
        engine.set_chat_template("{% if false %}{% endif %}")
        with pytest.raises(ChatTemplateError, match="wrote an empty prompt"):
            engine.chat(QUESTION, GREEDY)
        with pytest.raises(ChatTemplateError, match="not valid Jinja"):
            engine.set_chat_template("{% for %}")
    finally:
        engine.template_limits = TemplateLimits()
        engine.set_chat_template(None)
    reply = engine.chat(QUESTION, GREEDY)  # the session goes on
    assert reply.stats.stop_reason in ("stop", "length") and reply.text.strip()


def test_stop_ends_a_template_that_would_render_for_hours(engine: Engine) -> None:
    engine.template_limits = TemplateLimits(time_s=3600)
    engine.set_chat_template(LOOP)
    timer = threading.Timer(0.3, engine.stop)
    try:
        timer.start()
        reply = engine.chat(QUESTION, GREEDY)
    finally:
        timer.cancel()
        engine.template_limits = TemplateLimits()
        engine.set_chat_template(None)
    assert reply.stats.stop_reason == "cancelled" and reply.text == "" and reply.stats.prompt_tokens == 0
    assert engine.chat(QUESTION, GREEDY).stats.stop_reason in ("stop", "length")


def test_a_gguf_with_invalid_jinja_loads_with_chatml_and_says_so(starter_model: Path, hostile_dir: Path) -> None:
    model = with_chat_template(starter_model, "{% for m in messages %}{{ m['content'] }", hostile_dir / "bad-jinja.gguf")
    engine = Engine()
    try:
        report = engine.load(model, PARAMS)
        assert report.chat_template.startswith("chatml")
        (notice,) = [n for n in report.notices if "not valid Jinja" in n]
        assert notice.startswith("The chat template of bad-jinja.gguf is not valid Jinja") and "ChatML" in notice
        assert "<|im_start|>user\nName three colours.<|im_end|>" in engine.render(QUESTION)
        assert engine.chat(QUESTION, GREEDY).text.strip()
    finally:
        engine.unload()


def test_a_gguf_template_is_compiled_only_under_limits(starter_model: Path, hostile_dir: Path) -> None:
    """llama-cpp-python's Llama() would compile it unbounded (and fold `center` into 1 GB) at load."""
    import tracemalloc

    model = with_chat_template(starter_model, "{{ 'x'|center(1000000000) }}{{ messages[0]['content'] }}",
                               hostile_dir / "center.gguf")
    engine = Engine()
    tracemalloc.start()
    try:
        engine.load(model, PARAMS)
        peak = tracemalloc.get_traced_memory()[1]
        with pytest.raises(ChatTemplateError, match=r"The chat template of center\.gguf asked for a size of"):
            engine.chat(QUESTION, GREEDY)
    finally:
        tracemalloc.stop()
        engine.unload()
    assert peak < 256 * 2**20


def test_cli_with_a_looping_template_ends_with_one_sentence(starter_model: Path, hostile_dir: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    model = with_chat_template(starter_model, LOOP, hostile_dir / "looping.gguf")
    code = cli_main(["chat", str(model), "--prompt", "hi", "--ctx", "512", "--max-tokens", "8"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.startswith("camelid: The chat template of looping.gguf took longer than 5 s")


def test_a_20_mb_prompt_is_trimmed_with_a_sentence(engine: Engine) -> None:
    huge = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "camel " * 3_500_000 + "\nWhich animal?"}]
    reply = engine.chat(huge, GREEDY.with_(max_tokens=8))
    window = reply.window
    assert window is not None and window.cut_chars > 20_000_000 - 100_000
    assert reply.stats.prompt_tokens <= engine.n_ctx - 8
    assert any("characters" in n and "were left out" in n for n in reply.notices)
    assert window.messages[0]["content"] == "Be brief." and window.messages[-1]["content"].endswith("Which animal?")
    with pytest.raises(ContextOverflowError, match="system prompt alone"):
        engine.chat([{"role": "system", "content": "rule " * 4_000_000}, {"role": "user", "content": "hi"}],
                    GREEDY)


# -- F9: invalid UTF-8 -----------------------------------------------------------------------
def test_invalid_utf8_is_replaced_with_a_notice_and_the_session_goes_on(engine: Engine, tmp_path: Path) -> None:
    escaped = os.fsdecode(b"hello \xff world")  # how Python decodes a bad byte in argv
    reply = engine.chat([{"role": "user", "content": escaped + " \ud800"}], GREEDY)
    assert reply.text.strip() and any("2 bytes that are not valid UTF-8" in n for n in reply.notices)
    with ChatStore(tmp_path / "chats.db") as store:
        conversation = store.create_conversation(model="SmolLM2")
        reply, message = send_message(engine, store, conversation.id, escaped, GREEDY)
        assert message.state == "complete"
        assert reply.notices[0] == ("Your message had 1 byte that is not valid UTF-8 text; it was replaced "
                                    "with \ufffd.")
        stored = store.conversation(conversation.id).messages[0].content
    assert stored == "hello \ufffd world"


def test_cli_invalid_utf8_in_argv_and_stdin(starter_model: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = [sys.executable, "-m", "app", "chat", str(starter_model), "--ctx", "512", "--max-tokens", "6"]
    one = subprocess.run([*base, "--prompt", b"hello \xff world", "--system", b"be \xfe brief"],
                         capture_output=True, cwd=REPO, timeout=120, env=env)
    assert one.returncode == 0, one.stderr.decode(errors="replace")
    assert b"Your message had 1 byte" in one.stderr and b"The system prompt had 1 byte" in one.stderr
    piped = subprocess.run(base, input=b"hi \xff there\n/quit\n", capture_output=True, cwd=REPO, timeout=120,
                           env=env)
    assert piped.returncode == 0, piped.stderr.decode(errors="replace")
    assert b"Traceback" not in piped.stderr and b"Your message had 1 byte" in piped.stderr


# -- F19: what a seed guarantees --------------------------------------------------------------
SEEDED = PRESETS["creative"].with_(seed=42, max_tokens=24)
FOLLOW_UP = "Now name one more."

CHILD = """
import json, sys
from app.core.chat.engine import Engine, LoadParams
from app.core.chat.sampling import SamplingSettings
question, follow_up, answer, sampling = json.loads(sys.argv[2])
engine = Engine()
engine.load(sys.argv[1], LoadParams(n_ctx=512, n_threads=2))
sampling = SamplingSettings.from_dict(sampling)
first = engine.chat(question, sampling).text
second = engine.chat(question + [{"role": "assistant", "content": answer},
                                 {"role": "user", "content": follow_up}], sampling).text
print(json.dumps([first, second]))
"""


def test_a_fixed_seed_repeats_within_a_session_and_in_a_fresh_process(engine: Engine, starter_model: Path) -> None:
    engine.chat(LONG, GREEDY)  # leave some other conversation in the cache
    first = engine.chat(QUESTION, SEEDED)
    assert first.text.strip() and first.stats.seed == 42
    # Every seeded prompt is evaluated whole, whatever the cache held: the path of a fresh process.
    assert first.stats.prompt_tokens_evaluated == first.stats.prompt_tokens
    again = engine.chat(QUESTION, SEEDED)  # an immediate repeat: the whole prompt was cached (F19's case)
    assert again.stats.prompt_tokens_evaluated == again.stats.prompt_tokens
    assert again.text == first.text
    turn = [*QUESTION, {"role": "assistant", "content": first.text}, {"role": "user", "content": FOLLOW_UP}]
    second = engine.chat(turn, SEEDED)
    assert engine.chat(turn, SEEDED).text == second.text  # regenerate gives the same reply
    greedy = GREEDY.with_(seed=1)
    assert engine.chat(QUESTION, greedy).text == engine.chat(QUESTION, greedy).text

    payload = json.dumps([QUESTION, FOLLOW_UP, first.text, SEEDED.to_dict()])
    out = subprocess.run([sys.executable, "-c", CHILD, str(starter_model), payload], capture_output=True,
                         text=True, cwd=REPO, timeout=180, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [first.text, second.text]
