# The two commands a newcomer needs:
#   make preview STACK=dev   offline plan of a stack (creates .venv on first run)
#   make test                every check: lint, types, tests
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STACK ?= dev
# A build is tagged with the commit it is built from (CI passes github.sha).
export IMAGE_TAG ?= $(shell git rev-parse HEAD 2>/dev/null)

.PHONY: preview test lint typecheck security pytest bench mutation state-snapshot constraints policy-pack clean

# The first run takes about two minutes; say so, and what is happening, instead of going quiet.
$(STAMP): requirements.txt infra/requirements.txt requirements-dev.txt app/requirements.txt constraints.txt
	@echo "==> setting up $(VENV) (first run: about 2 minutes)"
	@test -x $(PY) || { echo "==> creating the virtualenv with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@echo "==> installing the pinned requirements (requirements-dev.txt, constraints.txt)"
	$(PY) -m pip install --disable-pip-version-check -r requirements-dev.txt
	@touch $@
	@echo "==> $(VENV) is ready"

preview: $(STAMP)
	$(PY) -m infra.preview --stack $(STACK) $(if $(JSON),--json $(JSON))

test: lint typecheck security pytest

lint: $(STAMP)
	$(PY) -m ruff check infra tests app policy bench mutation
	$(PY) -m ruff format --check infra tests app policy bench mutation

typecheck: $(STAMP)
	$(VENV)/bin/basedpyright

security: $(STAMP)
	$(PY) -m bandit --quiet --recursive infra app bench mutation

pytest: $(STAMP)
	$(PY) -m pytest -q -n auto

# Not part of `make test`: prints preview/floor, scaling, critical path and make test figures.
bench: $(STAMP)
	$(PY) -m bench

# Not part of `make test` (every mutant of infra/ takes days on two cores): mutmut over
# [tool.mutmut] only_mutate, then the kill rate per module. SAMPLE=N draws N mutants of each module
# with a fixed SEED and estimates the rate of the whole (mutation/sample.py); the scheduled
# mutation.yml runs that. A scoped run names the mutants and, to keep mutmut's first pass (every
# selected test once, recording which reach what) short, the test files that matter; the others
# are left out through pytest's --ignore:
#   make mutation SAMPLE=20 [SEED=1] [MODULES='infra.policies.*'] [RESUME=1]
#   make mutation MUTANTS='infra.plan_diff.*' TESTS='tests/test_plan_diff.py' JOBS=1
MUTATION_ENV = PYTEST_ADDOPTS="$(foreach f,$(if $(TESTS),$(filter-out $(TESTS),$(wildcard tests/test_*.py))),--ignore=$(f))"
mutation: $(STAMP)
ifdef SAMPLE
	$(MUTATION_ENV) $(PY) -m mutation.sample --per-module $(SAMPLE) --seed $(or $(SEED),1) \
	  --jobs $(or $(JOBS),2) $(if $(MODULES),--only $(MODULES)) $(if $(RESUME),--resume)
	$(PY) -m mutation.report --sample mutants/sample.txt --markdown mutants/report.md
else
	$(MUTATION_ENV) $(PY) -m mutmut run --max-children $(or $(JOBS),2) $(MUTANTS)
	$(PY) -m mutation.report --markdown mutants/report.md
endif

# Records the stacks' stateful URNs (state/stateful-urns.json): a deliberate act, reviewed in the PR.
state-snapshot: $(STAMP)
	$(PY) -m infra.state_safety --update

# The self-contained pack `pulumi policy publish build/policy-pack` uploads (infra/policy_pack.py).
policy-pack: $(STAMP)
	$(PY) -m infra.policy_pack build/policy-pack

# Re-pins every transitive dependency after a requirements file changed.
constraints: $(STAMP)
	{ sed -n '1,3p' constraints.txt; $(PY) -m pip freeze --all --exclude pip; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) build mutants .pytest_cache .mypy_cache .ruff_cache
