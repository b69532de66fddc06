#!/usr/bin/env bash
# The GPU check (issue 15): run on a machine with a GPU, from the repository root, when the `device` tool's
# status shows one is lent to the session. That machine has python3 with a CUDA torch but none of our other
# dependencies and no network: `make gpu-wheels` (here) puts them, and mrdserve itself, as wheels in
# bench/out/gpu-wheels, carried with the working tree. Under 8 minutes; figures in $OUT (default bench/out/gpu).
#   device run: bash bench/gpu.sh     (carry: bench/out/gpu-wheels)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out/gpu}
WHEELS=bench/out/gpu-wheels
[[ -d $WHEELS ]] || { echo "no $WHEELS: run 'make gpu-wheels' on the development machine and carry it" >&2; exit 2; }
VENV=$(mktemp -d)/venv
python3 -m venv --system-site-packages "$VENV"  # the machine's torch (CUDA), numpy, h5py, onnxruntime stay visible
"$VENV/bin/python" -m pip install --quiet --no-index --no-deps "$WHEELS"/*.whl
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
mkdir -p "$OUT"
timeout 470 "$VENV/bin/python" bench/gpu.py --out "$OUT" --device cuda 2>&1 | tee "$OUT/gpu.txt"
