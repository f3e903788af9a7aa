#!/usr/bin/env bash
# Create .venv-spu: a SEPARATE virtual environment holding SecretFlow's SPU 0.9.5
# for the same-run comparison in `sharelearn bench mpc` (benchmarks/spu_workload.py).
# SPU pins jax/numpy versions that conflict with sharelearn's own venv, so it never
# shares .venv. Usage (from the repository root): bash benchmarks/envs/spu.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${SPU_PYTHON:-python3.11}"
if [ ! -x .venv-spu/bin/python ]; then
    "$PY" -m venv .venv-spu
fi
printf '*\n' > .venv-spu/.gitignore  # keep the venv out of git status without touching .gitignore
.venv-spu/bin/python -m pip install --quiet --upgrade pip
.venv-spu/bin/python -m pip install --quiet "spu==0.9.5"
.venv-spu/bin/python -c "import spu, spu.utils.simulation; print('spu', spu.__version__)"
