# Every target runs the same commands as .ci/run.
PYTHON ?= python3
# A second interpreter gets its own virtualenv: make test PYTHON=python3.13 VENV=.venv-3.13
VENV ?= .venv
BIN := $(VENV)/bin
DEVSTACK := $(BIN)/python -m kafka_retry.devstack
COMPOSE := docker compose -f compose/docker-compose.yml
# make services-up BROKER=tansu; make services-up BROKERS=3 (a 3-node Kafka cluster)
BROKER ?=
BROKERS ?=
# make test PYTEST_ARGS="-m integration -x"
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: venv lint test docs lock bench demo services-up services-down compose-up compose-down faults

venv: $(VENV)/.installed

# Reinstalled whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,fastapi]' -c constraints.txt
	touch $@

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: venv
	$(BIN)/pytest $(PYTEST_ARGS)

# The fault-injection suite: starts, kills and restarts its own services.
faults: venv
	$(BIN)/pytest -m faults tests/faults $(PYTEST_ARGS)

# Re-resolves the dependencies in a scratch virtualenv and pins every version
# into constraints.txt, which CI installs with. Run after changing pyproject.toml
# (or to take upgrades), run the tests, commit both files.
LOCK_VENV := .lock-venv
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install --quiet -e '.[dev,fastapi]'
	{ echo "# Exact versions CI installs (pip install -c constraints.txt). Made by make lock."; \
	  echo "# Python $$($(LOCK_VENV)/bin/python -c 'import platform; print(platform.python_version())')"; \
	  $(LOCK_VENV)/bin/python -m pip freeze --exclude-editable; } > constraints.txt
	rm -rf $(LOCK_VENV)

# Builds the site into site/ (gitignored); strict, so a broken link fails the build.
docs: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# Benchmarks (not tests): about 10 minutes; writes bench/results/<date>.md and .json.
# make bench BENCH_ARGS="--broker kafka --quick"  (python -m bench.run --help)
BENCH_ARGS ?=
bench: $(VENV)/.bench-installed
	$(BIN)/python -m bench.run $(BENCH_ARGS)

$(VENV)/.bench-installed: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[bench]' -c constraints.txt
	touch $@

# The README's first command: installs, starts local Kafka (Apache Kafka when java
# and mvn exist, else Tansu) unless KAFKA_BOOTSTRAP_SERVERS is set, runs the demo.
# make demo DEMO_ARGS="--backend postgres"
demo: venv
	$(BIN)/kafka-retry demo $(if $(BROKER),--broker $(BROKER)) $(DEMO_ARGS)

services-up: venv
	$(DEVSTACK) up $(if $(BROKER),--broker $(BROKER)) $(if $(BROKERS),--brokers $(BROKERS))

services-down: venv
	$(DEVSTACK) down

compose-up:
	$(COMPOSE) up --detach --wait

compose-down:
	$(COMPOSE) down --volumes
