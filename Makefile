# warmupd — one command runs every check (`make test`), one runs the daemon (`make run`).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= config.example.toml

.PHONY: setup run test lint typecheck pytest bench screenshots clean

# A venv from the system Python and the stock pip of a fresh machine; re-run only when
# pyproject.toml changes.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/.installed

# The daemon on its embedded defaults: SQLite in ./var, no Redis, builtin explainer, demo data;
# secrets generated for this run and printed once with the dashboard's URL (production configs
# never pass --demo-secrets: there an unset secret still fails closed).
run: setup
	$(BIN)/warmupd demo-data -c $(CONFIG) --if-empty
	$(BIN)/warmupd serve -c $(CONFIG) --demo-secrets

lint: setup
	$(BIN)/ruff format --check warmupd tests bench
	$(BIN)/ruff check warmupd tests bench

typecheck: setup
	$(BIN)/mypy --strict warmupd

pytest: setup
	$(BIN)/coverage erase
	$(BIN)/coverage run -m pytest $(PYTEST_ARGS)
	$(BIN)/coverage combine -q 2>/dev/null || true
	$(BIN)/coverage report

# Every check and test, exactly what CI runs.
test: lint typecheck pytest

# The browser tests again, writing the committed screenshots that README and docs/ show.
screenshots: setup
	WARMUPD_SCREENSHOTS=docs/screenshots $(BIN)/pytest -q tests/test_ui_browser.py

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache .coverage .coverage.*
