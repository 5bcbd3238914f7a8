"""The machines a user added: probe them, turn what they offer into the fit engine's remote devices.

Probing is pure Python (app/core/cluster/probe.py), so a dead or mismatched
worker is a sentence before anything reaches llama.cpp, whose RPC client
aborts the process on such errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from app.core.machine import HardwareProfile, RemoteDevice


def saved_workers() -> list[str]:
    """The workers saved in Settings (the Machines page), in order."""
    from app.core.settings import Settings

    text = str(Settings()["rpc_workers"] or "")
    return [w.strip() for w in text.replace(";", ",").split(",") if w.strip()]


def probe_workers(endpoints: Sequence[str], *, timeout: float = 3.0) -> list[Any]:
    """Probe every worker (WorkerInfo each); the first that fails raises its WorkerError sentence."""
    from app.core.cluster.probe import probe

    seen: set[str] = set()
    out = []
    for endpoint in endpoints:
        info = probe(endpoint, timeout=timeout)
        key = info.endpoint
        if key in seen:
            continue  # llama.cpp would register its devices twice
        seen.add(key)
        out.append(info)
    return out


def remote_devices(infos: Sequence[Any]) -> list[RemoteDevice]:
    """The fit engine's view of the workers' devices, in registration order."""
    out = []
    for info in infos:
        for dev in info.devices:
            kind = dev.kind or ("gpu" if dev.name and not str(dev.name).upper().startswith("CPU") else "cpu")
            out.append(RemoteDevice(endpoint=info.endpoint, index=dev.index, name=dev.name, kind=kind,
                                    total_bytes=int(dev.total_bytes), free_bytes=int(dev.free_bytes),
                                    source=dev.free_source, latency_s=info.latency_s))
    return out


def with_workers(hardware: HardwareProfile, endpoints: Sequence[str], *, timeout: float = 3.0) -> HardwareProfile:
    """`hardware` plus the devices of the workers at `endpoints` (probed now)."""
    if not endpoints:
        return hardware
    infos = probe_workers(endpoints, timeout=timeout)
    return replace(hardware, remote=[*hardware.remote, *remote_devices(infos)])


def endpoints_of(hardware: HardwareProfile) -> list[str]:
    """The workers to register, in the order the plan put their devices."""
    out: list[str] = []
    for dev in hardware.remote:
        if dev.endpoint not in out:
            out.append(dev.endpoint)
    return out


def engine_for(hardware: HardwareProfile) -> Any:
    """A chat engine that can use the workers: a ChildEngine whose child registers them before loading
    (a worker failure then ends only the child), or a plain Engine when there are none."""
    endpoints = endpoints_of(hardware)
    if not endpoints:
        from app.core.chat import Engine

        return Engine()
    from app.core.cluster.child import ChildEngine

    label = (f"the machine {endpoints[0]}" if len(endpoints) == 1 else
             "the machines " + ", ".join(endpoints[:-1]) + f" and {endpoints[-1]}")
    return ChildEngine(setup=("app.core.cluster.rpc", "add_servers", (endpoints,)), label=label)
