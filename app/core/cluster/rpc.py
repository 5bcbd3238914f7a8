"""llama.cpp's RPC backend through ctypes: register workers, list devices, run a worker.

Everything here goes through the copy of libggml that libllama links
(app.core.machine.backends), whose registry `Llama()` reads. The RPC
functions are not exported by libggml: they are reached as llama.cpp's own
tools do, `ggml_backend_reg_by_name("RPC")` then `ggml_backend_reg_get_proc_address`.

Beware: llama.cpp's RPC client aborts the process (C side) when a worker is
unreachable, dies, or speaks another protocol. `add_servers` probes each
worker first (app/core/cluster/probe.py, pure Python); `rpc_devices` asks the
workers for their memory and so must only run while they are known to be up.
Registration cannot be undone in a process.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from app.core.cluster.probe import WorkerError, endpoint_text, parse_endpoint, probe

#: enum ggml_backend_dev_type (ggml-backend.h).
DEVICE_KINDS = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel", 4: "meta"}
CPU, ACCEL = 0, 3

_lock = threading.Lock()
_registered: set[str] = set()  # host:port strings registered in this process
_lib_handle: Any = None


@dataclass(frozen=True)
class BackendDevice:
    index: int  # position in ggml's device list (registered workers after the local devices)
    name: str
    description: str
    free_bytes: int
    total_bytes: int
    kind: str  # cpu | gpu | igpu | accel (an RPC device always says gpu)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _lib() -> Any:
    """libggml with the prototypes this module uses (llama.cpp's backends loaded)."""
    global _lib_handle
    with _lock:
        if _lib_handle is None:
            from app.core.machine import llama_cpp_module
            from app.core.machine.backends import _ggml

            lib = _ggml(llama_cpp_module())
            vp, cp = ctypes.c_void_p, ctypes.c_char_p
            for name, res, args in (
                ("ggml_backend_reg_by_name", vp, [cp]),
                ("ggml_backend_reg_get_proc_address", vp, [vp, cp]),
                ("ggml_backend_reg_name", cp, [vp]),
                ("ggml_backend_register", None, [vp]),
                ("ggml_backend_dev_count", ctypes.c_size_t, []),
                ("ggml_backend_dev_get", vp, [ctypes.c_size_t]),
                ("ggml_backend_dev_name", cp, [vp]),
                ("ggml_backend_dev_description", cp, [vp]),
                ("ggml_backend_dev_type", ctypes.c_int, [vp]),
                ("ggml_backend_dev_backend_reg", vp, [vp]),
                ("ggml_backend_dev_by_name", vp, [cp]),
                ("ggml_backend_dev_memory", None,
                 [vp, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)]),
            ):
                fn = getattr(lib, name)
                fn.restype = res
                fn.argtypes = args
            _lib_handle = lib
        return _lib_handle


def supported() -> bool:
    """Whether this build of llama.cpp has the RPC backend (GGML_RPC=ON)."""
    try:
        return bool(_lib().ggml_backend_reg_by_name(b"RPC"))
    except (ImportError, OSError, AttributeError):
        return False


def _rpc_proc(name: str, prototype: Any) -> Any:
    lib = _lib()
    reg = lib.ggml_backend_reg_by_name(b"RPC")
    if not reg:
        raise WorkerError("This Camelid's llama.cpp was built without its RPC backend, so it cannot use "
                          "or be another machine's worker:",
                          "reinstall with `make run` (it builds llama-cpp-python with GGML_RPC=ON).",
                          reason="unsupported")
    address = lib.ggml_backend_reg_get_proc_address(reg, name.encode())
    if not address:
        raise WorkerError(f"llama.cpp's RPC backend has no {name}:",
                          "reinstall Camelid with `make run`.", reason="unsupported")
    return prototype(address)


def add_servers(endpoints: Sequence[str], *, probe_first: bool = True,
                timeout: float = 3.0) -> list[str]:
    """Register workers with llama.cpp, each once per process; returns the host:port newly registered.

    Each is probed first (probe_first=False only where a probe just succeeded): llama.cpp would
    abort the process on one that does not answer.
    """
    add = _rpc_proc("ggml_backend_rpc_add_server",
                    ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p))
    lib = _lib()
    done: list[str] = []
    for text in endpoints:
        host, port = parse_endpoint(text)
        key = f"{host}:{port}"  # llama.cpp splits at the first ':'
        with _lock:
            if key in _registered:
                continue
        if probe_first:
            probe(key, timeout=timeout, status=False)
        with _lock:
            if key in _registered:
                continue
            reg = add(key.encode())
            if not reg:
                raise WorkerError(f"{endpoint_text(host, port)} offers no devices:",
                                  "start `camelid worker` there with at least one device.",
                                  reason="garbage")
            lib.ggml_backend_register(reg)
            _registered.add(key)
        done.append(key)
    return done


def registered() -> list[str]:
    with _lock:
        return sorted(_registered)


def _devices(*, rpc: bool) -> list[BackendDevice]:
    lib = _lib()
    out = []
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        reg = lib.ggml_backend_dev_backend_reg(dev)
        is_rpc = bool(reg) and _text(lib.ggml_backend_reg_name(reg)).startswith("RPC")
        if is_rpc != rpc:
            continue
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        out.append(BackendDevice(index=i, name=_text(lib.ggml_backend_dev_name(dev)),
                                 description=_text(lib.ggml_backend_dev_description(dev)),
                                 free_bytes=int(free.value), total_bytes=int(total.value),
                                 kind=DEVICE_KINDS.get(lib.ggml_backend_dev_type(dev), "other")))
    return out


def rpc_devices() -> list[BackendDevice]:
    """The registered workers' devices (names RPC0, RPC1...; description host:port).

    Their memory is asked of the workers over the network: call only while they are up.
    """
    return _devices(rpc=True)


def local_devices() -> list[BackendDevice]:
    """This machine's own llama.cpp devices (what a worker can serve)."""
    return _devices(rpc=False)


def default_devices(devices: Sequence[BackendDevice]) -> list[BackendDevice]:
    """What rpc-server serves when no device is named: every GPU, else the CPU."""
    gpus = [d for d in devices if d.kind in ("gpu", "igpu")]
    return gpus or [d for d in devices if d.kind == "cpu"][:1]


def choose_devices(names: Sequence[str] | None) -> list[BackendDevice]:
    """The local devices a worker serves: `names` (ggml's device names, e.g. CUDA0, CPU) or the default."""
    devices = local_devices()
    if not names:
        chosen = default_devices(devices)
    else:
        by_name = {d.name.lower(): d for d in devices}
        chosen = []
        for name in names:
            dev = by_name.get(name.strip().lower())
            if dev is None:
                known = ", ".join(d.name for d in devices) or "none"
                raise WorkerError(f"This machine has no llama.cpp device named {name!r}:",
                                  f"use one of: {known}.", reason="usage")
            if dev not in chosen:
                chosen.append(dev)
    if not chosen:
        raise WorkerError("llama.cpp found no device to serve on this machine:",
                          "reinstall Camelid with `make run`.", reason="unsupported")
    return chosen


def start_server(host: str, port: int, *, threads: int, device_names: Sequence[str] | None = None,
                 cache_dir: str | Path | None = None) -> None:
    """Serve llama.cpp's RPC protocol on host:port. Blocks in C until the process ends.

    `host` must be an IPv4 address (llama.cpp binds with inet_addr). Returns only when llama.cpp
    gave up (it could not create its backends or listen), raising WorkerError then.
    Run it in a thread: ctypes releases the GIL for the call, and SIGINT never reaches C here.
    """
    chosen = choose_devices(device_names)
    lib = _lib()
    start = _rpc_proc("ggml_backend_rpc_start_server", ctypes.CFUNCTYPE(
        None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t,
        ctypes.POINTER(ctypes.c_void_p)))
    handles = (ctypes.c_void_p * len(chosen))()
    for i, dev in enumerate(chosen):
        handles[i] = lib.ggml_backend_dev_get(dev.index)
    cache = os.fsencode(str(cache_dir)) if cache_dir is not None else None
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    endpoint = f"{host}:{port}".encode()
    start(endpoint, cache, max(1, threads), len(chosen), handles)
    raise WorkerError(f"llama.cpp's RPC server stopped at once on {host}:{port} (it could not start "
                      "its devices or listen there):",
                      "read the lines above, check that the port is free, and try again.",
                      reason="start")


def _text(value: bytes | None) -> str:
    return value.decode("utf-8", errors="replace") if value else ""


def worker_status(served: Sequence[BackendDevice], *, threads: int,
                  busy: bool | None = None, connections: int | None = None) -> dict[str, Any]:
    """What `camelid worker`'s status side channel answers, measured now.

    Devices are indexed as the RPC protocol indexes them (their order in `served`). A CPU's free
    memory is what the OS says is available (the RPC protocol reports all of the RAM); a GPU's is
    its backend's own number.
    """
    import psutil

    from app import __version__
    from app.core.cluster.probe import PROTOCOL

    lib = _lib()
    vm = psutil.virtual_memory()
    devices = []
    for i, dev in enumerate(served):
        if dev.kind == "cpu":
            free, total = int(vm.available), int(vm.total)
        else:
            f, t = ctypes.c_size_t(0), ctypes.c_size_t(0)
            lib.ggml_backend_dev_memory(lib.ggml_backend_dev_get(dev.index), ctypes.byref(f),
                                        ctypes.byref(t))
            free, total = int(f.value), int(t.value)
            if dev.kind == "igpu":  # shares the RAM: no more than the OS says is available
                free = min(free, int(vm.available))
        devices.append({"index": i, "name": dev.name, "description": dev.description,
                        "kind": "cpu" if dev.kind == "cpu" else "gpu",
                        "free_bytes": free, "total_bytes": total})
    out: dict[str, Any] = {"camelid": __version__, "protocol": list(PROTOCOL), "devices": devices,
                           "threads": threads}
    if busy is not None:
        out["busy"] = busy
    if connections is not None:
        out["connections"] = connections
    return out
