#!/usr/bin/env bash
# Create .venv-flower: a SEPARATE virtual environment holding Flower's simulation engine for
# the same-run comparison in `sharelearn bench fedavg` (benchmarks/flower_workload.py).
# flwr[simulation] 1.42 pins ray 2.55.1, typer 0.20 and protobuf 6, which conflict with
# sharelearn's .venv (ray 2.60, typer 0.29, protobuf 7), so it never shares .venv.
# torch is the CPU build pinned like sharelearn's own (torch==2.13.0: pip's find-links wheel
# cache holds torch-2.13.0+cpu, as for .venv), never a CUDA build; set TORCH_INDEX to
# https://download.pytorch.org/whl/cpu where that cache is absent. Usage (from the repository root):
#   bash benchmarks/envs/flower.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${FLOWER_PYTHON:-python3.11}"
FLWR="${FLWR_VERSION:-1.42.0}"
if [ ! -x .venv-flower/bin/python ]; then
    "$PY" -m venv .venv-flower
fi
.venv-flower/bin/python -m pip install --quiet --upgrade pip
.venv-flower/bin/python -m pip install --quiet \
    ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} \
    "flwr[simulation]==$FLWR" "torch==2.13.0" "numpy<3"
.venv-flower/bin/python -c "import flwr, torch; print('flwr', flwr.__version__, 'torch', torch.__version__)"
