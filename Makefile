# The two set-up commands of the README: `make run` and `make test`. Both work on a fresh machine.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test lint bench-sync bench-reports

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

## Sync the embedded demo CRM into SQLite, fill the aggregations, print where everything is.
run: $(STAMP)
	$(BIN)/crm-assets run

## The whole test suite (SQLite and PostgreSQL, end to end through webserver, daemon and Chromium).
test: $(STAMP)
	scripts/ensure-test-services.sh
	$(BIN)/ruff check crm_assets crm_assets_tests
	$(BIN)/mypy
	$(BIN)/pytest -n 2 --dist loadgroup

lint: $(STAMP)
	$(BIN)/ruff check crm_assets crm_assets_tests
	$(BIN)/ruff format --check crm_assets crm_assets_tests
	$(BIN)/mypy

bench-sync: $(STAMP)
	$(BIN)/python crm_assets_tests/benchmarks/bench_sync.py

bench-reports: $(STAMP)
	$(BIN)/python crm_assets_tests/benchmarks/bench_reports.py
