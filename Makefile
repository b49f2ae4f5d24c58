# Every target runs the same commands as .ci/run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEVSTACK := $(BIN)/python -m kafka_retry.devstack
COMPOSE := docker compose -f compose/docker-compose.yml
# make services-up BROKER=tansu
BROKER ?=
# make test PYTEST_ARGS="-m integration -x"
PYTEST_ARGS ?=

.PHONY: venv lint test services-up services-down compose-up compose-down

venv: $(VENV)/.installed

# Reinstalled whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,fastapi]'
	touch $@

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: venv
	$(BIN)/pytest $(PYTEST_ARGS)

services-up: venv
	$(DEVSTACK) up $(if $(BROKER),--broker $(BROKER))

services-down: venv
	$(DEVSTACK) down

compose-up:
	$(COMPOSE) up --detach --wait

compose-down:
	$(COMPOSE) down --volumes
