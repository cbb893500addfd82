# The two commands a newcomer needs:
#   make preview STACK=dev   offline plan of a stack (creates .venv on first run)
#   make test                every check: lint, types, tests
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STACK ?= dev

.PHONY: preview test lint typecheck pytest clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

preview: $(STAMP)
	$(PY) -m infra.preview --stack $(STACK) $(if $(JSON),--json $(JSON))

test: lint typecheck pytest

lint: $(STAMP)
	$(PY) -m ruff check infra tests app
	$(PY) -m ruff format --check infra tests app

typecheck: $(STAMP)
	$(VENV)/bin/basedpyright

pytest: $(STAMP)
	$(PY) -m pytest -q -n auto

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
