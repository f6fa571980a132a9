# One command sets up and runs the demo, one sets up and runs the tests.
#   make demo                 # venv + CPU torch + package, then the whole pipeline on bundled photos
#   make test                 # venv + CPU torch + package, then the test suite
#   make demo TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"   # a CUDA build
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin

.PHONY: setup demo test test-all lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/python -m nas.demo

test: setup
	$(BIN)/python -m pytest -q

test-all: setup
	$(BIN)/python -m pytest -q -m ""

lint: setup
	$(BIN)/ruff check nas tests benchmarks
	$(BIN)/ruff format --check nas tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
