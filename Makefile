# Single entry point. Every target creates (or reuses) the pinned virtual environment itself.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROFILE ?= default

.PHONY: venv test test-all book notebooks smoke-notebooks bench clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

## make test — the default test suite (a few minutes on 2 CPU cores)
test: venv
	OMP_NUM_THREADS=2 $(PY) -m pytest -q

## make test-all — including tests marked slow
test-all: venv
	$(PY) -m pytest -q -m "not gpu"

bench: venv
	$(PY) benchmarks/bench_ot.py

clean:
	rm -rf _build
