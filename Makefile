# The two commands of the README. Both create .venv on first use and install the project.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test benchmark
demo: $(VENV)/installed
	$(BIN)/visual-tourism local demo

test: $(VENV)/installed
	$(BIN)/ruff check .
	$(BIN)/pytest

benchmark: $(VENV)/installed
	$(BIN)/python -m benchmarks

$(VENV)/installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@
