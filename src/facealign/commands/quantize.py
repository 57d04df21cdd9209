"""`facealign quantize`: a static int8 ONNX graph of a model, calibrated on training faces, NME change measured."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "static int8 ONNX graph of a model, calibrated on training faces, with its NME change measured"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="'default', 'default160', 'fast', a .safetensors file or an .onnx file from "
                   "`facealign export`")
    p.add_argument("-o", "--output", type=Path, required=True, help="the int8 .onnx file to write")
    p.add_argument("--data", type=Path, required=True, help="data root: calibration and evaluation faces")
    p.add_argument("--calibration", type=int, default=256, help="training faces to calibrate on (default 256)")
    p.add_argument("--split", default="train", help="calibration split (default train; never a test split)")
    p.add_argument("--eval-split", default="common", help="split on which the NME change is measured")


def run(args) -> int:
    from facealign.inference.export import run_quantize
    r = run_quantize(args.model, args.output, args.data, args.calibration, args.split, args.eval_split)
    print(f"wrote {r['output']}: calibrated on {r['calibration']}; NME on {r['eval_split']} ({r['boxes']}): "
          f"fp32 {r['nme_fp32']:.5f}, int8 {r['nme_int8']:.5f} ({r['nme_change']:+.2%}; "
          f"{'within' if r['ok'] else 'OVER'} the {r['max_change']:.0%} limit)")
    return 0 if r["ok"] else 1
