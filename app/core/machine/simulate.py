"""Hardware other than this machine: named presets, JSON files and flags.

`plan` and `recommend` answer "what if I had an RTX 4090?" with the same code
that plans for this machine, by handing them a simulated `HardwareProfile`.
Memory sizes given in "GB" are the sizes as sold, which for RAM and VRAM are
binary gigabytes (a "24 GB" card has 24 GiB).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from app import paths
from app.core.errors import HardwareFileError
from app.core.machine.hardware import (
    AppleInfo,
    CpuInfo,
    GiB,
    GpuInfo,
    HardwareProfile,
    RamInfo,
    assumed_backend,
    metal_budget_rule,
    simulated_available_ram,
)


@cache
def known_hardware() -> dict[str, Any]:
    """resources/hardware.json: known GPUs (VRAM, bandwidth) and machine presets."""
    with (paths.resources_dir() / "hardware.json").open(encoding="utf-8") as f:
        return json.load(f)


def preset_names() -> list[str]:
    return sorted(known_hardware()["presets"])


def find_gpu(name: str) -> tuple[str, dict[str, Any]] | None:
    """A known GPU by exact or partial name ("4090", "RTX 3060", "M2 Max")."""
    gpus: dict[str, dict[str, Any]] = known_hardware()["gpus"]
    wanted = " ".join(name.lower().split())
    for full, spec in gpus.items():
        if full.lower() == wanted:
            return full, spec
    # Longest match first so "RTX 4070" does not pick "RTX 4070 Ti".
    candidates = [
        (full, spec) for full, spec in gpus.items()
        if wanted in full.lower() or full.lower().endswith(wanted)
    ]
    if not candidates:
        return None
    return min(candidates, key=lambda item: len(item[0]))


def preset_profile(name: str) -> HardwareProfile:
    presets = known_hardware()["presets"]
    if name not in presets:
        raise HardwareFileError(
            f"There is no hardware preset called {name!r}.",
            f"Use one of: {', '.join(preset_names())}.",
        )
    spec = presets[name]
    ram_total = int(spec["ram_gb"] * GiB)
    cpu = CpuInfo(**spec["cpu"])
    unified = bool(spec.get("unified"))
    gpus: list[GpuInfo] = []
    apple = None
    if unified:
        apple = AppleInfo(chip=cpu.name, metal_budget_bytes=metal_budget_rule(ram_total),
                          metal_budget_source="rule")
        gpus.append(GpuInfo(vendor="apple", name=f"{cpu.name} GPU",
                            vram_total_bytes=apple.metal_budget_bytes, source="simulated"))
    for i, gpu_name in enumerate(spec.get("gpus", [])):
        gpus.append(_gpu_from_known(gpu_name, index=i))
    return HardwareProfile(
        os="darwin" if unified else "linux",
        arch="arm64" if unified else "x86_64",
        cpu=cpu,
        ram=RamInfo(total_bytes=ram_total, available_bytes=simulated_available_ram(ram_total)),
        gpus=gpus,
        unified_memory=unified,
        apple=apple,
        backend=assumed_backend(gpus, unified=unified),
        notes=[f"Simulated: {spec['description']}."],
        simulated=name,
    )


def _gpu_from_known(name: str, *, index: int, vram_gb: float | None = None) -> GpuInfo:
    found = find_gpu(name)
    full, spec = found if found else (name, {})
    size = vram_gb if vram_gb is not None else spec.get("vram_gb")
    if size is None:
        raise HardwareFileError(
            f"Camelid does not know how much memory a {name!r} has.",
            "Give it with --vram GB.",
        )
    total = int(size * GiB)
    return GpuInfo(vendor=spec.get("vendor", "nvidia"), name=full, vram_total_bytes=total,
                   vram_free_bytes=total, compute_capability=spec.get("compute_capability"),
                   index=index, source="simulated")


def profile_from_file(path: Path) -> HardwareProfile:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise HardwareFileError(f"The hardware file {path} does not exist.",
                                "Check the path, or write one with `camelid hw --json > FILE`.") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HardwareFileError(f"The hardware file {path} is not valid JSON ({exc}).",
                                "Write one with `camelid hw --json > FILE` and edit it.") from exc
    return HardwareProfile.from_dict(data, source=f"file:{Path(path).name}")


def simulate(
    *,
    detect: Callable[[], HardwareProfile],
    preset: str | None = None,
    hardware_file: Path | None = None,
    vram_gb: list[float] | None = None,
    ram_gb: float | None = None,
    unified: bool = False,
    gpu_name: str | None = None,
) -> HardwareProfile:
    """The profile the flags describe; `detect()` (this machine) when there are none.

    A preset or file is the starting point, else this machine; then --ram,
    --unified, --vram and --gpu replace what they name.
    """
    if preset and hardware_file:
        raise HardwareFileError("--preset and --hardware both describe a whole machine.",
                                "Give only one of them.")
    for size in [*(vram_gb or []), *([ram_gb] if ram_gb is not None else [])]:
        if size <= 0:
            raise HardwareFileError(f"A memory size of {size} GB cannot be planned for.",
                                    "Give sizes in GB, greater than zero (for example --vram 24).")
    if preset:
        profile = preset_profile(preset)
    elif hardware_file:
        profile = profile_from_file(hardware_file)
    else:
        profile = detect()
        if not (vram_gb or ram_gb or unified or gpu_name):
            return profile
        profile.notes = [n for n in profile.notes if "found, but" not in n]
    labels = [profile.simulated] if profile.simulated else []

    if ram_gb is not None:
        total = int(ram_gb * GiB)
        profile.ram = RamInfo(total_bytes=total, available_bytes=simulated_available_ram(total))
        labels.append(f"{ram_gb:g} GB RAM")
    if unified:
        chip = gpu_name or (profile.apple.chip if profile.apple else "Apple Silicon")
        budget = metal_budget_rule(profile.ram.total_bytes)
        profile.unified_memory = True
        profile.apple = AppleInfo(chip=chip, metal_budget_bytes=budget, metal_budget_source="rule")
        profile.gpus = [GpuInfo(vendor="apple", name=f"{chip} GPU", vram_total_bytes=budget,
                                source="simulated")]
        labels.append(f"{chip} unified memory")
    elif vram_gb:
        profile.unified_memory = False
        profile.apple = None
        profile.gpus = [
            _gpu_from_known(gpu_name or f"Simulated {size:g} GB GPU", index=i, vram_gb=size)
            for i, size in enumerate(vram_gb)
        ]
        labels.append(" + ".join(f"{size:g} GB" for size in vram_gb) + " VRAM")
    elif gpu_name:
        profile.unified_memory = False
        profile.apple = None
        profile.gpus = [_gpu_from_known(gpu_name, index=0)]
        labels.append(profile.gpus[0].name)
    if vram_gb or unified or gpu_name:
        profile.backend = assumed_backend(profile.gpus, unified=profile.unified_memory)
    if unified or vram_gb or gpu_name or ram_gb is not None:
        profile.simulated = ", ".join(dict.fromkeys(label for label in labels if label))
    return profile

