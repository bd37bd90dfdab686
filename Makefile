# kubetasks developer commands. Every target installs what it needs by itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
CACHE ?= $(HOME)/.cache/kubetasks

.PHONY: help install lint test test-fast demo controlplane bench bench-queue crds clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed  ## virtualenv with the package and the dev tools

lint: install  ## ruff, mypy (strict) and the import-linter layering contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

controlplane: install  ## build etcd, kube-apiserver, kube-controller-manager and helm into $(CACHE)
	bash tests/controlplane/build.sh

test: install controlplane lint  ## everything: lint, then all test tiers against real Redis and a real control plane
	$(BIN)/pytest

test-fast: install  ## the tests that need only Redis
	$(BIN)/pytest -m 'not controlplane'

demo: install  ## the product end to end with embedded defaults
	$(PY) -m kubetasks.demo

bench-queue: install  ## the Redis work engine against Celery, RQ, Dramatiq, arq, SAQ, taskiq, streaq, huey
	$(PY) bench/queue_bench.py

bench: bench-queue  ## all benchmarks

clean:  ## remove the virtualenv and caches in the work tree (not $(CACHE))
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache bench/.venv
