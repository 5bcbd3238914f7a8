"""Hostile and damaged GGUF headers: every outcome is a plan or a typed error, bounded in time and memory.

A seeded fuzz run mutates the real SmolLM2 header, a tiny hand-built llama header, a Gemma 3
header from the `gguf` writer and the toy hybrid / recurrent / MLA files of arch_gguf: truncation,
bit flips, field overwrites, huge counts and lengths, wrong type ids, keys retyped with wrong
types, per-layer arrays of the wrong length, duplicated and deleted keys, damaged tensor infos,
and combinations. Each case is read with `read_gguf` and planned on a simulated machine. It
must end as a `ModelMeta` and a sane `MemoryPlan` (no negative byte count) or as a
`CamelidError` whose sentence is short, within a generous deadline (a watchdog thread) and
without a large peak of memory (a size, never a time, is asserted for normal cases).

Every case that ever failed is kept in tests/fixtures/fuzz_corpus and replayed here (its
README says what each one was). Set CAMELID_FUZZ_SAVE=<folder> to have failing cases written
there in the corpus format, ready to be added.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import struct
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.core.errors import CamelidError, ModelFileError
from app.core.fit import plan_memory, read_gguf
from app.core.machine.simulate import preset_profile
from tests.fixtures import gguf_bytes as gb
from tests.fixtures.gguf_bytes import ARRAY, BOOL, F32, F64, I32, I64, STRING, U8, U32, U64, Header

SEED = 20261215
CORPUS = Path(__file__).resolve().parents[2] / "fixtures" / "fuzz_corpus"
#: A case that takes longer than this is stuck (normal cases take milliseconds; the real
#: header's parse ~0.05 s). Generous so a slow machine never fails a correct case.
DEADLINE_S = float(os.environ.get("CAMELID_FUZZ_DEADLINE", "30"))
#: Peak memory one case may add. The real header is 1.8 MB; its parse and plan peak near 20 MB.
MEMORY_LIMIT = 256 * 2**20
#: The longest error sentence (message and fix) a case may produce.
MESSAGE_LIMIT = 600
MACHINES = ("rtx-4090", "laptop-8gb-cpu", "m2-air-16gb", "dual-rtx-3090", "gtx-1650-4gb")
TOYS = ("qwen3next", "qwen35moe", "granitehybrid", "nemotron_h", "lfm2", "mamba2", "falcon-h1", "jamba",
        "kimi-linear", "deepseek2", "qwen3moe")


# -- the seeds ---------------------------------------------------------------------------


def raw_llama(n_layer: int = 2, **overrides: tuple[int, Any]) -> Header:
    """A 1-2 KiB llama header written byte by byte: the F1 reproduction's shape."""
    keys: dict[str, tuple[int, Any]] = {
        "general.architecture": (STRING, "llama"), "llama.block_count": (U32, n_layer),
        "llama.embedding_length": (U32, 64), "llama.attention.head_count": (U32, 4),
        "llama.attention.head_count_kv": (U32, 2), "llama.feed_forward_length": (U32, 128),
        "llama.context_length": (U32, 2048), "llama.vocab_size": (U32, 256), "general.file_type": (U32, 0)}
    keys.update(overrides)
    kvs = [gb.Piece(gb.kv(k, t, v), k, t) for k, (t, v) in keys.items()]
    tensors: list[tuple[str, list[int]]] = [("token_embd.weight", [64, 256])]
    for i in range(n_layer):
        tensors += [(f"blk.{i}.attn_q.weight", [64, 64]), (f"blk.{i}.ffn_up.weight", [64, 128])]
    tensors.append(("output_norm.weight", [64]))
    pieces, offset = [], 0
    for name, shape in tensors:
        pieces.append(gb.Piece(gb.tensor_info(name, shape, 0, offset), name, shape=tuple(shape), ggml_type=0,
                               offset=offset))
        offset += -(-4 * math.prod(shape) // 32) * 32
    return Header(3, kvs, pieces, data_bytes=offset)


@pytest.fixture(scope="module")
def seeds(starter_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Header]:
    from tests.fixtures import arch_gguf
    from tests.fixtures.synthetic_gguf import write_gguf

    folder = tmp_path_factory.mktemp("fuzz-seeds")
    out = {"smollm2": gb.read_header(starter_model), "raw-llama": raw_llama()}
    gemma = folder / "gemma3.gguf"
    tensors = [("token_embd.weight", [128, 512], 1)] + [
        (f"blk.{i}.{n}", [128, 128], 1) for i in range(6) for n in ("attn_q.weight", "attn_k.weight")]
    write_gguf(gemma, "gemma3", tensors, n_tokens=64, file_type=1, kv={
        "block_count": 6, "embedding_length": 128, "attention.head_count": 4, "attention.head_count_kv": 1,
        "feed_forward_length": 256, "context_length": 32768, "attention.sliding_window": 512,
        "attention.key_length": 32, "attention.value_length": 32})
    out["gemma3"] = gb.read_header(gemma)
    for name in TOYS:
        out[f"toy:{name}"] = gb.read_header(arch_gguf.arch_gguf(name, "toy"))
    return out


# -- the mutators ------------------------------------------------------------------------

HOSTILE_U64 = (0, 1, 2**31, 2**32 - 1, 2**32, 2**63, 2**64 - 1, 10**6, 65_537, 4097, 513)
#: Wrong types for a key: (type id, value, array item type).
WRONG_TYPES: tuple[tuple[int, Any, int], ...] = (
    (F32, 0.5, 0), (F64, math.inf, 0), (F64, math.nan, 0), (F32, -1.0, 0), (I32, -1, 0), (I32, -2, 0),
    (I64, -(2**63), 0), (U64, 2**64 - 1, 0), (U64, 2**63, 0), (U32, 2**32 - 1, 0), (U32, 0, 0), (BOOL, True, 0),
    (BOOL, False, 0), (STRING, "32", 0), (STRING, "x" * 300, 0), (ARRAY, [1, 2, 3], U32), (ARRAY, [], U32),
    (ARRAY, ["a"], STRING), (ARRAY, [0.5, 1.5], F32), (U8, 3, 0), (U64, 10**6, 0))
#: Keys a retype picks from (suffixes after the architecture) besides general.*.
ARCH_KEYS = ("block_count", "embedding_length", "attention.head_count", "attention.head_count_kv",
             "feed_forward_length", "context_length", "vocab_size", "attention.key_length",
             "attention.value_length", "attention.sliding_window", "attention.sliding_window_pattern",
             "expert_count", "expert_used_count", "expert_feed_forward_length", "rope.dimension_count",
             "ssm.conv_kernel", "ssm.inner_size", "ssm.state_size", "ssm.group_count", "ssm.time_step_rank",
             "full_attention_interval", "attention.kv_lora_rank", "attention.key_length_mla",
             "shortconv.l_cache", "kda.head_dim", "nextn_predict_layers")
PER_LAYER = ("attention.head_count", "attention.head_count_kv", "feed_forward_length",
             "attention.sliding_window_pattern", "attention.recurrent_layers")

Mutation = tuple[str, "Header | bytes"]


def _structural(h: Header) -> list[int]:
    """Indexes of the metadata pieces that are not tokenizer data (where damage changes a plan)."""
    return [i for i, p in enumerate(h.kvs) if not p.name.startswith("tokenizer.ggml.")]


def _arch_key(rng: random.Random, h: Header, keys: tuple[str, ...] = ARCH_KEYS) -> str:
    present = [p.name for p in h.kvs if p.name.startswith(h.architecture + ".")]
    if present and rng.random() < 0.7:
        return rng.choice(present)
    return f"{h.architecture}.{rng.choice(keys)}"


def _put(h: Header, key: str, raw: bytes, vtype: int) -> Header:
    out = h.copy()
    i = out.index(key)
    piece = gb.Piece(raw, key, vtype)
    if i is None:
        out.kvs.append(piece)
    else:
        out.kvs[i] = piece
    return out


def m_truncate(rng: random.Random, h: Header) -> Mutation:
    data = h.to_bytes()
    cut = rng.randrange(len(data)) if rng.random() < 0.5 else rng.randrange(min(len(data), 4096))
    return f"truncate at {cut}", data[:cut]


def _offsets(h: Header, structural_only: bool) -> list[tuple[int, int]]:
    """(start, end) byte ranges of the prefix, the non-tokenizer keys and the tensor infos."""
    ranges, pos = [(0, 24)], 24
    keep = set(_structural(h))
    for i, p in enumerate(h.kvs):
        if not structural_only or i in keep:
            ranges.append((pos, pos + len(p.raw)))
        pos += len(p.raw)
    for p in h.tensors:
        ranges.append((pos, pos + len(p.raw)))
        pos += len(p.raw)
    return ranges


def _position(rng: random.Random, h: Header, size: int) -> int:
    if rng.random() < 0.75:
        start, end = rng.choice(_offsets(h, True))
        return rng.randrange(start, max(start + 1, end - size + 1))
    return rng.randrange(max(1, len(h.to_bytes()) - size))


def m_bit_flips(rng: random.Random, h: Header) -> Mutation:
    data = bytearray(h.to_bytes())
    flips = [_position(rng, h, 1) for _ in range(rng.randint(1, 8))]
    for pos in flips:
        data[pos] ^= 1 << rng.randrange(8)
    return f"bit flips at {flips}", bytes(data)


def m_overwrite(rng: random.Random, h: Header) -> Mutation:
    data = bytearray(h.to_bytes())
    size = rng.choice((1, 2, 4, 8))
    pos = _position(rng, h, size)
    pattern = rng.choice((b"\xff" * size, b"\x00" * size, (b"\x7f" + b"\xff" * 7)[:size][::-1],
                          bytes(rng.randrange(256) for _ in range(size))))
    data[pos:pos + size] = pattern
    return f"overwrite {size} bytes at {pos} with {pattern.hex()}", bytes(data)


def m_huge_count(rng: random.Random, h: Header) -> Mutation:
    value = rng.choice(HOSTILE_U64)
    out = h.copy()
    where = rng.choice(("n_tensors", "n_kv", "array", "key length", "string value"))
    if where == "n_tensors":
        out.n_tensors = value
    elif where == "n_kv":
        out.n_kv = value
    else:
        wanted = {"array": ARRAY, "string value": STRING}.get(where)
        choices = [i for i, p in enumerate(out.kvs) if wanted is None or p.vtype == wanted] or [0]
        i = rng.choice(choices)
        p = out.kvs[i]
        key_end = 8 + len(p.name.encode())
        at = {"key length": 0, "string value": key_end + 4, "array": key_end + 8}[where]
        if wanted is not None and p.vtype != wanted:
            at = 0
        raw = p.raw[:at] + struct.pack("<Q", value) + p.raw[at + 8:]
        out.kvs[i] = gb.Piece(raw, p.name, p.vtype, p.itype)
    return f"{where} := {value}", out


def m_wrong_type_id(rng: random.Random, h: Header) -> Mutation:
    out = h.copy()
    i = rng.choice(_structural(out))
    p = out.kvs[i]
    key_end = 8 + len(p.name.encode())
    bad = rng.choice((13, 14, 99, 255, 2**31, 2**32 - 1, *range(13)))
    at = key_end if (p.vtype != ARRAY or rng.random() < 0.5) else key_end + 4
    out.kvs[i] = gb.Piece(p.raw[:at] + struct.pack("<I", bad) + p.raw[at + 4:], p.name, p.vtype, p.itype)
    return f"type id of {p.name} ({'item' if at != key_end else 'value'}) := {bad}", out


def m_retype(rng: random.Random, h: Header) -> Mutation:
    key = rng.choice(("general.alignment", "general.architecture", "general.file_type", "general.name",
                      "tokenizer.chat_template")) if rng.random() < 0.2 else _arch_key(rng, h)
    vtype, value, itype = rng.choice(WRONG_TYPES)
    return f"{key} := {_show(value)} (type {vtype}/{itype})", \
        _put(h, key, gb.kv(key, vtype, value, itype), vtype)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 40 else text[:37] + "..."


def m_per_layer(rng: random.Random, h: Header) -> Mutation:
    key = _arch_key(rng, h, PER_LAYER)
    n = h.value_of(f"{h.architecture}.block_count") or 4
    if rng.random() < 0.5:
        length = max(0, n + rng.choice((-1, 1, 2, -n, 100, 600)))
        items = [rng.choice((0, 1, 2, 4)) for _ in range(length)]
        label, raw = f"{key} as {length} entries for {n} layers", gb.kv(key, ARRAY, items, U32)
    else:
        itype, bad = rng.choice(((I32, -1), (I32, -(2**31)), (U32, 2**32 - 1), (F32, 0.5), (U64, 2**63),
                                 (U32, 100_000)))
        items = [2] * n
        items[rng.randrange(n)] = bad
        label, raw = f"{key} with a {bad} entry (type {itype})", gb.kv(key, ARRAY, items, itype)
    return label, _put(h, key, raw, ARRAY)


BIG_KEYS = ("block_count", "embedding_length", "attention.head_count", "vocab_size", "context_length",
            "expert_count", "attention.head_count_kv", "feed_forward_length", "attention.key_length")


def m_big_value(rng: random.Random, h: Header) -> Mutation:
    key = f"{h.architecture}.{rng.choice(BIG_KEYS)}"
    value = rng.choice((513, 4096, 65_536, 10**6, 2**31, 2**32 - 1))
    vtype = U64 if value >= 2**32 else U32
    return f"{key} := {value}", _put(h, key, gb.kv(key, vtype, value), vtype)


def m_duplicate_key(rng: random.Random, h: Header) -> Mutation:
    out = h.copy()
    i = rng.choice(_structural(out))
    out.kvs.insert(rng.randrange(len(out.kvs) + 1), out.kvs[i])
    return f"{out.kvs[i].name} twice", out


def m_delete_key(rng: random.Random, h: Header) -> Mutation:
    out = h.copy()
    i = rng.choice(_structural(out))
    name = out.kvs.pop(i).name
    return f"without {name}", out


def m_tensor(rng: random.Random, h: Header) -> Mutation:
    out = h.copy()
    i = rng.randrange(len(out.tensors))
    t = out.tensors[i]
    what = rng.choice(("dims", "dim", "type", "offset", "duplicate", "name"))
    shape, ty, offset, name = list(t.shape), t.ggml_type, t.offset, t.name
    if what == "dims":
        shape = shape + [1] * rng.choice((1, 3, 5))
    elif what == "dim":
        shape[rng.randrange(len(shape))] = rng.choice((0, 3, 2**31, 2**63, 2**64 - 1, 10**9))
    elif what == "type":
        ty = rng.choice((2, 8, 39, 99, 2**31, 2**32 - 1))
    elif what == "offset":
        offset = rng.choice((offset + 1, offset + 32, 0, 2**40, 2**63, 2**64 - 1))
    elif what == "duplicate":
        name = out.tensors[(i + 1) % len(out.tensors)].name
    else:
        name = rng.choice(("x" * 64, "blk.99999999999999999999.attn_q.weight", "blk.-1.ffn_up.weight", ""))
    out.tensors[i] = gb.Piece(gb.tensor_info(name, shape, ty, offset), name, shape=tuple(shape), ggml_type=ty,
                              offset=offset)
    return f"tensor {t.name}: {what}", out


STRUCTURED: tuple[Callable[[random.Random, Header], Mutation], ...] = (
    m_huge_count, m_wrong_type_id, m_retype, m_per_layer, m_big_value, m_duplicate_key, m_delete_key, m_tensor)
MUTATORS = (m_truncate, m_bit_flips, m_overwrite, *STRUCTURED, *STRUCTURED, m_retype, m_retype)


def m_combo(rng: random.Random, h: Header) -> Mutation:
    labels = []
    for _ in range(rng.randint(2, 3)):
        label, h2 = rng.choice(STRUCTURED)(rng, h)
        assert isinstance(h2, Header)
        h, labels = h2, [*labels, label]
    return " + ".join(labels), h


# -- running a case ----------------------------------------------------------------------


@dataclass
class Case:
    label: str
    header: bytes
    data_bytes: int
    file_name: str = "model.gguf"
    #: The base header it came from (for saving: a real header is stored as a patch of it).
    base: str = ""
    #: The mutated header in pieces, when the mutator made one (a patch then names the pieces it keeps).
    pieces: Header | None = None


@dataclass
class Outcome:
    kind: str  # plan | typed | untyped | hang | memory
    detail: str
    message_len: int = 0
    seconds: float = 0.0
    peak_bytes: int = 0


class _Peak:
    """Peak memory of a block: the process's peak RSS where Linux lets it be reset, else tracemalloc."""

    def __enter__(self) -> _Peak:
        self.linux = os.path.exists("/proc/self/clear_refs")
        if self.linux:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                self.linux = False
        if self.linux:
            self.base = self._status("VmRSS")
        else:
            tracemalloc.start()
        return self

    @staticmethod
    def _status(field: str) -> int:
        text = Path("/proc/self/status").read_text()
        match = re.search(rf"{field}:\s+(\d+) kB", text)
        return int(match.group(1)) * 1024 if match else 0

    def __exit__(self, *exc: object) -> None:
        if self.linux:
            self.peak = max(0, self._status("VmHWM") - self.base)
        else:
            self.peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()


def _check_plan(plan: Any) -> str | None:
    """Why a plan is not honest, or None."""
    from app.core.fit.memory import VERDICTS

    if plan.verdict not in VERDICTS:
        return f"verdict {plan.verdict!r}"
    for d in plan.devices:
        for part in ("weights", "repack", "kv_cache", "recurrent_state", "compute", "overhead"):
            if getattr(d, part) < 0:
                return f"{d.name} {part} = {getattr(d, part)}"
    if plan.n_ctx < 1 or plan.kv_bytes_per_token < 0 or not 0 <= plan.n_gpu_layers <= plan.n_layers + 1:
        return f"n_ctx {plan.n_ctx}, KV {plan.kv_bytes_per_token}/token, {plan.n_gpu_layers} GPU layers"
    if plan.fits and any(d.total > d.budget for d in plan.devices if d.kind == "gpu"):
        return "fits, with a GPU over budget"
    if any(len(r) > 2000 for r in plan.reasons):
        return "a reason longer than 2,000 characters"
    json.dumps(plan.to_dict())
    return None


def run_case(case: Case, folder: Path, machine: str, improvements: bool) -> Outcome:
    """Read and plan one case under the watchdog and the memory gauge."""
    path = folder / case.file_name
    gb.write_file(path, case.header, case.data_bytes)
    hardware = preset_profile(machine)
    result: list[Outcome] = []

    def work() -> None:
        try:
            meta = read_gguf(path)
            plan = plan_memory(meta, hardware, improvements=improvements)
            problem = _check_plan(plan)
            result.append(Outcome("untyped", f"dishonest plan: {problem}") if problem
                          else Outcome("plan", plan.verdict))
        except CamelidError as exc:
            result.append(Outcome("typed", type(exc).__name__, len(str(exc))))
        except BaseException as exc:  # what the test exists to catch
            result.append(Outcome("untyped", f"{type(exc).__name__}: {str(exc)[:200]}"))

    start = time.perf_counter()
    with _Peak() as peak:
        worker = threading.Thread(target=work, daemon=True, name="fuzz-case")
        worker.start()
        worker.join(DEADLINE_S)
    seconds = time.perf_counter() - start
    path.unlink(missing_ok=True)
    if worker.is_alive():
        return Outcome("hang", f"still running after {DEADLINE_S:.0f} s", seconds=seconds)
    out = result[0]
    out.seconds, out.peak_bytes = seconds, peak.peak
    if out.peak_bytes > MEMORY_LIMIT:
        return Outcome("memory", f"peak {out.peak_bytes / 2**20:.0f} MiB ({out.kind} {out.detail})",
                       seconds=seconds, peak_bytes=out.peak_bytes)
    if out.kind == "typed" and out.message_len > MESSAGE_LIMIT:
        return Outcome("untyped", f"a {out.message_len:,}-character message", out.message_len, seconds)
    return out


def random_cases(seeds: dict[str, Header]) -> list[Case]:
    """The seeded mutations: 100 of the real header, 90 of the tiny llama, 40 of Gemma 3, 10 per toy."""
    rng = random.Random(SEED)
    plan = [("smollm2", 100), ("raw-llama", 90), ("gemma3", 40)] + [(f"toy:{t}", 10) for t in TOYS]
    cases = []
    for base, count in plan:
        for n in range(count):
            mutator = m_combo if n % 9 == 8 else rng.choice(MUTATORS)
            label, result = mutator(rng, seeds[base])
            data = result.to_bytes() if isinstance(result, Header) else result
            data_bytes = seeds[base].data_bytes
            if mutator is m_truncate and rng.random() < 0.5:
                data_bytes, label = -1, f"{label}, the file ends there"
            cases.append(Case(f"{base} #{n} {mutator.__name__[2:]}: {label}", data, data_bytes, base=base,
                              pieces=result if isinstance(result, Header) else None))
    return cases


# -- the corpus --------------------------------------------------------------------------

_ROW = re.compile(r"^\| `(?P<file>[^`]+)` \| (?P<name>`[^`]*`|-) \| (?P<data>-?[\d,]+) \| (?P<what>.+) \|$")


def corpus_cases(seeds: dict[str, Header] | None) -> list[Case]:
    """The regression files: raw headers (*.gguf) and patches of the real header (*.patch.json)."""
    cases = []
    for line in (CORPUS / "README.md").read_text(encoding="utf-8").splitlines():
        row = _ROW.match(line)
        if not row:
            continue
        path = CORPUS / row["file"]
        if path.suffix == ".json":
            assert seeds is not None
            header = apply_patch(json.loads(path.read_text()), seeds)
        else:
            header = path.read_bytes()
        name = row["name"].strip("`") if row["name"] != "-" else "model.gguf"
        cases.append(Case(f"corpus {row['file']}: {row['what']}", header, int(row["data"].replace(",", "")),
                          name or "model.gguf"))
    return cases


def make_patch(case: Case, base: Header) -> dict[str, Any]:
    """A mutated real header as a patch of it: the pieces it keeps by index, new ones in hex
    (or, for a byte-level mutation, the byte runs that differ)."""
    if case.pieces is not None:
        def refs(pieces: list[gb.Piece], originals: list[gb.Piece]) -> list[Any]:
            index = {p.raw: i for i, p in enumerate(originals)}
            return [index.get(p.raw, p.raw.hex()) for p in pieces]

        h = case.pieces
        return {"base": case.base, "prefix": h.to_bytes()[:24].hex(), "kvs": refs(h.kvs, base.kvs),
                "tensors": refs(h.tensors, base.tensors), "extra": h.extra.hex()}
    original = base.to_bytes()
    new = case.header
    if len(new) < len(original) and original.startswith(new):
        return {"base": case.base, "splices": [[len(new), len(original), ""]]}
    assert len(new) == len(original), "byte-level mutations keep the length or cut the header"
    runs, i = [], 0
    while i < len(new):
        if new[i] != original[i]:
            j = i
            while j < len(new) and new[j] != original[j]:
                j += 1
            runs.append([i, j, new[i:j].hex()])
            i = j
        i += 1
    return {"base": case.base, "splices": runs}


def apply_patch(patch: dict[str, Any], seeds: dict[str, Header]) -> bytes:
    base = seeds[patch["base"]]
    if "splices" in patch:
        data = bytearray(base.to_bytes())
        for start, end, hexed in reversed(patch["splices"]):
            data[start:end] = bytes.fromhex(hexed)
        return bytes(data)

    def pieces(refs: list[Any], originals: list[gb.Piece]) -> list[bytes]:
        return [originals[r].raw if isinstance(r, int) else bytes.fromhex(r) for r in refs]

    return b"".join([bytes.fromhex(patch["prefix"]), *pieces(patch["kvs"], base.kvs),
                     *pieces(patch["tensors"], base.tensors), bytes.fromhex(patch["extra"])])


def save_case(case: Case, outcome: Outcome, seeds: dict[str, Header], folder: Path) -> None:
    """Write a failing case in the corpus format, its README line appended to README.new."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^a-z0-9]+", "-", case.label.lower())[:60].strip("-")
    if case.base == "smollm2":
        patch = make_patch(case, seeds["smollm2"])
        assert apply_patch(patch, seeds) == case.header
        file = f"{stem}.patch.json"
        (folder / file).write_text(json.dumps(patch))
    else:
        file = f"{stem}.gguf"
        (folder / file).write_bytes(case.header)
    name = f"`{case.file_name}`" if case.file_name != "model.gguf" else "-"
    with (folder / "README.new").open("a", encoding="utf-8") as f:
        f.write(f"| `{file}` | {name} | {case.data_bytes:,} | {case.label[:120]} (was: {outcome.kind}, "
                f"{outcome.detail[:100]}) |\n")


# -- the tests ---------------------------------------------------------------------------


def _run_all(cases: list[Case], seeds: dict[str, Header], folder: Path) -> tuple[Counter, list[str], Outcome, int]:
    """Run every case; (outcome counts, failures, the slowest case, the longest message).
    counts["peak MiB"] holds the largest memory peak of a case."""
    counts: Counter = Counter()
    failures, slowest, longest = [], Outcome("plan", "", seconds=0.0), 0
    save = os.environ.get("CAMELID_FUZZ_SAVE")
    for i, case in enumerate(cases):
        out = run_case(case, folder, MACHINES[i % len(MACHINES)], improvements=i % 4 == 0)
        counts[out.kind if out.kind != "typed" else f"typed {out.detail}"] += 1
        if out.seconds > slowest.seconds:
            slowest = Outcome(out.kind, case.label, seconds=out.seconds)
        longest = max(longest, out.message_len)
        counts["peak MiB"] = max(counts["peak MiB"], -(-out.peak_bytes // 2**20))
        if out.kind not in ("plan", "typed"):
            failures.append(f"{case.label}: {out.kind} ({out.detail})")
            if save:
                save_case(case, out, seeds, Path(save))
    return counts, failures, slowest, longest


def test_fuzzed_headers_plan_or_fail_typed(seeds: dict[str, Header], tmp_path: Path) -> None:
    cases = random_cases(seeds)
    counts, failures, slowest, longest = _run_all(cases, seeds, tmp_path)
    print(f"\n{len(cases)} cases: {dict(sorted(counts.items()))}; slowest {slowest.seconds:.2f} s "
          f"({slowest.detail[:80]}); longest message {longest} characters")
    assert not failures, "\n".join(failures)
    # The run exercises both sides: real plans and each kind of refusal.
    assert counts["plan"] >= 30 and sum(v for k, v in counts.items() if k.startswith("typed")) >= 100
    assert len(cases) == 340


def test_corpus_replays_as_plans_or_typed_errors(seeds: dict[str, Header], tmp_path: Path) -> None:
    cases = corpus_cases(seeds)
    assert len(cases) == len([p for p in CORPUS.iterdir() if p.suffix in (".gguf", ".json")])
    counts, failures, _slowest, _longest = _run_all(cases, seeds, tmp_path)
    print(f"\n{len(cases)} corpus cases: {dict(sorted(counts.items()))}")
    assert not failures, "\n".join(failures)


# -- the findings' reproductions, each with what it must say ----------------------------


def _read(tmp_path: Path, header: Header | bytes, name: str = "model.gguf", data_bytes: int | None = None) -> Any:
    raw = header.to_bytes() if isinstance(header, Header) else header
    path = tmp_path / name
    gb.write_file(path, raw, data_bytes if data_bytes is not None else
                  (header.data_bytes if isinstance(header, Header) else 0))
    return read_gguf(path)


def _refused(tmp_path: Path, header: Header | bytes, *phrases: str, name: str = "model.gguf") -> str:
    with pytest.raises(ModelFileError) as info:
        _read(tmp_path, header, name)
    text = str(info.value)
    assert len(text) <= MESSAGE_LIMIT, text
    for phrase in phrases:
        assert phrase in text, text
    return text


@pytest.mark.parametrize("layers", [513, 65_536, 10**6, 2**32 - 1, 2**63])
def test_f1_absurd_block_count_is_refused_by_the_bound(tmp_path: Path, layers: int) -> None:
    header = raw_llama(**{"llama.block_count": (U64 if layers >= 2**32 else U32, layers)})
    assert len(header.to_bytes()) < 2048  # the finding's 1.6 KiB file
    _refused(tmp_path, header, f"llama.block_count is {layers}", "512")


def test_f1_the_bound_is_llamas_own(tmp_path: Path) -> None:
    """512 layers (llama.cpp's LLAMA_MAX_LAYERS) is still a model; the plan of it costs 512 layers' work."""
    meta = _read(tmp_path, raw_llama(512))
    plan = plan_memory(meta, preset_profile("rtx-4090"))
    assert meta.n_layer == 512 and plan.n_layers == 512 and plan.kv_cache_bytes > 0


@pytest.mark.parametrize(("key", "vtype", "value", "itype", "says"), [
    ("llama.embedding_length", U32, 2**31, 0, "outside any real model's range"),
    ("llama.attention.head_count", U32, 100_000, 0, "head_count is 100000"),
    ("llama.expert_count", U32, 100_000, 0, "expert_count is 100000"),
    ("llama.vocab_size", U64, 2**40, 0, "vocab_size"),
    ("llama.context_length", U64, 2**63, 0, "context_length"),
    ("llama.feed_forward_length", U32, 2**32 - 1, 0, "feed_forward_length"),
])
def test_f1_other_numbers_are_bounded(tmp_path: Path, key: str, vtype: int, value: Any, itype: int,
                                      says: str) -> None:
    _refused(tmp_path, raw_llama(**{key: (vtype, value)}), says)


@pytest.mark.parametrize(("key", "vtype", "value", "itype", "says"), [
    ("general.alignment", F32, 0.5, 0, "alignment is 0.5"),         # F7: ZeroDivisionError
    ("general.alignment", ARRAY, [32], U32, "alignment is [32]"),   # F7: TypeError in `camelid models`
    ("general.alignment", F64, math.inf, 0, "alignment is inf"),
    ("general.alignment", U32, 0, 0, "not a power of two"),
    ("general.alignment", U32, 48, 0, "not a power of two"),
    ("llama.block_count", STRING, "12", 0, "block_count is '12'"),  # F7: ValueError
    ("llama.block_count", F64, math.nan, 0, "block_count is nan"),
    ("llama.block_count", BOOL, True, 0, "block_count is True"),
    ("llama.embedding_length", ARRAY, [64, 64], U32, "must be one number, not a list"),
    ("llama.context_length", F32, -1.0, 0, "context_length is -1.0"),
    ("llama.attention.head_count_kv", STRING, "2", 0, "head_count_kv is '2'"),
    ("llama.attention.head_count", ARRAY, [4, 4, 4], U32, "3 entries for 2 layers"),
    ("llama.feed_forward_length", ARRAY, [128, -1], I32, "every entry must be a whole number"),
    ("general.architecture", U32, 7, 0, "general.architecture is 7"),
])
def test_f7_mistyped_values_are_typed_errors(tmp_path: Path, key: str, vtype: int, value: Any, itype: int,
                                             says: str) -> None:
    _refused(tmp_path, _with(raw_llama(), key, gb.kv(key, vtype, value, itype), vtype), says)


def _with(h: Header, key: str, raw: bytes, vtype: int = ARRAY) -> Header:
    return _put(h, key, raw, vtype)


def test_f14_negative_heads_and_context_are_refused(tmp_path: Path) -> None:
    _refused(tmp_path, raw_llama(**{"llama.attention.head_count_kv": (I32, -2)}), "head_count_kv is -2")
    _refused(tmp_path, raw_llama(**{"llama.context_length": (I32, -5)}), "context_length is -5")
    _refused(tmp_path, raw_llama(**{"llama.attention.sliding_window": (I64, -1)}), "sliding_window is -1")


def test_f14_zero_kv_heads_and_more_kv_than_query_heads_are_refused(tmp_path: Path) -> None:
    _refused(tmp_path, raw_llama(**{"llama.attention.head_count_kv": (U32, 0)}), "0 KV heads in every layer")
    _refused(tmp_path, raw_llama(**{"llama.attention.head_count_kv": (U32, 8)}), "8 KV heads for 4 query heads")
    _refused(tmp_path, raw_llama(**{"llama.expert_count": (U32, 8), "llama.expert_used_count": (U32, 9)}),
             "expert_used_count is 9")


def test_f14_tensor_data_past_the_end_is_refused(tmp_path: Path) -> None:
    header = raw_llama()
    with pytest.raises(ModelFileError, match="incomplete: its tensors need"):
        _read(tmp_path, header, data_bytes=header.data_bytes - 32)
    moved = header.copy()
    last = moved.tensors[-1]
    moved.tensors[-1] = gb.Piece(gb.tensor_info(last.name, list(last.shape), 0, 2**40), last.name)
    _refused(tmp_path, moved, "start at byte 1,099,511,627,776")


def test_f14_duplicate_tensor_names_and_keys_are_refused(tmp_path: Path, seeds: dict[str, Header]) -> None:
    header = raw_llama()
    dup = header.copy()
    dup.tensors[2] = gb.Piece(gb.tensor_info(dup.tensors[1].name, list(dup.tensors[2].shape), 0,
                                             dup.tensors[2].offset), dup.tensors[1].name)
    _refused(tmp_path, dup, "appears twice")
    # The finding's dup_key.gguf: the real SmolLM2 with a second llama.block_count = 12.
    real = seeds["smollm2"].copy()
    real.kvs.append(gb.Piece(gb.kv("llama.block_count", U32, 12), "llama.block_count", U32))
    _refused(tmp_path, real, "llama.block_count", "appears twice")


def test_f14_every_plan_of_a_plausible_header_is_non_negative(tmp_path: Path, seeds: dict[str, Header]) -> None:
    meta = _read(tmp_path, seeds["smollm2"])
    for machine in MACHINES:
        for ctx in (None, 16, 512, 131072):
            assert _check_plan(plan_memory(meta, preset_profile(machine), n_ctx=ctx)) is None


def test_f15_shard_count_from_the_name_is_capped(tmp_path: Path) -> None:
    from app.core.fit.gguf_meta import shard_paths

    assert shard_paths("m-00001-of-00003.gguf") == [f"m-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert len(shard_paths("m-00001-of-00256.gguf") or []) == 256
    with pytest.raises(ModelFileError, match="split into 99,999 files"):
        shard_paths("https://hub.example/o/r/resolve/main/m-00001-of-99999.gguf")
    _refused(tmp_path, raw_llama(), "99,999", name="m-00001-of-99999.gguf")


def test_f17_messages_quote_at_most_80_characters_of_a_header_string(tmp_path: Path) -> None:
    # A 60,000-byte key (the spec allows 65,535) followed by an unknown type id.
    long_key = "k" * 60_000
    header = raw_llama()
    header.kvs.append(gb.Piece(gb.string(long_key) + struct.pack("<I", 99), long_key))
    text = _refused(tmp_path, header, "unknown value type 99")
    assert long_key[:100] not in text
    # A 20 MB key: refused by the key bound before it is read whole.
    huge = raw_llama()
    huge.kvs.append(gb.Piece(struct.pack("<Q", 20_000_000) + b"k" * 1000, "huge"))
    _refused(tmp_path, huge, "a key claims 20,000,000 bytes")
    # A megabyte architecture name, and binary garbage in one.
    _refused(tmp_path, raw_llama(**{"general.architecture": (STRING, "a" * 1_000_000)}), "general.architecture")
    garbage = raw_llama(**{"general.architecture": (STRING, "\x1b[2J\x00" * 10_000)})
    text = _refused(tmp_path, garbage, "general.architecture")
    assert "\x1b" not in text


def test_f7_a_mistyped_name_or_template_is_left_out_not_fatal(tmp_path: Path) -> None:
    meta = _read(tmp_path, raw_llama(**{"general.name": (U32, 5)}))
    assert meta.name is None and plan_memory(meta, preset_profile("rtx-4090")).fits
    meta = _read(tmp_path, _with(raw_llama(), "tokenizer.chat_template",
                                 gb.kv("tokenizer.chat_template", ARRAY, [1, 2], U32)))
    assert meta.chat_template is None


def test_from_record_gets_the_same_bounds(tmp_path: Path) -> None:
    from app.core.fit.gguf_meta import ModelMeta

    record = _read(tmp_path, raw_llama()).to_record()
    assert ModelMeta.from_record(record).n_layer == 2
    for key, value in (("llama.block_count", 10**6), ("llama.block_count", 0.5),
                       ("llama.attention.head_count_kv", -2), ("llama.context_length", [1, 2])):
        bad = {**record, "metadata": {**record["metadata"], key: value}}
        with pytest.raises(ModelFileError):
            ModelMeta.from_record(bad)
    with pytest.raises(ModelFileError, match="malformed"):
        ModelMeta.from_record({**record, "tensors": [["x", [math.inf], 0]]})


def test_f1_f7_one_bad_file_does_not_hide_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`camelid models` with a 10^6-layer file, mistyped ones and a 99,999-shard name: every file listed."""
    from app import paths
    from app.cli import main
    from app.core.models import library

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    models = paths.models_dir()
    models.mkdir(parents=True, exist_ok=True)
    good = raw_llama()
    bad = {
        "bc-1000000-Q4_0": raw_llama(**{"llama.block_count": (U32, 10**6)}),
        "align-half-Q4_0": raw_llama(**{"general.alignment": (F32, 0.5)}),
        "align-array-Q4_0": _with(raw_llama(), "general.alignment", gb.kv("general.alignment", ARRAY, [32], U32)),
        "bc-string-Q4_0": raw_llama(**{"llama.block_count": (STRING, "12")}),
        "split-00001-of-99999": raw_llama(),
    }
    for name in ("good-a-Q4_0", "good-b-Q8_0"):
        gb.write_file(models / f"{name}.gguf", good.to_bytes(), good.data_bytes)
    for name, header in bad.items():
        gb.write_file(models / f"{name}.gguf", header.to_bytes(), header.data_bytes)
    listed = {m.name: m for m in library.list_models(hardware=preset_profile("laptop-8gb-cpu"))}
    assert set(listed) == {"good-a-Q4_0", "good-b-Q8_0", *(n.replace("-00001-of-99999", "") for n in bad)}
    for name in ("good-a-Q4_0", "good-b-Q8_0"):
        assert listed[name].meta and listed[name].verdict == "cpu" and not listed[name].problem
    for name in bad:
        model = listed[name.replace("-00001-of-99999", "")]
        assert model.meta is None and model.problem and len(model.problem) <= 400, model
    assert "block_count is 1000000" in (listed["bc-1000000-Q4_0"].problem or "")
    assert "99,999" in (listed["split"].problem or "")
    assert main(["models", "--json"]) == 0


def test_untyped_failures_in_one_file_are_listed_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app import paths
    from app.core.models import library

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    for name in ("a-Q4_0", "b-Q4_0"):
        path = paths.models_dir() / f"{name}.gguf"
        path.parent.mkdir(parents=True, exist_ok=True)
        gb.write_file(path, raw_llama().to_bytes(), raw_llama().data_bytes)

    def describe(path: Path) -> tuple[dict[str, Any] | None, str | None]:
        if path.name.startswith("a"):
            raise MemoryError("out of memory")
        return {"architecture": "llama"}, "cpu"

    first = {m.name: m for m in library.list_models(describe=describe)}
    assert "MemoryError" in (first["a-Q4_0"].problem or "") and first["b-Q4_0"].verdict == "cpu"
    # Not cached: the next listing tries the file again.
    again = {m.name: m for m in library.list_models(describe=lambda p: ({"architecture": "llama"}, "partial"))}
    assert again["a-Q4_0"].verdict == "partial" and again["b-Q4_0"].verdict == "cpu"


def test_the_same_bounds_hold_for_a_header_read_over_http(loopback_hub: Any, tmp_path: Path) -> None:
    """F1/F7/F14 files served by a Hub (a hostile mirror) are refused by the remote reader too, and a
    name claiming 99,999 shards makes no request at all (F15)."""
    from app.core.fit import read_gguf_remote

    repo = "hostile/Header-GGUF"
    loopback_hub.add_repo(repo)
    files = {"bc-Q4_0.gguf": (raw_llama(**{"llama.block_count": (U32, 10**6)}), "llama.block_count is 1000000"),
             "align-Q4_0.gguf": (raw_llama(**{"general.alignment": (F32, 0.5)}), "alignment is 0.5"),
             "kv-Q4_0.gguf": (raw_llama(**{"llama.attention.head_count_kv": (I32, -2)}), "head_count_kv is -2")}
    for name, (header, _says) in files.items():
        path = tmp_path / name
        gb.write_file(path, header.to_bytes(), header.data_bytes)
        loopback_hub.add_file(repo, name, path.read_bytes())
    for name, (_header, says) in files.items():
        with pytest.raises(ModelFileError, match=re.escape(says)) as info:
            read_gguf_remote(repo, name)
        assert len(str(info.value)) <= MESSAGE_LIMIT
    loopback_hub.clear_log()
    with pytest.raises(ModelFileError, match="99,999 files"):
        read_gguf_remote(repo, "m-00001-of-99999.gguf")
    assert not loopback_hub.requests(path_contains="of-99999")


def test_the_memory_gauge_sees_what_a_case_allocates() -> None:
    """The fuzz run's memory bound is only as good as its gauge: 300 MiB held inside it must show."""
    with _Peak() as peak:
        block = bytearray(300 * 2**20)
        block[::4096] = b"x" * len(block[::4096])  # touch every page
        del block
    assert peak.peak > MEMORY_LIMIT
