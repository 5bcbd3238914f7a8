"""Hardware detection: the real machine through psutil, everything else faked at its boundary."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import psutil
import pytest

from app.core.errors import HardwareFileError
from app.core.machine import detect, detection, hardware, probes
from app.core.machine.hardware import GiB, HardwareProfile, MiB, metal_budget_rule
from app.core.machine.simulate import (
    find_gpu,
    preset_names,
    preset_profile,
    profile_from_file,
    simulate,
)
from tests.fixtures.fake_nvml import NVML_ERROR_DRIVER_NOT_LOADED, FakeGpu, FakeNvml


@pytest.fixture
def nvml(monkeypatch: pytest.MonkeyPatch):
    """Install a fake pynvml; the test fills in its GPUs."""
    fake = FakeNvml()

    def install() -> FakeNvml:
        monkeypatch.setitem(sys.modules, "pynvml", fake.module())
        return fake

    return fake, install


@pytest.fixture
def no_drm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty /sys/class/drm so this machine's real cards never leak into a test."""
    root = tmp_path / "drm"
    root.mkdir()
    monkeypatch.setattr(probes, "DRM_ROOT", root)
    return root


# --- this machine ----------------------------------------------------------------

def test_detect_reads_this_machine_truthfully() -> None:
    profile = detect()
    vm = psutil.virtual_memory()
    assert profile.ram.total_bytes == vm.total
    # available moves a little between two readings; 10% of RAM is plenty of slack
    assert abs(profile.ram.available_bytes - vm.available) < vm.total * 0.10
    assert profile.cpu.cores_logical == psutil.cpu_count(logical=True)
    assert profile.cpu.cores_physical == psutil.cpu_count(logical=False)
    assert profile.cpu.name and profile.cpu.name != "unknown CPU"
    assert profile.backend.available and "CPU" in profile.backend.compiled
    assert profile.disk_free_bytes and profile.disk_free_bytes > 0
    assert profile.simulated is None
    budgets = profile.budgets()
    assert budgets.ram_bytes == profile.ram.available_bytes - hardware.ram_reserve_bytes(vm.total)


def test_hw_json_has_the_documented_shape() -> None:
    data = detect().to_dict()
    for key in ("os", "arch", "cpu", "ram", "gpus", "unified_memory", "budgets", "backend", "notes"):
        assert key in data
    assert set(data["cpu"]) >= {"name", "cores_physical", "cores_logical", "features"}
    assert set(data["ram"]) == {"total_bytes", "available_bytes"}
    assert set(data["budgets"]) >= {"gpu_bytes", "ram_bytes"}
    assert set(data["backend"]) >= {"compiled", "gpu_offload"}
    json.dumps(data)  # serialisable as is


def test_cpu_features_come_from_cpuinfo_flags() -> None:
    flags = {"sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "pni"}
    assert probes.linux_cpu_features(flags) == ["SSE3", "SSE4_2", "AVX", "F16C", "FMA", "AVX2", "AVX512F"]
    assert probes.linux_cpu_features({"asimd", "asimddp", "i8mm"}) == ["NEON", "DOTPROD", "I8MM"]


# --- NVIDIA through a fake NVML -------------------------------------------------------

def test_no_nvidia_gpu(nvml, no_drm) -> None:
    fake, install = nvml
    install()
    profile = detect()
    assert [g for g in profile.gpus if g.vendor == "nvidia"] == []
    assert "init" in fake.calls and "shutdown" in fake.calls


def test_one_nvidia_gpu_uses_memory_info_v2(nvml, no_drm) -> None:
    fake, install = nvml
    fake.gpus = [FakeGpu("NVIDIA GeForce RTX 4070", total=12 * GiB, free=11 * GiB, free_v2=10 * GiB)]
    install()
    profile = detect()
    (gpu,) = profile.gpus
    assert (gpu.vendor, gpu.name, gpu.vram_total_bytes) == ("nvidia", "NVIDIA GeForce RTX 4070", 12 * GiB)
    assert gpu.vram_free_bytes == 10 * GiB  # v2, not v1's 11 GiB
    assert (gpu.driver, gpu.cuda_driver_version, gpu.compute_capability) == ("550.54.14", "12.4", "8.9")


def test_memory_info_falls_back_to_v1_on_old_drivers(nvml, no_drm) -> None:
    fake, install = nvml
    fake.has_v2 = False
    fake.gpus = [FakeGpu("Tesla T4", total=15 * GiB, free=14 * GiB)]
    install()
    assert detect().gpus[0].vram_free_bytes == 14 * GiB


def test_two_nvidia_gpus_and_the_cpu_only_build_is_called_out(nvml, no_drm) -> None:
    fake, install = nvml
    fake.gpus = [FakeGpu("NVIDIA GeForce RTX 3090", 24 * GiB, 23 * GiB),
                 FakeGpu("NVIDIA GeForce RTX 3090", 24 * GiB, 22 * GiB)]
    install()
    profile = detect()
    assert [g.index for g in profile.gpus] == [0, 1]
    # This machine's llama-cpp-python is a CPU build: the GPUs are listed but not budgeted.
    assert profile.backend.gpu_offload is False
    assert profile.budgets().gpus == []
    assert any("built for CPU only: run `make gpu`" in n for n in profile.notes)


def test_one_broken_gpu_does_not_hide_the_other(nvml, no_drm) -> None:
    fake, install = nvml
    fake.gpus = [FakeGpu("bad", 8 * GiB, 8 * GiB, broken=True), FakeGpu("NVIDIA L4", 24 * GiB, 23 * GiB)]
    install()
    profile = detect()
    assert [g.name for g in profile.gpus] == ["NVIDIA L4"]
    assert any("NVIDIA GPU 0 could not be read" in n for n in profile.notes)


def test_nvml_library_missing_is_a_note_not_a_crash(monkeypatch: pytest.MonkeyPatch, no_drm) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    profile = detect()
    assert profile.gpus == []
    assert any("nvidia-ml-py" in n for n in profile.notes)


def test_driver_not_loaded_is_a_note(nvml, no_drm) -> None:
    fake, install = nvml
    fake.init_error = NVML_ERROR_DRIVER_NOT_LOADED
    install()
    profile = detect()
    assert profile.gpus == []
    assert any("driver did not answer (Driver Not Loaded)" in n for n in profile.notes)


def test_a_crashing_probe_leaves_the_others_alone(monkeypatch: pytest.MonkeyPatch, nvml, no_drm) -> None:
    fake, install = nvml
    fake.gpus = [FakeGpu("NVIDIA GeForce RTX 4090", 24 * GiB, 23 * GiB)]
    install()

    def boom() -> None:
        raise OSError("no /proc here")

    monkeypatch.setattr(probes, "probe_cpu", boom)
    profile = detect()
    assert profile.cpu.name == "unknown CPU"
    assert profile.gpus[0].name == "NVIDIA GeForce RTX 4090"
    assert profile.ram.total_bytes == psutil.virtual_memory().total
    assert any(n.startswith("CPU could not be read (OSError") for n in profile.notes)


# --- AMD / Intel ---------------------------------------------------------------------

def _card(root: Path, name: str, vendor: str, **files: str) -> None:
    device = root / name / "device"
    device.mkdir(parents=True)
    (device / "vendor").write_text(vendor + "\n")
    for key, value in files.items():
        (device / key).write_text(value + "\n")


def test_drm_reports_amd_vram_and_intel_igpu(monkeypatch: pytest.MonkeyPatch, no_drm: Path, nvml) -> None:
    _, install = nvml
    install()
    _card(no_drm, "card0", "0x1002", device="0x744c", mem_info_vram_total=str(24 * GiB),
          mem_info_vram_used=str(1 * GiB), uevent="DRIVER=amdgpu\nPCI_ID=1002:744C")
    _card(no_drm, "card1", "0x8086", device="0x4680", uevent="DRIVER=i915")
    (no_drm / "card0-DP-1").mkdir()  # connectors are not cards
    monkeypatch.setattr(probes.platform, "system", lambda: "Linux")
    profile = detect()
    amd, intel = profile.gpus
    assert (amd.vendor, amd.vram_total_bytes, amd.vram_free_bytes, amd.driver) == ("amd", 24 * GiB, 23 * GiB, "amdgpu")
    assert (intel.vendor, intel.vram_total_bytes) == ("intel", None)
    assert any("Vulkan" in n and "make gpu BACKEND=vulkan" in n for n in profile.notes)


def test_nvidia_card_without_driver_is_reported(no_drm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    _card(no_drm, "card0", "0x10de", device="0x2684", uevent="DRIVER=nouveau")
    profile = detect()
    assert profile.gpus[0].vendor == "nvidia"
    assert any("driver did not answer through NVML" in n for n in profile.notes)


def test_windows_registry_adapters() -> None:
    class Key:
        def __init__(self, values: dict | None = None, subkeys: list[str] | None = None) -> None:
            self.values, self.subkeys = values or {}, subkeys or []

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            return None

    adapters = {
        "0000": {"DriverDesc": "NVIDIA GeForce RTX 4070", "MatchingDeviceId": r"pci\ven_10de&dev_2786",
                 "HardwareInformation.qwMemorySize": 12 * GiB, "DriverVersion": "32.0.15.6094"},
        "0001": {"DriverDesc": "AMD Radeon RX 6700 XT", "MatchingDeviceId": r"pci\ven_1002&dev_73df",
                 "HardwareInformation.MemorySize": (12 * GiB % 2**32 or 0xFFF00000).to_bytes(4, "little")},
        "0002": {"DriverDesc": "Microsoft Basic Display Adapter"},
    }
    root = Key(subkeys=[*adapters, "Properties"])

    def open_key(parent, name):
        return Key(values=adapters[name]) if parent is root else root

    def enum_key(key, i):
        if i >= len(key.subkeys):
            raise OSError("no more")
        return key.subkeys[i]

    def query(key, name):
        if name not in key.values:
            raise FileNotFoundError(name)
        return key.values[name], 0

    winreg = types.SimpleNamespace(HKEY_LOCAL_MACHINE=object(), OpenKey=open_key, EnumKey=enum_key,
                                   QueryValueEx=query)
    nvidia, amd = probes.probe_windows_registry(winreg)
    assert (nvidia.vendor, nvidia.vram_total_bytes, nvidia.driver) == ("nvidia", 12 * GiB, "32.0.15.6094")
    assert amd.vendor == "amd" and amd.vram_total_bytes == 0xFFF00000  # 32-bit field, as Windows stores it


# --- Apple Silicon, faked at sysctl and ctypes -------------------------------------------

class _CFunc:
    """A ctypes-function look-alike: callable, with settable restype/argtypes."""

    def __init__(self, fn) -> None:
        self.fn, self.restype, self.argtypes = fn, None, None

    def __call__(self, *args):
        return self.fn(*args)


def _fake_mac(monkeypatch: pytest.MonkeyPatch, sysctl: dict[str, str], working_set: int | Exception) -> None:
    monkeypatch.setattr(probes, "_sysctl", lambda name: sysctl.get(name))
    selector = 0x5E1

    def msg_send(device, sel):
        assert device == 0xDE71CE and sel == selector
        return working_set

    def load(path: str):
        if isinstance(working_set, Exception):
            raise working_set
        if path.endswith("libobjc.A.dylib"):
            return types.SimpleNamespace(sel_registerName=_CFunc(lambda name: selector),
                                         objc_msgSend=_CFunc(msg_send))
        if path.endswith("Metal"):
            return types.SimpleNamespace(MTLCreateSystemDefaultDevice=_CFunc(lambda: 0xDE71CE))
        return types.SimpleNamespace()

    monkeypatch.setattr(probes, "_load_library", load)
    monkeypatch.setattr(probes.platform, "system", lambda: "Darwin")
    monkeypatch.setattr(detection.platform, "system", lambda: "Darwin")
    monkeypatch.setitem(sys.modules, "pynvml", None)


M2_SYSCTL = {"hw.optional.arm64": "1", "machdep.cpu.brand_string": "Apple M2", "hw.memsize": str(16 * GiB),
             "hw.perflevel0.physicalcpu": "4", "hw.optional.arm.FEAT_DotProd": "1", "iogpu.wired_limit_mb": "0"}


def test_apple_metal_budget_from_recommended_working_set(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_mac(monkeypatch, M2_SYSCTL, working_set=11_453_251_584)
    profile = detect()
    assert profile.unified_memory and profile.apple is not None
    assert profile.apple.chip == "Apple M2"
    assert profile.apple.metal_budget_bytes == 11_453_251_584
    assert profile.apple.metal_budget_source == "recommendedMaxWorkingSetSize"
    assert profile.cpu.performance_cores == 4
    assert profile.cpu.features[:2] == ["NEON", "DOTPROD"]
    assert profile.gpus[-1].vendor == "apple"


def test_apple_budget_rule_when_metal_cannot_be_read(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_mac(monkeypatch, M2_SYSCTL, working_set=OSError("no Metal in this sandbox"))
    apple = probes.probe_apple(hardware.RamInfo(16 * GiB, 12 * GiB), notes := [])
    assert apple.metal_budget_bytes == 16 * GiB * 2 // 3
    assert apple.metal_budget_source == "rule"
    assert any("recommended working set could not be read" in n for n in notes)


def test_apple_wired_limit_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_mac(monkeypatch, {**M2_SYSCTL, "iogpu.wired_limit_mb": "15360"}, working_set=11_453_251_584)
    apple = probes.probe_apple(hardware.RamInfo(16 * GiB, 12 * GiB), notes := [])
    assert apple.metal_budget_bytes == 15 * GiB
    assert apple.metal_budget_source == "iogpu.wired_limit_mb"
    assert any("leave room for macOS" in n for n in notes)


def test_rosetta_is_warned_about(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_mac(monkeypatch, {**M2_SYSCTL, "sysctl.proc_translated": "1"}, working_set=11_453_251_584)
    apple = probes.probe_apple(hardware.RamInfo(16 * GiB, 12 * GiB), notes := [])
    assert apple.rosetta
    assert any("Rosetta" in n and "10x slower" in n for n in notes)


def test_intel_mac_has_no_unified_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_mac(monkeypatch, {"machdep.cpu.brand_string": "Intel(R) Core(TM) i9"}, working_set=0)
    assert probes.probe_apple(hardware.RamInfo(32 * GiB, 20 * GiB), []) is None


def test_metal_budget_rule() -> None:
    assert metal_budget_rule(16 * GiB) == 16 * GiB * 2 // 3
    assert metal_budget_rule(32 * GiB) == 32 * GiB * 2 // 3
    assert metal_budget_rule(36 * GiB) == 27 * GiB
    assert metal_budget_rule(128 * GiB) == 96 * GiB
    assert metal_budget_rule(16 * GiB, wired_limit_mb=12000) == 12000 * MiB


# --- budgets ---------------------------------------------------------------------

def test_budgets_take_the_documented_reserves() -> None:
    rtx = preset_profile("rtx-4090")
    b = rtx.budgets()
    assert b.gpus[0].budget_bytes == 24 * GiB - hardware.GPU_RESERVE_BYTES
    assert b.ram_bytes == rtx.ram.available_bytes - 4 * GiB  # 10% of 64 GiB capped at 4 GiB
    laptop = preset_profile("laptop-8gb-cpu")
    assert laptop.budgets().gpus == []
    assert laptop.budgets().ram.reserve_bytes == 1 * GiB  # 10% of 8 GiB raised to the 1 GiB floor


def test_unified_budget_is_one_pool_capped_by_free_memory() -> None:
    m2 = preset_profile("m2-air-16gb")
    (gpu,) = m2.budgets().gpus
    assert gpu.kind == "unified"
    assert gpu.budget_bytes == min(16 * GiB * 2 // 3, m2.budgets().ram_bytes)
    m2.ram.available_bytes = 6 * GiB  # many apps open: the GPU cannot have more than is free
    assert m2.budgets().gpus[0].budget_bytes == 6 * GiB - hardware.ram_reserve_bytes(16 * GiB)


# --- presets, files, flags ----------------------------------------------------------------

@pytest.mark.parametrize("name", preset_names())
def test_every_preset_round_trips_through_json(name: str, tmp_path: Path) -> None:
    profile = preset_profile(name)
    path = tmp_path / "hw.json"
    path.write_text(json.dumps(profile.to_dict()))
    again = profile_from_file(path)
    assert again.to_dict()["budgets"] == profile.to_dict()["budgets"]
    assert again.gpus == profile.gpus and again.cpu == profile.cpu and again.ram == profile.ram
    assert again.backend.compiled == profile.backend.compiled


def test_required_presets_exist() -> None:
    assert {"rtx-4090", "rtx-3060-12gb", "t4-16gb", "gtx-1650-4gb", "m2-air-16gb",
            "m3-max-128gb", "laptop-8gb-cpu"} <= set(preset_names())


def test_simulated_rtx_4090_and_m2_air() -> None:
    rtx = preset_profile("rtx-4090")
    assert rtx.gpus[0].name == "NVIDIA GeForce RTX 4090" and rtx.gpus[0].vram_total_bytes == 24 * GiB
    assert rtx.backend.compiled == ["CPU", "CUDA"] and rtx.backend.gpu_offload
    assert not rtx.unified_memory
    m2 = preset_profile("m2-air-16gb")
    assert m2.unified_memory and m2.backend.compiled == ["CPU", "Metal"]
    assert m2.apple.metal_budget_bytes == 16 * GiB * 2 // 3
    assert m2.ram.total_bytes == 16 * GiB


def test_hand_written_hardware_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({
        "ram": {"total_bytes": 32 * GiB},
        "gpus": [{"vendor": "nvidia", "name": "RTX 4070", "vram_total_bytes": 12 * GiB}],
    }))
    profile = profile_from_file(path)
    assert profile.backend.compiled == ["CPU", "CUDA"]  # what that machine would run
    assert profile.ram.available_bytes < 32 * GiB
    assert profile.budgets().gpus[0].budget_bytes == 12 * GiB - hardware.GPU_RESERVE_BYTES


@pytest.mark.parametrize("content, fragment", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"ram": {}}', "gives no RAM size"),
    ('{"ram": {"total_bytes": 1}, "gpus": [{"name": "x"}]}', "wrong kind"),
])
def test_bad_hardware_files_get_a_sentence(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(HardwareFileError, match=fragment) as err:
        profile_from_file(path)
    assert err.value.fix


def test_flags_describe_two_gpus_unified_and_named_cards() -> None:
    calls = []

    def fake_detect() -> HardwareProfile:
        calls.append(1)
        return preset_profile("laptop-8gb-cpu")

    two = simulate(detect=fake_detect, vram_gb=[24, 24], ram_gb=64)
    assert [g.vram_total_bytes for g in two.gpus] == [24 * GiB, 24 * GiB]
    assert len(two.budgets().gpus) == 2 and two.backend.compiled == ["CPU", "CUDA"]
    assert two.ram.total_bytes == 64 * GiB

    mac = simulate(detect=fake_detect, unified=True, ram_gb=36, gpu_name="Apple M3 Pro")
    assert mac.unified_memory and mac.apple.metal_budget_bytes == 27 * GiB
    assert mac.budgets().gpus[0].kind == "unified"

    card = simulate(detect=fake_detect, gpu_name="RTX 3060")
    assert card.gpus[0].name == "NVIDIA GeForce RTX 3060" and card.gpus[0].vram_total_bytes == 12 * GiB

    plain = simulate(detect=fake_detect)
    assert plain.simulated == "laptop-8gb-cpu"  # no flags: the detected profile, untouched
    assert len(calls) == 4


def test_flag_errors() -> None:
    with pytest.raises(HardwareFileError, match="no hardware preset"):
        simulate(detect=detect, preset="rtx-9999")
    with pytest.raises(HardwareFileError, match="does not know how much memory"):
        simulate(detect=lambda: preset_profile("laptop-8gb-cpu"), gpu_name="Voodoo 5")
    with pytest.raises(HardwareFileError, match="greater than zero"):
        simulate(detect=detect, vram_gb=[0])


def test_find_gpu_prefers_the_closest_name() -> None:
    assert find_gpu("RTX 4070")[0] == "NVIDIA GeForce RTX 4070"
    assert find_gpu("rtx 4070 ti")[0] == "NVIDIA GeForce RTX 4070 Ti"
    assert find_gpu("no such card") is None
