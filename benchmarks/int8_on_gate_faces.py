"""NME of int8 graphs on the accuracy gate's 40 helen/testset faces (frozen boxes), beside the fp32 reference.

Usage: python benchmarks/int8_on_gate_faces.py --data ../shared/data/300W MODEL:GRAPH.onnx [MODEL:GRAPH.onnx ...]
e.g. `fast:src/facealign/weights/fast.int8.onnx`. An earlier graph can be taken from git history
(`git show REV:src/facealign/weights/fast.int8.onnx > /tmp/fast.old.int8.onnx`). Prints a Markdown table and
the CPU's int8-relevant features, since int8 results depend on them (docs/reliability.md).
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from accuracy_gate import load_reference, measure, subset_records  # noqa: E402

from facealign.hardware import cpu_summary  # noqa: E402
from facealign.data.images import load_rgb  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("graphs", nargs="+", help="MODEL:PATH of an int8 .onnx graph of packaged model MODEL")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    ref = load_reference()
    records = subset_records(args.data)
    boxes = np.array([f["box"] for f in ref["faces"]], np.float32)
    images = [load_rgb(r.image) for r in records]
    print(f"CPU: {cpu_summary()}\n")
    print("| model | int8 graph | fp32 NME (reference) | int8 NME | change |\n|---|---|---:|---:|---:|")
    for spec in args.graphs:
        model, path = spec.split(":", 1)
        # the gate's own measurement (the runner's crop and TTA path, onnxruntime on 1 thread)
        nme, fp32 = measure(path, "onnx-int8", records, boxes, images).mean(), ref["models"][model]["torch"]["nme"]
        print(f"| {model} | {path} | {fp32:.5f} | {nme:.5f} | {nme / fp32 - 1:+.2%} |")


if __name__ == "__main__":
    main()
