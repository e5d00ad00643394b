# Two commands for a fresh machine (see README):
#   make up    set up .venv if needed, run the simulator demo, then `pmx up`: the API, the Dagster UI and
#              daemon, and the full pipeline once, on embedded defaults (Ctrl-C stops everything)
#   make test  the same setup, then the test suite
# Setup is idempotent: it reinstalls only when pyproject.toml or constraints.txt changed (a stamp
# of their hash).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.pmx-installed
DEPS_HASH := $(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)

.PHONY: setup up test lint bench lock proto


setup:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if [ "$$(cat $(STAMP) 2>/dev/null)" = "$(DEPS_HASH)" ]; then \
	  echo "setup: $(VENV) is up to date with pyproject.toml and constraints.txt"; \
	else \
	  echo "setup: installing into $(VENV) (torch 2.13.0 CPU first, then the project with all extras)"; \
	  $(BIN)/python -m pip install --quiet --upgrade pip && \
	  $(BIN)/pip install --quiet -c constraints.txt torch==2.13.0 && \
	  $(BIN)/pip install --quiet -c constraints.txt -e '.[all]' && \
	  echo "$(DEPS_HASH)" > $(STAMP); \
	fi

up: setup
	$(BIN)/pmx demo
	$(BIN)/pmx up

# One pytest-xdist worker per core: many tests wait on the servers and subprocesses they start. A
# file is the unit a worker takes, so a module's fixtures are built once. (--dist loadgroup would
# group files sharing a session fixture, but xdist 3.8 cannot rename pytest 9's node ids to do it.)
# Files are taken in collection order, where tests/conftest.py puts the slow ones first.
test: setup
	$(BIN)/python -m pytest -n auto --dist loadfile --no-loadscope-reorder

# The code's own rules: ruff's, and the layers of docs/architecture.md (.importlinter). .ci/run runs
# it before the tests.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# The KEDA external scaler's gRPC modules, generated from its .proto (committed; run after editing it).
proto: setup
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. \
	  api/autoscaler/keda/externalscaler.proto

bench: setup
	$(BIN)/python bench/sim_throughput.py

# Re-pin constraints.txt to what the venv holds (after a change to pyproject.toml).
lock:
	@{ sed -n '1,2p' constraints.txt; $(BIN)/pip freeze --exclude-editable | sed 's/^torch==2.13.0+cpu$$/torch==2.13.0/'; } > constraints.txt.new
	@mv constraints.txt.new constraints.txt && echo "lock: constraints.txt updated"
