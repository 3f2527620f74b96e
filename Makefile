# Three commands do everything on a fresh machine: `make demo`, `make airflow` and `make test`.
# Each installs what it needs first (system packages, the virtualenv from the lock file, the package).

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
STAMP := $(VENV)/.installed
# Bytecode makes every Airflow process and task start faster (the sandbox disables it by default).
unexport PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX := $(CURDIR)/.cache/pycache
PYTEST_ARGS ?=
# `make airflow`: the api-server's port on 127.0.0.1, and the executor (local, or celery on the local Redis).
PORT ?= 8080
EXECUTOR ?= local

.PHONY: help demo airflow test test-fast test-mssql test-mongo e2e lint typecheck system-deps install services lock clean bench

help:
	@echo "make demo   - migrate a fleet of SQLite shards through Airflow, live"
	@echo "make airflow - the demo fleet in a real local Airflow UI on 127.0.0.1:$(PORT) until Ctrl-C (EXECUTOR=celery, PORT=...)"
	@echo "make test   - the whole test suite (starts PostgreSQL/MariaDB/Redis when needed)"
	@echo "make e2e    - only the end-to-end tests against a real Airflow deployment (tests/e2e)"
	@echo "make test-mssql - the SQL Server tests and engine contract against the compose file's SQL Server (Docker)"
	@echo "make test-mongo - the MongoDB tests against a real mongod (the compose file's MongoDB; needs Docker)"
	@echo "make lint   - ruff + mypy"
	@echo "make bench  - benchmarks (ratios against baselines measured in the same run)"

system-deps:
	@scripts/install-system-deps.sh

# The lock pins every extra (sqlite, postgres, mysql, mssql, mongo, e2e, dev): the virtualenv gets all of them, then the
# package itself, editable, without resolving again.
$(STAMP): requirements.lock pyproject.toml | system-deps
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip sync --quiet --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)

services:
	@scripts/ensure-services.sh

demo: install
	$(BIN)/shardmigrate demo

# The demo fleet in a real Airflow 3.3 on 127.0.0.1 (api-server, scheduler, dag-processor, triggerer; EXECUTOR=celery
# adds a Celery worker on the local Redis), its metadata database on the local PostgreSQL, everything else in
# ./shardmigrate-airflow/ (kept across restarts). Prints the URL once the UI is usable; Ctrl-C stops every process.
airflow: install services
	$(BIN)/shardmigrate airflow --port $(PORT) --executor $(EXECUTOR)

test: install services
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# A real Airflow deployment (api-server, scheduler, dag-processor, triggerer, two Celery workers) on loopback,
# REST API, concurrency, retry, drift schedule and the Trigger form in Chromium (tests/e2e; part of `make test`),
# and `make airflow`'s entry point with either executor (tests/local/test_airflow_command.py).
# Needs the local PostgreSQL, MariaDB and Redis (`make services` starts them when they are installed but down).
e2e: install services
	$(BIN)/python -m pytest tests/e2e tests/local/test_airflow_command.py $(PYTEST_ARGS)

# The SQL Server engine against a real server: the compose file's shard-mssql-0 service (`docker compose --profile
# mssql`), published on 127.0.0.1:14330, with SHARDMIGRATE_TEST_MSSQL_URL pointing at it (scripts/test-mssql.sh).
# Without that variable `make test` reports the SQL Server contract tests as not run.
test-mssql: install
	scripts/test-mssql.sh $(PYTEST_ARGS)

# The MongoDB tests run in `make test` against the nx-27017 wire-protocol emulator the test fixtures start; this
# runs them (and the ones only a real mongod can show) against the compose file's MongoDB service instead.
test-mongo: install services
	@PYTEST_ARGS="$(PYTEST_ARGS)" scripts/test-mongo.sh

test-fast: install
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check airflow_provider_shardmigrate tests bench
	$(BIN)/ruff format --check airflow_provider_shardmigrate tests bench
	$(BIN)/mypy airflow_provider_shardmigrate

bench: install services
	$(BIN)/python bench/run_all.py

# Re-resolve the lock file after changing dependencies in pyproject.toml: every extra (each database family,
# e2e, dev), so `make install` gets all of them. The versions already in the lock are kept where they still fit.
lock:
	@test -x $(BIN)/uv || { $(PYTHON) -m venv $(VENV) && $(BIN)/python -m pip install --quiet uv==$(UV_VERSION); }
	$(BIN)/uv pip compile pyproject.toml --all-extras --python-version 3.11 --generate-hashes -o requirements.lock

clean:
	-@test ! -d shardmigrate-airflow || ! test -x $(BIN)/shardmigrate || $(BIN)/shardmigrate airflow --remove
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache shardmigrate-demo shardmigrate-airflow
