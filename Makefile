# The few commands everyone needs. The README's two commands are `make run` and `make test`;
# both set up .venv first (idempotent).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
export CUDA_HOME ?= /usr/local/cuda

.PHONY: setup build test test-fast bench run lint format cuda-build gpu-check clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(VENV)/.deps: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q "torch==$(TORCH_VERSION)"
	$(BIN)/pip install -q ninja numpy pytest hypothesis scipy expecttest scikit-learn pillow matplotlib tqdm ruff clang-format==14.0.6 "c2pa-python>=0.38,<0.39" cryptography
	touch $@

setup: $(VENV)/.deps build

# CPU-only build for this machine (FASTGEN_CUDA=0): the CPU torch wheel has no CUDA anyway.
build: $(VENV)/.deps
	FASTGEN_CUDA=$${FASTGEN_CUDA:-0} MAX_JOBS=$${MAX_JOBS:-2} $(BIN)/pip install -q --no-build-isolation --no-deps -e .

test: setup
	$(BIN)/python -m pytest -q -x --durations=15 tests

bench: setup
	$(BIN)/python -m benchmarks.run --device cpu --out benchmarks/results

# The main job: a DCGAN trained on the embedded digits (a few minutes on 2 CPU cores); sample
# grids, loss plot, log and checkpoints land in runs/dcgan-digits. RUN_ARGS adds options.
run: setup
	$(BIN)/python -m fastgen train dcgan --data digits --out runs/dcgan-digits $(RUN_ARGS)

CSRC := $(shell find csrc -name '*.h' -o -name '*.cpp' -o -name '*.cu' -o -name '*.cuh')

lint: $(VENV)/.deps
	$(BIN)/ruff check fastgen tests benchmarks scripts
	$(BIN)/ruff format --check fastgen tests benchmarks scripts
	@echo "clang-format --dry-run --Werror (csrc/, .clang-format)"
	@$(BIN)/clang-format --dry-run --Werror $(CSRC)

format: $(VENV)/.deps
	$(BIN)/ruff format fastgen tests benchmarks scripts
	$(BIN)/ruff check --fix fastgen tests benchmarks scripts
	$(BIN)/clang-format -i $(CSRC)

# Builds the CUDA variant against pip's CUDA torch (no GPU needed) and checks that every
# CUDA kernel in csrc/ is registered under the CUDA dispatch key.
cuda-build:
	bash scripts/ci_cuda_build.sh

# On a GPU machine: build, CUDA tests, compute-sanitizer, benchmarks -> $(OUT)
gpu-check:
	bash scripts/gpu_check.sh $${OUT:-out}

clean:
	rm -rf build fastgen/_C*.so fastgen/_build_config.py
