# jobwire: `make serve` runs the broker, `make test` runs every check. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 7400
DATA_DIR ?= ./jobwire-data

.PHONY: serve test lint pytest bench clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps make the install step a no-op until pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

serve: $(VENV)/.installed
	$(BIN)/jobwire serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/mypy

pytest: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

test: lint pytest node-test

# The Node.js client (node/): npm ci, then its tests against brokers started from $(VENV)
# (dev tools too: its TLS test makes certificates with trustme).
.PHONY: node-test
node-test: $(VENV)/.installed-dev
	cd node && npm ci --no-audit --no-fund && npm test

bench: $(VENV)/.installed-dev
	$(BIN)/jobwire bench suite --json bench/results/latest.json --markdown bench/results/latest.md

clean-venv:
	rm -rf $(VENV)
