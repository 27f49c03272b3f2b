#!/usr/bin/env bash
# One-step setup from a fresh clone: a virtual environment with everything the benchmarks
# and tests use (torch 2.13 CPU build, triton 3.7.1 for the interpreter, ONNX Runtime,
# cuda-python + NVRTC for compile-only CUDA tests), then an editable install that builds
# the compiled CPU kernels. Idempotent: a second run only re-checks.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
stamp=.venv/.edgesentry-deps
deps_hash=$(sha256sum requirements-dev.txt pyproject.toml setup.py | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$deps_hash" ]; then
  # torch first and pinned: an unpinned torch would resolve to a multi-GB CUDA build.
  $VPY -m pip install --quiet --disable-pip-version-check torch==2.13.0 triton==3.7.1
  $VPY -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
  echo "$deps_hash" > "$stamp"
fi
# Editable install; rebuilds the pybind11 kernels when their sources changed.
$VPY -m pip install --quiet --disable-pip-version-check --no-build-isolation --no-deps -e .
if [ -x scripts/services.sh ]; then scripts/services.sh; fi
