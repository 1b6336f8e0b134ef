# Herald — every developer command. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_SYS ?= python3
VENV       := .venv
PY         := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)/src:$(CURDIR)/gen
PROTOS     := $(shell find proto -name '*.proto')
BUF        := node_modules/.bin/buf

.PHONY: help prereqs venv proto run up down status test test-unit test-integration lint fmt bench clean lock

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

prereqs: ## check Python 3.11+, Java 17+, Maven, npm, PostgreSQL server binaries
	@bash tools/prereqs.sh

$(VENV)/.stamp: requirements.lock | prereqs
	$(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	touch $@

venv: $(VENV)/.stamp ## create the virtualenv with the pinned dependencies

gen/.stamp: $(VENV)/.stamp tools/gen_proto.sh $(PROTOS)
	PYTHON=$(CURDIR)/$(PY) bash tools/gen_proto.sh

proto: gen/.stamp ## generate Python code from proto/ into gen/

$(BUF): package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

run: proto ## everything in the foreground: Kafka, PostgreSQL, all services; Ctrl-C stops it
	$(PY) -m herald.devenv.stack run

up: proto ## the same in the background; returns when every service is SERVING
	$(PY) -m herald.devenv.stack up

down: ## stop the services and the infrastructure started by `up`
	$(PY) -m herald.devenv.stack down

status: ## what is running, where
	$(PY) -m herald.devenv.stack status

test: proto ## the whole suite (unit + integration + acceptance) against real Kafka and PostgreSQL
	$(PY) -m pytest

test-unit: proto ## only the unit tests (no I/O)
	$(PY) -m pytest tests/unit

test-integration: proto ## only the integration tests (real Kafka and PostgreSQL)
	$(PY) -m pytest tests/integration

lint: proto $(BUF) ## ruff, mypy (strict), buf lint, buf breaking against main
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy
	$(BUF) lint proto
	@if git rev-parse --verify -q main >/dev/null && git cat-file -e main:proto/buf.yaml 2>/dev/null; then \
	  $(BUF) breaking proto --against '.git#branch=main,subdir=proto' && echo 'buf breaking: no breaking change against main'; \
	else echo "buf breaking: no proto/ on main yet, nothing to compare"; fi

fmt: venv ## format and auto-fix
	$(VENV)/bin/ruff format src tests bench
	$(VENV)/bin/ruff check --fix src tests bench

bench: proto ## benchmarks beside their baselines: prints a table, saves JSON in bench/results/
	$(PY) -m bench

lock: ## re-resolve requirements.in into requirements.lock
	$(PYTHON_SYS) -m venv /tmp/herald-lock && /tmp/herald-lock/bin/pip install -q -r requirements.in
	/tmp/herald-lock/bin/pip freeze > requirements.lock && rm -rf /tmp/herald-lock

clean: ## stop everything, remove .local/, gen/ and the virtualenv
	-@[ -x $(PY) ] && $(PY) -m herald.devenv.stack down 2>/dev/null || true
	rm -rf .local gen $(VENV) node_modules .mypy_cache .ruff_cache .pytest_cache
