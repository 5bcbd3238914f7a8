"""Build llama-cpp-python once per set of build flags, and install it into a virtual environment.

Every Camelid target (make run, make test, make dist, the installers) uses one
build of llama.cpp, made for distribution the way llama.cpp's own releases are:

- portable (the default): GGML_NATIVE=OFF, GGML_BACKEND_DL=ON and
  GGML_CPU_ALL_VARIANTS=ON: one CPU library per instruction level (x64, sse42,
  haswell, skylakex, zen4...), the best one for the running CPU loaded at start
  (app/core/machine/backends.py). A build made on an AVX-512 machine runs on an
  AVX2 laptop. On macOS, where dynamic backends are untested here, portable means
  GGML_NATIVE=OFF (the compiler's Apple M1 baseline) with Metal linked in.
- native: GGML_NATIVE=ON, every instruction the build machine has and no others
  (for bench/bench_engine.py's portable-vs-native ratio; never shipped).

RPC (GGML_RPC=ON, RDMA off so nothing links libibverbs) is on in both, for
Camelid's multi-machine split.

pip keeps a wheel cache that ignores CMAKE_ARGS, so pip's cache is never used
here: wheels are kept in .cache/wheels/<key>/, keyed by version, flags and
platform, and a change of flags builds a new one (10-15 minutes on two cores).

Usage: python scripts/llama_build.py --python .venv/bin/python [--backend cpu|cuda|metal|vulkan]
       [--build portable|native] [--print-args]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

VERSION = "0.3.36"
ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "wheels"

RPC = ["-DGGML_RPC=ON", "-DGGML_RPC_RDMA=OFF"]
# GGML_BACKEND_DIR puts the backend libraries in llama_cpp/lib, beside libllama, where
# Camelid loads them from (without it they land in site-packages/bin). STRING, so CMake
# keeps it relative to the install prefix instead of making it absolute.
DISPATCH = ["-DGGML_NATIVE=OFF", "-DGGML_BACKEND_DL=ON", "-DGGML_CPU_ALL_VARIANTS=ON",
            "-DGGML_BACKEND_DIR:STRING=llama_cpp/lib"]
BACKENDS = {"cpu": [], "cuda": ["-DGGML_CUDA=ON"], "metal": ["-DGGML_METAL=ON"],
            "vulkan": ["-DGGML_VULKAN=ON"]}
# Architectures ggml builds CPU variants for (ggml/src/CMakeLists.txt).
VARIANT_ARCHES = {"x86_64", "amd64", "aarch64", "arm64"}


def cmake_args(backend: str, build: str, *, system: str | None = None, machine: str | None = None) -> list[str]:
    """The CMAKE_ARGS for one build."""
    system = (system or platform.system()).lower()
    machine = (machine or platform.machine()).lower()
    if build == "native":
        args = ["-DGGML_NATIVE=ON"]
    elif system == "darwin" or machine not in VARIANT_ARCHES:
        args = ["-DGGML_NATIVE=OFF"]
    else:
        args = list(DISPATCH)
    return [*args, *RPC, *BACKENDS[backend]]


def build_key(args: list[str]) -> str:
    text = json.dumps({"version": VERSION, "args": args, "system": platform.system(),
                       "machine": platform.machine()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def installed_key(python: Path) -> str | None:
    marker = python.parent.parent / ".llama-build"
    return marker.read_text().strip() if marker.is_file() else None


def importable(python: Path) -> bool:
    probe = subprocess.run([str(python), "-c", "import llama_cpp"], capture_output=True, timeout=120)
    return probe.returncode == 0


def build_wheel(python: Path, args: list[str], dest: Path) -> Path:
    """pip wheel llama-cpp-python with these flags into dest (atomically: a killed build leaves nothing)."""
    env = dict(os.environ, CMAKE_ARGS=" ".join(args), PIP_NO_CACHE_DIR="1")
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    print(f"Building llama-cpp-python {VERSION} with CMAKE_ARGS={' '.join(args)}", flush=True)
    print("(10-15 minutes on two cores; the wheel is kept in .cache/wheels for the next time)", flush=True)
    partial = dest.parent / (dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        subprocess.run([str(python), "-m", "pip", "wheel", "--disable-pip-version-check", "--no-deps",
                        "--no-cache-dir", "--no-binary", "llama-cpp-python", "-w", str(partial),
                        f"llama-cpp-python=={VERSION}"], env=env, check=True)
        (wheel,) = partial.glob("llama_cpp_python-*.whl")
        (partial / "build.json").write_text(json.dumps({"version": VERSION, "cmake_args": args}, indent=1))
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(partial, dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return dest / wheel.name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", type=Path, required=False, default=Path(".venv/bin/python"))
    parser.add_argument("--backend", choices=sorted(BACKENDS), default="cpu")
    parser.add_argument("--build", choices=("portable", "native"), default="portable")
    parser.add_argument("--print-args", action="store_true", help="print the CMAKE_ARGS and exit")
    opts = parser.parse_args(argv)
    args = cmake_args(opts.backend, opts.build)
    if opts.print_args:
        print(" ".join(args))
        return 0
    key = build_key(args)
    if installed_key(opts.python) == key and importable(opts.python):
        return 0
    folder = CACHE / key
    wheels = sorted(folder.glob("llama_cpp_python-*.whl")) if folder.is_dir() else []
    wheel = wheels[0] if wheels else build_wheel(opts.python, args, folder)
    subprocess.run([str(opts.python), "-m", "pip", "install", "--disable-pip-version-check", "--quiet",
                    "--no-deps", "--force-reinstall", "--no-cache-dir", str(wheel)], check=True)
    (opts.python.parent.parent / ".llama-build").write_text(key + "\n")
    print(f"llama-cpp-python {VERSION} installed ({opts.build}, {opts.backend}; wheel {wheel.relative_to(ROOT)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
