"""The machine: what it has (CPU, RAM, GPUs, Apple's Metal budget, the llama.cpp build) and simulated ones.

The door: the rest of Camelid imports machine facts from here.
"""

from app.core.machine import backends, probes
from app.core.machine.backends import BackendState, llama_cpp_module
from app.core.machine.detection import detect
from app.core.machine.hardware import (
    BACKEND_VENDORS,
    AppleInfo,
    BackendInfo,
    Budgets,
    CpuInfo,
    DeviceBudget,
    GiB,
    GpuInfo,
    HardwareProfile,
    MiB,
    RamInfo,
    RemoteDevice,
)
from app.core.machine.probes import probe_backend, probe_cpu
from app.core.machine.simulate import find_gpu, known_hardware, preset_profile, simulate

__all__ = [
    "BACKEND_VENDORS",
    "AppleInfo",
    "BackendInfo",
    "BackendState",
    "Budgets",
    "CpuInfo",
    "DeviceBudget",
    "GiB",
    "GpuInfo",
    "HardwareProfile",
    "MiB",
    "RamInfo",
    "RemoteDevice",
    "backends",
    "detect",
    "find_gpu",
    "known_hardware",
    "llama_cpp_module",
    "preset_profile",
    "probe_backend",
    "probe_cpu",
    "probes",
    "simulate",
]
