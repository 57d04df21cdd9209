#!/usr/bin/env bash
# The study's grid on a lent GPU in one call (issue 22): benchmarks/device_grid.py trains every run of the
# `study` and `imagenet` grids at --preset seed from .device/seed-train.fapack under an 8-minute deadline,
# evaluates each on .device/seed-common.fapack (stored detector boxes; misses -> gt-box) and writes at most
# 8 flat files to OUT_DIR: grid.json, grid.log, gpu.log, best{1,2}.safetensors + .json.
# Prepare here first: `make device-grid-prep` (the two packs at the seed crop, Lite0 weights, into .device/); the device call carries
# `.device` (docs/training.md has the exact `run` call). Import: `facealign experiments --import OUT_DIR/grid.json`.
#   usage: benchmarks/device_grid.sh [--tiny] OUT_DIR [device_grid.py options...]
# --tiny: the same path on the CPU in seconds, from tiny packs of a generated 300W fixture.
set -euo pipefail
cd "$(dirname "$0")/.."
TINY=""
if [ "${1:-}" = "--tiny" ]; then TINY=1; shift; fi
OUT="${1:?usage: benchmarks/device_grid.sh [--tiny] OUT_DIR [options]}"; shift
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src:$PWD/.device${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-$(command -v python || command -v python3)}"
if [ -z "$TINY" ]; then
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >>"$OUT/grid.log" 2>&1 || true
    # GPU load every 20 s (gpu.log, a 7th file): tells the next call whether more runs at once would fit
    (nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 20 >"$OUT/gpu.log" 2>&1 &) || true
    exec "$PY" benchmarks/device_grid.py --train .device/seed-train.fapack --test .device/seed-common.fapack \
        --out "$OUT" --work "${WORK:-/tmp/device-grid}" "$@"
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$PY" - "$WORK" <<'PY'  # a generated 300W tree and its two packs, as `make device-grid-prep` packs the real one
import sys, warnings
from pathlib import Path
from facealign.data.pack_writer import write_pack
from facealign.data.synthetic import make_300w_fixture
work = Path(sys.argv[1])
root = make_300w_fixture(work / "300W", {"afw": 6, "helen/trainset": 6, "helen/testset": 3}, size=64)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the fixture's missing 300W folders
    # gt training boxes: the HOG detector finds no generated face, and training drops undetected faces
    # size 192: the largest lever input (the mesh levers keep theirs in a smoke test)
    write_pack(root, work / "train.fapack", ["train"], box="gt", size=192, context=0.1, progress=False)
    write_pack(root, work / "common.fapack", ["common"], box="detector", size=192, context=0.1,
               cache_dir=work / "boxes", progress=False)
PY
# The device's module set: the CPU smoke test fails where the GPU call would (benchmarks/device_env)
PYTHONPATH="$PWD/benchmarks/device_env:$PYTHONPATH" "$PY" benchmarks/device_grid.py --tiny --train "$WORK/train.fapack" --test "$WORK/common.fapack" \
    --out "$OUT" --work "$WORK/work" --deadline-min 5 --eval-reserve-min 1 "$@"
