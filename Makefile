# Two commands on a fresh machine: `make compile` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ROLLOUT := $(BIN)/rollout
PYTEST_ARGS ?=

# Debian packages the tests run for real: promtool, amtool, haproxy, nginx.
DEBIAN_TOOLS := promtool:prometheus amtool:prometheus-alertmanager haproxy:haproxy nginx:nginx-light

.PHONY: install compile lint test tools schema bench fuzz clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

compile: install
	$(ROLLOUT) compile specs -o generated

schema: install
	$(ROLLOUT) schema -o schema/rollout.schema.json

lint: install
	$(ROLLOUT) lint specs

tools:
	@missing=""; \
	for pair in $(DEBIAN_TOOLS); do \
	  tool=$${pair%%:*}; pkg=$${pair##*:}; \
	  if ! PATH="$$PATH:/usr/sbin:/sbin" command -v $$tool >/dev/null 2>&1; then missing="$$missing $$pkg"; fi; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

test: install tools
	$(ROLLOUT) lint specs
	$(ROLLOUT) check specs -o generated
	PATH="$$PATH:/usr/sbin:/sbin" $(BIN)/pytest -q $(PYTEST_ARGS)

bench: install tools
	PATH="$$PATH:/usr/sbin:/sbin" $(BIN)/python -m benchmarks

fuzz: install
	$(BIN)/pytest -q tests -k fuzz --hypothesis-profile=fuzz

clean:
	rm -rf $(VENV) .pytest_cache
