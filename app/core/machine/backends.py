"""llama.cpp's compute backends: load them once per process, and say which CPU variant runs.

Camelid builds llama.cpp the way llama.cpp's own releases do: `GGML_BACKEND_DL=ON`
and `GGML_CPU_ALL_VARIANTS=ON` put every backend (CPU variants, RPC, CUDA...) in
its own shared library, and the best CPU variant for this machine is chosen when
the process starts. A wheel or bundle built on an AVX-512 machine then runs on an
AVX2 laptop, and a 2013 CPU still gets a working (slower) variant.

llama-cpp-python 0.3.36 never loads those libraries itself: `llama_backend_init`
looks only next to the Python executable and in the working directory. So every
use of llama.cpp in Camelid goes through `llama_cpp_module()`, which loads the
backends from llama-cpp-python's own `lib/` folder first. A build without dynamic
backends (backends linked in) is detected and left alone.

The registry lives in the copy of libggml that libllama links (`libggml.so.0` on
Linux): a wheel cannot hold symlinks, so `libggml.so` beside it is a separate copy
with its own, empty registry (that copy is what `llama_cpp._ggml` opens).

`CAMELID_CPU_VARIANT=haswell` (any variant name) forces one CPU variant: to run
as an AVX2-only machine would, or to step around a variant that misbehaves.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

CPU_VARIANT_ENV = "CAMELID_CPU_VARIANT"

#: What each x86-64 CPU variant requires, as ggml's CMake declares it
#: (ggml/src/CMakeLists.txt, `ggml_add_cpu_backend_variant`). Feature names are
#: ggml's; the ones /proc/cpuinfo spells differently are mapped in CPUINFO_FLAGS.
X86_VARIANTS: dict[str, tuple[str, ...]] = {
    "x64": (),
    "sse42": ("SSE42",),
    "sandybridge": ("SSE42", "AVX"),
    "ivybridge": ("SSE42", "AVX", "F16C"),
    "piledriver": ("SSE42", "AVX", "F16C", "FMA"),
    "haswell": ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2"),
    "skylakex": ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512"),
    "cannonlake": ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512", "AVX512_VBMI"),
    "cascadelake": ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512", "AVX512_VNNI"),
    "icelake": ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512", "AVX512_VBMI", "AVX512_VNNI"),
    "cooperlake": ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512", "AVX512_VNNI", "AVX512_BF16"),
    "zen4": ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512", "AVX512_VBMI", "AVX512_VNNI",
             "AVX512_BF16"),
    "alderlake": ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX_VNNI"),
    "sapphirerapids": ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512", "AVX512_VBMI",
                       "AVX512_VNNI", "AVX512_BF16", "AMX_TILE", "AMX_INT8"),
}

#: ggml feature name -> the /proc/cpuinfo flags that provide it (all of them).
CPUINFO_FLAGS: dict[str, tuple[str, ...]] = {
    "SSE42": ("sse4_2",), "AVX": ("avx",), "F16C": ("f16c",), "FMA": ("fma",), "AVX2": ("avx2",),
    "BMI2": ("bmi2",), "AVX512": ("avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"),
    "AVX512_VBMI": ("avx512vbmi",), "AVX512_VNNI": ("avx512_vnni",), "AVX512_BF16": ("avx512_bf16",),
    "AVX_VNNI": ("avx_vnni",), "AMX_TILE": ("amx_tile",), "AMX_INT8": ("amx_int8",),
}

# ggml_backend_dev_type
_DEVICE_TYPES = {0: "CPU", 1: "GPU", 2: "IGPU", 3: "ACCEL"}


@dataclass
class BackendState:
    """What llama.cpp has loaded in this process."""

    dynamic: bool  # backends are separate libraries chosen at start (a portable build)
    registries: list[str] = field(default_factory=list)  # "CPU", "RPC", "CUDA"...
    cpu_variant: str | None = None  # the CPU library in use ("zen4", "haswell"); None when linked in
    cpu_variants: list[str] = field(default_factory=list)  # every CPU variant the build ships
    forced: bool = False  # CAMELID_CPU_VARIANT chose the variant
    devices: list[tuple[str, str]] = field(default_factory=list)  # (name, type) per ggml device
    error: str | None = None  # why loading failed, as a sentence

    @property
    def gpu_devices(self) -> list[str]:
        return [name for name, kind in self.devices if kind in ("GPU", "IGPU")]

    def describe_cpu(self) -> str | None:
        """'zen4 (AVX512, AVX512_VBMI...)', 'built in', or None when nothing is loaded."""
        if self.cpu_variant is None:
            return "built in (this build has no CPU variants)" if "CPU" in self.registries else None
        needs = X86_VARIANTS.get(self.cpu_variant)
        shown = ", ".join(needs[-3:]) if needs else ""
        text = f"{self.cpu_variant} ({shown})" if shown else self.cpu_variant
        return text + (f", forced by {CPU_VARIANT_ENV}" if self.forced else "")


_lock = threading.Lock()
_state: BackendState | None = None


def llama_cpp_module() -> ModuleType:
    """`import llama_cpp`, with llama.cpp's backends loaded. Raises ImportError when it cannot be."""
    import llama_cpp

    state = ensure_loaded(llama_cpp)
    if state.error:
        raise ImportError(state.error)
    return llama_cpp


def lib_dir(llama_cpp: ModuleType) -> Path:
    if llama_cpp.__file__ is None:
        raise ImportError("llama_cpp is not a regular package: reinstall it with `make run`.")
    return Path(llama_cpp.__file__).parent / "lib"


def cpu_variant_files(folder: Path) -> dict[str, Path]:
    """Every `libggml-cpu-<variant>` library in a folder, by variant name."""
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for path in folder.iterdir():
        stem = path.name.split(".")[0]  # libggml-cpu-haswell.so / ggml-cpu-haswell.dll
        stem = stem.removeprefix("lib")
        if stem.startswith("ggml-cpu-") and path.suffix in (".so", ".dll", ".dylib"):
            found[stem.removeprefix("ggml-cpu-")] = path
    return found


def state() -> BackendState | None:
    """What was loaded, or None before the first `llama_cpp_module()`."""
    return _state


def ensure_loaded(llama_cpp: ModuleType) -> BackendState:
    """Load llama.cpp's backends once per process (idempotent, thread-safe)."""
    global _state
    with _lock:
        if _state is None:
            _state = _load(llama_cpp)
        return _state


def _ggml(llama_cpp: ModuleType) -> Any:
    """The libggml that libllama itself links (see the module docstring)."""
    folder = lib_dir(llama_cpp)
    names = {"linux": ("libggml.so.0", "libggml.so"), "darwin": ("libggml.0.dylib", "libggml.dylib")}
    for name in names.get(sys.platform, ("ggml.dll", "libggml.dll")):
        if (folder / name).exists():
            lib = ctypes.CDLL(str(folder / name))
            break
    else:
        from llama_cpp import _ggml  # a layout this module does not know: the library's own handle

        lib = _ggml.libggml
    lib.ggml_backend_reg_count.restype = ctypes.c_size_t
    lib.ggml_backend_reg_get.restype = ctypes.c_void_p
    lib.ggml_backend_reg_get.argtypes = [ctypes.c_size_t]
    lib.ggml_backend_reg_name.restype = ctypes.c_char_p
    lib.ggml_backend_reg_name.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    lib.ggml_backend_dev_name.restype = ctypes.c_char_p
    lib.ggml_backend_dev_name.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_type.restype = ctypes.c_int
    lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    return lib


def cpu_buffer_type(llama_cpp: ModuleType) -> int:
    """The CPU backend's buffer type (ggml_backend_buffer_type_t) as libllama sees it: through the
    registry of the libggml it links, so the pointer equals its own ggml_backend_cpu_buffer_type()."""
    ensure_loaded(llama_cpp)
    lib = _ggml(llama_cpp)
    lib.ggml_backend_dev_by_type.restype = ctypes.c_void_p
    lib.ggml_backend_dev_by_type.argtypes = [ctypes.c_int]
    lib.ggml_backend_dev_buffer_type.restype = ctypes.c_void_p
    lib.ggml_backend_dev_buffer_type.argtypes = [ctypes.c_void_p]
    dev = lib.ggml_backend_dev_by_type(0)  # GGML_BACKEND_DEVICE_TYPE_CPU
    if not dev:
        raise RuntimeError("llama.cpp has no CPU backend loaded")
    return int(lib.ggml_backend_dev_buffer_type(dev))


def _load(llama_cpp: ModuleType) -> BackendState:
    from app.core.fit.llama_log import LlamaLogCapture  # its lines are noise on a terminal

    folder = lib_dir(llama_cpp)
    variants = cpu_variant_files(folder)
    try:
        lib = _ggml(llama_cpp)
    except (OSError, AttributeError) as exc:
        return BackendState(dynamic=bool(variants), error=f"llama.cpp's library could not be opened: {exc}")
    forced = os.environ.get(CPU_VARIANT_ENV, "").strip().lower() or None
    dynamic = lib.ggml_backend_reg_count() == 0
    avoided = False
    if dynamic:
        if forced and forced not in variants:
            known = ", ".join(sorted(variants)) or "none"
            return BackendState(dynamic=True, cpu_variants=sorted(variants),
                                error=f"{CPU_VARIANT_ENV}={forced} names no CPU variant of this build "
                                      f"(it has: {known}); unset it to let llama.cpp choose.")
        amx = {k for k in variants if any(f.startswith("AMX") for f in X86_VARIANTS.get(k, ()))}
        if not forced and amx and not amx_usable():
            # ggml picks its AMX variant from CPUID alone; where the kernel does not enable AMX tile data
            # (many VMs), that variant dies with an illegal instruction at the first matrix product.
            forced = _chosen_variant({k: v for k, v in variants.items() if k not in amx})
            avoided = True
        with LlamaLogCapture():
            if forced:
                _load_forced(lib, folder, variants[forced])
            else:
                lib.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
                lib.ggml_backend_load_all_from_path(os.fsencode(folder))
    registries = [_text(lib.ggml_backend_reg_name(lib.ggml_backend_reg_get(i)))
                  for i in range(lib.ggml_backend_reg_count())]
    devices = []
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        devices.append((_text(lib.ggml_backend_dev_name(dev)),
                        _DEVICE_TYPES.get(lib.ggml_backend_dev_type(dev), "other")))
    result = BackendState(dynamic=dynamic, registries=registries, cpu_variants=sorted(variants),
                          devices=devices, forced=bool(forced and dynamic and not avoided))
    if dynamic:
        result.cpu_variant = forced or _chosen_variant(variants)
        if "CPU" not in registries:
            result.error = ("llama.cpp found no CPU backend it can run on this processor in "
                            f"{folder}: reinstall Camelid (`make run` rebuilds llama-cpp-python).")
    return result


def _load_forced(lib: Any, folder: Path, cpu: Path) -> None:
    """Every non-CPU backend library in the folder, and the one CPU variant asked for."""
    lib.ggml_backend_load.restype = ctypes.c_void_p
    lib.ggml_backend_load.argtypes = [ctypes.c_char_p]
    for path in sorted(folder.iterdir()):
        stem = path.name.split(".")[0].removeprefix("lib")
        if stem.startswith("ggml-") and not stem.startswith(("ggml-cpu", "ggml-base")) and \
                path.suffix in (".so", ".dll", ".dylib") and path.name.count(".") == 1:
            lib.ggml_backend_load(os.fsencode(path))
    lib.ggml_backend_load(os.fsencode(cpu))


def amx_usable() -> bool:
    """Whether the kernel lets this process use AMX tile data (Linux x86-64; False elsewhere or unknown).

    CPUID can report AMX while the kernel (or a hypervisor) leaves XTILEDATA out of the state it
    supports; ARCH_GET_XCOMP_SUPP says which. Python's os module has no arch_prctl, hence ctypes.
    """
    if not sys.platform.startswith("linux") or os.uname().machine != "x86_64":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        supported = ctypes.c_ulong(0)
        if libc.syscall(158, 0x1022, ctypes.byref(supported)) != 0:  # arch_prctl(ARCH_GET_XCOMP_SUPP)
            return False
    except (OSError, AttributeError):
        return False
    return bool(supported.value & (1 << 18))  # XFEATURE_XTILEDATA


def _chosen_variant(variants: dict[str, Path]) -> str | None:
    """The CPU variant ggml loaded: on Linux the one mapped into this process, else by ggml's own score."""
    maps = Path("/proc/self/maps")
    if maps.exists():
        with open(maps, encoding="utf-8", errors="replace") as f:
            mapped = {line.rsplit(None, 1)[-1] for line in f if "ggml-cpu-" in line}
        for name, path in variants.items():
            if str(path) in mapped:
                return name
    best, best_score = None, 0
    for name, path in variants.items():
        try:
            score_fn = ctypes.CDLL(str(path)).ggml_backend_score  # ggml's own rule: highest score wins
        except (OSError, AttributeError):
            continue
        score_fn.restype = ctypes.c_int
        score = score_fn()
        if score > best_score:
            best, best_score = name, score
    return best


def _text(value: bytes | None) -> str:
    return value.decode("utf-8", errors="replace") if value else ""
