# jobwire: `make serve` runs the broker, `make test` runs every check. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 7400
DATA_DIR ?= ./jobwire-data
HTTP ?= 127.0.0.1:7480

.PHONY: serve test lint pytest bench clean-venv browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps make the install step a no-op until pyproject.toml changes. The http extra is the
# gateway's (REST API, /metrics, dashboard: jobwire http, jobwire serve --http).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[http]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

serve: $(VENV)/.installed
	$(BIN)/jobwire serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR) --http $(HTTP)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/mypy

pytest: $(VENV)/.installed-dev browser
	$(BIN)/python -m pytest

# The dashboard's browser tests drive Debian's chromium through Playwright (Playwright's own
# browser downloads are not used). Installed here when missing; without root or apt-get those
# tests are skipped, and say why.
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -qq chromium >/dev/null 2>&1 \
	      || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; \
	  else echo "make: cannot install chromium (needs root and apt-get); browser tests skip"; fi; }

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
