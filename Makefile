# The two set-up commands of the README: `make up` and `make test`. Each bootstraps .venv: `make up`
# with the runtime dependencies only, `make test` adds the test extras and Azurite (npm).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The PostgreSQL leg of the test suite; pytest-django creates and drops test_<name> itself.
TEST_POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/postgres

PIP := $(BIN)/pip install -q --disable-pip-version-check

.PHONY: install install-test up demo worker test test-sqlite test-postgres lint format clean

# What the service needs to run, nothing more.
install: $(VENV)/.installed-runtime

$(VENV)/.installed-runtime: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	touch $@

# The runtime plus what the tests use: pytest, the real clients, the emulators.
install-test: $(VENV)/.installed-test

$(VENV)/.installed-test: $(VENV)/.installed-runtime pyproject.toml package.json
	$(PIP) -e '.[test]'
	@# Node tools of the tests (Azurite, the JavaScript SDKs), from the npm registry.
	@if command -v npm >/dev/null 2>&1; then npm ci --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the tests that need Node.js will be skipped (install Node.js to run them)"; fi
	touch $@

up: install
	$(BIN)/batchexports up

# On a fresh data dir: two days of demo events and a sample export with a backfill over them.
demo: install
	$(BIN)/batchexports up --demo

test: test-sqlite test-postgres

test-sqlite: install-test
	$(BIN)/pytest -q -p no:cacheprovider

# The suites that use the metadata database, again on the local PostgreSQL server (the scaled
# mode's database); skipped (loudly) on a machine without one, except in CI, where it fails.
POSTGRES_SUITES = tests/test_accounts.py tests/test_auth_and_scopes.py tests/test_batch_exports_api.py \
	tests/test_batch_export_validation.py tests/test_runs_api.py tests/test_backfills_api.py \
	tests/test_logs_and_metrics.py tests/test_destination_tests_api.py tests/test_capture.py \
	tests/test_persons.py tests/test_hogql_exports.py tests/test_engine.py \
	tests/test_account_routes.py tests/test_run_history.py tests/test_destination_secrets_api.py \
	tests/test_capture_encodings.py tests/test_sdk_startup.py

test-postgres: install-test
	@if $(BIN)/python -c "import psycopg,sys; psycopg.connect('$(TEST_POSTGRES_URL)', connect_timeout=3).close()" 2>/dev/null; then \
		DATABASE_URL='$(TEST_POSTGRES_URL)' $(BIN)/pytest -q -p no:cacheprovider $(POSTGRES_SUITES); \
	elif [ -n "$$CI" ]; then \
		echo "PostgreSQL is not reachable at $(TEST_POSTGRES_URL)"; exit 1; \
	else \
		echo "SKIPPED: the PostgreSQL leg of the tests (no server at $(TEST_POSTGRES_URL))"; \
	fi

# Style, types (mypy's settings are in pyproject.toml) and the import rules between the parts
# (.importlinter): see docs/design.md for the picture they enforce.
lint: install-test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install-test
	$(BIN)/ruff check --fix src tests
	$(BIN)/ruff format src tests

clean:
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache
