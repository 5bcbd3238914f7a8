"""The text "Copy diagnostics" puts on the clipboard: what a bug report needs, and no secrets.

Versions (Camelid, Python, Qt, llama-cpp-python, llama.cpp's build), the
backend, a summary of the hardware profile, the settings, where the log is and
the last warnings and errors. The Hugging Face token lives in huggingface_hub's
own file, never in settings; anything shaped like a token is masked anyway.
"""

from __future__ import annotations

import platform
import re
import sys
from importlib import metadata
from typing import Any

from app import __version__, paths
from app.core import units

#: Hugging Face tokens (hf_...), and whatever follows a "token=" or "Bearer " label.
_HF_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{8,}")
_LABELLED = re.compile(r"(?i)\b(token|authorization|bearer)([=: ]+)(?!None\b|''|\[hidden\])\S{8,}")
_MASK = "[hidden]"


def mask_secrets(text: str) -> str:
    """`text` with anything shaped like an access token replaced by [hidden]."""
    text = _HF_TOKEN.sub(_MASK, text)
    return _LABELLED.sub(lambda m: f"{m.group(1)}{m.group(2)}{_MASK}", text)


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions(*, qt: str | None = None) -> list[tuple[str, str]]:
    return [
        ("Camelid", __version__),
        ("Python", f"{platform.python_version()} ({sys.executable})"),
        ("Qt", qt or "not loaded"),
        ("llama-cpp-python", package_version("llama-cpp-python")),
        ("huggingface_hub", package_version("huggingface_hub")),
        ("OS", f"{platform.platform()} ({platform.machine()})"),
    ]


def hardware_lines(profile: Any) -> list[str]:
    """A few lines that summarise a HardwareProfile (None: not measured yet)."""
    if profile is None:
        return ["not measured yet"]
    lines = []
    if profile.simulated:
        lines.append(f"simulated: {profile.simulated}")
    cpu = profile.cpu
    lines.append(f"CPU: {cpu.name}, {cpu.cores_physical} cores / {cpu.cores_logical} threads")
    lines.append(f"RAM: {units.human_bytes(profile.ram.total_bytes)} total, "
                 f"{units.human_bytes(profile.ram.available_bytes)} available at detection")
    for gpu in profile.gpus:
        vram = units.human_bytes(gpu.vram_total_bytes) if gpu.vram_total_bytes else "VRAM unknown"
        free = f", {units.human_bytes(gpu.vram_free_bytes)} free" if gpu.vram_free_bytes is not None else ""
        driver = f", driver {gpu.driver}" if gpu.driver else ""
        lines.append(f"GPU {gpu.index}: {gpu.name} ({gpu.vendor}), {vram}{free}{driver} [{gpu.source}]")
    if not profile.gpus:
        lines.append("GPU: none found")
    if profile.unified_memory and profile.apple is not None:
        lines.append(f"Apple {profile.apple.chip}: Metal budget {units.human_bytes(profile.apple.metal_budget_bytes)} "
                     f"({profile.apple.metal_budget_source})")
    if profile.disk_free_bytes is not None:
        lines.append(f"Disk: {units.human_bytes(profile.disk_free_bytes)} free at {profile.disk_path}")
    lines.extend(f"note: {note}" for note in profile.notes)
    return lines


def backend_lines(profile: Any, *, in_use: str | None = None) -> list[str]:
    if profile is None:
        return ["not measured yet"]
    backend = profile.backend
    if not backend.available:
        return [f"llama.cpp not available: {backend.problem or 'llama-cpp-python could not be imported'}"]
    lines = []
    if in_use:
        lines.append(f"in use: {in_use}")
    lines.append(f"compiled: {', '.join(backend.compiled) or 'CPU'}; GPU offload "
                 f"{'yes' if backend.gpu_offload else 'no'}")
    if backend.llama_cpp_version:
        lines.append(f"llama.cpp: as built into llama-cpp-python {backend.llama_cpp_version}")
    if backend.libraries:
        lines.append(f"libraries: {', '.join(backend.libraries)}")
    cpu_code = backend.cpu_code()
    if cpu_code:
        lines.append(f"CPU code: {cpu_code}")
    if backend.system_info:
        lines.append(f"system info: {backend.system_info.strip()}")
    if backend.problem:
        lines.append(f"problem: {backend.problem}")
    return lines


def settings_lines(settings: Any) -> list[str]:
    values = settings.to_dict() if hasattr(settings, "to_dict") else dict(settings)
    return [f"{key} = {value!r}" for key, value in sorted(values.items())]


def diagnostics_text(*, settings: Any, profile: Any, problems: list[str], qt: str | None = None,
                     backend_in_use: str | None = None, log_file: Any = None) -> str:
    """The whole report, as plain text for a bug report; secrets masked."""
    sections: list[tuple[str, list[str]]] = [
        ("Versions", [f"{name}: {value}" for name, value in versions(qt=qt)]),
        ("Backend", backend_lines(profile, in_use=backend_in_use)),
        ("Hardware", hardware_lines(profile)),
        ("Settings", settings_lines(settings)),
        ("Files", [f"log: {log_file or 'not kept (the logs folder cannot be written)'}",
                   f"data: {paths.data_dir()}", f"models: {paths.models_dir()}"]),
        ("Last warnings and errors", problems or ["none in this session"]),
    ]
    out = ["Camelid diagnostics"]
    for title, lines in sections:
        out.append("")
        out.append(f"## {title}")
        out.extend(lines)
    return mask_secrets("\n".join(out)) + "\n"
