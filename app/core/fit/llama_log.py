"""llama.cpp's own log: capture it, and read the buffer sizes it reports.

llama.cpp prints every allocation it makes while loading (model weights per
buffer type, the KV cache, the compute buffers per device). Those lines are
the ground truth a memory plan is checked against: the tests compare plans
with them, and the chat engine compares them with the plan at load time.

Usage::

    with LlamaLogCapture() as log:
        llm = llama_cpp.Llama(path, n_ctx=4096)
    sizes = parse_buffer_sizes(log.text)
    sizes.total("kv")        # MiB, summed over devices
"""

from __future__ import annotations

import contextlib
import ctypes
import re
import threading
from dataclasses import dataclass, field
from typing import Any

_MIB = 1024 * 1024

_lock = threading.Lock()
#: Active captures, innermost last. llama_log_set is process-wide, so one
#: callback feeds them all; the ctypes callback object must stay referenced
#: for as long as llama.cpp may call it, or the process crashes.
_stack: list[LlamaLogCapture] = []
_callback: Any = None
#: Where every piece of llama.cpp's log goes, capture or not (the app's log file); see forward().
_forward: Any = None


def _dispatch(level: int, text: bytes, _user: Any) -> None:
    try:
        decoded = text.decode("utf-8", errors="replace") if text else ""
    except Exception:  # an exception must never cross into C
        return
    with _lock:
        for capture in _stack:
            capture._feed(level, decoded)
        sink = _forward
    if sink is not None:
        with contextlib.suppress(Exception):
            sink(level, decoded)


def forward(sink: Any) -> None:
    """Send every piece of llama.cpp's log to `sink(level, text)` from now on, instead of the terminal.

    llama-cpp-python prints llama.cpp's errors to stderr; with a sink, Camelid's
    callback stays installed between captures so those lines reach the sink only.
    Installed now when llama_cpp is already imported, else at the first capture.
    """
    global _forward
    import sys

    with _lock:
        _forward = sink
    if sink is not None and "llama_cpp" in sys.modules:
        with contextlib.suppress(Exception):
            _install()


def _install() -> None:
    global _callback
    import llama_cpp

    if _callback is None:
        _callback = llama_cpp.llama_log_callback(_dispatch)
    llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))


def _restore() -> None:
    """Hand the log back to llama-cpp-python's own logger (what it installs at import)."""
    import llama_cpp

    if _forward is not None:
        return  # keep ours: the sink wants the lines between loads too (a decode error after Stop)
    try:
        from llama_cpp import _logger

        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
    except (ImportError, AttributeError):
        # Keep our callback installed (it ignores text when no capture is active)
        # rather than hand llama.cpp a callback that may be freed.
        pass


class LlamaLogCapture:
    """Collect llama.cpp's log lines while the `with` block runs (thread-safe, nestable).

    `echo` also forwards each piece of text to a callable (e.g. a logger).
    """

    def __init__(self, *, echo: Any = None) -> None:
        self._pieces: list[str] = []
        self._echo = echo

    def __enter__(self) -> LlamaLogCapture:
        with _lock:
            _stack.append(self)
            first = len(_stack) == 1
        if first:
            _install()
        return self

    def __exit__(self, *exc: object) -> None:
        with _lock:
            if self in _stack:
                _stack.remove(self)
            last = not _stack
        if last:
            _restore()

    def _feed(self, level: int, text: str) -> None:
        self._pieces.append(text)
        if self._echo is not None:
            with contextlib.suppress(Exception):
                self._echo(text)

    @property
    def text(self) -> str:
        """Everything captured so far (pieces joined: llama.cpp sends some lines in parts)."""
        return "".join(self._pieces)

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    def buffer_sizes(self) -> BufferSizes:
        """The buffer sizes llama.cpp reported so far."""
        return parse_buffer_sizes(self.text)


@dataclass
class BufferSizes:
    """MiB per device for each component llama.cpp allocated, as its log reports them.

    Device names are llama.cpp's buffer names: ``CPU_Mapped``, ``CPU_REPACK``,
    ``CUDA0``, ``CUDA_Host``, ``Metal_Mapped``, ``Vulkan0``...

    `model` holds every "model buffer size" line, CPU_REPACK included (as
    llama.cpp lists them); `repack` is the CPU_REPACK part and `weights` the
    rest, so weights + repack = model. `rs` is the recurrent state (Mamba,
    RWKV and hybrid layers: "llama_memory_recurrent: CPU RS buffer size").
    """

    model: dict[str, float] = field(default_factory=dict)
    kv: dict[str, float] = field(default_factory=dict)
    #: CPU_REPACK: matrices repacked for the CPU's kernels (a subset of `model`).
    repack: dict[str, float] = field(default_factory=dict)
    #: The recurrent layers' state (llama-memory-recurrent.cpp "RS buffer size").
    rs: dict[str, float] = field(default_factory=dict)
    compute: dict[str, float] = field(default_factory=dict)
    output: dict[str, float] = field(default_factory=dict)
    n_ctx: int | None = None
    n_batch: int | None = None
    n_ubatch: int | None = None
    flash_attn: bool | None = None
    #: "offloaded N/M layers to GPU" (None when the log has no such line, e.g. a CPU build).
    layers_offloaded: int | None = None
    layers_total: int | None = None

    @property
    def weights(self) -> dict[str, float]:
        """The model buffers that hold weights as in the file (CPU_Mapped, CPU, CUDA0...): model less repack."""
        return {k: v for k, v in self.model.items() if k not in self.repack}

    def total(self, component: str) -> float:
        """MiB of one component (model, weights, repack, kv, rs, compute, output) summed over devices."""
        return sum(getattr(self, component).values())

    def bytes(self, component: str) -> int:
        return round(self.total(component) * _MIB)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "kv": self.kv, "compute": self.compute, "output": self.output,
                "repack": self.repack, "rs": self.rs,
                "n_ctx": self.n_ctx, "n_batch": self.n_batch, "n_ubatch": self.n_ubatch,
                "flash_attn": self.flash_attn, "layers_offloaded": self.layers_offloaded,
                "layers_total": self.layers_total}


_MODEL_RE = re.compile(r"^\S*load_tensors:\s+(\S+) model buffer size =\s+([\d.]+) MiB", re.M)
_RS_RE = re.compile(r"^\S*llama_memory_recurrent\w*:\s+(\S+) RS buffer size =\s+([\d.]+) MiB", re.M)
#: The CPU's extra buffer types that hold repacked weights (repack.cpp CPU_REPACK).
REPACK_BUFFERS = ("CPU_REPACK",)
_KV_RE = re.compile(r"^\S*llama_kv_cache\w*:\s+(\S+) KV buffer size =\s+([\d.]+) MiB", re.M)
_COMPUTE_RE = re.compile(r"^\S*(?:sched_reserve|llama_context|llama_new_context_with_model):\s+(\S+) compute "
                         r"buffer size =\s+([\d.]+) MiB", re.M)
_OUTPUT_RE = re.compile(r"^\S*llama_context:\s+(\S+)\s+output buffer size =\s+([\d.]+) MiB", re.M)
_OFFLOAD_RE = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")
_PARAM_RE = re.compile(r"^llama_context: (n_ctx|n_batch|n_ubatch|flash_attn)\s+= (\S+)", re.M)


def _sum_by_device(regex: re.Pattern[str], text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for device, mib in regex.findall(text):
        # A model loaded twice in one capture, or SWA + full KV caches, report
        # one line each; the sum is what the process holds.
        out[device] = round(out.get(device, 0.0) + float(mib), 4)
    return out


def parse_buffer_sizes(text: str) -> BufferSizes:
    """Read the model, repack, KV, RS, compute and output buffer sizes (MiB per device) from llama.cpp's log."""
    model = _sum_by_device(_MODEL_RE, text)
    sizes = BufferSizes(
        model=model,
        repack={k: v for k, v in model.items() if k in REPACK_BUFFERS},
        rs=_sum_by_device(_RS_RE, text),
        kv=_sum_by_device(_KV_RE, text),
        compute=_sum_by_device(_COMPUTE_RE, text),
        output=_sum_by_device(_OUTPUT_RE, text),
    )
    offload = _OFFLOAD_RE.findall(text)
    if offload:
        sizes.layers_offloaded, sizes.layers_total = (int(x) for x in offload[-1])
    for key, value in _PARAM_RE.findall(text):
        if key == "flash_attn":
            sizes.flash_attn = value.lower() in ("1", "true", "enabled", "on")
        elif value.isdigit():
            setattr(sizes, key, int(value))
    return sizes
