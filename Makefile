PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: dev test format install clean

## make dev: Parley on http://127.0.0.1:8080 with an embedded DynamoDB (prints a dev key)
dev: $(STAMP)
	$(BIN)/parley dev

## make test: the whole suite (the Claude Code CLI comes from npm for the end-to-end tests)
test: $(STAMP) node_modules/.package-lock.json
	$(BIN)/ruff check shared tests functions
	$(BIN)/ruff format --check shared tests functions
	$(BIN)/python -m pytest

format: $(STAMP)
	$(BIN)/ruff format shared tests functions
	$(BIN)/ruff check --fix shared tests functions

install: $(STAMP) node_modules/.package-lock.json

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

clean:
	rm -rf $(VENV) node_modules .pytest_cache build *.egg-info shared/*.egg-info
