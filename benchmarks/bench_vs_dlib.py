"""facealign (torch and onnxruntime) vs dlib's 68-point shape predictor: a thin wrapper over
`facealign.bench` (same as `facealign bench`; see that module's docstring for what is measured).

Usage, from the repository root:
    .venv/bin/python benchmarks/bench_vs_dlib.py --data ../shared/data/300W [--model default] \
        [--split common] [--repeats 50] [--threads 1] [--output docs/benchmarks.md]
"""
from __future__ import annotations

import argparse
import sys

from facealign.bench import add_arguments, run_bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    result = run_bench(args.data, args.model, args.split, args.repeats, args.threads, args.output, args.onnx,
                       args.max_images, args.cache_dir, log=lambda m: print(m, file=sys.stderr))
    print(result["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
