# Set-up installs the pinned CPU build of torch first: an unpinned torch pulls several GB of CUDA wheels.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RECUNLEARN_DATA ?= $(abspath ../shared/data)
export RECUNLEARN_DATA

.PHONY: install demo test test-slow bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/recunlearn datasets
	$(BIN)/recunlearn train --dataset ml-100k --model lightgcn --out runs/demo-lightgcn
	$(BIN)/recunlearn evaluate --checkpoint runs/demo-lightgcn

test: install
	$(BIN)/pytest

test-slow: install
	$(BIN)/pytest -m slow

bench: install
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) runs .pytest_cache
