# Two commands matter: `make run` and `make test`. Both create the virtualenv and
# install on first use, and start an embedded PostgreSQL and Redis under .data/
# unless DATABASE_URL and REDIS_URL point at your own.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help install run test test-faults lint format manage clean-data bench-engine bench-ledger bench-api bench-ws bench-system

help:
	@echo "make run      start the platform (web; demo data; prints the URLs and the staff login)"
	@echo "make test     lint, then the whole test suite against real PostgreSQL and Redis"
	@echo "make lint     ruff (lint + format check) and the import-linter contracts"
	@echo "make format   ruff format + autofix"
	@echo "make manage ARGS='…'   any manage.py command with the platform's environment"
	@echo "make clean-data        delete the embedded databases under .data/"
	@echo "make test-faults       fault drills under load (kill -9 matcher/web/worker, Redis, PostgreSQL)"
	@echo "make bench-engine      engine vs PyPI order books (own venv: .venv-bench)"
	@echo "make bench-ledger      trade settlements per second"
	@echo "make bench-api         signed orders per second and latency over HTTP (web + matcher)"
	@echo "make bench-ws          WebSocket subscribers held, messages/s and latency while trading"
	@echo "make bench-system      the whole stack under orders + subscribers, then the books proved"
	@echo "make backup            pg_dump the database to backups/<UTC timestamp>.dump"
	@echo "make restore FILE=…    restore a dump into a new database (ARGS=--into-configured: replace it)"

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (set PYTHON=/path/to/python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/python -m dex.devstack run

test: install lint
	$(BIN)/python -m dex.devstack test

# Kill -9 the matcher, web and worker, restart Redis, cut PostgreSQL off, under load.
test-faults: install
	$(BIN)/python -m dex.devstack test -- -s -v tests/faults

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

manage: install
	$(BIN)/python -m dex.devstack exec -- $(BIN)/python manage.py $(ARGS)

clean-data:
	rm -rf .data

# The embedded PostgreSQL or DATABASE_URL's, with client tools of the server's version.
.PHONY: backup restore
backup: install
	$(BIN)/python -m dex.devstack exec -- $(BIN)/python -m dex.backup backup $(ARGS)

restore: install
	@test -n "$(FILE)" || { echo "usage: make restore FILE=backups/<timestamp>.dump [ARGS=...]"; exit 2; }
	$(BIN)/python -m dex.devstack exec -- $(BIN)/python -m dex.backup restore "$(FILE)" $(ARGS)

# Benchmark-only packages live in their own virtualenv, never in the app's.
.venv-bench/.installed-stamp: bench/requirements.txt
	$(PYTHON) -m venv .venv-bench
	.venv-bench/bin/python -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	@touch $@

bench-engine: .venv-bench/.installed-stamp
	.venv-bench/bin/python bench/engine.py $(ARGS)

bench-ledger: install
	$(BIN)/python -m dex.devstack exec -- $(BIN)/python bench/ledger.py $(ARGS)

bench-api: install
	$(BIN)/python -m dex.devstack exec -- $(BIN)/python bench/api.py $(ARGS)

bench-ws: install
	$(BIN)/python -m dex.devstack exec -- $(BIN)/python bench/ws.py $(ARGS)

bench-system: install
	$(BIN)/python -m dex.devstack exec -- $(BIN)/python bench/system.py $(ARGS)
