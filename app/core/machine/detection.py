"""Measure this machine: run every probe, each isolated so one failure becomes a note.

Kept apart from `hardware` (the profile types and rules) so that the probes can
import those types at module level and nothing imports in a circle.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

from app.core.machine import probes
from app.core.machine.hardware import BackendInfo, CpuInfo, GpuInfo, HardwareProfile, RamInfo


def detect(*, models_dir: Path | None = None, with_backend: bool = True) -> HardwareProfile:
    """Measure this machine. Never raises: a failed probe becomes a note."""
    started = time.perf_counter()
    notes: list[str] = []
    system = platform.system().lower()
    arch = platform.machine().lower() or "unknown"

    cpu = probes.isolated(probes.probe_cpu, CpuInfo(), notes, "CPU")
    ram = probes.isolated(probes.probe_ram, RamInfo(), notes, "RAM")
    gpus: list[GpuInfo] = []
    gpus += probes.isolated(probes.probe_nvidia, [], notes, "NVIDIA (NVML)", notes)
    gpus += probes.isolated(probes.probe_other_gpus, [], notes, "GPU list", gpus, notes)
    apple = None
    if system == "darwin":
        apple = probes.isolated(probes.probe_apple, None, notes, "Apple Silicon", ram, notes)
        if apple is not None:
            cpu.performance_cores = cpu.performance_cores or probes.apple_performance_cores()
            gpus.append(
                GpuInfo(
                    vendor="apple",
                    name=f"{apple.chip} GPU",
                    vram_total_bytes=apple.metal_budget_bytes,
                    vram_free_bytes=None,
                    source="metal",
                )
            )
    backend = (
        probes.isolated(probes.probe_backend, BackendInfo(available=False), notes, "llama.cpp")
        if with_backend
        else BackendInfo(available=False)
    )
    for i, gpu in enumerate(gpus):
        gpu.index = i
    unknown_disk: tuple[str | None, int | None] = (None, None)
    disk_path, disk_free = probes.isolated(probes.probe_disk, unknown_disk, notes, "disk", models_dir)
    profile = HardwareProfile(
        os=system,
        arch=arch,
        cpu=cpu,
        ram=ram,
        gpus=gpus,
        unified_memory=apple is not None,
        apple=apple,
        backend=backend,
        disk_free_bytes=disk_free,
        disk_path=disk_path,
        notes=notes,
    )
    profile.notes.extend(probes.mismatch_notes(profile))
    profile.detect_seconds = time.perf_counter() - started
    return profile
