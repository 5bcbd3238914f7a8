#!/bin/sh
# The fit engine's GPU check, on a CUDA machine with no network (under 10 minutes):
# builds llama-cpp-python with CUDA (Camelid's portable flags plus GGML_CUDA, for
# this GPU's architecture only) into its own environment, then plans and loads
# SmolLM2 and the wide synthetic models fully and partly offloaded and writes
# plan vs llama.cpp per device to OUT/gpu_check.json (bench/gpu_check.py).
# Needs .cache/gpu from bench/gpu_prepare.sh. Put the numbers in docs/BENCHMARKS.md.
# Usage: sh bench/gpu_check.sh [OUT_DIR]
set -eu
cd "$(dirname "$0")/.."
VERSION=0.3.36
PREP=.cache/gpu
OUT_DIR=${1:-${OUT:-build/gpu-check}}
PY=${PY:-python3}
mkdir -p "$OUT_DIR"
started=$(date +%s)

# Where the CUDA toolkit comes from: nvcc on PATH, the usual install folder, or
# the nvidia-cuda-nvcc wheel inside this Python.
NVCC=$(command -v nvcc || true)
[ -z "$NVCC" ] && [ -x /usr/local/cuda/bin/nvcc ] && NVCC=/usr/local/cuda/bin/nvcc
if [ -z "$NVCC" ]; then
    NVCC=$($PY -c "import nvidia.cuda_nvcc, pathlib; print(next(pathlib.Path(nvidia.cuda_nvcc.__path__[0]).rglob('bin/nvcc')))" 2>/dev/null || true)
fi
if [ -z "$NVCC" ]; then
    echo "No CUDA toolkit found (nvcc not on PATH, not in /usr/local/cuda, no nvidia-cuda-nvcc wheel)."; exit 1
fi
echo "CUDA toolkit: $NVCC, $("$NVCC" --version | tail -1)" | tee "$OUT_DIR/toolkit.txt"
export CUDACXX="$NVCC" PATH="$(dirname "$NVCC"):$PATH"
ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '.' || true)
ARCH=${ARCH:-90}
echo "GPU: $(nvidia-smi -L 2>/dev/null | head -1), CUDA architecture $ARCH" | tee -a "$OUT_DIR/toolkit.txt"

# Its own environment: a --target folder on top of this Python, which already has
# the build tools (scikit-build-core, cmake, ninja) and numpy.
SITE=$PREP/site-cuda
if [ ! -f "$SITE/.built" ]; then
    rm -rf "$SITE"
    ARGS="$($PY scripts/llama_build.py --backend cuda --print-args) -DCMAKE_CUDA_ARCHITECTURES=$ARCH"
    echo "Building llama-cpp-python $VERSION with CMAKE_ARGS=$ARGS"
    CMAKE_ARGS="$ARGS" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) $PY -m pip install --quiet --no-index \
        --no-build-isolation --no-deps --no-cache-dir --target "$SITE" \
        "$PREP/llama_cpp_python-$VERSION-stripped.tar.gz" > "$OUT_DIR/build.log" 2>&1 \
        || { tail -30 "$OUT_DIR/build.log"; exit 1; }
    $PY -m pip install --quiet --no-index --no-deps --target "$SITE" "$PREP"/wheels/*.whl
    touch "$SITE/.built"
fi
echo "built in $(( $(date +%s) - started )) s"
PYTHONPATH="$SITE:." $PY bench/gpu_check.py "$OUT_DIR/gpu_check.json"
echo "done in $(( $(date +%s) - started )) s: $OUT_DIR/gpu_check.json"
