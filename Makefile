# Two entry points: `make demo` and `make test`. Both bootstrap .venv idempotently.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch is installed first with an upper bound so that pip takes the local CPU build
# (an unbounded `torch` would pull a multi-GB CUDA build from PyPI).
TORCH_SPEC ?= torch>=2.4,<2.14
STAMP_BASE := $(VENV)/.stamp-base
STAMP_TEST := $(VENV)/.stamp-test
OUT ?= runs/demo
PYTEST_ARGS ?=

.PHONY: install install-test demo test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP_BASE): pyproject.toml | $(PY)
	$(PIP) install --quiet "$(TORCH_SPEC)"
	$(PIP) install --quiet -e .
	@touch $@

$(STAMP_TEST): $(STAMP_BASE) pyproject.toml
	$(PIP) install --quiet -e ".[test]"
	@touch $@

install: $(STAMP_BASE)

install-test: $(STAMP_TEST)

demo: $(STAMP_BASE)
	$(VENV)/bin/divergent distill --quick --out $(OUT)

test: $(STAMP_TEST)
	$(VENV)/bin/ruff check src tests benchmarks conftest.py
	$(VENV)/bin/ruff format --check src tests benchmarks conftest.py
	$(PY) -m pytest -n 2 --durations=15 $(PYTEST_ARGS)

lint: $(STAMP_TEST)
	$(VENV)/bin/ruff check src tests benchmarks conftest.py
	$(VENV)/bin/ruff format --check src tests benchmarks conftest.py

bench: $(STAMP_BASE)
	$(PIP) install --quiet -e ".[bench]"
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .hypothesis
