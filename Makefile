# Two commands for a fresh machine: `make run` (the local stack) and `make test` (the full suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install models run test bench envoy-config clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(STAMP)

# Exports the ONNX encoder into models/ when missing (torch lives in a throwaway .venv-build only).
models: install
	$(BIN)/semantic-router models build

run: models
	$(BIN)/python -m tests.stack

test: models
	$(BIN)/python -m pytest

envoy-config: install
	$(BIN)/semantic-router envoy-config -o envoy/envoy.yaml

bench: models
	$(BIN)/python bench/extproc_overhead.py

clean:
	rm -rf $(VENV) .venv-build var .pytest_cache
