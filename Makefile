# The two commands of the README. Both use one venv, .venv, created on first use.
# `make demo` installs only what the demo needs (the package and local mode's AWS stand-in);
# `make test` adds the dev extra on top (the model backend with torch, JupyterLab, the linters).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-under-load benchmark browser
demo: $(VENV)/demo-installed
	$(BIN)/visual-tourism local demo

test: $(VENV)/installed browser
	$(BIN)/ruff check .
	$(BIN)/pytest

# The whole suite three times in a row while busy processes keep every core occupied: what a
# loaded CI machine does to it. Stops at the first failing run.
test-under-load: $(VENV)/installed browser
	$(BIN)/python tests/under_load.py --runs 3

# The web page's tests drive Debian's Chromium (never a downloaded browser). Installed here
# when running as root (CI); elsewhere those tests skip and say how to enable them.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			chromium chromium-driver >/dev/null; \
	else echo "note: browser tests will skip (sudo apt-get install -y chromium chromium-driver)"; fi

benchmark: $(VENV)/installed
	$(BIN)/python -m benchmarks

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# What the demo needs: the project and its `local` extra.
$(VENV)/demo-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[local]'
	touch $@

# Everything (the `dev` extra); it includes the demo's packages, so the demo is ready too.
$(VENV)/installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/demo-installed
