"""The chat engine: one llama.cpp model, loaded per plan, streaming replies, stoppable.

`Engine` wraps llama-cpp-python's `Llama` and adds what a desktop app needs:

- `load()` checks the GGUF header before llama.cpp sees the file, reports
  progress (and can be cancelled), and when a GPU load fails retries with
  fewer GPU layers, then on the CPU, saying what it did.
- `chat()` formats the conversation with the model's own chat template from
  the GGUF, keeps it inside the context window (`app.core.chat.context_window`),
  streams text to a callback, and returns the reply with llama.cpp's own
  performance counters.
- `stop()` (any thread) ends a reply within one llama.cpp graph node: it sets
  a flag that llama.cpp's abort callback reads, so even a long prompt
  evaluation stops; the model stays loaded and usable. It also ends a chat
  template that is still rendering (`chat_template`), and a reply that was
  requested but has not started yet (`reserve_reply()`): Send then Stop is
  never lost. A stop while nothing is running or requested does nothing.
- A fixed seed (`SamplingSettings.seed`) makes a reply repeatable: the prompt
  is then evaluated from an empty cache, the path a fresh process takes, so the
  same seed, conversation, settings and load parameters give the same reply,
  within one session or in a new process (on the same machine and llama.cpp
  build: other CPUs round differently).

Threads (house rule 4): the thread that calls `load()` owns the model; `chat()`,
`count_tokens()` and `unload()` must come from that thread (checked). Only
`stop()` may be called from anywhere. `EngineThread` is an owner thread with a
request queue for callers (the GUI) that hop between threads.
"""

from __future__ import annotations

import codecs
import ctypes
import ctypes.util
import gc
import logging
import queue
import random
import re
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from app.core.chat.chat_template import (
    ChatTemplate,
    RenderStopped,
    TemplateLimits,
    TemplateRejected,
)
from app.core.chat.context_window import WindowFit, fit_to_window, reply_reserve
from app.core.chat.sampling import SamplingSettings
from app.core.chat.text import clean_text, invalid_text_notice
from app.core.errors import (
    ChatTemplateError,
    GenerationError,
    ModelFileError,
    ModelLoadError,
    PromptTooLongError,
    UsageError,
    WontFitError,
)
from app.core.fit import (
    BufferSizes,
    LlamaLogCapture,
    LoadChoices,
    MemoryPlan,
    load_notices,
    parse_buffer_sizes,
    plan_with_choices,
    read_gguf,
)
from app.core.fit.memory import context_notes
from app.core.machine import BackendInfo, CpuInfo, HardwareProfile
from app.core.units import human_bytes

_log = logging.getLogger(__name__)
T = TypeVar("T")


def _collect_cycles_now() -> None:
    gc.collect()


# How the engine gets cyclic garbage (a freed model's Python side) collected after an unload. A GUI replaces it
# with a request to collect on its own thread (app/ui/gc_guard.py): collecting here, on the engine's owner
# thread, could delete Qt objects from the wrong thread.
collect_cycles: Callable[[], None] = _collect_cycles_now
Progress = Callable[[float], None]
OnText = Callable[[str], None]

GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)
#: Magic numbers of the pre-GGUF formats (ggml, ggmf, ggjt), as bytes on disk.
LEGACY_MAGICS = (b"lmgg", b"fmgg", b"tjgg", b"ggml", b"ggmf", b"ggjt")
#: Cache types llama.cpp accepts for K and V (ggml type ids).
CACHE_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8,
               "iq4_nl": 20, "bf16": 30}
#: Used when a GGUF carries no chat template (rare: very old conversions).
FALLBACK_TEMPLATE = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + "
                     "message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
                     "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
STOP_REASONS = ("stop", "length", "context", "cancelled")


# --------------------------------------------------------------------------
# Load parameters
# --------------------------------------------------------------------------
def _physical_cores(cpu: CpuInfo | None) -> int:
    if cpu is None:
        from app.core.machine import probe_cpu

        cpu = probe_cpu()
    return max(1, cpu.performance_cores or cpu.cores_physical or 1)


# Why these thread counts (bench/bench_threads.py, docs/BENCHMARKS.md "Threads under a competing CPU
# load"): llama.cpp's workers spin while they wait for each other, so when they take every core and any
# other process wants one, the descheduled thread stalls the rest. Measured on a shared 2-core machine
# (medians, tokens/s, 1 thread vs 2): generation 18.2 vs 5.1 with one busy process, 13.4 vs 0.9 with
# two, and 46 vs 5.2 with only other people's work running; prompt processing 53 vs 23, 31 vs 13 and
# 134 vs 40. Generation is memory-bound, so a core left free costs little: one fewer than the cores on
# machines with 2-4 of them (above 4, one core is a small share and was not measured: every core).
# Prompt processing is compute-bound, so a free core costs up to 1/cores of its speed on a quiet
# machine; on 2 cores the contention losses above dwarf that and it leaves one free too, from 3 cores
# it keeps every core (not measured there; the cost of giving one up is certain).
def generation_threads(cores: int) -> int:
    """Generation threads (n_threads) for `cores` physical (Apple: performance) cores."""
    cores = max(1, cores)
    return cores - 1 if 2 <= cores <= 4 else cores


def batch_threads(cores: int) -> int:
    """Prompt-processing threads (n_threads_batch) for `cores` physical (Apple: performance) cores."""
    cores = max(1, cores)
    return 1 if cores == 2 else cores


def default_threads(cpu: CpuInfo | None = None) -> int:
    """Generation threads on this machine (or `cpu`): `generation_threads` of its physical cores.

    Apple performance cores count, efficiency cores and hyper-threads do not:
    token generation is memory-bound, and they add contention, not speed.
    """
    return generation_threads(_physical_cores(cpu))


def default_batch_threads(cpu: CpuInfo | None = None) -> int:
    """Prompt-processing threads on this machine (or `cpu`): `batch_threads` of its physical cores."""
    return batch_threads(_physical_cores(cpu))


@dataclass(frozen=True)
class LoadParams:
    """How llama.cpp loads a model: the knobs a `MemoryPlan` decides."""

    n_ctx: int = 4096
    #: Layers offloaded to the GPU; -1 means all, 0 the CPU only.
    n_gpu_layers: int = 0
    flash_attn: bool = False
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    n_batch: int = 512
    n_ubatch: int = 512
    #: None: `default_threads()` for generation, and for the prompt `default_batch_threads()`
    #: (or n_threads when that is given: a user's thread count applies to both).
    n_threads: int | None = None
    n_threads_batch: int | None = None
    use_mmap: bool = True
    #: llama_model_params.use_extra_bufts: False stops llama.cpp repacking CPU weights (CPU_REPACK).
    #: Llama() has no such argument; `_load_llama` sets it on model_params.
    use_extra_bufts: bool = True
    #: False keeps sliding-window layers' KV cache at window size (llama.cpp's own
    #: default in its tools; the C API's default is True, so it is always passed).
    swa_full: bool = False
    #: Fraction of the offloaded layers per GPU; None lets llama.cpp decide (one GPU).
    tensor_split: tuple[float, ...] | None = None
    #: Mixture of experts: blocks 0..cpu_moe-1 keep their experts in RAM (--n-cpu-moe); Llama() has no
    #: such argument, `_load_llama` sets a tensor buffer override on model_params.
    cpu_moe: int = 0

    def __post_init__(self) -> None:
        for name in ("cache_type_k", "cache_type_v"):
            if getattr(self, name) not in CACHE_TYPES:
                raise UsageError(f"Unknown KV cache type {getattr(self, name)!r}.",
                                 f"Use one of {', '.join(CACHE_TYPES)}.")
        if self.cache_type_v not in ("f16", "f32", "bf16") and not self.flash_attn:
            raise UsageError(f"A {self.cache_type_v} V cache needs flash attention.",
                             "Turn flash attention on, or keep the V cache at f16.")
        if self.n_ctx < 16:
            raise UsageError(f"A context of {self.n_ctx} tokens is too small to chat.",
                             "Use at least 256 tokens.")

    @classmethod
    def from_plan(cls, plan: MemoryPlan, *, n_threads: int | None = None) -> LoadParams:
        """The parameters that make llama.cpp place memory exactly as `plan` says."""
        return cls(n_ctx=plan.n_ctx, n_gpu_layers=plan.n_gpu_layers, flash_attn=plan.flash_attn,
                   cache_type_k=plan.cache_type_k, cache_type_v=plan.cache_type_v, n_batch=plan.n_batch,
                   n_ubatch=plan.n_ubatch, n_threads=n_threads, swa_full=plan.swa_full,
                   tensor_split=tuple(plan.tensor_split) if plan.tensor_split else None,
                   use_mmap=plan.use_mmap, use_extra_bufts=plan.use_extra_bufts, cpu_moe=plan.cpu_moe)

    def with_(self, **changes: Any) -> LoadParams:
        return replace(self, **changes)

    def llama_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `llama_cpp.Llama`."""
        threads = self.n_threads or default_threads()
        batch = self.n_threads_batch or (self.n_threads or default_batch_threads())
        return {
            "n_ctx": self.n_ctx,
            "n_gpu_layers": self.n_gpu_layers,
            "flash_attn": self.flash_attn,
            "type_k": CACHE_TYPES[self.cache_type_k],
            "type_v": CACHE_TYPES[self.cache_type_v],
            "n_batch": self.n_batch,
            "n_ubatch": min(self.n_ubatch, self.n_batch),
            "n_threads": threads,
            "n_threads_batch": batch,
            "use_mmap": self.use_mmap,
            "swa_full": self.swa_full,
            "verbose": False,
        } | ({"tensor_split": list(self.tensor_split)} if self.tensor_split else {}) \
          | ({} if self.use_extra_bufts else {"use_extra_bufts": False}) \
          | ({"cpu_moe": self.cpu_moe} if self.cpu_moe else {})


def backend_info() -> BackendInfo:
    """What the installed llama.cpp was built with (CPU / CUDA / Metal / Vulkan...)."""
    from app.core.machine import probe_backend

    return probe_backend()


# --------------------------------------------------------------------------
# GGUF header check: llama.cpp must never be the first to read a bad file
# --------------------------------------------------------------------------
_SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)


def check_gguf(path: Path) -> None:
    """Raise ModelFileError with a sentence unless `path` starts like a GGUF llama.cpp can read."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"The model file {path} does not exist.",
                             "Check the path, or download the model again.")
    if not path.is_file():
        raise ModelFileError(f"{path} is a folder, not a model file.", "Choose the .gguf file inside it.")
    try:
        with path.open("rb") as f:
            head = f.read(24)
    except OSError as exc:
        raise ModelFileError(f"The model file {path} could not be read ({exc.strerror or exc}).",
                             "Check its permissions and that the disk is attached.") from exc
    name = path.name
    if head[:4] in LEGACY_MAGICS:
        raise ModelFileError(f"{name} is in the old GGML format, which llama.cpp no longer reads.",
                             "Download the GGUF version of this model.")
    if len(head) < 24 or head[:4] != GGUF_MAGIC:
        raise ModelFileError(f"{name} is not a GGUF model file (it does not start with the GGUF "
                             "signature), or it is damaged.",
                             "Download the model again; only .gguf files can be loaded.")
    version = struct.unpack_from("<I", head, 4)[0]
    if version not in GGUF_VERSIONS:
        if struct.unpack_from(">I", head, 4)[0] in GGUF_VERSIONS:
            raise ModelFileError(f"{name} is a big-endian GGUF, made for other processors.",
                                 "Download the ordinary (little-endian) file of this model.")
        raise ModelFileError(f"{name} is GGUF version {version}, which this llama.cpp does not read.",
                             "Download a current conversion of the model, or update Camelid.")
    n_tensors, n_kv = struct.unpack_from("<QQ", head, 8)
    if n_tensors == 0 or n_tensors > 1_000_000 or n_kv > 1_000_000:
        raise ModelFileError(f"The header of {name} is damaged ({n_tensors} tensors, {n_kv} keys).",
                             "Download the model again.")
    shard = _SHARD.search(name)
    if shard and int(shard.group(1)) != 1:
        raise ModelFileError(f"{name} is part {int(shard.group(1))} of a model split in "
                             f"{int(shard.group(2))} files.",
                             "Load the first part (-00001-of-...); llama.cpp finds the others.")


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------
#: Components compared between a plan and llama.cpp's log: (name, plan attribute, log components).
_CHECKED = (("weights", "weights_bytes", ("weights",)), ("repack", "repack_bytes", ("repack",)),
            ("kv_cache", "kv_cache_bytes", ("kv",)), ("recurrent_state", "recurrent_state_bytes", ("rs",)),
            ("compute", "compute_bytes", ("compute", "output")))
#: How the summary names each component; repack and recurrent state only when either side has them.
_LABELS = (("weights", "weights"), ("repack", "repacked weights"), ("kv_cache", "KV cache"),
           ("recurrent_state", "recurrent state"), ("compute", "compute"))
_OPTIONAL = ("repack", "recurrent_state")


@dataclass
class MemoryCheck:
    """The plan's bytes next to the buffers llama.cpp reported allocating for the same load."""

    #: Bytes per component (weights, repack, kv_cache, recurrent_state, compute) as planned and as
    #: llama.cpp reported (weights: CPU_Mapped/CPU/GPU model buffers; repack: CPU_REPACK; RS buffers).
    planned: dict[str, int]
    measured: dict[str, int]
    #: llama.cpp's per-device MiB, as its log names the buffers.
    buffers: dict[str, Any]
    #: Set when the load did not happen as planned (a retry with fewer GPU layers).
    note: str = ""

    @classmethod
    def compare(cls, plan: MemoryPlan, sizes: BufferSizes, *, note: str = "") -> MemoryCheck:
        planned = {name: int(getattr(plan, attr)) for name, attr, _ in _CHECKED}
        measured = {name: sum(sizes.bytes(c) for c in comps) for name, _, comps in _CHECKED}
        return cls(planned=planned, measured=measured, buffers=sizes.to_dict(), note=note)

    @property
    def reported(self) -> bool:
        """Whether llama.cpp's log said anything (a custom loader may print nothing)."""
        return any(self.measured.values())

    @property
    def planned_total(self) -> int:
        return sum(self.planned.values())

    @property
    def measured_total(self) -> int:
        return sum(self.measured.values())

    @property
    def difference(self) -> dict[str, int]:
        """Measured minus planned, per component (bytes; positive: llama.cpp took more)."""
        return {k: self.measured[k] - self.planned[k] for k in self.planned}

    @property
    def error(self) -> float | None:
        """(measured - planned) / measured over all components; None when nothing was reported."""
        return (self.measured_total - self.planned_total) / self.measured_total if self.reported else None

    def summary(self) -> str:
        """One sentence: what llama.cpp allocated against the plan."""
        if not self.reported:
            return "llama.cpp did not report its buffer sizes for this load, so the plan could not be checked."
        parts = ", ".join(f"{human_bytes(self.measured.get(k, 0))} {label} "
                          f"(plan {human_bytes(self.planned.get(k, 0))})"
                          for k, label in _LABELS
                          if k not in _OPTIONAL or self.planned.get(k) or self.measured.get(k))
        error = self.error or 0.0
        if abs(error) < 0.0005:
            verdict = "as planned"
        else:
            verdict = f"{abs(error) * 100:.1f}% {'more' if error > 0 else 'less'} than planned"
        text = f"llama.cpp allocated {parts}: {verdict}."
        return f"{text} {self.note}" if self.note else text

    def to_dict(self) -> dict[str, Any]:
        return {"planned": self.planned, "measured": self.measured, "difference": self.difference,
                "error": self.error, "buffers_mib": self.buffers, "note": self.note, "summary": self.summary()}


@dataclass
class LoadReport:
    """What `Engine.load()` did."""

    path: str
    params: LoadParams
    seconds: float
    n_ctx: int
    n_ctx_train: int
    #: Sentences for the user (retries, template fallbacks).
    notices: list[str] = field(default_factory=list)
    #: One line per load attempt: "n_gpu_layers=33: out of memory".
    attempts: list[str] = field(default_factory=list)
    chat_template: str = "gguf"
    #: The MemoryPlan the parameters came from (None when they were given without one).
    plan: MemoryPlan | None = None
    #: The plan against llama.cpp's own buffer report (None without a plan).
    memory: MemoryCheck | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in vars(self).items() if k not in ("plan", "memory")}
        data["params"] = asdict(self.params)
        data["plan"] = self.plan.to_dict() if self.plan is not None else None
        data["memory"] = self.memory.to_dict() if self.memory is not None else None
        return data


@dataclass
class ReplyStats:
    """Per-reply numbers; speeds come from llama.cpp's perf counters."""

    prompt_tokens: int = 0
    #: Prompt tokens actually evaluated (the rest came from the KV cache).
    prompt_tokens_evaluated: int = 0
    completion_tokens: int = 0
    ttft_s: float | None = None
    tokens_per_s: float | None = None
    prompt_tokens_per_s: float | None = None
    total_s: float = 0.0
    stop_reason: str = "stop"
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GenerateOptions:
    """What an API request asks of a reply beyond sampling (the chat window uses the defaults)."""

    #: Strings that end the reply where they first appear (not included in the text).
    stop: tuple[str, ...] = ()
    #: A GBNF grammar the reply must follow (llama.cpp's grammar sampler), e.g. from a JSON schema.
    grammar: str | None = None
    #: None: no log-probabilities; N >= 0: each token's own and the N most likely alternatives.
    logprobs: int | None = None
    #: False: a conversation longer than the context raises PromptTooLongError instead of being
    #: trimmed (an API client must be told, never silently answered about half its prompt).
    trim: bool = True
    #: OpenAI-style function definitions, passed to the chat template's `tools`.
    tools: tuple[dict[str, Any], ...] | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    #: Write special tokens' text (tool-call markers such as [TOOL_CALLS] are special tokens).
    special_text: bool = False

    def __post_init__(self) -> None:
        if len(self.stop) > 16 or any(not s or len(s) > 256 for s in self.stop):
            raise UsageError("Up to 16 stop strings of 1 to 256 characters each can be given.",
                             "Shorten the stop list.")
        if self.logprobs is not None and not 0 <= self.logprobs <= 20:
            raise UsageError("top_logprobs must be from 0 to 20.", "Ask for 20 alternatives or fewer.")
        for name in ("frequency_penalty", "presence_penalty"):
            if not -2.0 <= getattr(self, name) <= 2.0:
                raise UsageError(f"{name} must be from -2 to 2.", "Use a value in that range.")


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token's log-probability under the model (before sampling), and its rivals."""

    text: str
    raw: bytes
    logprob: float
    #: The most likely tokens at this position: (text, raw bytes, logprob), most likely first.
    top: tuple[tuple[str, bytes, float], ...] = ()


@dataclass
class Reply:
    text: str
    stats: ReplyStats
    #: Sentences for the user: trimmed history, folded system prompt.
    notices: list[str] = field(default_factory=list)
    window: WindowFit | None = None
    #: The stop string that ended the reply (stats.stop_reason is then "stop").
    stop_sequence: str | None = None
    #: Per generated token, when GenerateOptions.logprobs asked for them.
    logprobs: list[TokenLogprob] | None = None


# --------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------
LlamaLoader = Callable[[str, dict[str, Any], Callable[[float], bool]], Any]


class Engine:
    """One loaded llama.cpp model, owned by the thread that loaded it."""

    def __init__(self, *, loader: LlamaLoader | None = None) -> None:
        self._loader = loader or _load_llama
        self._llm: Any = None
        self._owner: int | None = None
        self.report: LoadReport | None = None
        self.model_path: Path | None = None
        # Stop: an Event for the Python loop and a C byte for llama.cpp's abort callback.
        self._stop = threading.Event()
        self._abort_flag = ctypes.create_string_buffer(2)
        self._abort_cb: Any = None
        # Tickets latch a stop before its reply starts: every reply numbered <= _stopped_upto is stopped.
        self._ticket_lock = threading.Lock()
        self._issued = 0
        self._stopped_upto = 0
        self._running: int | None = None
        #: Tickets stopped one by one (`cancel`): a client of the API server that went away.
        self._cancelled: set[int] = set()
        self._template: ChatTemplate | None = None
        #: Time and size limits for rendering the chat template (per reply).
        self.template_limits = TemplateLimits()
        #: Bytes of the longest token piece: no text of more characters than budget x this fits.
        self._max_piece: int | None = None
        self._fold_system = False
        self._fold_noticed = False
        self._piece_buf = ctypes.create_string_buffer(256)
        self._vocab: Any = None
        #: The sliding window when llama.cpp keeps only that much KV cache (swa_full off), else 0.
        self._n_swa = 0

    # -- state --------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._llm is not None

    @property
    def n_ctx(self) -> int:
        self._require_model()
        return int(self._llm.n_ctx())

    @property
    def template_source(self) -> str | None:
        """The Jinja source of the chat template in use (the GGUF's, a user's, or the ChatML fallback)."""
        return self._template.source if self._template is not None else None

    @property
    def architecture(self) -> str | None:
        plan = self.report.plan if self.report is not None else None
        return str(plan.model.get("architecture")) if plan is not None and plan.model.get("architecture") \
            else None

    def _check_owner(self) -> None:
        if self._owner is not None and self._owner != threading.get_ident():
            raise RuntimeError("The engine's model is owned by another thread; call it from the "
                               "thread that loaded it (or use EngineThread).")

    def _require_model(self) -> None:
        if self._llm is None:
            raise ModelLoadError("No model is loaded.", "Load a model first.")

    # -- load / unload -------------------------------------------------------
    def load(self, path: Path | str, params: LoadParams | None = None, *, plan: MemoryPlan | None = None,
             choices: LoadChoices | None = None, progress: Progress | None = None,
             cancel: threading.Event | None = None) -> LoadReport:
        """Load `path` (unloading any current model).

        Without `params` they are planned from the header (`plan_params`, with
        the user's `choices`). With a `plan` (given or made here), llama.cpp's
        own buffer report is compared with it (`LoadReport.memory`).

        Raises ModelFileError for a bad file, ModelLoadError when llama.cpp
        refuses it (or when `cancel` was set). A failed load leaves no model
        loaded.
        """
        path = Path(path)
        check_gguf(path)
        if self._llm is not None:
            self._check_owner()
            self.unload()
        notices: list[str] = []
        if params is None:
            params, plan, notices = plan_params(path, choices)
        else:
            # The header and tensor table first: a truncated file is a TruncatedGGUFError
            # sentence ("download it again"), not llama.cpp's failure after reading it.
            read_gguf(path)
        if plan is not None:
            refuse_impossible(path, plan)
        started = time.perf_counter()
        attempts: list[str] = []
        llm = None
        tried: list[int] = []
        # llama.cpp logs every buffer it allocates; that report is checked against the plan.
        with LlamaLogCapture() as log:
            for layers in _layer_schedule(params.n_gpu_layers):
                tried.append(layers)
                attempt = params.with_(n_gpu_layers=layers)
                mark = len(log.text)
                try:
                    llm = self._loader(str(path), attempt.llama_kwargs(),
                                       _progress_callback(progress, cancel))
                except (ValueError, RuntimeError, OSError) as exc:
                    if cancel is not None and cancel.is_set():
                        raise ModelLoadError(f"Loading {path.name} was cancelled.") from exc
                    attempts.append(f"n_gpu_layers={layers}: {exc}")
                    continue
                params = attempt
                break
        if llm is None:
            raise _load_failure(path, tried, llama_reason(log.text))
        retried = len(tried) > 1
        if retried:
            where = "on the CPU only" if params.n_gpu_layers == 0 else \
                f"with {params.n_gpu_layers} layers on the GPU"
            notices.append(f"Loading {path.name} with {_layers_text(tried[0])} on the GPU failed "
                           f"(most likely not enough free GPU memory); it was loaded {where} "
                           "instead, so replies will be slower.")
        memory = None
        if plan is not None:
            # Only the successful attempt's lines: a failed one may have allocated and freed.
            sizes = parse_buffer_sizes(log.text[mark:])
            note = (f"The plan was for {_layers_text(tried[0])} on the GPU; the load that succeeded used "
                    f"{_layers_text(params.n_gpu_layers)}.") if retried else ""
            memory = MemoryCheck.compare(plan, sizes, note=note)
            _log.info("%s: %s", path.name, memory.summary())
        self._owner = threading.get_ident()
        self._llm = llm
        self.model_path = path
        self._n_swa = 0 if params.swa_full else int(_call_model(llm, "llama_model_n_swa", default=0))
        self._install_abort_callback()
        template_source = self._setup_template(notices)
        n_ctx_train = int(_call(llm, "n_ctx_train", default=0))
        if n_ctx_train and int(llm.n_ctx()) > n_ctx_train and not any("trained for" in n for n in notices):
            notices += context_notes(n_ctx_train, n_ctx=int(llm.n_ctx()), ctx_cap=int(llm.n_ctx()))
        self.report = LoadReport(
            path=str(path), params=params, seconds=time.perf_counter() - started,
            n_ctx=int(llm.n_ctx()), n_ctx_train=n_ctx_train, notices=notices,
            attempts=attempts, chat_template=template_source, plan=plan, memory=memory)
        if progress is not None:
            progress(1.0)
        return self.report

    def unload(self) -> None:
        """Free the model and its context (RAM and VRAM)."""
        if self._llm is None:
            return
        self._check_owner()
        llm, self._llm = self._llm, None
        self._template = None
        self._vocab = None
        self._max_piece = None
        close = getattr(llm, "close", None)
        if close is not None:
            close()
        del llm
        self._abort_cb = None
        self._owner = None
        self.report = None
        self.model_path = None
        collect_cycles()

    def clear_cache(self) -> None:
        """Forget the evaluated prompt: the next reply evaluates its whole prompt again.

        Replies normally reuse the longest common prefix of the previous
        prompt; benchmarks clear it to time a cold prompt.
        """
        self._require_model()
        self._check_owner()
        self._llm.reset()

    # -- stop ----------------------------------------------------------------
    def reserve_reply(self) -> int:
        """A ticket for a reply about to be requested (any thread); pass it to `chat(ticket=...)`.

        A `stop()` after this and before the reply starts stops that reply as it
        starts, before its prompt is formatted or evaluated.
        """
        with self._ticket_lock:
            self._issued += 1
            return self._issued

    def stop(self) -> None:
        """End the current reply, and every reply reserved before now, as soon as possible. Safe from any thread."""
        with self._ticket_lock:
            self._stopped_upto = self._issued
            if self._running is not None:
                self._stop.set()
                self._abort_flag[0] = b"\x01"

    def cancel(self, ticket: int) -> None:
        """End the reply of this one ticket (running or not yet started), leaving others alone. Any thread."""
        with self._ticket_lock:
            if ticket > self._stopped_upto:
                self._cancelled.add(ticket)
            if self._running == ticket:
                self._stop.set()
                self._abort_flag[0] = b"\x01"

    def _begin_reply(self, ticket: int | None) -> bool:
        """Mark a reply running; True when it was stopped before it began."""
        with self._ticket_lock:
            if ticket is None:
                self._issued += 1
                ticket = self._issued
            self._running = ticket
            stopped = ticket <= self._stopped_upto or ticket in self._cancelled
            self._cancelled.discard(ticket)
            # Cancels of tickets long finished are never looked at again.
            if len(self._cancelled) > 1024:
                self._cancelled = {t for t in self._cancelled if t > ticket}
            if stopped:
                self._stop.set()
                self._abort_flag[0] = b"\x01"
            else:
                self._stop.clear()
                self._abort_flag[0] = b"\x00"
            return stopped

    def _end_reply(self) -> None:
        with self._ticket_lock:
            self._running = None
            self._stop.clear()
            self._abort_flag[0] = b"\x00"

    def _install_abort_callback(self) -> None:
        import llama_cpp

        ctx = getattr(self._llm, "ctx", None)
        if ctx is None:
            return
        # llama.cpp polls the abort callback before every graph node from a
        # compute thread. A Python callback would need the GIL there, hundreds
        # of times per token, and would wait whenever the GUI thread holds it.
        # libc's strlen on a 2-byte buffer [flag, 0] returns 0 or 1 without
        # Python: exactly "is the flag set" in the callback's calling convention.
        strlen = _libc_strlen()
        if strlen is not None:
            self._abort_cb = ctypes.cast(strlen, llama_cpp.ggml_abort_callback)
            data = ctypes.cast(self._abort_flag, ctypes.c_void_p)
        else:
            flag = self._abort_flag

            def aborted(_data: Any) -> bool:
                return flag[0] != b"\x00"

            self._abort_cb = llama_cpp.ggml_abort_callback(aborted)
            data = ctypes.c_void_p(0)
        llama_cpp.llama_set_abort_callback(ctx, self._abort_cb, data)

    # -- chat template -------------------------------------------------------
    def _setup_template(self, notices: list[str]) -> str:
        import llama_cpp

        llm = self._llm
        templates = getattr(llm, "_camelid_chat_templates", None)
        if templates is None:  # a loader of its own: the Llama kept its metadata
            templates = getattr(llm, "metadata", {}) or {}
        template = templates.get("tokenizer.chat_template")
        source = "gguf"
        self._template = None
        if template:
            try:
                self._template = self._compile(template)
            except ChatTemplateError as exc:
                notices.append(f"{exc.message} Camelid uses the common ChatML format instead, which may "
                               "suit it poorly.")
                source = "chatml (fallback: the model's template is not valid Jinja)"
        else:
            source = "chatml (fallback)"
            notices.append("This model has no chat template in its file; Camelid uses the common "
                           "ChatML format, which may suit it poorly.")
        if self._template is None:
            self._template = self._compile(FALLBACK_TEMPLATE)
        self._fold_system = False
        self._fold_noticed = False
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model) if hasattr(llm, "model") else None
        return source

    def _compile(self, template: str) -> ChatTemplate:
        eos, bos = self._llm.token_eos(), self._llm.token_bos()
        model = self.model_path.name if self.model_path is not None else "this model"
        return ChatTemplate(template, eos_token=self._token_text(eos), bos_token=self._token_text(bos),
                            model=model, limits=self.template_limits)

    def set_chat_template(self, template: str | None) -> None:
        """Use this Jinja chat template instead of the GGUF's (None: back to the GGUF's).

        For models whose file carries a broken or missing template. ChatTemplateError when it is not
        valid Jinja (the current template stays).
        """
        self._require_model()
        self._check_owner()
        if template is None:
            self._setup_template([])
            return
        self._template = self._compile(template)
        self._fold_system = False
        self._fold_noticed = False

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self._llm.detokenize([token], special=True).decode("utf-8", errors="ignore")

    def render(self, messages: Sequence[dict[str, str]]) -> str:
        """The prompt text for `messages` with the model's template (system folded if it must be)."""
        self._require_model()
        return self._render(messages)

    def _render(self, messages: Sequence[dict[str, Any]], *, stop: threading.Event | None = None,
                deadline: float | None = None, tools: Sequence[dict[str, Any]] | None = None) -> str:
        assert self._template is not None
        template = self._template
        template.limits = self.template_limits
        msgs = [dict(m) for m in messages]
        if self._fold_system:
            msgs = _fold_system(msgs)
        try:
            return template.render(msgs, stop=stop, deadline=deadline, tools=tools)
        except TemplateRejected as exc:
            if self._fold_system or not msgs or msgs[0]["role"] != "system":
                raise _rejected(template.model, exc) from exc
        # The template refused the system role (Gemma, Mistral and others): put
        # the system prompt at the start of the first user turn from now on.
        try:
            prompt = template.render(_fold_system(msgs), stop=stop, deadline=deadline, tools=tools)
        except TemplateRejected as exc:
            raise _rejected(template.model, exc) from exc
        self._fold_system = True
        return prompt

    def tokenize_prompt(self, messages: Sequence[dict[str, Any]], *, stop: threading.Event | None = None,
                        deadline: float | None = None,
                        tools: Sequence[dict[str, Any]] | None = None) -> list[int]:
        prompt = self._render(messages, stop=stop, deadline=deadline, tools=tools)
        # The template writes BOS itself where the model wants it.
        return self._llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)

    def count_tokens(self, messages: Sequence[dict[str, str]]) -> int:
        """Tokens the conversation takes as a prompt, template included."""
        self._check_owner()
        return len(self.tokenize_prompt(messages))

    def count_text(self, text: str) -> int:
        """Tokens of plain text without the template (budgeting documents for a prompt)."""
        self._require_model()
        self._check_owner()
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def _template_model(self) -> str:
        return self._template.model if self._template is not None else "this model"

    def _longest_piece(self) -> int:
        """Bytes of the longest token piece (special tokens included), measured once per load."""
        if self._max_piece is None:
            import llama_cpp

            longest = 1
            if self._vocab is not None:
                buf = ctypes.create_string_buffer(1024)
                for token in range(int(self._llm.n_vocab())):
                    n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, True)
                    longest = max(longest, abs(int(n)))
            else:
                longest = 256
            self._max_piece = longest
        return self._max_piece

    def _cut_head(self, text: str, n: int) -> str:
        tokens = self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        return self._llm.detokenize(tokens[n:]).decode("utf-8", errors="ignore")

    # -- chat ----------------------------------------------------------------
    def chat(self, messages: Sequence[dict[str, Any]], sampling: SamplingSettings | None = None, *,
             on_text: OnText | None = None, ticket: int | None = None,
             options: GenerateOptions | None = None) -> Reply:
        """Answer the conversation `messages` ({"role", "content"} dicts, oldest first).

        Text is passed to `on_text` as it is generated (on this thread).
        `stop()` ends the reply early (stop_reason "cancelled"), also while the
        chat template renders; with a `ticket` from `reserve_reply()`, a stop
        that came after the ticket and before this call stops it at once. Too
        long a conversation is trimmed per `context_window` and the reply says
        so in `notices` (with `options.trim` off it raises PromptTooLongError);
        text that is not valid UTF-8 is replaced, with a notice. `options` adds
        what API requests ask for: stop strings, a grammar, log-probabilities,
        tools for the template. The conversation may end with a tool's result.
        """
        self._require_model()
        self._check_owner()
        sampling = sampling or SamplingSettings()
        options = options or GenerateOptions()
        started = time.perf_counter()
        stopped = self._begin_reply(ticket)
        try:
            if not messages or messages[-1]["role"] not in ("user", "tool"):
                raise UsageError("A reply needs a conversation that ends with a user message.")
            if stopped:
                return _cancelled(started, sampling)
            try:
                return self._reply(messages, sampling, on_text, started, options)
            except RenderStopped:
                return _cancelled(started, sampling)
        finally:
            self._end_reply()

    def complete(self, prompt: str, sampling: SamplingSettings | None = None, *,
                 on_text: OnText | None = None, ticket: int | None = None,
                 options: GenerateOptions | None = None) -> Reply:
        """Continue `prompt` as plain text, without the chat template (OpenAI's /v1/completions).

        The prompt is never trimmed: one longer than the context raises PromptTooLongError.
        Special-token text in it (`<|im_start|>`) is read as those tokens, as llama-server does.
        """
        self._require_model()
        self._check_owner()
        sampling = sampling or SamplingSettings()
        options = options or GenerateOptions()
        started = time.perf_counter()
        stopped = self._begin_reply(ticket)
        try:
            if stopped:
                return _cancelled(started, sampling)
            text, n = clean_text(prompt)
            notices = [invalid_text_notice(n, "The prompt")] if n else []
            n_ctx = int(self._llm.n_ctx())
            if len(text) > n_ctx * self._longest_piece():
                raise _too_long(None, n_ctx)
            tokens = self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
            if not tokens:
                raise UsageError("The prompt is empty.", "Send some text to continue.")
            if len(tokens) >= n_ctx:
                raise _too_long(len(tokens), n_ctx)
            reply = self._generate(tokens, sampling, options, on_text, started)
            reply.notices[:0] = notices
            return reply
        finally:
            self._end_reply()

    def _reply(self, messages: Sequence[dict[str, Any]], sampling: SamplingSettings, on_text: OnText | None,
               started: float, options: GenerateOptions) -> Reply:
        llm = self._llm
        n_ctx = int(llm.n_ctx())
        messages, notices = _clean_messages(messages)
        # One time limit for every render of this reply's template (fitting may render several times).
        deadline = time.monotonic() + self.template_limits.time_s
        tools = options.tools
        if not options.trim:
            chars = sum(len(m["content"]) for m in messages)
            if chars > n_ctx * self._longest_piece():
                raise _too_long(None, n_ctx)
            tokens = self.tokenize_prompt(messages, stop=self._stop, deadline=deadline, tools=tools)
            if len(tokens) >= n_ctx:
                raise _too_long(len(tokens), n_ctx)
            window = None
        else:
            counted: dict[str, Any] = {}

            def count(msgs: list[dict[str, Any]]) -> int:
                counted["messages"] = msgs
                counted["tokens"] = self.tokenize_prompt(msgs, stop=self._stop, deadline=deadline, tools=tools)
                return len(counted["tokens"])

            budget = n_ctx - reply_reserve(n_ctx, sampling.max_tokens)
            chars = sum(len(m["content"]) for m in messages)
            # Only a conversation that might not fit pays for measuring the longest token.
            max_chars = budget * self._longest_piece() if chars > budget * 4 else None
            window = fit_to_window(messages, budget=budget, count=count, cut_head=self._cut_head,
                                   max_chars=max_chars)
            notices += window.notices()
            # The last count is usually of exactly the messages kept: reuse its tokens.
            same = counted.get("messages") == window.messages
            tokens = counted["tokens"] if same else self.tokenize_prompt(
                window.messages, stop=self._stop, deadline=deadline, tools=tools)
        if self._fold_system and not self._fold_noticed:
            self._fold_noticed = True
            notices.append("This model's chat template has no system role, so the system prompt "
                           "is sent at the start of the first user message.")
        if not tokens:
            raise ChatTemplateError(f"The chat template of {self._template_model()} gave an empty prompt.",
                                    "Use a different model, or give it a chat template of your own.")
        reply = self._generate(tokens, sampling, options, on_text, started)
        reply.notices[:0] = notices
        reply.window = window
        return reply

    def _generate(self, tokens: list[int], sampling: SamplingSettings, options: GenerateOptions,
                  on_text: OnText | None, started: float) -> Reply:
        """Sample a reply to the prompt `tokens`: the one generation loop of chat() and complete()."""
        import llama_cpp

        llm = self._llm
        n_ctx = int(llm.n_ctx())
        grammar = _grammar(options.grammar) if options.grammar else None
        seed = sampling.seed if sampling.seed is not None else random.randrange(2**31 - 1)
        llm.set_seed(seed)
        stats = ReplyStats(prompt_tokens=len(tokens), seed=seed)
        # An aborted decode leaves its tokens queued in the perf counters until
        # the next sync; sync first so they are not billed to this reply.
        llama_cpp.llama_synchronize(llm.ctx)
        llama_cpp.llama_perf_context_reset(llm.ctx)
        if sampling.seed is not None:
            # A fixed seed promises a repeatable reply: evaluate the whole prompt from an empty
            # cache, as a fresh process does. A reused prefix changes the batch shapes llama.cpp
            # evaluates, and with them the rounding of the logits (findings F19).
            llm.reset()
        else:
            self._drop_unusable_cache(tokens)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = _StopScanner(options.stop)
        logprobs: list[TokenLogprob] | None = [] if options.logprobs is not None else None
        parts: list[str] = []

        def emit(text: str) -> None:
            if text:
                if stats.ttft_s is None:
                    stats.ttft_s = time.perf_counter() - started
                parts.append(text)
                if on_text is not None:
                    on_text(text)

        max_tokens = sampling.max_tokens
        generated = 0
        reason = "stop"
        generator = llm.generate(tokens, top_k=sampling.top_k, top_p=sampling.top_p,
                                 min_p=sampling.min_p, temp=sampling.temperature,
                                 repeat_penalty=sampling.repeat_penalty,
                                 frequency_penalty=options.frequency_penalty,
                                 presence_penalty=options.presence_penalty, grammar=grammar, reset=True)
        try:
            if self._stop.is_set():
                raise _Stopped
            for token in generator:
                if self._is_eog(token):
                    break
                generated += 1
                piece = self._piece(token, special=options.special_text)
                if logprobs is not None:
                    logprobs.append(self._logprob(token, piece, options.logprobs or 0))
                emit(stops.feed(decoder.decode(piece)))
                if stops.hit is not None:
                    break
                if self._stop.is_set():
                    reason = "cancelled"
                    break
                if max_tokens is not None and generated >= max_tokens:
                    reason = "length"
                    break
                if llm.n_tokens >= n_ctx:
                    reason = "context"
                    break
        except _Stopped:
            reason = "cancelled"
        except RuntimeError as exc:
            # llama_decode returns 2 when the abort callback fired.
            if not self._stop.is_set():
                raise GenerationError(f"llama.cpp failed while writing the reply ({exc}).",
                                      "Try again; if it repeats, reload the model.") from exc
            reason = "cancelled"
        finally:
            generator.close()
            self._abort_flag[0] = b"\x00"
        if stops.hit is None:
            emit(stops.feed(decoder.decode(b"", final=True)))
            emit(stops.flush())
        llama_cpp.llama_synchronize(llm.ctx)
        perf = llama_cpp.llama_perf_context(llm.ctx)
        stats.completion_tokens = generated
        stats.stop_reason = reason
        stats.prompt_tokens_evaluated = int(perf.n_p_eval)
        if perf.n_eval > 0 and perf.t_eval_ms > 0:
            stats.tokens_per_s = perf.n_eval / (perf.t_eval_ms / 1000)
        if perf.n_p_eval > 0 and perf.t_p_eval_ms > 0:
            stats.prompt_tokens_per_s = perf.n_p_eval / (perf.t_p_eval_ms / 1000)
        stats.total_s = time.perf_counter() - started
        return Reply(text="".join(parts), stats=stats, stop_sequence=stops.hit, logprobs=logprobs)

    def _logprob(self, token: int, piece: bytes, top: int) -> TokenLogprob:
        """The sampled token's log-probability from the logits that produced it (still in the context)."""
        import llama_cpp
        import numpy as np

        n_vocab = int(self._llm.n_vocab())
        pointer = llama_cpp.llama_get_logits_ith(self._llm.ctx, -1)
        logits = np.ctypeslib.as_array(pointer, shape=(n_vocab,)).astype(np.float64)
        peak = float(logits.max())
        log_z = peak + float(np.log(np.exp(logits - peak).sum()))
        rivals: tuple[tuple[str, bytes, float], ...] = ()
        if top:
            best = np.argpartition(-logits, top - 1)[:top]
            best = best[np.argsort(-logits[best])]
            rivals = tuple((raw.decode("utf-8", errors="replace"), raw, float(logits[t]) - log_z)
                           for t in best for raw in (self._piece(int(t)),))
        return TokenLogprob(text=piece.decode("utf-8", errors="replace"), raw=piece,
                            logprob=float(logits[token]) - log_z, top=rivals)

    def _drop_unusable_cache(self, tokens: list[int]) -> None:
        """Start from an empty KV cache when the cached prefix cannot be reused.

        llama-cpp-python reuses the longest cached prefix of the prompt. With
        swa_full off, sliding-window layers keep only the last window of
        positions, so going back further (regenerate, edit an old turn) would
        attend to cells that are gone. Then the prompt is evaluated afresh.
        """
        import llama_cpp

        llm = self._llm
        cached = int(llm.n_tokens)
        if not self._n_swa or cached == 0:
            return
        prefix = 0
        for a, b in zip(llm._input_ids[:cached], tokens, strict=False):
            if a != b:
                break
            prefix += 1
        # llama-cpp-python replays the last prompt token when the whole prompt is cached.
        reuse = prefix - 1 if prefix == len(tokens) else prefix
        pos_min = int(llama_cpp.llama_memory_seq_pos_min(llama_cpp.llama_get_memory(llm.ctx), 0))
        if not swa_cache_covers(pos_min, reuse, self._n_swa):
            llm.reset()

    def _is_eog(self, token: int) -> bool:
        import llama_cpp

        if self._vocab is not None:
            return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))
        return token == self._llm.token_eos()

    def _piece(self, token: int, *, special: bool = False) -> bytes:
        import llama_cpp

        if self._vocab is None:
            return self._llm.detokenize([token], special=special)
        buf = self._piece_buf
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        if n < 0:  # the piece is longer than the buffer: grow it once
            self._piece_buf = buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]


class _Stopped(Exception):
    """Stop arrived before generation began."""


# --------------------------------------------------------------------------
# An owner thread for callers that hop threads (the GUI)
# --------------------------------------------------------------------------
class EngineThread:
    """A thread that owns an `Engine`; every call runs there, in order.

    Methods return `concurrent.futures.Future`s. Callbacks (`progress`,
    `on_text`) run on the engine thread: a GUI forwards them with a signal.
    `stop()` acts at once, from any thread.
    """

    def __init__(self, engine: Engine | None = None, *, name: str = "camelid-engine") -> None:
        self.engine = engine or Engine()
        self._queue: queue.Queue[tuple[Callable[[Engine], Any], Future[Any]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(self.engine))
            except BaseException as exc:
                future.set_exception(exc)

    def submit(self, fn: Callable[[Engine], T]) -> Future[T]:
        """Run `fn(engine)` on the engine thread."""
        future: Future[T] = Future()
        self._queue.put((fn, future))
        return future

    def load(self, path: Path | str, params: LoadParams | None = None, *, plan: MemoryPlan | None = None,
             choices: LoadChoices | None = None, progress: Progress | None = None,
             cancel: threading.Event | None = None) -> Future[LoadReport]:
        return self.submit(lambda e: e.load(path, params, plan=plan, choices=choices, progress=progress,
                                            cancel=cancel))

    def chat(self, messages: Sequence[dict[str, Any]], sampling: SamplingSettings | None = None, *,
             on_text: OnText | None = None, options: GenerateOptions | None = None) -> Future[Reply]:
        messages = [dict(m) for m in messages]
        # Reserved now, so a stop() right after this call stops the reply even before it starts.
        ticket = self.engine.reserve_reply()
        return self.submit(lambda e: e.chat(messages, sampling, on_text=on_text, ticket=ticket,
                                            options=options))

    def unload(self) -> Future[None]:
        return self.submit(lambda e: e.unload())

    def stop(self) -> None:
        self.engine.stop()

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop any reply, unload the model and end the thread."""
        self.engine.stop()
        self.unload()
        self._queue.put(None)
        self._thread.join(timeout)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def plan_params(path: Path, choices: LoadChoices | None = None, *,
                hardware: HardwareProfile | None = None) -> tuple[LoadParams, MemoryPlan, list[str]]:
    """LoadParams for `path` on this machine: header -> MemoryPlan (with the user's choices) -> LoadParams.

    Returns (params, plan, notices); the notices are what the user should hear
    at load time (part of the model on the CPU, a setting the plan had to
    change). `hardware` plans for a given profile (default: this machine).
    """
    choices = choices or LoadChoices()
    path = Path(path)
    check_gguf(path)
    plan = plan_with_choices(read_gguf(path), hardware, choices, improvements=False)
    params = LoadParams.from_plan(plan, n_threads=choices.threads or None)
    return params, plan, load_notices(plan, choices)


def swa_cache_covers(pos_min: int, reuse: int, n_swa: int) -> bool:
    """Whether a sliding-window KV cache whose oldest position is `pos_min` still holds
    the window that decoding from position `reuse` attends to."""
    if reuse <= 0:
        return False
    return pos_min <= max(0, reuse - n_swa)


def _layer_schedule(n_gpu_layers: int) -> list[int]:
    """GPU layer counts to try: as planned, half, then the CPU only."""
    if n_gpu_layers == 0:
        return [0]
    if n_gpu_layers < 0:
        return [n_gpu_layers, 0]
    return list(dict.fromkeys([n_gpu_layers, n_gpu_layers // 2, 0]))


def _layers_text(layers: int) -> str:
    return "all layers" if layers < 0 else f"{layers} layers"


def refuse_impossible(path: Path, plan: MemoryPlan) -> None:
    """Raise WontFitError before loading when `plan` needs more than the machine's whole memory."""
    if not plan.impossible:
        return
    # The compute buffers grow with the context too, so no exact "longest that could fit" is given here.
    trained = int(plan.model.get("n_ctx_train") or 0)
    if trained and plan.n_ctx > trained:
        hint = (f"This model was trained for {trained:,} tokens: ask for that or less, or leave the context "
                "to Camelid (it picks the longest that fits).")
    else:
        hint = "Ask for a shorter context, or choose a smaller quantization or a smaller model."
    raise WontFitError(
        f"{path.name} with a {plan.n_ctx:,}-token context needs about "
        f"{human_bytes(plan.total_bytes - plan.weights_bytes)} for its context cache and working buffers "
        f"alone, more than this machine's whole memory ({human_bytes(plan.capacity_bytes)}), so it cannot "
        "load.", hint)


#: llama.cpp's log lines that say why a load failed (the rest is progress and buffer sizes).
_FAILURE_LINE = re.compile(r"error|failed|cannot|unable|invalid|not supported|unknown", re.IGNORECASE)
_LOG_PREFIX = re.compile(r"^\s*(?:[a-z_]+\d*:\s*)+", re.IGNORECASE)


def llama_reason(log_text: str, *, limit: int = 300) -> str:
    """llama.cpp's own words for a failed load, from its log: the failure lines, prefixes cut, at most `limit` chars."""
    reasons: list[str] = []
    for line in log_text.splitlines():
        if not _FAILURE_LINE.search(line):
            continue
        text = _LOG_PREFIX.sub("", line).strip().rstrip(".")
        if text and text not in reasons and not text.lower().startswith("failed to load model"):
            reasons.append(text)
    joined = "; ".join(reasons[-2:])
    return joined if len(joined) <= limit else joined[: limit - 1] + "…"


def _load_failure(path: Path, tried: list[int], reason: str = "") -> ModelLoadError:
    said = f" llama.cpp said: {reason}." if reason else ""
    if tried == [0]:
        return ModelLoadError(
            f"llama.cpp could not load {path.name}: it may need more memory than is free, or use a "
            f"model architecture this version of llama.cpp does not know.{said}",
            "Close other programs, or choose a smaller quantization or a different model.")
    return ModelLoadError(
        f"llama.cpp could not load {path.name}, neither on the GPU ({_layers_text(tried[0])}) nor "
        "on the CPU: it may need more memory than is free, or use an architecture this version "
        f"of llama.cpp does not know.{said}",
        "Close other programs, or choose a smaller quantization or a different model.")


def _progress_callback(progress: Progress | None,
                       cancel: threading.Event | None) -> Callable[[float], bool]:
    def report(fraction: float) -> bool:
        if cancel is not None and cancel.is_set():
            return False  # llama.cpp stops loading and returns no model
        if progress is not None:
            try:
                progress(min(max(float(fraction), 0.0), 1.0))
            except Exception:
                # An exception cannot cross the C callback; losing one progress
                # update is better than aborting the load.
                return True
        return True
    return report


def _load_llama(path: str, kwargs: dict[str, Any], progress: Callable[[float], bool]) -> Any:
    """Build `llama_cpp.Llama` with a load-progress callback.

    Llama() offers no progress argument; it fills `self.model_params` from
    llama_model_default_params() and passes that struct to llama.cpp. A
    subclass sets the callback on that struct as it is assigned, so nothing
    global is patched.
    """
    from app.core.machine import llama_cpp_module

    llama_cpp = llama_cpp_module()
    Llama: Any = llama_cpp.Llama  # untyped library class

    c_progress = llama_cpp.llama_progress_callback(lambda fraction, _data: progress(fraction))
    # Not a Llama() argument (its **kwargs would swallow it): set on the struct instead.
    kwargs = dict(kwargs)
    extra_bufts = bool(kwargs.pop("use_extra_bufts", True))
    overrides = expert_overrides(int(kwargs.pop("cpu_moe", 0) or 0))

    class _LlamaWithProgress(Llama):
        def __setattr__(self, name: str, value: Any) -> None:
            if name == "metadata" and isinstance(value, dict):
                # Llama() compiles every chat template in the metadata with an unbounded Jinja
                # environment (whose optimizer runs filters on constants) and lets a syntax error
                # escape. The engine compiles the template itself, under limits (chat_template.py).
                object.__setattr__(self, "_camelid_chat_templates",
                                   {k: v for k, v in value.items() if k.startswith("tokenizer.chat_template")})
                value = {k: v for k, v in value.items() if not k.startswith("tokenizer.chat_template")}
            if name == "model_params":
                value.progress_callback = c_progress
                value.use_extra_bufts = extra_bufts
                if overrides is not None:
                    value.tensor_buft_overrides = ctypes.cast(overrides, ctypes.c_void_p)
            object.__setattr__(self, name, value)

    llm = _LlamaWithProgress(model_path=path, **kwargs)
    llm._camelid_progress = c_progress  # keep the C callback alive as long as the model
    llm._camelid_overrides = overrides  # and the override patterns llama.cpp keeps pointers to
    return llm


def expert_overrides(n_blocks: int) -> Any:
    """llama.cpp's --n-cpu-moe as a NULL-terminated llama_model_tensor_buft_override array: the expert
    matrices of blocks 0..n_blocks-1 in the CPU buffer type (llama.cpp then still repacks them for the
    CPU's kernels). llama-cpp-python 0.3.36 declares the field but never fills it, so it is built here;
    None when there is nothing to override."""
    if n_blocks <= 0:
        return None
    from app.core.machine import llama_cpp_module
    from app.core.machine.backends import cpu_buffer_type

    buft = cpu_buffer_type(llama_cpp_module())
    layers = "|".join(str(i) for i in range(n_blocks))
    # llama.cpp matches with std::regex_search on the tensor name (llm_ffn_exps_block_regex's shape).
    pattern = f"^blk\\.({layers})\\.ffn_(up|down|gate|gate_up)_(ch|)exps".encode()
    array = (_BuftOverride * 2)()
    array[0].pattern = pattern
    array[0].buft = buft
    array[1].pattern = None
    array[1].buft = None
    return array


class _BuftOverride(ctypes.Structure):
    """struct llama_model_tensor_buft_override { const char * pattern; ggml_backend_buffer_type_t buft; }
    (llama.h; llama-cpp-python 0.3.36 only mentions it in a comment)."""

    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


def _libc_strlen() -> Any:
    try:
        if sys.platform == "win32":
            return ctypes.cdll.msvcrt.strlen
        name = ctypes.util.find_library("c")
        return ctypes.CDLL(name).strlen if name else ctypes.CDLL(None).strlen
    except (OSError, AttributeError):
        return None


class _StopScanner:
    """Finds stop strings in streamed text, holding back only what could still become one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.hit: str | None = None

    def feed(self, text: str) -> str:
        """What of the text so far may be shown now; sets `hit` (and keeps what follows back) on a stop."""
        if not self.stops:
            return text
        self.pending += text
        found = [(self.pending.find(s), s) for s in self.stops]
        found = [(i, s) for i, s in found if i >= 0]
        if found:
            index, self.hit = min(found)
            out, self.pending = self.pending[:index], ""
            return out
        keep = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(stop[:n]):
                    keep = max(keep, n)
                    break
        out = self.pending[:len(self.pending) - keep]
        self.pending = self.pending[len(self.pending) - keep:]
        return out

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


def _grammar(gbnf: str) -> Any:
    """llama.cpp's grammar object for GBNF text; UsageError with the parser's reason when it is invalid."""
    from llama_cpp.llama_grammar import LlamaGrammar

    if len(gbnf) > 1_000_000:
        raise UsageError("The grammar is over 1 MB.", "Use a smaller grammar or JSON schema.")
    try:
        return LlamaGrammar.from_string(gbnf, verbose=False)
    except (ValueError, RuntimeError) as exc:
        raise UsageError(f"The grammar could not be parsed ({exc}).", "Check its GBNF syntax.") from exc


def _too_long(tokens: int | None, n_ctx: int) -> PromptTooLongError:
    size = f"{tokens:,} tokens" if tokens is not None else "far longer than the context"
    return PromptTooLongError(
        f"The prompt is {size}, but the loaded model's context holds {n_ctx:,} tokens (and the reply "
        "needs room too).", "Send a shorter prompt, or load the model with a longer context.")


def _cancelled(started: float, sampling: SamplingSettings) -> Reply:
    """The reply to a conversation stopped before any of its prompt was evaluated."""
    stats = ReplyStats(stop_reason="cancelled", seed=sampling.seed,
                       total_s=time.perf_counter() - started)
    return Reply(text="", stats=stats)


def _rejected(model: str, exc: TemplateRejected) -> ChatTemplateError:
    return ChatTemplateError(f"The chat template of {model} rejected the conversation ({exc}).",
                             "Start a new chat; if it persists, try another model.")


def _clean_messages(messages: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Messages whose text is valid UTF-8 (invalid bytes and lone surrogates replaced), and a notice if any were."""
    out: list[dict[str, Any]] = []
    replaced = 0
    for m in messages:
        content, n = clean_text(str(m.get("content") or ""))
        role, _ = clean_text(str(m.get("role") or "user"))
        replaced += n
        out.append({**m, "role": role, "content": content})
    return out, [invalid_text_notice(replaced, "The conversation")] if replaced else []


def _fold_system(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    if not messages or messages[0]["role"] != "system":
        return messages
    system, rest = messages[0]["content"], [dict(m) for m in messages[1:]]
    for m in rest:
        if m["role"] == "user":
            m["content"] = f"{system}\n\n{m['content']}" if system else m["content"]
            return rest
    return [{"role": "user", "content": system}, *rest]


def _call_model(llm: Any, function: str, *, default: Any) -> Any:
    """A llama.h function of the loaded model (`llama_model_n_swa(model)`), or `default`."""
    import llama_cpp

    model = getattr(getattr(llm, "_model", None), "model", None)
    fn = getattr(llama_cpp, function, None)
    if model is None or fn is None:
        return default
    try:
        return fn(model)
    except (ctypes.ArgumentError, TypeError, OSError):
        return default


def _call(obj: Any, name: str, *, default: Any) -> Any:
    fn = getattr(obj, name, None)
    if fn is None:
        fn = getattr(getattr(obj, "_model", None), name, None)
    try:
        return fn() if fn is not None else default
    except Exception:
        return default
