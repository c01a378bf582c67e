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
IN ?= data/lq
OUT ?= runs/restored
EVAL ?= experiments/eval_celeba_test.yaml
HQ ?= data/celeba_hq_test
RUNS ?= runs

.PHONY: help install test demo quickstart train-ddpm train-enhancer dr2-cache restore testsets eval compare lint bench clean

help: ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PKGS)
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

install: $(VENV)/.installed ## create .venv and install the package (editable, dev extras); idempotent

test: install ## run the CPU test suite (gpu/weights tests skip themselves; missing ../shared/fixtures is an error)
	DR2_REQUIRE_FIXTURES=1 $(PY) -m pytest -q $(PYTEST_ARGS)

$(VENV)/.demo-installed: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[demo]'
	@touch $@

demo: install $(VENV)/.demo-installed ## web demo on http://127.0.0.1:7860 (released weights, else the quickstart's tiny models): make demo ARGS="--port 8000"
	$(PY) -m lightning_dr2 demo $(ARGS)

quickstart: install ## train a tiny DDPM on synthetic faces, then DR2 and DR2+enhancer (shipped demo networks) on a held-out benchmark, on CPU (minutes); ARGS=--from-scratch trains both networks here
	$(PY) -m lightning_dr2 quickstart $(ARGS)

train-ddpm: install ## train a DDPM: make train-ddpm EXP=ddpm_ffhq256 ARGS="trainer.devices=8 data.root=/data/ffhq"
	$(PY) -m lightning_dr2 train $(EXP) $(ARGS)

train-enhancer: install ## train an enhancer on DR2 outputs: make train-enhancer EXP=enhance_sparnethd ARGS="data.hq_root=/data/ffhq data.dr2_root=/data/ffhq_dr2"
	$(PY) -m lightning_dr2 train-enhancer $(EXP) $(ARGS)

dr2-cache: install ## DR2 outputs for enhancer training: make dr2-cache HQ=/data/ffhq OUT=/data/ffhq_dr2 ARGS="devices=8"
	$(PY) -m lightning_dr2 dr2-cache --hq $(HQ) --out $(OUT) --config experiments/dr2_cache.yaml $(ARGS)

restore: install ## restore a folder: make restore IN=faces/ OUT=restored/ ARGS="dr2.N=8 dr2.tau=35"
	$(PY) -m lightning_dr2 restore --input $(IN) --output $(OUT) --config experiments/restore_dr2e.yaml $(ARGS)

testsets: install ## build CelebA-Test 4x/8x/16x x mild/medium/severe: make testsets HQ=data/celeba_hq_test
	$(PY) -m lightning_dr2 testset --hq $(HQ) --out data/testsets/celeba_test --spec celeba_test $(ARGS)

eval: install ## evaluate: make eval EVAL=experiments/eval_celeba_test.yaml ARGS="unet_weights=FILE devices=8"
	$(PY) -m lightning_dr2 eval $(EVAL) $(ARGS)

compare: install ## compare evaluation runs: make compare RUNS="runs/eval_celeba_test"
	$(PY) -m lightning_dr2 compare $(RUNS) $(ARGS)

bench: install ## benchmarks (JSON): DDPM step, DR2+SPARNetHD restore, eval overhead, eval job, enhancer step, DR2 cache
	$(PY) -m lightning_dr2 bench train $(ARGS)
	$(PY) -m lightning_dr2 bench restore $(ARGS)
	$(PY) -m lightning_dr2 bench eval $(ARGS)
	$(PY) -m lightning_dr2 bench eval-job $(ARGS)
	$(PY) -m lightning_dr2 bench enhancer $(ARGS)
	$(PY) -m lightning_dr2 bench dr2-cache $(ARGS)

lint: install ## ruff
	$(PY) -m ruff check lightning_dr2 tests

clean: ## remove caches (keeps .venv, data/ and runs/)
	rm -rf .pytest_cache .ruff_cache **/__pycache__
