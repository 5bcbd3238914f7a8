"""Hardware probes. Each reads one source and knows nothing of the others.

The boundaries tests fake are deliberate and narrow: the `pynvml` module,
`_sysctl` (macOS), `_load_library` (ctypes, for Metal), the sysfs root
`DRM_ROOT`, and the `winreg` module.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psutil

from app.core.machine.hardware import (
    AppleInfo,
    BackendInfo,
    CpuInfo,
    GiB,
    GpuInfo,
    HardwareProfile,
    RamInfo,
    metal_budget_rule,
)

T = TypeVar("T")

DRM_ROOT = Path("/sys/class/drm")
PCI_VENDORS = {"0x10de": "nvidia", "0x1002": "amd", "0x8086": "intel"}
# Flags worth showing: the ones llama.cpp's CPU kernels are built around.
X86_FEATURES = (
    "sse3", "ssse3", "sse4_1", "sse4_2", "avx", "f16c", "fma", "avx2",
    "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
    "amx_tile", "amx_int8", "amx_bf16",
)
ARM_LINUX_FEATURES = {"asimd": "NEON", "asimddp": "DOTPROD", "i8mm": "I8MM", "sve": "SVE",
                      "sve2": "SVE2", "bf16": "BF16", "fphp": "FP16"}
APPLE_ARM_FEATURES = {"hw.optional.arm.FEAT_DotProd": "DOTPROD", "hw.optional.arm.FEAT_I8MM": "I8MM",
                      "hw.optional.arm.FEAT_BF16": "BF16", "hw.optional.arm.FEAT_FP16": "FP16"}


def isolated(probe: Callable[..., T], default: T, notes: list[str], what: str, *args: Any) -> T:
    """Run one probe; any failure becomes a note and the default value."""
    try:
        return probe(*args)
    except Exception as exc:  # a probe must never take the others down
        notes.append(f"{what} could not be read ({type(exc).__name__}: {exc}).")
        return default


# --- CPU and RAM ---------------------------------------------------------------

def probe_cpu() -> CpuInfo:

    system = platform.system()
    name = platform.processor() or platform.machine()
    features: list[str] = []
    if system == "Linux":
        text = Path("/proc/cpuinfo").read_text(errors="replace")
        name = _cpuinfo_field(text, ("model name", "Hardware", "cpu model")) or name
        flags = set((_cpuinfo_field(text, ("flags", "Features")) or "").split())
        features = linux_cpu_features(flags)
    elif system == "Darwin":
        name = _sysctl("machdep.cpu.brand_string") or name
        if platform.machine() == "arm64" or _sysctl("hw.optional.arm64") == "1":
            features = ["NEON"] + [
                label for key, label in APPLE_ARM_FEATURES.items() if _sysctl(key) == "1"
            ]
        else:
            words = " ".join(filter(None, (_sysctl("machdep.cpu.features"),
                                           _sysctl("machdep.cpu.leaf7_features"))))
            features = linux_cpu_features(set(words.lower().replace(".", "_").split()))
    elif system == "Windows":
        name = _windows_cpu_name() or name
        features = _windows_cpu_features()
    physical = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    logical = psutil.cpu_count(logical=True) or physical
    return CpuInfo(name=" ".join(name.split()), cores_physical=physical,
                   cores_logical=logical, features=features)


def linux_cpu_features(flags: set[str]) -> list[str]:
    """Map /proc/cpuinfo flags (x86 or ARM) to the feature names llama.cpp uses."""
    found = [f.upper() for f in X86_FEATURES if f in flags]
    if "pni" in flags and "SSE3" not in found:
        found.insert(0, "SSE3")
    found += [label for flag, label in ARM_LINUX_FEATURES.items() if flag in flags]
    return found


def _cpuinfo_field(text: str, keys: tuple[str, ...]) -> str | None:
    for key in keys:
        match = re.search(rf"^{re.escape(key)}\s*:\s*(.+)$", text, re.MULTILINE)
        if match:
            return match.group(1).strip()
    return None


def probe_ram() -> RamInfo:

    vm = psutil.virtual_memory()
    return RamInfo(total_bytes=int(vm.total), available_bytes=int(vm.available))


def probe_disk(models_dir: Path | None) -> tuple[str, int]:
    """Free bytes on the disk that holds the models folder (or its nearest parent)."""
    if models_dir is None:
        from app import paths

        models_dir = paths.models_dir()
    path = Path(models_dir)
    while not path.exists() and path != path.parent:
        path = path.parent
    return str(models_dir), int(shutil.disk_usage(path).free)


# --- NVIDIA through NVML -------------------------------------------------------

def probe_nvidia(notes: list[str]) -> list[GpuInfo]:
    """NVIDIA GPUs through NVML; a missing library or driver is a note, not an error."""

    try:
        import pynvml
    except ImportError:
        notes.append("NVIDIA: the NVML library (nvidia-ml-py) is not installed; NVIDIA GPUs cannot be measured.")
        return []
    try:
        pynvml.nvmlInit()
    except Exception as exc:
        if not _nvml_missing(exc, pynvml):
            notes.append(f"NVIDIA: the driver did not answer ({_nvml_text(exc)}); "
                         "if you have an NVIDIA GPU, install or update its driver.")
        return []
    gpus: list[GpuInfo] = []
    try:
        driver = _text(_safe(pynvml.nvmlSystemGetDriverVersion))
        cuda = _safe(getattr(pynvml, "nvmlSystemGetCudaDriverVersion_v2", None)) or _safe(
            getattr(pynvml, "nvmlSystemGetCudaDriverVersion", None))
        cuda_text = f"{cuda // 1000}.{(cuda % 1000) // 10}" if isinstance(cuda, int) and cuda else None
        for i in range(pynvml.nvmlDeviceGetCount()):
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                name = _text(pynvml.nvmlDeviceGetName(handle)) or f"NVIDIA GPU {i}"
                total, free = _nvml_memory(pynvml, handle)
                cc = _safe(pynvml.nvmlDeviceGetCudaComputeCapability, handle)
                gpus.append(GpuInfo(
                    vendor="nvidia", name=name, vram_total_bytes=total, vram_free_bytes=free,
                    driver=driver, cuda_driver_version=cuda_text,
                    compute_capability=f"{cc[0]}.{cc[1]}" if cc else None,
                    index=i, source="nvml"))
            except Exception as exc:
                notes.append(f"NVIDIA GPU {i} could not be read ({_nvml_text(exc)}).")
    except Exception as exc:
        notes.append(f"NVIDIA: NVML failed while listing GPUs ({_nvml_text(exc)}).")
    finally:
        _safe(pynvml.nvmlShutdown)
    return gpus


def _nvml_memory(pynvml: Any, handle: Any) -> tuple[int, int]:
    """Memory info v2 where the driver has it: its `free` excludes driver-reserved memory."""
    v2 = getattr(pynvml, "nvmlMemory_v2", None)
    if v2 is not None:
        try:
            info = pynvml.nvmlDeviceGetMemoryInfo(handle, version=v2)
            return int(info.total), int(info.free)
        except Exception:
            pass  # older drivers: fall back to v1 below
    info = pynvml.nvmlDeviceGetMemoryInfo(handle)
    return int(info.total), int(info.free)


def _nvml_missing(exc: Exception, pynvml: Any) -> bool:
    """True when NVML is simply absent (no NVIDIA driver installed): not worth a note."""
    codes = {getattr(pynvml, n, None) for n in ("NVML_ERROR_LIBRARY_NOT_FOUND",
                                                 "NVML_ERROR_DRIVER_NOT_LOADED")}
    codes.discard(None)
    value = getattr(exc, "value", None)
    if value == getattr(pynvml, "NVML_ERROR_DRIVER_NOT_LOADED", object()):
        return False  # a driver is installed but not running: that deserves a note
    return value in codes


def _nvml_text(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _safe(fn: Callable[..., T] | None, *args: Any) -> T | None:
    if fn is None:
        return None
    try:
        return fn(*args)
    except Exception:
        return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


# --- AMD / Intel (and NVIDIA without a driver) ---------------------------------

def probe_other_gpus(known: list[GpuInfo], notes: list[str]) -> list[GpuInfo]:
    system = platform.system()
    if system == "Linux":
        found = probe_drm(DRM_ROOT)
    elif system == "Windows":
        import winreg

        found = probe_windows_registry(winreg)
    else:
        return []
    have_nvml = any(g.source == "nvml" for g in known)
    result = []
    for gpu in found:
        if gpu.vendor == "nvidia":
            if have_nvml:
                continue  # NVML already reported it, with better numbers
            notes.append(f"An NVIDIA GPU ({gpu.name}) is present but its driver did not answer "
                         "through NVML: install the NVIDIA driver to use it.")
        result.append(gpu)
    return result


def probe_drm(root: Path) -> list[GpuInfo]:
    """GPUs from Linux sysfs: vendor id, and VRAM for amdgpu (mem_info_vram_*)."""

    if not root.is_dir():
        return []
    gpus: list[GpuInfo] = []
    seen: set[str] = set()
    for card in sorted(root.iterdir()):
        if not re.fullmatch(r"card\d+", card.name):
            continue
        device = card / "device"
        vendor_id = _read(device / "vendor")
        vendor = PCI_VENDORS.get((vendor_id or "").lower())
        if vendor is None:
            continue
        real = str(device.resolve())
        if real in seen:
            continue
        seen.add(real)
        device_id = _read(device / "device") or "?"
        name = _read(device / "product_name") or f"{vendor.upper() if vendor == 'amd' else vendor.title()} GPU (PCI {device_id})"
        total = _read_int(device / "mem_info_vram_total")
        used = _read_int(device / "mem_info_vram_used")
        driver = None
        uevent = _read(device / "uevent") or ""
        match = re.search(r"^DRIVER=(.+)$", uevent, re.MULTILINE)
        if match:
            driver = match.group(1)
        gpus.append(GpuInfo(
            vendor=vendor, name=name, vram_total_bytes=total,
            vram_free_bytes=(total - used) if total is not None and used is not None else None,
            driver=driver, source="sysfs"))
    return gpus


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    try:
        return int(text, 0) if text else None
    except ValueError:
        return None


WINDOWS_DISPLAY_CLASS = r"SYSTEM\CurrentControlSet\Control\Class\{4d36e968-e325-11ce-bfc1-08002be10318}"


def probe_windows_registry(winreg: Any) -> list[GpuInfo]:
    """Display adapters from the Windows registry, with their dedicated memory.

    `HardwareInformation.qwMemorySize` (64-bit) is right above 4 GB; the older
    `HardwareInformation.MemorySize` is 32-bit and wraps, so it is the fallback.
    """

    gpus: list[GpuInfo] = []
    with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, WINDOWS_DISPLAY_CLASS) as cls:
        i = 0
        while True:
            try:
                sub = winreg.EnumKey(cls, i)
            except OSError:
                break
            i += 1
            if not sub.isdigit():
                continue
            try:
                with winreg.OpenKey(cls, sub) as key:
                    values = {}
                    for name in ("DriverDesc", "ProviderName", "MatchingDeviceId", "DriverVersion",
                                 "HardwareInformation.qwMemorySize", "HardwareInformation.MemorySize"):
                        with contextlib.suppress(OSError):  # absent values are normal
                            values[name] = winreg.QueryValueEx(key, name)[0]
            except OSError:
                continue
            desc = str(values.get("DriverDesc") or "Display adapter")
            match = re.search(r"ven_([0-9a-f]{4})", str(values.get("MatchingDeviceId", "")).lower())
            vendor = PCI_VENDORS.get(f"0x{match.group(1)}") if match else None
            if vendor is None:
                lowered = desc.lower()
                vendor = next((v for k, v in (("nvidia", "nvidia"), ("radeon", "amd"), ("amd", "amd"),
                                              ("intel", "intel")) if k in lowered), None)
            if vendor is None:
                continue  # virtual displays, remote desktop adapters
            memory = values.get("HardwareInformation.qwMemorySize")
            if memory is None:
                raw = values.get("HardwareInformation.MemorySize")
                memory = int.from_bytes(raw[:4], "little") if isinstance(raw, bytes) else raw
            gpus.append(GpuInfo(vendor=vendor, name=desc, vram_total_bytes=int(memory) if memory else None,
                                driver=_text(values.get("DriverVersion")), source="registry"))
    return gpus


# --- Apple Silicon ---------------------------------------------------------------

def _sysctl(name: str) -> str | None:
    """One sysctl value as text, or None if it does not exist here."""
    try:
        out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=2)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def _load_library(path: str) -> Any:
    return ctypes.cdll.LoadLibrary(path)


def metal_recommended_working_set() -> int | None:
    """MTLDevice.recommendedMaxWorkingSetSize through the Objective-C runtime.

    PyObjC would do this in one line, but it is a heavy dependency for one
    number, so the two C entry points are called through ctypes instead.
    """
    objc = _load_library("/usr/lib/libobjc.A.dylib")
    # MTLCreateSystemDefaultDevice returns nil in a process without CoreGraphics.
    _load_library("/System/Library/Frameworks/CoreGraphics.framework/CoreGraphics")
    metal = _load_library("/System/Library/Frameworks/Metal.framework/Metal")
    metal.MTLCreateSystemDefaultDevice.restype = ctypes.c_void_p
    metal.MTLCreateSystemDefaultDevice.argtypes = []
    device = metal.MTLCreateSystemDefaultDevice()
    if not device:
        return None
    objc.sel_registerName.restype = ctypes.c_void_p
    objc.sel_registerName.argtypes = [ctypes.c_char_p]
    selector = objc.sel_registerName(b"recommendedMaxWorkingSetSize")
    send = objc.objc_msgSend
    send.restype = ctypes.c_uint64
    send.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    value = int(send(device, selector))
    return value or None


def probe_apple(ram: RamInfo, notes: list[str]) -> AppleInfo | None:
    """Chip, Metal budget and Rosetta on a Mac; None on an Intel Mac."""

    arm64_hw = _sysctl("hw.optional.arm64") == "1"
    if not arm64_hw:
        return None  # Intel Mac: no unified GPU budget worth planning for
    rosetta = _sysctl("sysctl.proc_translated") == "1"
    if rosetta:
        notes.append("This Python runs under Rosetta (x86_64 on Apple Silicon): llama.cpp will be "
                     "about 10x slower and cannot use Metal. Install an arm64 Python and run make run again.")
    chip = _sysctl("machdep.cpu.brand_string") or "Apple Silicon"
    memsize = int(_sysctl("hw.memsize") or ram.total_bytes or 0)
    wired = _sysctl("iogpu.wired_limit_mb")
    wired_mb = int(wired) if wired and wired.isdigit() and int(wired) > 0 else None
    budget, source = None, "rule"
    if not rosetta:
        try:
            budget = metal_recommended_working_set()
            source = "recommendedMaxWorkingSetSize"
        except Exception as exc:
            notes.append(f"Metal's recommended working set could not be read ({exc}); "
                         "using macOS's default rule instead.")
    if wired_mb:
        # The sysctl is an explicit user choice; it wins over the default.
        budget, source = wired_mb * 1024 * 1024, "iogpu.wired_limit_mb"
    if not budget:
        budget, source = metal_budget_rule(memsize), "rule"
    if budget > memsize - 2 * GiB > 0:
        notes.append("The GPU may use almost all memory (iogpu.wired_limit_mb): leave room for "
                     "macOS or the system will swap.")
    return AppleInfo(chip=chip, metal_budget_bytes=int(budget), metal_budget_source=source,
                     wired_limit_mb=wired_mb, rosetta=rosetta)


def apple_performance_cores() -> int | None:
    value = _sysctl("hw.perflevel0.physicalcpu")
    return int(value) if value and value.isdigit() else None


# --- Windows CPU helpers ------------------------------------------------------------

def _windows_cpu_name() -> str | None:
    if sys.platform != "win32":  # also tells the type checker winreg exists below
        return None
    import winreg

    key_path = r"HARDWARE\DESCRIPTION\System\CentralProcessor\0"
    with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, key_path) as key:
        return str(winreg.QueryValueEx(key, "ProcessorNameString")[0])


def _windows_cpu_features() -> list[str]:
    # IsProcessorFeaturePresent constants (winnt.h).
    checks = {"SSE3": 13, "AVX": 39, "AVX2": 40, "AVX512F": 41, "NEON": 19}
    present = ctypes.windll.kernel32.IsProcessorFeaturePresent  # type: ignore[attr-defined]
    return [name for name, code in checks.items() if present(code)]


# --- llama.cpp backend ----------------------------------------------------------------

BACKEND_LIBRARIES = {"cuda": "CUDA", "metal": "Metal", "vulkan": "Vulkan", "hip": "HIP",
                     "sycl": "SYCL", "blas": "BLAS", "cpu": "CPU"}


def probe_backend() -> BackendInfo:
    """What the installed llama-cpp-python can do, from the library itself."""

    from app.core.machine import backends

    try:
        import llama_cpp
    except Exception as exc:
        return BackendInfo(compiled=[], gpu_offload=False, available=False,
                           system_info=f"llama-cpp-python is not importable: {exc}")
    try:
        llama_cpp = backends.llama_cpp_module()
    except ImportError as exc:
        return BackendInfo(compiled=[], gpu_offload=False, available=False, problem=str(exc))
    loaded = backends.state()
    lib_dir = backends.lib_dir(llama_cpp)
    libraries = sorted(p.name for p in lib_dir.iterdir()) if lib_dir.is_dir() else []
    # llama_supports_gpu_offload() also says yes for an RPC-capable build with no GPU at
    # all; what matters here is a GPU device llama.cpp can place layers on.
    gpu_offload = bool(loaded.gpu_devices) if loaded else bool(llama_cpp.llama_supports_gpu_offload())
    info = _text(llama_cpp.llama_print_system_info()) or ""
    return BackendInfo(
        compiled=compiled_backends(libraries, info),
        gpu_offload=gpu_offload,
        llama_cpp_version=getattr(llama_cpp, "__version__", None),
        system_info=info.strip(),
        libraries=libraries,
        cpu_variant=loaded.cpu_variant if loaded else None,
        cpu_variants=loaded.cpu_variants if loaded else [],
        cpu_variant_forced=loaded.forced if loaded else False,
    )


def compiled_backends(libraries: list[str], system_info: str) -> list[str]:
    """Backends named by the shared libraries (libggml-cuda.so...) and the system-info string."""
    found: list[str] = ["CPU"]
    for lib in libraries:
        match = re.match(r"(?:lib)?ggml-([a-z]+)", lib.lower())
        if match and match.group(1) in BACKEND_LIBRARIES:
            found.append(BACKEND_LIBRARIES[match.group(1)])
    for token, name in (("CUDA :", "CUDA"), ("Metal :", "Metal"), ("MTL :", "Metal"),
                        ("Vulkan :", "Vulkan"), ("ROCm :", "HIP"), ("HIP :", "HIP"),
                        ("SYCL :", "SYCL")):
        if token in system_info:
            found.append(name)
    order = ["CPU", "CUDA", "Metal", "Vulkan", "HIP", "SYCL", "BLAS"]
    return [b for b in order if b in found]


def mismatch_notes(profile: HardwareProfile) -> list[str]:
    """Sentences for GPUs the installed llama.cpp cannot use, with the fix."""
    notes: list[str] = []
    backend = profile.backend
    if not backend.available:
        notes.append(backend.problem or
                     "llama-cpp-python is not installed or failed to load: run `make run` to install it.")
        return notes
    usable = {id(g) for g in profile.usable_gpus()}
    for gpu in profile.gpus:
        if id(gpu) in usable:
            continue
        if gpu.vendor == "nvidia":
            notes.append(f"NVIDIA {gpu.name.removeprefix('NVIDIA ')} found, but this llama-cpp-python was "
                         "built for CPU only: run `make gpu` to rebuild it with CUDA.")
        elif gpu.vendor == "apple":
            notes.append(f"{gpu.name} found, but this llama-cpp-python was built without Metal: "
                         "run `make gpu BACKEND=metal`.")
        elif gpu.vendor in ("amd", "intel") and gpu.vram_total_bytes:
            notes.append(f"{gpu.name} found; only a Vulkan build of llama.cpp can use it: install the "
                         "Vulkan SDK and run `make gpu BACKEND=vulkan`.")
    return notes
