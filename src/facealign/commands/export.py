"""`facealign export`: a model to ONNX, checked against torch on real (or generated) faces."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "export a model to ONNX and check it against torch"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="'default', 'default160', 'fast', a .safetensors file (card beside it) or a "
                   "training checkpoint (.pt)")
    p.add_argument("-o", "--output", type=Path, required=True, help="the .onnx file to write")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--input-size", type=int, default=None, help="default: the model card's input_size")
    p.add_argument("--data", type=Path, default=None,
                   help="a data root whose real faces the check uses (default, or if the folder is missing: "
                        "generated faces)")
    p.add_argument("--tolerance", type=float, default=1e-3, help="max |onnx - torch|, normalised crop units")


def run(args) -> int:
    from facealign.inference.export import format_export_report, run_export
    path, report = run_export(args.model, args.output, data=args.data, opset=args.opset, input_size=args.input_size,
                              tolerance=args.tolerance)
    print(format_export_report(path, report))
    return 0 if report["ok"] else 1
