"""The llama.cpp build runs on any x86-64 CPU, whatever machine built it (scripts/llama_build.py).

The bundle (`make dist`) ships the same libraries the venv holds; installers/linux/build.sh
runs the same check on the bundle itself.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from app.core.machine import backends, llama_cpp_module
from tests.fixtures import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "installers"))
import check_portable

pytestmark = pytest.mark.skipif(
    not (sys.platform == "linux" and platform.machine() == "x86_64"),
    reason="the instruction check reads x86-64 Linux libraries",
)


@pytest.fixture(scope="module")
def lib_dir() -> Path:
    folder = backends.lib_dir(llama_cpp_module())
    if not backends.cpu_variant_files(folder):
        pytest.skip("this llama-cpp-python is a native build (LLAMA_BUILD=native): nothing portable to check")
    return folder


def cpu_flags() -> set[str]:
    text = Path("/proc/cpuinfo").read_text()
    line = next(line for line in text.splitlines() if line.startswith("flags"))
    return set(line.split(":", 1)[1].split())


@pytest.mark.slow
def test_core_libraries_and_every_variant_stay_within_their_instruction_level(lib_dir: Path) -> None:
    assert check_portable.problems(lib_dir) == []
    assert {"x64", "sse42", "haswell", "skylakex", "zen4"} <= set(backends.cpu_variant_files(lib_dir))


@pytest.mark.slow
def test_the_scan_sees_what_each_level_adds(lib_dir: Path) -> None:
    """The check can fail: AVX-512 code is found where it is, and only there."""
    zen4 = check_portable.scan(lib_dir / "libggml-cpu-zen4.so")
    haswell = check_portable.scan(lib_dir / "libggml-cpu-haswell.so")
    baseline = check_portable.scan(lib_dir / "libggml-cpu-x64.so")
    assert "avx512" in zen4 and ("%zmm" in zen4["avx512"] or "%k" in zen4["avx512"])
    assert "vex" in haswell and "avx512" not in haswell
    assert baseline == {}


def test_instruction_families_from_objdump_lines() -> None:
    line = "   8b4e7:\t{}"
    assert check_portable.families(line.format("vfmadd231ps %ymm1,%ymm2,%ymm3")) == {"vex"}
    assert check_portable.families(line.format("vmovdqa64 0x10(%rip),%zmm8")) == {"vex", "avx512"}
    assert check_portable.families(line.format("kmovw  %k1,%eax")) == {"avx512"}
    assert check_portable.families(line.format("pshufb %xmm1,%xmm0")) == {"sse3+"}
    assert check_portable.families(line.format("shlx   %rax,%rdx,%rax")) == {"sse3+"}
    # SSE2 and plain x86-64 are the baseline, including look-alikes of later mnemonics.
    for baseline in ("andnps %xmm4,%xmm1", "pmullw %xmm1,%xmm2", "pextrw $0x1,%xmm0,%eax",
                     "movdqu (%rax),%xmm0", "mov    %rax,%rbx", "verr   %ax"):
        assert check_portable.families(line.format(baseline)) == set(), baseline
    assert check_portable.families("0000000000001000 <_init>:") == set()


def test_the_variant_llama_cpp_chose_needs_only_what_this_cpu_has(lib_dir: Path) -> None:
    loaded = backends.state()
    assert loaded is not None and loaded.dynamic and loaded.cpu_variant in backends.X86_VARIANTS
    needs = backends.X86_VARIANTS[loaded.cpu_variant]
    missing = [f for f in needs if not set(backends.CPUINFO_FLAGS[f]) <= cpu_flags()]
    assert missing == []
    # ...and it is the best one: no variant that also runs here needs a strict superset of its features.
    # AMX counts only where the kernel enables its tile data (CPUID alone can report it in a VM).
    runnable = [name for name, feats in backends.X86_VARIANTS.items()
                if all(set(backends.CPUINFO_FLAGS[f]) <= cpu_flags() for f in feats)
                and (backends.amx_usable() or not any(f.startswith("AMX") for f in feats))]
    assert not [name for name in runnable if set(backends.X86_VARIANTS[name]) > set(needs)]


def hw_json(**env: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "app", "hw", "--json"], capture_output=True, text=True,
                         timeout=120, env={**os.environ, **env}, check=True)
    return json.loads(out.stdout)


@pytest.mark.slow
def test_an_avx2_only_machine_runs_the_haswell_variant() -> None:
    backend = hw_json(CAMELID_CPU_VARIANT="haswell")["backend"]
    assert backend["available"] and backend["cpu_variant"] == "haswell" and backend["cpu_variant_forced"]


@pytest.mark.slow
def test_a_variant_that_does_not_exist_is_one_sentence() -> None:
    data = hw_json(CAMELID_CPU_VARIANT="pentium3")
    assert not data["backend"]["available"]
    (note,) = [n for n in data["notes"] if "CAMELID_CPU_VARIANT" in n]
    assert "pentium3 names no CPU variant" in note and "unset it" in note and "haswell" in note
