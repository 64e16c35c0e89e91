# The two commands a new user runs (each does its own set-up):
#   make demo   trains and evaluates a CNN on a built-in dataset
#   make test   checks the package's layers (lint-imports), runs the test suite, then builds
#               the docs site (mkdocs --strict: no broken links)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch: the CPU build of 2.13.0 installs quickly here; any recent torch 2.x works.
TORCH ?= torch==2.13.0

.PHONY: demo test install clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev,serve]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/cnnlab demo

test: install
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet -d .cache/site

clean:
	rm -rf $(VENV) runs .pytest_cache .cache/site site
