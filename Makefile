# Targets match README.md. `make demo` and `make test` create the virtualenv on first use.
VENV ?= .venv
PYTHON ?= python3
BIN = $(VENV)/bin

.PHONY: demo test lint typecheck migrations-check bench bench-smoke clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/python testapp/manage.py demo

test: $(BIN)/.installed
	$(BIN)/pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

migrations-check: $(BIN)/.installed
	$(BIN)/python testapp/manage.py makemigrations --check --dry-run pgpubsub testapp

clean:
	rm -rf $(VENV) build *.egg-info
