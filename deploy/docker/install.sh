#!/bin/sh
# Install the service, runtime only (no PyTorch, no compilers), into a new virtual environment.
# Used by the Dockerfile and, unchanged, by the test that proves these steps work (tests/deploy).
#   usage: install.sh VENV_DIR SOURCE_DIR [EXTRA...]    e.g. install.sh /opt/venv /src mlflow
# The runtime comes from deploy/docker/requirements.lock, every file checked against its sha256; the
# package itself is built from SOURCE_DIR with the locked setuptools. EXTRAs (the build stage's `fetch`
# tools, or an opt-in extra such as `heic`) are installed on top from pyproject.toml's ranges.
set -eu
venv="$1"
source_dir="$2"
shift 2
"${PYTHON:-python3}" -m venv "$venv"
pip="$venv/bin/pip"
"$pip" install --no-cache-dir --disable-pip-version-check --quiet --require-hashes \
    -r "$source_dir/deploy/docker/requirements.lock"
"$pip" install --no-cache-dir --disable-pip-version-check --quiet --no-deps --no-build-isolation "$source_dir"
if [ "$#" -gt 0 ]; then
    "$pip" install --no-cache-dir --disable-pip-version-check --quiet \
        "${source_dir}[$(echo "$@" | tr ' ' ',')]"
fi
