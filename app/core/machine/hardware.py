"""What this machine can hold: `HardwareProfile` and the budgets the planner uses.

`detect()` (in `detect.py`) runs every probe in `probes.py`, each isolated so one
failure (no NVIDIA driver, no sysfs, a sandbox without sysctl) becomes a note and
never hides the others. Profiles round-trip through JSON (`to_dict` / `from_dict`),
which is how `--hardware FILE.json` plans for another machine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from app.core.errors import HardwareFileError

GiB = 1024**3
MiB = 1024**2

# --- Reserves: memory the planner never hands to a model -------------------
#: Kept free on every discrete GPU: the display server, the browser's GPU
#: process and allocator fragmentation. The CUDA/Vulkan context itself is
#: counted by the planner as "overhead", not here.
GPU_RESERVE_BYTES = 512 * MiB
#: Kept free in system RAM for the OS and the apps the user keeps open:
#: 10% of RAM, at least 1 GiB and at most 4 GiB.
RAM_RESERVE_FRACTION = 0.10
RAM_RESERVE_MIN = 1 * GiB
RAM_RESERVE_MAX = 4 * GiB
#: A simulated machine has no "available" reading: assume a desktop session
#: uses 15% of RAM (at least 1.5 GiB) before Camelid starts.
SIMULATED_RAM_IN_USE_FRACTION = 0.15
SIMULATED_RAM_IN_USE_MIN = int(1.5 * GiB)

#: Which GPU vendors each llama.cpp backend can drive.
BACKEND_VENDORS: dict[str, frozenset[str]] = {
    "CUDA": frozenset({"nvidia"}),
    "Metal": frozenset({"apple"}),
    "Vulkan": frozenset({"nvidia", "amd", "intel"}),
    "HIP": frozenset({"amd"}),
    "SYCL": frozenset({"intel"}),
}


@dataclass
class CpuInfo:
    name: str = "unknown CPU"
    cores_physical: int = 1
    cores_logical: int = 1
    features: list[str] = field(default_factory=list)
    #: Apple Silicon performance cores (hw.perflevel0), the right thread count there.
    performance_cores: int | None = None


@dataclass
class RamInfo:
    total_bytes: int = 0
    available_bytes: int = 0


@dataclass
class GpuInfo:
    vendor: str  # nvidia | amd | intel | apple
    name: str
    vram_total_bytes: int | None = None
    vram_free_bytes: int | None = None
    driver: str | None = None
    cuda_driver_version: str | None = None
    compute_capability: str | None = None
    index: int = 0
    #: Where the reading came from: nvml, sysfs, registry, metal, simulated.
    source: str = "unknown"


@dataclass
class AppleInfo:
    chip: str
    metal_budget_bytes: int
    #: recommendedMaxWorkingSetSize, wired_limit, or rule (2/3 or 3/4 of RAM).
    metal_budget_source: str
    wired_limit_mb: int | None = None
    rosetta: bool = False


#: The one instruction set that best names a CPU variant (AVX2 for haswell), best first.
HEADLINE_FEATURES = ("AMX_INT8", "AVX512_BF16", "AVX512_VNNI", "AVX512_VBMI", "AVX512", "AVX_VNNI", "AVX2",
                     "FMA", "F16C", "AVX", "SSE42")


@dataclass
class BackendInfo:
    #: llama.cpp backends compiled into the installed llama-cpp-python, e.g. ["CPU", "CUDA"].
    compiled: list[str] = field(default_factory=lambda: ["CPU"])
    gpu_offload: bool = False
    llama_cpp_version: str | None = None
    system_info: str = ""
    libraries: list[str] = field(default_factory=list)
    #: False when llama-cpp-python could not be imported at all.
    available: bool = True
    #: The CPU library llama.cpp chose at start ("zen4", "haswell"; see machine/backends.py),
    #: None for a build with its CPU code linked in (one instruction level, the build host's).
    cpu_variant: str | None = None
    #: Every CPU variant the build ships; empty for a build without runtime dispatch.
    cpu_variants: list[str] = field(default_factory=list)
    #: True when CAMELID_CPU_VARIANT chose the variant rather than llama.cpp.
    cpu_variant_forced: bool = False
    #: Why llama.cpp cannot run here, as a sentence with the fix (None when it can).
    problem: str | None = None

    @property
    def gpu_backends(self) -> list[str]:
        return [b for b in self.compiled if b in BACKEND_VENDORS]

    def cpu_code(self) -> str | None:
        """Which CPU code llama.cpp runs, in words; None when llama-cpp-python is missing."""
        if not self.available:
            return None
        if self.cpu_variant is None:
            if self.cpu_variants:
                return "no CPU variant of this build runs on this processor"
            return "one instruction level, fixed when llama.cpp was built (no runtime choice)"
        from app.core.machine.backends import X86_VARIANTS

        needs = X86_VARIANTS.get(self.cpu_variant, ())
        best = next((f for f in HEADLINE_FEATURES if f in needs), None)
        top = f", {best.replace('AVX512', 'AVX-512').replace('_', ' ')}" if best else ""
        how = "chosen by CAMELID_CPU_VARIANT" if self.cpu_variant_forced else "chosen at start"
        return f"{self.cpu_variant} variant{top} ({how} from {len(self.cpu_variants)})"


@dataclass
class DeviceBudget:
    """Bytes the planner may place on one device."""

    name: str
    kind: str  # gpu | unified | rpc (another machine's device) | ram
    total_bytes: int
    free_bytes: int
    reserve_bytes: int
    budget_bytes: int
    index: int = 0


@dataclass
class Budgets:
    gpus: list[DeviceBudget]
    ram: DeviceBudget
    unified: bool

    @property
    def gpu_bytes(self) -> int:
        return sum(g.budget_bytes for g in self.gpus)

    @property
    def ram_bytes(self) -> int:
        return self.ram.budget_bytes


@dataclass
class RemoteDevice:
    """A device another machine offers through llama.cpp's RPC backend (`camelid worker` there)."""

    endpoint: str  # host:port
    index: int = 0
    name: str | None = None
    kind: str = "cpu"  # cpu | gpu: what the worker runs on
    total_bytes: int = 0
    free_bytes: int = 0
    #: Where free_bytes came from: "status" (the worker measured it) or "rpc" (the protocol's own
    #: number, which for a CPU worker is its whole RAM, not what is free).
    source: str = "rpc"
    #: One protocol round trip to the worker, measured by the probe (seconds).
    latency_s: float | None = None

    @property
    def label(self) -> str:
        return f"{self.name or ('GPU' if self.kind == 'gpu' else 'CPU')} on {self.endpoint}"


#: A CPU worker whose free memory is not known (no status from it): the share of its RAM planned on.
UNKNOWN_FREE_SHARE = 0.5


@dataclass
class HardwareProfile:
    os: str
    arch: str
    cpu: CpuInfo
    ram: RamInfo
    gpus: list[GpuInfo] = field(default_factory=list)
    unified_memory: bool = False
    apple: AppleInfo | None = None
    backend: BackendInfo = field(default_factory=BackendInfo)
    disk_free_bytes: int | None = None
    disk_path: str | None = None
    notes: list[str] = field(default_factory=list)
    #: None for this machine; else the preset or file it was simulated from.
    simulated: str | None = None
    detect_seconds: float | None = None
    #: Devices of other machines (llama.cpp RPC workers), in the order they are registered.
    remote: list[RemoteDevice] = field(default_factory=list)

    # ------------------------------------------------------------------
    def usable_gpus(self) -> list[GpuInfo]:
        """GPUs the built-in llama.cpp backend can actually offload to."""
        vendors: set[str] = set()
        for backend in self.backend.gpu_backends:
            vendors |= BACKEND_VENDORS[backend]
        if not self.backend.gpu_offload:
            return []
        return [g for g in self.gpus if g.vendor in vendors]

    def remote_budgets(self) -> list[DeviceBudget]:
        """The workers' devices, first in llama.cpp's device order (RPC devices come before local GPUs)."""
        out = []
        for i, dev in enumerate(self.remote):
            if dev.kind == "gpu":
                free, reserve = dev.free_bytes, GPU_RESERVE_BYTES
            else:
                # A CPU worker's RPC answer is its whole RAM; only its own status says what is free.
                free = dev.free_bytes if dev.source == "status" else int(dev.total_bytes * UNKNOWN_FREE_SHARE)
                reserve = ram_reserve_bytes(dev.total_bytes)
            out.append(DeviceBudget(name=dev.label, kind="rpc", total_bytes=dev.total_bytes, free_bytes=free,
                                    reserve_bytes=reserve, budget_bytes=max(0, free - reserve), index=i))
        return out

    def budgets(self) -> Budgets:
        """Per-device byte budgets, reserves taken off (see module constants)."""
        budgets = self._local_budgets()
        remote = self.remote_budgets()
        if remote:
            budgets = Budgets(gpus=[*remote, *budgets.gpus], ram=budgets.ram, unified=budgets.unified)
        return budgets

    def _local_budgets(self) -> Budgets:
        ram_reserve = ram_reserve_bytes(self.ram.total_bytes)
        ram = DeviceBudget(
            name="RAM",
            kind="ram",
            total_bytes=self.ram.total_bytes,
            free_bytes=self.ram.available_bytes,
            reserve_bytes=ram_reserve,
            budget_bytes=max(0, self.ram.available_bytes - ram_reserve),
        )
        gpus: list[DeviceBudget] = []
        if self.unified_memory and self.apple is not None:
            usable = any(g.vendor == "apple" for g in self.usable_gpus())
            if usable:
                # One pool: the Metal budget caps what the GPU may wire, and it
                # comes out of the same RAM, so it can never exceed what is free.
                budget = min(self.apple.metal_budget_bytes, ram.budget_bytes)
                gpus.append(
                    DeviceBudget(
                        name=f"{self.apple.chip} GPU (Metal)",
                        kind="unified",
                        total_bytes=self.apple.metal_budget_bytes,
                        free_bytes=min(self.apple.metal_budget_bytes, self.ram.available_bytes),
                        reserve_bytes=ram_reserve,
                        budget_bytes=budget,
                    )
                )
            return Budgets(gpus=gpus, ram=ram, unified=True)
        for gpu in self.usable_gpus():
            if not gpu.vram_total_bytes:
                continue  # integrated GPU without dedicated memory
            free = gpu.vram_free_bytes if gpu.vram_free_bytes is not None else gpu.vram_total_bytes
            gpus.append(
                DeviceBudget(
                    name=gpu.name,
                    kind="gpu",
                    total_bytes=gpu.vram_total_bytes,
                    free_bytes=free,
                    reserve_bytes=GPU_RESERVE_BYTES,
                    budget_bytes=max(0, free - GPU_RESERVE_BYTES),
                    index=gpu.index,
                )
            )
        return Budgets(gpus=gpus, ram=ram, unified=False)

    # ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The `camelid hw --json` document (also a valid --hardware file)."""
        budgets = self.budgets()
        return {
            "os": self.os,
            "arch": self.arch,
            "cpu": asdict(self.cpu),
            "ram": asdict(self.ram),
            "gpus": [asdict(g) for g in self.gpus],
            "unified_memory": self.unified_memory,
            "apple": asdict(self.apple) if self.apple else None,
            "budgets": {
                "gpu_bytes": budgets.gpu_bytes,
                "ram_bytes": budgets.ram_bytes,
                "devices": [asdict(d) for d in [*budgets.gpus, budgets.ram]],
            },
            "backend": {
                "compiled": self.backend.compiled,
                "gpu_offload": self.backend.gpu_offload,
                "llama_cpp_version": self.backend.llama_cpp_version,
                "libraries": self.backend.libraries,
                "available": self.backend.available,
                "cpu_variant": self.backend.cpu_variant,
                "cpu_variants": self.backend.cpu_variants,
                "cpu_variant_forced": self.backend.cpu_variant_forced,
                "problem": self.backend.problem,
            },
            "disk": {"free_bytes": self.disk_free_bytes, "path": self.disk_path},
            "notes": list(self.notes),
            "simulated": self.simulated,
            "remote": [asdict(r) for r in self.remote],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "file") -> HardwareProfile:
        """Build a profile from `to_dict` output or a hand-written subset of it."""
        if not isinstance(data, dict):
            raise HardwareFileError(
                "The hardware description is not a JSON object.",
                "Start from the output of `camelid hw --json` and edit the numbers.",
            )
        try:
            cpu = CpuInfo(**_known(CpuInfo, data.get("cpu") or {}))
            ram = RamInfo(**_known(RamInfo, data.get("ram") or {}))
            if ram.total_bytes and not ram.available_bytes:
                ram.available_bytes = simulated_available_ram(ram.total_bytes)
            gpus = []
            for i, g in enumerate(data.get("gpus") or []):
                values = _known(GpuInfo, g)
                values.setdefault("index", i)
                values.setdefault("source", source)
                gpus.append(GpuInfo(**values))
            apple_data = data.get("apple")
            apple = AppleInfo(**_known(AppleInfo, apple_data)) if apple_data else None
            backend_data = data.get("backend") or {}
            backend = BackendInfo(**_known(BackendInfo, backend_data))
            if "compiled" not in backend_data:
                backend = assumed_backend(gpus, unified=bool(data.get("unified_memory")))
            disk = data.get("disk") or {}
            profile = cls(
                os=str(data.get("os", "unknown")),
                arch=str(data.get("arch", "unknown")),
                cpu=cpu,
                ram=ram,
                gpus=gpus,
                unified_memory=bool(data.get("unified_memory", False)),
                apple=apple,
                backend=backend,
                disk_free_bytes=disk.get("free_bytes"),
                disk_path=disk.get("path"),
                notes=list(data.get("notes") or []),
                simulated=data.get("simulated") or source,
                remote=[RemoteDevice(**_known(RemoteDevice, r)) for r in data.get("remote") or []],
            )
        except (TypeError, ValueError) as exc:
            raise HardwareFileError(
                f"The hardware description has a field of the wrong kind ({exc}).",
                "Start from the output of `camelid hw --json` and edit the numbers.",
            ) from exc
        if profile.unified_memory and profile.apple is None:
            profile.apple = AppleInfo(
                chip=profile.cpu.name,
                metal_budget_bytes=metal_budget_rule(profile.ram.total_bytes),
                metal_budget_source="rule",
            )
        if profile.ram.total_bytes <= 0:
            raise HardwareFileError(
                "The hardware description gives no RAM size.",
                'Add "ram": {"total_bytes": ...} (or use --ram GB).',
            )
        return profile


def _known(kind: type, values: dict[str, Any]) -> dict[str, Any]:
    """Keep only the fields `kind` declares, so newer files still load."""
    if not isinstance(values, dict):
        raise TypeError(f"expected an object for {kind.__name__}")
    names = {f.name for f in fields(kind)}
    return {k: v for k, v in values.items() if k in names}


def ram_reserve_bytes(total: int) -> int:
    # Below 4 GiB the 1 GiB floor would keep most of a small board's RAM (a 2 GB machine: half);
    # a quarter of it is kept there instead.
    floor = min(RAM_RESERVE_MIN, total // 4)
    return int(min(RAM_RESERVE_MAX, max(floor, total * RAM_RESERVE_FRACTION)))


def simulated_available_ram(total: int) -> int:
    # The same for what a simulated machine's other programs use: at most a quarter of a tiny one.
    in_use = max(min(SIMULATED_RAM_IN_USE_MIN, total // 4), int(total * SIMULATED_RAM_IN_USE_FRACTION))
    return max(0, total - in_use)


def metal_budget_rule(ram_total: int, wired_limit_mb: int | None = None) -> int:
    """macOS's default GPU working-set limit: 2/3 of RAM below 36 GB, 3/4 from 36 GB.

    Machines sold with 8-32 GB report 2/3 (a 16 GB M2 Air: 10.7 GiB); those
    with 36 GB and more report 3/4 (36 GB M3 Pro: 27 GiB). The sysctl
    iogpu.wired_limit_mb, when set (non-zero), replaces the default.
    """
    if wired_limit_mb:
        return wired_limit_mb * MiB
    if ram_total < 36 * GiB:
        return ram_total * 2 // 3
    return ram_total * 3 // 4


def assumed_backend(gpus: list[GpuInfo], *, unified: bool) -> BackendInfo:
    """The backend a simulated machine would run: the one its GPU wants."""
    if unified or any(g.vendor == "apple" for g in gpus):
        return BackendInfo(compiled=["CPU", "Metal"], gpu_offload=True)
    vendors = {g.vendor for g in gpus}
    if "nvidia" in vendors:
        return BackendInfo(compiled=["CPU", "CUDA"], gpu_offload=True)
    if vendors & {"amd", "intel"}:
        return BackendInfo(compiled=["CPU", "Vulkan"], gpu_offload=True)
    return BackendInfo(compiled=["CPU"], gpu_offload=False)
