# Camelid: the two commands are `make run` and `make test`; everything they
# need (venv, llama-cpp-python build, starter/test model, Qt system libraries)
# is installed here, idempotently.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
LLAMA_VERSION := 0.3.36
# Where `make test` keeps the starter model between runs.
CACHE := .cache
TEST_MODEL := $(CACHE)/models/SmolLM2-135M-Instruct.Q4_1.gguf
# The embedding test model: all-MiniLM-L6-v2 converted to GGUF (scripts/embedder_gguf.py).
TEST_EMBEDDER := $(CACHE)/models/all-MiniLM-L6-v2-F16.gguf

# One build of llama.cpp serves every target (run, test, dist): the portable
# one, with runtime CPU dispatch (one CPU library per instruction level, the
# best chosen at start) and RPC; see scripts/llama_build.py. LLAMA_BUILD=native
# builds for this CPU only (bench/bench_engine.py compares the two).
LLAMA_BUILD ?= portable
# BACKEND=auto|cpu|cuda|metal|vulkan picks the llama.cpp build.
# auto: CUDA when an NVIDIA GPU *and* the CUDA toolkit (nvcc) are present,
# Metal on Apple Silicon (llama.cpp turns it on by itself), else CPU.
BACKEND ?= auto
ifeq ($(BACKEND),auto)
  ifneq ($(shell command -v nvcc >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes),)
    RESOLVED_BACKEND := cuda
  else ifeq ($(shell uname -s)-$(shell uname -m),Darwin-arm64)
    RESOLVED_BACKEND := metal
  else
    RESOLVED_BACKEND := cpu
  endif
else
  RESOLVED_BACKEND := $(BACKEND)
endif
QT_ENV := QT_QPA_PLATFORM=offscreen
TEST_ENV := $(QT_ENV) HF_HUB_DISABLE_XET=1 HF_HUB_DISABLE_TELEMETRY=1 CAMELID_TEST_MODEL=$(abspath $(TEST_MODEL)) CAMELID_TEST_EMBEDDER=$(abspath $(TEST_EMBEDDER))

.PHONY: run test lint bench gpu sysdeps clean help starter dist screenshots

help:
	@echo "make run    install everything and open Camelid"
	@echo "make test   install everything plus test tools and run the test suite"
	@echo "make gpu    rebuild llama-cpp-python for this machine's GPU (BACKEND=cuda|metal|vulkan to force)"
	@echo "make lint   ruff"
	@echo "make bench  run bench/ and refresh docs/BENCHMARKS.md"
	@echo "make screenshots  refresh docs/screenshots/ (each page rendered offscreen with demo state)"
	@echo "make dist   build the installable app for this OS and self-test the frozen binary"

# The stamp depends on pyproject.toml so a dependency change reinstalls. The
# llama-cpp-python wheel is built once per set of flags and kept in .cache/wheels.
$(VENV)/.installed: pyproject.toml scripts/llama_build.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip wheel setuptools
	@echo "llama.cpp: $(LLAMA_BUILD) build, backend $(RESOLVED_BACKEND)"
	$(PY) scripts/llama_build.py --python $(PY) --backend $(RESOLVED_BACKEND) --build $(LLAMA_BUILD)
	$(PIP) install --quiet -e ".[test]"
	@touch $@

$(TEST_MODEL): scripts/fetch_starter.py
	$(PYTHON) scripts/fetch_starter.py --dest $(TEST_MODEL)
	@touch $@

$(TEST_EMBEDDER): $(VENV)/.installed scripts/embedder_gguf.py
	$(PY) scripts/embedder_gguf.py --dest $(TEST_EMBEDDER)

starter: $(VENV)/.installed $(TEST_MODEL)
	$(PY) -m app starter --install-from $(TEST_MODEL)

# Qt's system libraries: what PySide6's xcb plugin links (ldd on the installed
# plugin, so after the venv), and for the tests Xvfb and xauth too.
.PHONY: sysdeps-test
sysdeps: $(VENV)/.installed
	@PY=$(PY) sh scripts/qt_sysdeps.sh
sysdeps-test: $(VENV)/.installed
	@PY=$(PY) sh scripts/qt_sysdeps.sh --with-xvfb

run: sysdeps starter
	$(PY) -m app gui

# The whole suite with the CPU code llama.cpp picks here, then the model tests
# again with the kernels an AVX2-only CPU runs (haswell): greedy replies round
# differently there, and no test may depend on it.
test: sysdeps-test $(VENV)/.installed $(TEST_MODEL) $(TEST_EMBEDDER)
	$(TEST_ENV) $(PY) -m pytest -q $(PYTEST_ARGS)
	@if $(PY) -c "import sys; from app.core.machine import probe_backend; sys.exit('haswell' not in probe_backend().cpu_variants)"; then \
		echo "Model tests again with the AVX2-only CPU variant (CAMELID_CPU_VARIANT=haswell):"; \
		$(TEST_ENV) CAMELID_CPU_VARIANT=haswell $(PY) -m pytest -q tests/core/chat tests/core/fit/test_memory.py; \
	fi

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check app tests bench scripts installers
	$(VENV)/bin/mypy

# Each page of the desktop app, rendered offscreen with demo state (a simulated RTX 4090).
SCREENSHOT_PAGES := hardware chat models wizard server documents machines
screenshots: $(VENV)/.installed
	@mkdir -p docs/screenshots
	@for page in $(SCREENSHOT_PAGES); do \
		$(QT_ENV) $(PY) -m app gui --screenshot docs/screenshots/$$page.png --page $$page || exit 1; \
	done
	$(QT_ENV) $(PY) -m app gui --screenshot docs/screenshots/chat-dark.png --page chat --theme dark

bench: $(VENV)/.installed $(TEST_MODEL)
	$(TEST_ENV) $(PY) bench/run_all.py

# The double-click app for this OS (Linux: folder + tar.gz + AppImage; macOS: .app + .dmg).
# Windows builds with installers/windows/build.ps1. The frozen binary's
# --self-test must pass or the target fails.
$(VENV)/.packaging: $(VENV)/.installed
	$(PIP) install --quiet -e ".[packaging]"
	@touch $@

dist: sysdeps $(VENV)/.packaging $(TEST_MODEL)
	@case "$$(uname -s)" in \
		Linux) PY=$(PY) CAMELID_STARTER_MODEL=$(abspath $(TEST_MODEL)) sh installers/linux/build.sh;; \
		Darwin) PY=$(PY) CAMELID_STARTER_MODEL=$(abspath $(TEST_MODEL)) sh installers/macos/build.sh;; \
		*) echo "On Windows run installers\\windows\\build.ps1 in PowerShell."; exit 1;; \
	esac

# Rebuild llama-cpp-python with GPU offload for this machine.
gpu:
	@test -x $(PY) || $(MAKE) $(VENV)/.installed
	@backend="$(BACKEND)"; if [ "$$backend" = auto ]; then \
		if command -v nvcc >/dev/null 2>&1; then backend=cuda; \
		elif [ "$$(uname -s)" = Darwin ]; then backend=metal; \
		elif command -v glslc >/dev/null 2>&1; then backend=vulkan; \
		else echo "No GPU toolkit found: install the CUDA toolkit (NVIDIA) or the Vulkan SDK (AMD/Intel), then run make gpu again."; exit 1; fi; fi; \
	case $$backend in cuda|metal|vulkan|cpu) ;; \
		*) echo "Unknown BACKEND=$$backend (use cuda, metal, vulkan or cpu)"; exit 1;; esac; \
	echo "Rebuilding llama-cpp-python $(LLAMA_VERSION) for $$backend"; \
	$(PY) scripts/llama_build.py --python $(PY) --backend $$backend --build $(LLAMA_BUILD)
	$(PY) -m app hw

clean:
	rm -rf $(VENV) build dist .pytest_cache .ruff_cache
