#!/usr/bin/env bash
# The Python module: `pip install .` into a fresh virtual environment (the
# wheel built by maturin from python/), then tests/python/ with pytest,
# against the dawin binary the tests built. Prints the build time.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/python-venv
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q numpy pytest
start=$SECONDS
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/python} "$venv/bin/pip" install -q .
echo "pip install . took $((SECONDS - start)) s"
DAWIN_BIN=${DAWIN_BIN:-$PWD/target/debug/dawin} "$venv/bin/python" -m pytest -q tests/python
