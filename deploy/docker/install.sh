#!/bin/sh
# Install the service, runtime only (no PyTorch, no compilers), in steps. The Dockerfile runs one step per
# stage, so that a change under src/ re-runs only `package`, never the dependencies; the test in
# tests/deploy runs the same steps into a fresh venv.
#   install.sh dependencies VENV SOURCE_DIR [EXTRA...]  the locked runtime, then the EXTRAs' requirements
#   install.sh package VENV SOURCE_DIR [PREFIX]          the package alone (into PREFIX: its own layer)
#   install.sh slim VENV                                 leave out what serving never imports
#   install.sh all VENV SOURCE_DIR [EXTRA...]            dependencies and package in one venv
# The runtime comes from SOURCE_DIR/deploy/docker/requirements.lock, every file checked against its
# sha256; the package is built with the locked setuptools. EXTRAs (an opt-in extra such as `heic`, or
# the build stage's `fetch` tools) come from pyproject.toml's ranges.
set -eu
step="$1"
venv="$2"
shift 2
pip_install() {
    "$venv/bin/python" -m pip install --no-cache-dir --disable-pip-version-check --quiet "$@"
}

dependencies() {
    source_dir="$1"
    shift
    "${PYTHON:-python3}" -m venv "$venv"
    pip_install --require-hashes -r "$source_dir/deploy/docker/requirements.lock"
    if [ "$#" -gt 0 ]; then
        # Only pyproject.toml is needed for the extras' requirements, not the sources.
        wanted="$(mktemp)"
        "$venv/bin/python" - "$source_dir/pyproject.toml" "$@" >"$wanted" <<'PY'
import sys
import tomllib

with open(sys.argv[1], "rb") as file:
    extras = tomllib.load(file)["project"]["optional-dependencies"]
for name in sys.argv[2:]:
    print("\n".join(extras[name]))
PY
        pip_install -r "$wanted"
        rm -f "$wanted"
    fi
}

package() {
    source_dir="$1"
    if [ "$#" -gt 1 ]; then
        pip_install --no-deps --no-build-isolation --prefix "$2" "$source_dir"
    else
        pip_install --no-deps --no-build-isolation "$source_dir"
    fi
}

slim() {
    # pip and the build backend (setuptools) are for installing, and NumPy's test suites (17 MB) for its
    # developers; the bytecode stays: without it every start compiles (docs/decisions.md).
    "$venv/bin/python" -m pip uninstall --yes --quiet --disable-pip-version-check pip setuptools
    find "$venv" -depth -type d -name tests -exec rm -rf {} +
}

case "$step" in
dependencies) dependencies "$@" ;;
package) package "$@" ;;
slim) slim ;;
all)
    source_dir="$1"
    dependencies "$@"
    package "$source_dir"
    ;;
*)
    echo "usage: install.sh dependencies|package|slim|all VENV ..." >&2
    exit 2
    ;;
esac
