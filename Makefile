# daskflow developer entry points. `make example` and `make test` are the README's quickstart.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXAMPLE ?= examples/etl-mapreduce.yaml

.PHONY: venv example test lint unit e2e testenv bench clean

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

example: venv
	$(BIN)/daskflow run $(EXAMPLE)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

testenv:
	bash hack/install-test-deps.sh

# The whole suite: lint, types, layers, then every test (the Kubernetes tests
# start their own etcd and kube-apiserver on loopback; the e2e tests start a
# real single-node cluster with hack/cluster.sh and stop it at the end).
test: venv lint testenv
	$(BIN)/pytest $(PYTEST_ARGS)

# Without a cluster, docker or root; a test whose program (lua, promtool, ...) is missing is
# skipped with the reason (`make test` runs it: testenv installs them).
unit: venv
	$(BIN)/pytest -m "not kube and not docker and not e2e" --skip-missing-tools $(PYTEST_ARGS)

# The end-to-end tier alone: a real single-node cluster (hack/cluster.sh; root), the project's
# image and chart, real pods. DASKFLOW_E2E_KEEP=1 keeps the cluster for a quicker rerun.
e2e: venv testenv
	$(BIN)/pytest -m e2e tests/e2e $(PYTEST_ARGS)

bench: venv
	$(BIN)/python benchmarks/bench_engine.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
