# Single entry point. Every target creates (or reuses) the pinned virtual environment itself.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROFILE ?= default

.PHONY: venv test test-all book smoke-book notebooks smoke-notebooks smoke study bench bench-step gpu-check gpu-campaign clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

## make test — the default test suite (a few minutes on 2 CPU cores)
test: venv
	OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q

## make test-all — including tests marked slow
test-all: venv
	$(PY) -m pytest -q -m "not gpu"

## make book — execute every notebook at the default profile (papermill), then build _build/html
book: venv
	$(PY) -m gca.book all --profile $(PROFILE)

## make smoke-book — the same at the smoke profile, warnings as errors (used by CI)
smoke-book: venv
	$(PY) -m gca.book all --profile smoke

notebooks: venv
	$(PY) -m gca.book execute --profile $(PROFILE)

smoke-notebooks: venv
	$(PY) -m gca.book execute --profile smoke

## make smoke — pretrain + evaluate at the smoke profile (under a minute on 2 cores)
smoke: venv
	rm -rf runs/smoke
	$(PY) -m gca pretrain --method gca-uot --dataset digits --profile smoke --out runs/smoke --no-progress
	$(PY) -m gca evaluate runs/smoke --no-progress

## make study — the experiments' missing runs for PROFILE=cpu (results/cpu; about an hour on 2 cores)
study: venv
	$(PY) -m gca.experiments run --profile $(if $(filter default,$(PROFILE)),cpu,$(PROFILE))

## make bench — every benchmark (speed and memory tables under benchmarks/results/)
bench: venv
	$(PY) benchmarks/bench_ot.py
	$(PY) benchmarks/bench_losses.py
	$(PY) benchmarks/bench_augment.py
	$(MAKE) bench-step

bench-step: venv
	OMP_NUM_THREADS=1 $(PY) benchmarks/bench_step.py --threads 1 --out benchmarks/results/step

## make gpu-check — on a machine with a GPU (< 8 min): benchmarks/results/gpu_check-<device>.*
gpu-check:
	benchmarks/gpu_check.sh

## make gpu-campaign — once, on a machine with a GPU (< 8 min): cost table, step times, INCE vs GCA-INCE
## vs GCA-UOT pretraining on full CIFAR-10 with probe; writes results/gpu/campaign.{json,md} (see the script)
gpu-campaign:
	$(if $(wildcard $(PY)),$(PY),python3) benchmarks/gpu_campaign.py --out results/gpu --commit $$(git rev-parse HEAD 2>/dev/null || echo unknown)

clean:
	rm -rf _build build
