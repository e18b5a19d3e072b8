# Set-up and the two main jobs. `make demo` and `make test` work on a fresh Debian 12 / Python 3.11 machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch: the CPU build 2.13.0 first, so nothing pulls a multi-GB CUDA build (pyproject admits 2.13).
TORCH  ?= torch==2.13.0
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO   ?= demo

.PHONY: demo test test-fast install install-dev system-deps lint clean

## Mesa's EGL + llvmpipe for headless OpenGL (moderngl backend="egl"); skipped when already present.
system-deps:
	@if ! ldconfig -p | grep -q 'libEGL_mesa.so' || ! ls /usr/lib/*/dri/swrast_dri.so >/dev/null 2>&1; then \
		echo "installing libegl1 libgl1-mesa-dri (apt)"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq libegl1 libgl1-mesa-dri >/dev/null; \
	fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: system-deps $(BIN)/python
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[detect]"

install-dev: install
	$(BIN)/pip install -q -e ".[dev]"

## The main job on the bundled default model: a small dataset, checked, with a contact sheet to look at.
DEMO_N ?= 512
demo: install
	$(BIN)/synthface doctor
	rm -rf $(DEMO)/shards
	$(BIN)/synthface generate --n $(DEMO_N) --out $(DEMO)/shards --size 200 --shard-size 128 --seed 0
	$(BIN)/synthface verify $(DEMO)/shards
	$(BIN)/synthface info $(DEMO)/shards
	$(BIN)/synthface preview $(DEMO)/shards --out $(DEMO)/preview.png --count 12

## The whole test suite (the same command .ci/run uses).
test: install-dev
	$(BIN)/python -m pytest

test-fast: install-dev  # the suite without the tests marked slow (DDP, Ray, kill -9, training to a target)
	$(BIN)/python -m pytest -m "not slow"

lint: install-dev
	$(BIN)/ruff check synthface tests bfm_assets benchmarks

clean:
	rm -rf $(VENV) $(DEMO) dist build
