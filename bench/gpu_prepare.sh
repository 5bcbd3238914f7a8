#!/bin/sh
# Prepare what bench/gpu_check.sh needs on a CUDA machine that can fetch nothing:
# llama-cpp-python's sdist without the parts its build never reads (vocabulary
# test files, docs: 74 MB -> under the 64 MiB a device run may carry), and the
# pure-Python wheels Camelid's planner needs beyond what such a machine has.
# Run here (PyPI reachable), then carry .cache/gpu to the CUDA machine.
# Usage: sh bench/gpu_prepare.sh
set -eu
cd "$(dirname "$0")/.."
VERSION=0.3.36
PREP=.cache/gpu
PIP=${PIP:-.venv/bin/python -m pip}
rm -rf "$PREP/sdist" "$PREP/wheels"
mkdir -p "$PREP/sdist" "$PREP/wheels"
$PIP download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$PREP/sdist"
tar -C "$PREP/sdist" -xzf "$PREP/sdist/llama_cpp_python-$VERSION.tar.gz"
SRC="$PREP/sdist/llama_cpp_python-$VERSION"
# The build reads none of these: git history, vocabulary test files, docs, benchmark
# results, the web UI's sources and test media.
rm -rf "$SRC/.git" "$SRC/vendor/llama.cpp/models" "$SRC/vendor/llama.cpp/docs" "$SRC/vendor/llama.cpp/media" \
       "$SRC/vendor/llama.cpp/benches" "$SRC/vendor/llama.cpp/tools/ui" "$SRC/vendor/llama.cpp/gguf-py/tests" \
       "$SRC/docs" "$SRC/examples"
find "$SRC" -type f \( -name '*.mp4' -o -name '*.mp3' -o -name '*.jpeg' -o -name '*.jpg' -o -name '*.webp' \) -delete
tar -C "$PREP/sdist" -czf "$PREP/llama_cpp_python-$VERSION-stripped.tar.gz" "llama_cpp_python-$VERSION"
rm -rf "$PREP/sdist"
# Pure-Python wheels (any Python 3); the CUDA image already has numpy, jinja2, psutil,
# pyyaml, nvidia-ml-py, scikit-build-core, cmake and ninja.
$PIP download --quiet --no-deps --only-binary :all: -d "$PREP/wheels" \
    "diskcache>=5.6" "gguf>=0.17" "platformdirs>=4.0"
du -sh "$PREP"
