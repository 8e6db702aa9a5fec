# Every target creates .venv and installs what it needs first, at the versions pinned in
# constraints.txt (`make lock` refreshes them).
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONSTRAINTS := constraints.txt
PIP_INSTALL := $(BIN)/pip install -q -c $(CONSTRAINTS)

.PHONY: help install run demo test fmt lint typecheck check bench lock clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip

# A changed pin reinstalls, as a changed dependency list does.
$(VENV)/.runtime: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP_INSTALL) -e .
	@touch $@

$(VENV)/.dev: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP_INSTALL) -e '.[test,dev]'
	@touch $@ $(VENV)/.runtime

$(VENV)/.bench: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP_INSTALL) -e '.[bench]'
	@touch $@ $(VENV)/.runtime

# The openai npm package, at the version tests/node/package-lock.json pins: the Node client the
# streamed images are tested with.
NODE_MODULES := tests/node/node_modules/.package-lock.json
$(NODE_MODULES): tests/node/package.json tests/node/package-lock.json
	npm ci --prefix tests/node --no-audit --no-fund
	@touch $@

install: $(VENV)/.dev $(NODE_MODULES) ## create .venv with the package and its tools, and the Node test client

run: $(VENV)/.runtime ## serve with SILICONFLOW_API_KEY (env or .env), else the demo
	@if [ -n "$$SILICONFLOW_API_KEY" ] || grep -qs '^ *SILICONFLOW_API_KEY *= *[^ ]' .env; then \
		echo "SILICONFLOW_API_KEY is set: starting the real server (sfproxy serve)"; \
		exec $(BIN)/sfproxy serve; \
	else \
		echo "SILICONFLOW_API_KEY is not set: starting the demo with the built-in fake SiliconFlow (sfproxy demo)"; \
		exec $(BIN)/sfproxy demo; \
	fi

demo: $(VENV)/.runtime ## the demo, whatever the environment says
	$(BIN)/sfproxy demo

test: $(VENV)/.dev $(NODE_MODULES) ## run the whole test suite
	$(BIN)/pytest

fmt: $(VENV)/.dev ## format the code
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix-only -q src tests bench

lint: $(VENV)/.dev ## ruff: format check and lint
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench

typecheck: $(VENV)/.dev ## mypy --strict on the package
	$(BIN)/mypy

check: lint typecheck test ## format, lint, types and tests

# wrk is the load generator: a compiled client, so that the client is not what gets measured.
bench: $(VENV)/.bench ## benchmark against the direct upstream and LiteLLM (BENCH_ARGS=--quick)
	@command -v wrk >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq wrk; }
	$(BIN)/python -m bench $(BENCH_ARGS)

# Resolved in a throwaway venv, so nothing installed by hand in .venv leaks into the pins.
# `pip freeze --all` pins pip too; the project itself is left out.
lock: ## refresh constraints.txt: the newest versions pyproject.toml allows, resolved afresh
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(PYTHON) -m venv "$$tmp/venv" && \
	"$$tmp/venv/bin/pip" install -q --upgrade pip && \
	"$$tmp/venv/bin/pip" install -q '.[test,dev,bench]' && \
	{ echo "# Every dependency (runtime, test, dev, bench) at the version CI runs: \`make lock\`."; \
	  echo "# Used as pip's -c by the Makefile and the Dockerfile; not a list of requirements."; \
	  "$$tmp/venv/bin/pip" freeze --all --exclude siliconflow-img-proxy; } > "$$tmp/constraints.txt" && \
	mv "$$tmp/constraints.txt" $(CONSTRAINTS)
	@echo "$(CONSTRAINTS): $$(grep -c '==' $(CONSTRAINTS)) pins"

clean: ## remove .venv, caches and build outputs
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache .pytest_cache src/*.egg-info tests/node/node_modules
