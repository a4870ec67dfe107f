# Every target installs what it needs first. Python 3.11 is the only prerequisite.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= var
APP_PORT ?= 8000
SANDBOX_PORT ?= 9000

.PHONY: install run demo test bench lint clean postgres

$(STAMP): pyproject.toml requirements.txt requirements-dev.txt requirements-nodeps.txt
	@command -v $(PY) >/dev/null 2>&1 || { echo "need $(PY) on PATH (or make PY=python3)"; exit 2; }
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: the CPU build 2.13.0, never a CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements.txt -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -r requirements-nodeps.txt  # medspacy: see the file
	touch $(STAMP)

# axe-core (npm) for the accessibility checks of the browser tests; skipped (and said) without npm.
AXE := $(VENV)/node/node_modules/axe-core/axe.min.js
$(AXE):
	@if command -v npm >/dev/null 2>&1; then \
	  npm install --silent --no-audit --no-fund --prefix $(VENV)/node axe-core@4.14.1; \
	else echo "npm not found: the accessibility checks of the browser tests will skip"; fi

install: $(STAMP)

run: install
	APP_DATA_DIR=$(DATA)/run/app $(BIN)/python -m app db upgrade
	$(BIN)/python -m app.run --data-dir $(DATA)/run --app-port $(APP_PORT) --sandbox-port $(SANDBOX_PORT)

demo: install
	APP_DATA_DIR=$(DATA)/demo $(BIN)/python -m app demo

# PostgreSQL (Debian's package) for the store/outbox/audit/review suites; they skip (and say why) without it.
postgres:
	@if ! command -v pg_ctl >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && apt-get install -y -qq postgresql >/dev/null || echo "postgresql could not be installed: its tests will skip"; \
	  else echo "PostgreSQL not installed (apt-get install postgresql): its tests will skip"; fi; \
	fi

test: install $(AXE) postgres
	$(BIN)/python -m pytest

bench: install postgres
	$(BIN)/pip install -q locust==2.47.0  # the load benchmark's client, pinned; not an app dependency
	$(BIN)/python benchmarks/bench_index.py
	$(BIN)/python benchmarks/bench_cli.py
	$(BIN)/python benchmarks/bench_launch.py
	$(BIN)/python benchmarks/locust/bench_load.py --users 50 --minutes 4

lint: install
	$(BIN)/ruff check app sandbox

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache
