# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch first, from its CPU build: anything installed later must not swap it for a CUDA build.
TORCH := torch==2.13.0

.PHONY: install demo test lint clean

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -c requirements.lock $(TORCH) -e '.[dev,bench]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/fvcall demo --no-window --out fvcall-demo.mp4

test: install
	$(PY) -m pytest -q

LINT_PATHS := codec models peer benchmarks tests

lint: install
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

clean:
	rm -rf $(VENV) fvcall-demo.mp4 .pytest_cache
