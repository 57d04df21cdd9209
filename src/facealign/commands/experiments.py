"""`facealign experiments`: the study's grid of training runs plus dlib, evaluated and reported (resumable)."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from facealign.commands.options import MISS_HELP
from facealign.commands.train import add_train_flags, overrides

HELP = "the study's 12-run grid (+ an ImageNet variant) plus dlib (resumable)"
INTERRUPT_HINT = "run the same command again to continue (finished runs are kept, the interrupted one resumes)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, default=None, help="data root (not needed with --report-only)")
    p.add_argument("--preset", default="cpu", help="training preset of every run: seed (the study's settings), cpu "
                   "(default: sized for a small CPU), default, fast")
    p.add_argument("--grid", nargs="+", default=["study"], help="study (the 12 runs, random init) and/or imagenet "
                   "(the 6 EfficientNet runs on ImageNet-initialised tf_efficientnet_lite0)")
    p.add_argument("--only", default=None, help="wildcard on {backbone}-{head}-{loss}")
    p.add_argument("--best", action="store_true", help="only efficientnet_b0-heatmap-mse")
    p.add_argument("--split", nargs="+", default=["common"], help="test split(s) (default: common, 300W's)")
    p.add_argument("--box", default="detector", help="test box protocol: detector (default), gt, seed")
    p.add_argument("--miss", nargs="+", default=["gt-box", "whole-image"],
                   help="detector-miss handlings to evaluate; the first is the headline. " + MISS_HELP)
    p.add_argument("--no-dlib", action="store_true", help="leave out dlib's row")
    p.add_argument("--report-only", action="store_true",
                   help="rebuild the report from OUT/runs alone: train and evaluate nothing")
    p.add_argument("--no-train", action="store_true",
                   help="evaluate the finished experiments and report them; train nothing (unfinished ones are listed)")
    p.add_argument("-o", "--output", type=Path, default=Path("results/experiments"),
                   help="OUT: run folders go to OUT/runs (default results/experiments)")
    p.add_argument("--report", type=Path, default=None, help="report folder (default OUT), e.g. results/study")
    p.add_argument("--add-run", type=Path, default=None, metavar="RUN",
                   help="instead: evaluate a finished run made elsewhere (e.g. `facealign baseline dlib-ert`) into "
                        "OUT/runs with the grid's protocol and rebuild the report with its row")
    p.add_argument("--import", dest="import_file", type=Path, default=None, metavar="GRID_JSON",
                   help="instead: merge a grid.json of benchmarks/device_grid.sh (runs from a lent GPU) into OUT/runs "
                        "and rebuild the report; each row names its device")
    add_train_flags(p, grid=True)


def run(args) -> int:
    from facealign.study.experiments import import_grid, run_grid
    if args.import_file is not None:
        rows = import_grid(args.import_file, args.output, args.report)
        print(f"{len(rows)} rows -> {(args.report or args.output) / 'results.md'}")
        return 0
    if args.data is None and not args.report_only:
        raise ValueError("--data is required unless --report-only")
    if args.add_run is not None:
        from facealign.study.experiments import add_run
        if args.data is None:
            raise ValueError("--add-run needs --data (the run is evaluated on it)")
        rows = add_run(args.add_run, args.output, str(args.data), args.report, args.cache_dir, tuple(args.split),
                       args.box, tuple(args.miss))
        print(f"{len(rows)} rows -> {(args.report or args.output) / 'results.md'}")
        return 0
    runs = args.output / "runs"
    if args.report_only and not (runs.is_dir() and any(p.is_dir() for p in runs.iterdir())):
        raise ValueError(f"--report-only: no run folders in {runs}; nothing to report (give -o the grid's output "
                         "folder)")
    command = "facealign " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    rows = run_grid(str(args.data), args.output, args.preset, tuple(args.grid), args.only, args.best,
                    tuple(args.split), args.box, tuple(args.miss), with_dlib=not args.no_dlib,
                    report_only=args.report_only, report_dir=args.report, command=command,
                    train_missing=not args.no_train, **overrides(args))
    if not rows:  # nothing finished and evaluated: an empty report is not a result
        print(f"facealign: error: no finished, evaluated run in {runs}: the report has no rows", file=sys.stderr)
        return 1
    print(f"{len(rows)} rows -> {(args.report or args.output) / 'results.md'}")
    return 0
