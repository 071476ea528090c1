# `make test` and `make demo` do all set-up themselves on a fresh machine: a venv in .venv with
# the package and its test extras, and the local control plane built from Go modules into a cache
# outside the repo (hack/build-control-plane.sh; rebuilt only when hack/versions.env changes).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: all venv control-plane tools lint typecheck test test-fast test-slow bench demo crds clean

all: test

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11+ or run make PYTHON=python3"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@bash hack/install-krb5.sh
	$(PY) -m pip install --quiet -e '.[test,kerberos]'
	@rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP)

control-plane:
	@bash hack/build-control-plane.sh >/dev/null

# Checkers built from the pinned Kubernetes code, cached like the control plane by version and source
# hash: the apiserver's CEL (hack/celcheck) and the kubelet's, kube-proxy's and kube-log-runner's own
# rules (hack/conformance; the emulated hosts refuse to start what it refuses), and the upstream Go types
# of the CNI plugins, hcsshim and flannel (hack/upstreamtypes; the emulated HNS refuses what they refuse).
tools:
	@bash hack/build-celcheck.sh >/dev/null
	@bash hack/build-conformance.sh >/dev/null
	@bash hack/build-upstreamtypes.sh >/dev/null

lint: venv
	$(VENV)/bin/ruff check operator tests
	$(VENV)/bin/ruff format --check operator tests
	$(VENV)/bin/lint-imports --no-cache

typecheck: venv
	$(VENV)/bin/mypy

# The whole default suite: unit + integration (real apiserver) + e2e; slow scale tests excluded.
test: venv control-plane tools lint typecheck
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# Unit tests only: no control plane needed.
test-fast: venv tools
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

test-slow: venv control-plane tools
	$(VENV)/bin/pytest -m slow $(PYTEST_ARGS)

bench: venv control-plane tools
	$(PY) -m tests.bench

demo: venv control-plane tools
	$(VENV)/bin/winnode demo $(DEMO_ARGS)

crds: venv
	$(VENV)/bin/winnode crds --write crds/

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
