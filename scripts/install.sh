#!/usr/bin/env bash
# Installs sla with its test and lint dependencies into the active Python environment.
# torch first, pinned: on this machine `pip install torch==2.13.0` takes a CPU
# build from local disk, while a bare `torch` requirement would pull a CUDA build.
set -euo pipefail
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.13.0"
# CHOLMOD for the scipy backend's cholesky/ldlt (SuiteSparse headers from Debian)
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] && [ ! -f /usr/include/suitesparse/cholmod.h ]; then
  (apt-get update -qq && apt-get install -y -qq libsuitesparse-dev >/dev/null) || echo "libsuitesparse-dev not installed: CHOLMOD tests will skip"
fi
python -m pip install -q -e ".[test,dev]"   # dev: ruff and import-linter, which CI runs
# Eigen headers (cmeel-eigen wheel) and ninja, so the eigen backend compiles and its tests run
python -m pip install -q cmeel-eigen ninja || echo "cmeel-eigen/ninja not installed: Eigen backend tests will skip"
if [ -f /usr/include/suitesparse/cholmod.h ]; then
  python -m pip install -q "scikit-sparse==0.4.16" || echo "scikit-sparse failed to build: CHOLMOD tests will skip"
fi
