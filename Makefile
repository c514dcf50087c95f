# The two commands users need: `make serve` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Opt-in extras for `make serve`, e.g. `make serve EXTRAS=heic` (HEIC photos; see docs/decisions.md).
EXTRAS ?=
comma := ,
RUNTIME_STAMP := $(VENV)/.runtime-installed$(if $(EXTRAS),-$(subst $(comma),-,$(EXTRAS)))

.PHONY: install runtime test serve lint train benchmark lock vendor browser postgres prometheus containers dashboard clean

install: $(STAMP)

# What `make serve` needs and nothing more: the package and its runtime dependencies (`pip install -e .`:
# ONNX Runtime, FastAPI, ...), no PyTorch, Keras, MLflow, test tools or npm packages. A venv that
# `make install` already filled has all of it.
runtime: $(RUNTIME_STAMP)
$(RUNTIME_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.$(if $(EXTRAS),[$(EXTRAS)])'
	touch $(RUNTIME_STAMP)

OIDC_PROVIDER := tests/auth/oidc_provider
BRUNO := bruno
# Where the web page's browser libraries and the API docs' Swagger UI and ReDoc come from
# (vendor/package.json, install scripts off: vendor/.npmrc); `make vendor` copies them.
PAGE_VENDOR := vendor
PAGE_STATIC := src/cats_dogs_other/web/static/vendor

# Re-run only when a dependency list changes; `pip install -e` keeps source edits live.
# The npm parts, pinned by their package-lock.json: the real OpenID provider the end-to-end auth tests
# run, the Bruno CLI that runs the API collection in bruno/, and the page's vendored library (which a
# test compares with its npm package).
$(STAMP): pyproject.toml $(OIDC_PROVIDER)/package-lock.json $(BRUNO)/package-lock.json $(PAGE_VENDOR)/package-lock.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[train,keras,mlflow,heic,openvino,dev]'
	cd $(OIDC_PROVIDER) && npm ci --no-audit --no-fund --loglevel=error
	cd $(BRUNO) && npm ci --no-audit --no-fund --loglevel=error
	cd $(PAGE_VENDOR) && npm ci --no-audit --no-fund --loglevel=error
	touch $(STAMP)

# The browser tests drive Debian's Chromium through Playwright (no browser download, which fails here).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium)

# The feedback tests start a real PostgreSQL server (as an unprivileged user, in a temporary folder):
# Debian's server binaries, installed here when missing. The cluster apt may create is not used.
postgres:
	command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		(apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql)

# The monitoring tests run Debian's Prometheus: `promtool` checks and unit-tests the shipped rules, and a
# real server scrapes a real service. Installed here when missing (its packaged service is not used).
prometheus:
	command -v promtool >/dev/null || (apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus)

# The image tests build the Dockerfile and play deploy/k8s with Debian's podman (runc as its runtime,
# catatonit for kube play's pods; buildah, fuse-overlayfs, slirp4netns and uidmap are what podman
# recommends), and mmdebstrap builds a stand-in python:3.11-slim where Docker Hub cannot be reached.
CONTAINER_TOOLS := podman runc catatonit mmdebstrap buildah fuse-overlayfs slirp4netns uidmap
containers:
	command -v podman >/dev/null && command -v runc >/dev/null && command -v catatonit >/dev/null && \
		command -v mmdebstrap >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq --no-install-recommends $(CONTAINER_TOOLS))

test: install browser postgres prometheus containers
	$(BIN)/ruff check src tests benchmarks deploy boot.py
	$(BIN)/mypy src
	$(BIN)/lint-imports
	$(BIN)/pytest

# The local demo: no tokens, and anonymous feedback allowed and kept in a SQLite file under .data/
# (git-ignored; each image's anonymous answers count as one vote), so that the
# page's "Right" / "Wrong" buttons work and `cats-dogs-other feedback export` has something to export.
FEEDBACK_DB ?= sqlite:///$(CURDIR)/.data/feedback.db
serve: runtime
	$(BIN)/cats-dogs-other serve --no-auth --feedback-allow-anonymous --feedback-database-url $(FEEDBACK_DB)

lint: install
	$(BIN)/ruff check src tests benchmarks deploy boot.py
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
	$(BIN)/python benchmarks/cost.py
	$(BIN)/python benchmarks/profile.py
	$(BIN)/python benchmarks/flood.py

# The image's hash-pinned lock (deploy/docker/requirements.lock), for Linux x86_64 and Python 3.11 as in
# the Dockerfile; uv is used only here, so it is installed on demand.
LOCK := deploy/docker/requirements.lock
lock: install
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml deploy/docker/requirements.in --generate-hashes \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 --no-emit-index-url \
		--custom-compile-command 'make lock' -o $(LOCK)

# Re-copy the page's vendored files from npm after changing vendor/package.json (then run `make test`).
vendor:
	cd $(PAGE_VENDOR) && npm install --no-audit --no-fund --loglevel=error
	cp $(PAGE_VENDOR)/node_modules/oidc-client-ts/dist/browser/oidc-client-ts.min.js $(PAGE_STATIC)/
	cp $(PAGE_VENDOR)/node_modules/oidc-client-ts/LICENSE $(PAGE_STATIC)/oidc-client-ts.LICENSE
	cp $(PAGE_VENDOR)/node_modules/jwt-decode/LICENSE $(PAGE_STATIC)/jwt-decode.LICENSE
	cp $(PAGE_VENDOR)/node_modules/swagger-ui-dist/swagger-ui-bundle.js $(PAGE_STATIC)/
	cp $(PAGE_VENDOR)/node_modules/swagger-ui-dist/swagger-ui-bundle.js.LICENSE.txt $(PAGE_STATIC)/
	cp $(PAGE_VENDOR)/node_modules/swagger-ui-dist/swagger-ui.css $(PAGE_STATIC)/
	cp $(PAGE_VENDOR)/node_modules/swagger-ui-dist/LICENSE $(PAGE_STATIC)/swagger-ui.LICENSE
	cp $(PAGE_VENDOR)/node_modules/swagger-ui-dist/NOTICE $(PAGE_STATIC)/swagger-ui.NOTICE
	cp $(PAGE_VENDOR)/node_modules/redoc/bundles/redoc.standalone.js $(PAGE_STATIC)/
	cp $(PAGE_VENDOR)/node_modules/redoc/bundles/redoc.standalone.js.LICENSE.txt $(PAGE_STATIC)/
	cp $(PAGE_VENDOR)/node_modules/redoc/LICENSE $(PAGE_STATIC)/redoc.LICENSE

# Re-write the Grafana dashboard's JSON from its code (deploy/grafana/dashboard.py); a test checks they agree.
dashboard: install
	$(BIN)/python deploy/grafana/dashboard.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache
