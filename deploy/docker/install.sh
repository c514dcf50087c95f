#!/bin/sh
# Install the service, runtime only (no PyTorch, no compilers), into a new virtual environment.
# Used by the Dockerfile and, unchanged, by the test that proves these steps work (tests/deploy).
#   usage: install.sh VENV_DIR SOURCE_DIR [EXTRA...]    e.g. install.sh /opt/venv /src mlflow
set -eu
venv="$1"
source_dir="$2"
shift 2
extras=""
if [ "$#" -gt 0 ]; then
    extras="[$(echo "$@" | tr ' ' ',')]"
fi
"${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/pip" install --no-cache-dir --disable-pip-version-check --quiet "${source_dir}${extras}"
