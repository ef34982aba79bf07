# Everything a fresh machine needs is installed from here: `make run` and `make test`
# create .venv when it is missing and (re)install whenever pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.graftflow-installed
CONFIG ?= pipelines/configs/digits.yaml
PYTEST_ARGS ?=

.PHONY: install run test test-fast bench experiment-ssl lint-imports clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/graft run $(CONFIG)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m tests.benchmarks $(BENCH_ARGS)

experiment-ssl: $(STAMP)
	$(PY) -m pipelines.experiments.ssl_vs_scratch

lint-imports: $(STAMP)
	$(VENV)/bin/lint-imports

clean:
	rm -rf .graft build *.egg-info
