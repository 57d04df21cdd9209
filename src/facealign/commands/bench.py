"""`facealign bench`: every packaged model x backend against dlib: accuracy, latency, start-up, memory (each
measurement in a fresh process)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "every packaged model x backend vs dlib: accuracy, latency, start-up, memory"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from facealign.inference.backends import BACKENDS
    from facealign.models.weights import PACKAGED_MODELS
    p.add_argument("--data", type=Path, required=True, help="300W data root")
    p.add_argument("--model", nargs="+", default=list(PACKAGED_MODELS),
                   help="models to compare (default: every packaged model); names, .safetensors, .pt or .onnx files")
    p.add_argument("--backend", nargs="+", default=list(BACKENDS), help=f"backends (default: {' '.join(BACKENDS)})")
    p.add_argument("--split", default="common", help="split the accuracy is measured on (default common)")
    p.add_argument("--repeats", type=int, default=50, help="timed batch-1 calls (batch-32: max(3, repeats // 5))")
    p.add_argument("--threads", type=int, default=1,
                   help="torch/onnxruntime intra-op threads (default 1, like dlib; 0 = all available cores)")
    p.add_argument("--max-images", type=int, default=None, help="end-to-end over the first N photos only")
    p.add_argument("--cache-dir", type=Path, default=None, help="box cache folder (default: the user cache)")
    p.add_argument("--dlib-ert", type=Path, default=None, metavar="RUN",
                   help="also time dlib's method trained on our faces: a `facealign baseline dlib-ert` run folder "
                        "(or a dlib .dat file), measured exactly as dlib's shipped predictor")
    p.add_argument("-o", "--output", type=Path, default=None, help="write the report (Markdown) here, + .json")


def run(args) -> int:
    from facealign.evaluation.bench import run_bench
    result = run_bench(args.data, args.model, args.backend, args.split, args.repeats, args.threads, args.output,
                       args.max_images, args.cache_dir, log=lambda m: print(m, file=sys.stderr), dlib_ert=args.dlib_ert)
    print(result["markdown"])
    if args.output is not None:
        print(f"wrote {args.output}")
    return 0
