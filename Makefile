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
CMAKE_ARGS_cpu :=
CMAKE_ARGS_metal := -DGGML_METAL=on
CMAKE_ARGS_cuda := -DGGML_CUDA=on
CMAKE_ARGS_vulkan := -DGGML_VULKAN=on

QT_ENV := QT_QPA_PLATFORM=offscreen
TEST_ENV := $(QT_ENV) HF_HUB_DISABLE_XET=1 HF_HUB_DISABLE_TELEMETRY=1 CAMELID_TEST_MODEL=$(abspath $(TEST_MODEL))

.PHONY: run test lint bench gpu sysdeps clean help starter dist screenshots

help:
	@echo "make run    install everything and open Camelid"
	@echo "make test   install everything plus test tools and run the test suite"
	@echo "make gpu    rebuild llama-cpp-python for this machine's GPU (BACKEND=cuda|metal|vulkan to force)"
	@echo "make lint   ruff"
	@echo "make bench  run bench/ and refresh docs/BENCHMARKS.md"
	@echo "make screenshots  refresh docs/screenshots/ (each page rendered offscreen with demo state)"
	@echo "make dist   build the installable app for this OS and self-test the frozen binary"

# The stamp depends on pyproject.toml so a dependency change reinstalls.
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip wheel setuptools
	@echo "llama.cpp backend: $(RESOLVED_BACKEND)"
	@if [ "$(RESOLVED_BACKEND)" = cpu ]; then \
		$(PIP) install "llama-cpp-python==$(LLAMA_VERSION)"; \
	else \
		CMAKE_ARGS="$(CMAKE_ARGS_$(RESOLVED_BACKEND))" $(PIP) install --no-cache-dir \
			--no-binary llama-cpp-python "llama-cpp-python==$(LLAMA_VERSION)"; \
	fi
	$(PIP) install --quiet -e ".[test]"
	@touch $@

$(TEST_MODEL): scripts/fetch_starter.py
	$(PYTHON) scripts/fetch_starter.py --dest $(TEST_MODEL)
	@touch $@

starter: $(VENV)/.installed $(TEST_MODEL)
	$(PY) -m app starter --install-from $(TEST_MODEL)

sysdeps:
	@sh scripts/qt_sysdeps.sh

run: sysdeps starter
	$(PY) -m app gui

test: sysdeps $(VENV)/.installed $(TEST_MODEL)
	$(TEST_ENV) $(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check app tests bench scripts

# Each page of the desktop app, rendered offscreen with demo state (a simulated RTX 4090).
SCREENSHOT_PAGES := hardware chat models wizard
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
	case $$backend in cuda) args="-DGGML_CUDA=on";; metal) args="-DGGML_METAL=on";; vulkan) args="-DGGML_VULKAN=on";; cpu) args="";; \
		*) echo "Unknown BACKEND=$$backend (use cuda, metal, vulkan or cpu)"; exit 1;; esac; \
	echo "Rebuilding llama-cpp-python $(LLAMA_VERSION) for $$backend"; \
	CMAKE_ARGS="$$args" $(PIP) install --force-reinstall --no-cache-dir --no-deps \
		--no-binary llama-cpp-python "llama-cpp-python==$(LLAMA_VERSION)"
	$(PY) -m app hw

clean:
	rm -rf $(VENV) build dist .pytest_cache .ruff_cache
