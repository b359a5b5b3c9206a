# The two commands of the README. Both create .venv on first use and install the project.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test benchmark browser
demo: $(VENV)/installed
	$(BIN)/visual-tourism local demo

test: $(VENV)/installed browser
	$(BIN)/ruff check .
	$(BIN)/pytest

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

$(VENV)/installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@
