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
        key = f"{info.host}:{info.port}"
        if key in seen:
            continue  # llama.cpp would register its devices twice
        seen.add(key)
        out.append(info)
    return out


def remote_devices(infos: Sequence[Any]) -> list[RemoteDevice]:
    """The fit engine's view of the workers' devices, in registration order."""
    out = []
    for info in infos:
        status = info.status or {}
        by_index = {d.get("index"): d for d in status.get("devices", []) if isinstance(d, dict)}
        for dev in info.devices:
            known = by_index.get(dev.index, {})
            kind = str(known.get("kind") or ("gpu" if _looks_gpu(dev.name) else "cpu"))
            out.append(RemoteDevice(
                endpoint=f"{info.host}:{info.port}", index=dev.index, name=known.get("name") or dev.name,
                kind=kind, total_bytes=int(known.get("total_bytes") or dev.total_bytes),
                free_bytes=int(known.get("free_bytes") or dev.free_bytes),
                source="status" if known.get("free_bytes") is not None else "rpc",
                latency_s=info.latency_s))
    return out


def _looks_gpu(name: str | None) -> bool:
    return bool(name) and not str(name).upper().startswith("CPU")


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
