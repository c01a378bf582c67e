# lightning_dr2 — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Pinned so pip takes the builds on this machine's disk; on a GPU cluster set TORCH_PKGS to your CUDA build.
TORCH_PKGS ?= torch==2.14.1 torchvision==0.29.1
EXP ?= ddpm_ffhq256
ARGS ?=
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install test test-all quickstart train-ddpm lint bench clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PKGS)
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

install: $(VENV)/.installed ## create .venv and install the package (editable, dev extras); idempotent

test: install ## run the CPU test suite (gpu/weights tests skip themselves)
	$(PY) -m pytest -q $(PYTEST_ARGS)

quickstart: install ## synthetic faces -> tiny DDPM on CPU -> samples, loss curve (a few minutes)
	$(PY) -m lightning_dr2 quickstart $(ARGS)

train-ddpm: install ## train a DDPM: make train-ddpm EXP=ddpm_ffhq256 ARGS="trainer.devices=8 data.root=/data/ffhq"
	$(PY) -m lightning_dr2 train $(EXP) $(ARGS)

bench: install ## benchmarks, JSON out: make bench ARGS="batch=16 flags=dr2 compile=true"
	$(PY) -m lightning_dr2 bench train $(ARGS)

lint: install ## ruff
	$(PY) -m ruff check lightning_dr2 tests

clean: ## remove caches (keeps .venv, data/ and runs/)
	rm -rf .pytest_cache .ruff_cache **/__pycache__
