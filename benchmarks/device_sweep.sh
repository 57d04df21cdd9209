#!/usr/bin/env bash
# The recipe-lever sweep on a lent GPU (device tool), from source, with no dlib, photos or registry there.
# Prepare here first: `make device-prep` writes .device/train.fapack (the 300W train pack) and copies the
# Lite0 ImageNet weights package to .device/; the device call carries `.device` (see docs/training.md).
# Returns 7 flat files in $OUT, under the device's limits (at most 8 files, each <= 16 MiB): levers.json
# (every lever's row, config and history), levers.md, sweep.log and the 2 best levers' fp16 weights as
# best1.safetensors + best1.json, best2.safetensors + best2.json. (It used to return one sweep.tar of about
# 26 MB: over the 16 MiB limit, so nothing came back.)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="src:.device${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-/tmp/device-out}"
mkdir -p "$OUT"
{
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, 'cuda', torch.cuda.is_available())"
python benchmarks/lever_sweep.py --data .device/train.fapack --out /tmp/sweep \
    --levers "${LEVERS:-e300,s256-e300,fpn4-e300,all-e300}" --deadline-min "${DEADLINE_MIN:-7}" \
    --return-dir "$OUT" ${TINY:+--tiny}
} 2>&1 | tee "$OUT/sweep.log"
exit "${PIPESTATUS[0]}"
