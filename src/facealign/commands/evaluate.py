"""`facealign evaluate`: a checkpoint, a packaged model or dlib on data splits, through the fair harness."""
from __future__ import annotations

import argparse
from pathlib import Path

from facealign.commands.options import MISS_HELP, add_layout_args
from facealign.detection.boxes import FAIR_MISS

HELP = "evaluate a checkpoint, a packaged model or dlib on data splits"
FLIP_CHOICES = {"on": True, "off": False, None: None}  # --flip-tta; None: the evaluation convention (on)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a packaged model (default, default160, fast), a .safetensors file, "
                                                  "a checkpoint (.pt), a training run folder (its best checkpoint), "
                                                  "'dlib' (dlib's shipped predictor), or a "
                                                  "`facealign baseline dlib-ert` run folder (or any dlib .dat file)")
    p.add_argument("--flip-tta", choices=tuple(c for c in FLIP_CHOICES if c), default=None,
                   help="flip test-time augmentation (each face also predicted mirrored, the two averaged): on (the "
                        "default for every checkpoint and packaged model, whatever its card says, so a run's "
                        "checkpoint and its package score the same) or off (one crop per face)")
    p.add_argument("--no-flip", action="store_true", help="the same as --flip-tta off")
    p.add_argument("--data", type=Path, required=True, help="data root, e.g. a 300W folder (docs/data.md)")
    p.add_argument("--scheme", default=None, help="landmark scheme of the data (default: the model's; dlib and "
                   "dlib-ert runs: ibug68 only), checked against the model's")
    p.add_argument("--split", nargs="+", default=["common"], help="split name(s) (`facealign data summary` lists a "
                                                                  "root's; default: common, 300W's)")
    add_layout_args(p)
    p.add_argument("--box", default="detector", help="box protocol: detector (default), gt, seed")
    p.add_argument("--miss", default=FAIR_MISS, help=MISS_HELP)
    p.add_argument("--detector", default="dlib", help="face detector of the detector protocol: dlib (HOG), dlib-cnn, "
                   "mtcnn (docs/detection.md)")
    p.add_argument("--upsample", type=int, default=1, help="detector upsampling steps (default 1)")
    p.add_argument("-o", "--output", type=Path, default=Path("results/eval"),
                   help="folder for the summary JSON, per-face CSV and CED plot (default results/eval)")
    p.add_argument("--cache-dir", type=Path, default=None, help="box cache folder (as for `facealign boxes`)")


def run(args) -> int:
    from facealign.data.counts import format_counts
    from facealign.detection.boxes import DetectorConfig, get_miss_policy
    from facealign.detection.detectors import get_detector
    from facealign.evaluation.evaluate import check_scheme, evaluate, format_summary_line, load_evaluated
    get_miss_policy(args.miss)  # names are checked before loading a model
    get_detector(args.detector)
    if args.no_flip and args.flip_tta == "on":
        raise ValueError("--no-flip and --flip-tta on contradict each other")
    predictor = load_evaluated(args.model, flip_tta=False if args.no_flip else FLIP_CHOICES[args.flip_tta])
    check_scheme(predictor, args.scheme)
    results = evaluate(predictor, args.data, args.split, args.box, args.output, args.cache_dir, miss=args.miss,
                       detector=DetectorConfig(args.detector, args.upsample), layout=args.layout,
                       split_file=args.splits)
    for s in results.values():
        print(format_summary_line(s))
        print(f"  {format_counts(s['counts'])}")
    print(f"outputs in {args.output}")
    return 0
