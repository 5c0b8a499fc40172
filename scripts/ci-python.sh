#!/usr/bin/env bash
# The Python package's CI: a fresh virtual environment, the registry packages the tests need
# (numpy, torch, diffusers, transformers, ray, pytest, maturin; plain PyPI, CPU torch), the
# abi3 wheel built with maturin and installed, then pytest over python/tests.
# Usage: bash scripts/ci-python.sh [VENV_DIR]   (default: a temporary directory, removed at exit)
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
step() { echo; echo "== python: $* ($(( $(date +%s) - start )) s)"; }

if [ $# -ge 1 ]; then
  venv=$1
else
  # A temporary venv (torch with its CUDA wheels is several GB) is removed at exit.
  venv=$(mktemp -d /tmp/movq-ci-venv.XXXXXX)
  trap 'rm -rf "$venv"' EXIT
fi
py=${PYTHON:-python3}
step "fresh virtual environment in $venv ($($py --version))"
rm -rf "$venv"
$py -m venv "$venv"
pip="$venv/bin/python -m pip"
$pip install --quiet --upgrade pip

step "pip install maturin pytest numpy torch diffusers transformers safetensors ray"
$pip install --quiet maturin pytest numpy torch diffusers transformers safetensors ray

step "cargo fmt --check / clippy -D warnings (python/, the bindings crate)"
cargo fmt --manifest-path python/Cargo.toml -- --check
cargo clippy --manifest-path python/Cargo.toml --all-targets -- -D warnings

step "maturin build --release (abi3 wheel), pip install it"
rm -rf python/target/wheels
"$venv/bin/maturin" build --release --manifest-path python/Cargo.toml --out python/target/wheels
$pip install --quiet python/target/wheels/movq-*.whl
ls python/target/wheels

step "pytest python/tests"
# From outside the source tree, so the tests import the installed wheel, not python/movq.
(cd python/tests && "$venv/bin/python" -m pytest -q -p no:cacheprovider .)

step "done"
