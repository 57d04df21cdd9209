"""Cost of the mediapipe_facemesh backbone with each of our heads, against the packaged `fast`, in one run.

For every (head, input size): multiply-adds per face (torch.utils.flop_counter, MAC = FLOP / 2), parameters,
and onnxruntime's median ms per face at batch 1 on one thread (allow_spinning=0, as `facealign bench` runs
its ONNX rows), the network only (no crop, no detection). Weights are random: cost does not depend on them.

    .venv/bin/python benchmarks/facemesh_heads.py --repeats 200
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CANDIDATES = (("fpn16", 192), ("fpn", 192), ("regression", 192), ("mesh", 192), ("fpn16", 160), ("fpn16", 128))


def onnx_ms(path: Path, size: int, repeats: int) -> float:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(1, 3, size, size)).astype(np.float32)
    name = sess.get_inputs()[0].name
    for _ in range(20):
        sess.run(None, {name: x})
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        sess.run(None, {name: x})
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e3


def mmac(model, size: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 2e6


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args(argv)
    import torch

    from facealign.inference.onnx_build import export_onnx
    from facealign.models import build_model
    from facealign.models.packaged import load_model
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        fast, card = load_model("fast")
        rows.append(("fast (packaged)", card["input_size"], fast))
        rows += [(f"mediapipe_facemesh + {head}", size, build_model("mediapipe_facemesh", head).eval())
                 for head, size in CANDIDATES]
        print("| model | input px | MMAC | parameters | onnxruntime ms/face (1 thread) |\n|---|---:|---:|---:|---:|")
        for i, (name, size, model) in enumerate(rows):
            path = export_onnx(model, Path(tmp) / f"{i}.onnx", card={"name": name}, input_size=size)
            params = sum(p.numel() for p in model.parameters())
            ms = onnx_ms(path, size, args.repeats)
            print(f"| {name} | {size} | {mmac(model, size):.1f} | {params:,} | {ms:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
