# Two commands for a fresh machine (see README):
#   make up    set up .venv if needed, then run the main job on embedded defaults
#   make test  the same setup, then the test suite
# Setup is idempotent: it reinstalls only when pyproject.toml changed (a stamp of its hash).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.pmx-installed
DEPS_HASH := $(shell sha256sum pyproject.toml | cut -c1-16)

.PHONY: setup up test lint bench


setup:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if [ "$$(cat $(STAMP) 2>/dev/null)" = "$(DEPS_HASH)" ]; then \
	  echo "setup: $(VENV) is up to date with pyproject.toml"; \
	else \
	  echo "setup: installing into $(VENV) (torch 2.13.0 CPU first, then the project with all extras)"; \
	  $(BIN)/python -m pip install --quiet --upgrade pip && \
	  $(BIN)/pip install --quiet torch==2.13.0 && \
	  $(BIN)/pip install --quiet -e '.[all]' && \
	  echo "$(DEPS_HASH)" > $(STAMP); \
	fi

up: setup
	$(BIN)/pmx demo

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python bench/sim_throughput.py
