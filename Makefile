# Two commands on a fresh machine: `make demo` runs the Three-Cell PE comparison through
# the embedded service; `make test` runs the test suite. Both build .venv first.
# `make demo-full` runs every catalogue PE with 3 seeds (61 min measured on 2 cores);
# `make docs` regenerates docs/spec-reference.md from the spec models.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-full docs test lint install clean browser reliability

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[service,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/loope demo

demo-full: $(STAMP)
	$(BIN)/loope demo --sweep-file examples/three_cell_full.yaml --timeout-s 21600

docs: $(STAMP)
	$(BIN)/python -m loope.cli.docs

# The dashboard's browser tests drive Debian's chromium (Playwright cannot download its own
# browser here); without it, and without root to install it, they skip and say why.
CHROMIUM := /usr/bin/chromium

browser:
	@if [ ! -x $(CHROMIUM) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	fi

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

# Faults, duplicates, hostile input, security and 100 clients of load; writes bench/reliability.md.
reliability: $(STAMP)
	$(BIN)/python bench/reliability.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) loope-data
