"""`camelid hw`: what this (or a simulated) machine has, and what Camelid may use."""

from __future__ import annotations

import argparse

from app.cli.common import (
    add_hardware_flags,
    add_json_flag,
    hardware_from_args,
    human_bytes,
    print_json,
    sold_as,
)
from app.core.machine import HardwareProfile


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("hw", help="show the hardware and the memory budgets",
                                   description="Measure this machine (or describe a simulated one).")
    add_json_flag(parser)
    parser.add_argument("--presets", action="store_true", help="list the named hardware presets")
    add_hardware_flags(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.presets:
        from app.core.machine import known_hardware

        presets = known_hardware()["presets"]
        if args.json:
            print_json({name: spec["description"] for name, spec in sorted(presets.items())})
        else:
            for name, spec in sorted(presets.items()):
                print(f"{name:22} {spec['description']}")
        return 0
    profile = hardware_from_args(args)
    if args.json:
        print_json(profile.to_dict())
    else:
        print(describe(profile))
    return 0


def describe(profile: HardwareProfile) -> str:
    """The readable summary printed by `camelid hw`."""
    lines: list[str] = []
    title = "Simulated machine: " + profile.simulated if profile.simulated else "This machine"
    lines.append(title)
    cpu = profile.cpu
    cores = f"{cpu.cores_physical} cores / {cpu.cores_logical} threads"
    if cpu.performance_cores:
        cores += f", {cpu.performance_cores} performance cores"
    lines.append(f"  OS      {profile.os} ({profile.arch})")
    lines.append(f"  CPU     {cpu.name}, {cores}")
    if cpu.features:
        lines.append(f"          features: {' '.join(cpu.features)}")
    ram_label = "Memory " if profile.unified_memory else "RAM    "
    lines.append(f"  {ram_label} {human_bytes(profile.ram.total_bytes)} total "
                 f"(sold as {sold_as(profile.ram.total_bytes)}), "
                 f"{human_bytes(profile.ram.available_bytes)} available"
                 + (" (unified: shared by CPU and GPU)" if profile.unified_memory else ""))
    if profile.apple:
        a = profile.apple
        lines.append(f"  Apple   {a.chip}; GPU budget {human_bytes(a.metal_budget_bytes)} "
                     f"(from {a.metal_budget_source})" + ("; running under Rosetta" if a.rosetta else ""))
    if not profile.gpus:
        lines.append("  GPU     none found")
    for gpu in profile.gpus:
        if gpu.vendor == "apple":
            continue
        detail = [f"{human_bytes(gpu.vram_total_bytes)} VRAM (sold as {sold_as(gpu.vram_total_bytes)})"
                  if gpu.vram_total_bytes else "shared memory"]
        if gpu.vram_free_bytes is not None and gpu.source != "simulated":
            detail.append(f"{human_bytes(gpu.vram_free_bytes)} free")
        if gpu.driver:
            detail.append(f"driver {gpu.driver}")
        if gpu.cuda_driver_version:
            detail.append(f"CUDA {gpu.cuda_driver_version}")
        if gpu.compute_capability:
            detail.append(f"compute {gpu.compute_capability}")
        lines.append(f"  GPU {gpu.index}   {gpu.name}: {', '.join(detail)}")
    backend = profile.backend
    if backend.available:
        offload = "GPU offload available" if backend.gpu_offload else "no GPU offload"
        version = f"llama-cpp-python {backend.llama_cpp_version}, " if backend.llama_cpp_version else ""
        lines.append(f"  Engine  {version}backends: {', '.join(backend.compiled)} ({offload})")
        if not profile.simulated:
            lines.append(f"          CPU code: {backend.cpu_code()}")
    else:
        lines.append("  Engine  llama-cpp-python not available")
    if profile.disk_free_bytes is not None:
        lines.append(f"  Disk    {human_bytes(profile.disk_free_bytes)} free for models in {profile.disk_path}")
    budgets = profile.budgets()
    lines.append("Camelid may use")
    for device in [*budgets.gpus, budgets.ram]:
        lines.append(f"  {device.name}: {human_bytes(device.budget_bytes)} "
                     f"({human_bytes(device.free_bytes)} free minus {human_bytes(device.reserve_bytes)} kept for the system)")
    if profile.notes:
        lines.append("Notes")
        lines.extend(f"  - {note}" for note in profile.notes)
    if profile.detect_seconds is not None:
        lines.append(f"(measured in {profile.detect_seconds * 1000:.0f} ms)")
    return "\n".join(lines)
