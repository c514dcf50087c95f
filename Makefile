# The two commands users need: `make serve` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test serve lint train benchmark lock clean

install: $(STAMP)

OIDC_PROVIDER := tests/auth/oidc_provider
BRUNO := bruno

# Re-run only when a dependency list changes; `pip install -e` keeps source edits live.
# The npm parts, pinned by their package-lock.json: the real OpenID provider the end-to-end auth tests
# run, and the Bruno CLI that runs the API collection in bruno/.
$(STAMP): pyproject.toml $(OIDC_PROVIDER)/package-lock.json $(BRUNO)/package-lock.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[train,keras,mlflow,dev]'
	cd $(OIDC_PROVIDER) && npm ci --no-audit --no-fund --loglevel=error
	cd $(BRUNO) && npm ci --no-audit --no-fund --loglevel=error
	touch $(STAMP)

test: install
	$(BIN)/ruff check src tests benchmarks boot.py
	$(BIN)/mypy src
	$(BIN)/lint-imports
	$(BIN)/pytest

serve: install
	$(BIN)/cats-dogs-other serve --no-auth

lint: install
	$(BIN)/ruff check src tests benchmarks boot.py
	$(BIN)/mypy src
	$(BIN)/lint-imports

# Re-train the default model shipped in the package from the course's dataset.
DATA ?= ../shared/datasets/cats-dogs-other/images
train: install
	$(BIN)/cats-dogs-other train --data $(DATA) --out src/cats_dogs_other/models/default --quantize

# Benchmarks are not tests: they print Markdown for BENCHMARKS.md (and write benchmarks/results/).
benchmark: install
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python benchmarks/inference.py
	$(BIN)/python benchmarks/quantization.py
	$(BIN)/python benchmarks/serving.py

# The image's hash-pinned lock (deploy/docker/requirements.lock), for Linux x86_64 and Python 3.11 as in
# the Dockerfile; uv is used only here, so it is installed on demand.
LOCK := deploy/docker/requirements.lock
lock: install
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml deploy/docker/requirements.in --generate-hashes \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 --no-emit-index-url \
		--custom-compile-command 'make lock' -o $(LOCK)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache
