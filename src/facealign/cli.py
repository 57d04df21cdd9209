"""The `facealign` command: a thin layer over library functions."""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from facealign.detection.boxes import FAIR_MISS
from facealign.data.errors import DataError
from facealign.data.pts import PtsError
from facealign.data.images import ImageLoadError
from facealign.commands.train import add_train_flags as _add_train_flags, overrides as _overrides, \
    set_pairs as _set_pairs

# Errors caused by user input: printed as one line, exit status 2, no traceback.
USER_ERRORS = (DataError, PtsError, ImageLoadError, FileNotFoundError, LookupError, ValueError)


def _warn_one_line(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr)


# ---------------------------------------------------------------- data
def cmd_data_summary(args) -> int:
    from facealign.data.summary import format_summary, summarize_root, summary_error
    summary = summarize_root(args.root, args.layout, decode=not args.no_decode, progress=sys.stderr.isatty(),
                             split_file=args.splits, scheme=args.scheme)
    print(format_summary(summary))
    why = summary_error(summary)
    if why is not None:
        print(f"facealign: error: {why}", file=sys.stderr)
        return 1
    problems = summary.problems()
    if args.strict and problems:
        print(f"facealign: error: --strict: {len(problems)} problem(s) in {args.root} (listed above)", file=sys.stderr)
        return 1
    return 0


def cmd_data_show(args) -> int:
    from facealign.data.show import save_grid
    path = save_grid(args.root, args.split, args.n, args.output, layout=args.layout, protocol=args.box,
                     size=args.size, seed=args.seed, cache_dir=args.cache_dir, split_file=args.splits,
                     scheme=args.scheme)
    print(f"wrote {path}")
    return 0


def cmd_data_pack(args) -> int:
    from facealign.data.pack import write_pack
    from facealign.data.schemes import get_scheme
    s = write_pack(args.root, args.output, args.split, box=args.box, size=args.size, context=args.context,
                   margin=args.margin, layout=args.layout, cache_dir=args.cache_dir, progress=not args.quiet,
                   split_file=args.splits, num_points=get_scheme(args.scheme).num_points,
                   **({} if args.quality is None else {"quality": args.quality}))
    flagged = f", {s['undetected']} missed by the detector (packed with the gt box, flagged)" \
        if s["box_protocol"] == "detector" else ""
    print(f"pack: {s['faces']} faces ({'+'.join(s['splits'])}; {s['box_protocol']} boxes{flagged}), "
          f"{s['resolution']} px JPEG q{s['quality']}: {s['bytes'] / 1e6:.1f} MB in {s['seconds']:.0f} s -> {s['path']}")
    return 0


def cmd_boxes(args) -> int:
    from facealign.detection.boxes import BoxCache, DetectorConfig, precompute_boxes
    from facealign.data.layouts import index_dataset
    with warnings.catch_warnings(record=True) as caught:  # shown once per cache, below
        warnings.simplefilter("always")
        index = index_dataset(args.root, args.layout, args.splits)
    cache = BoxCache(args.root, args.cache_dir, DetectorConfig(args.detector, args.upsample))
    for message in cache.unseen_notices(str(w.message) for w in caught):
        print(f"warning: {message}", file=sys.stderr)
    images = {r.image for recs in index.splits.values() for r in recs}
    if not images:
        raise ValueError(f"no annotated faces (image + .pts) under {args.root}: `facealign boxes` caches detections "
                         "for a dataset; for plain photos use `facealign predict`")
    stats = precompute_boxes(images, cache, workers=args.workers, progress=not args.quiet)
    print(f"boxes: {stats['total']} images, {stats['hits']} cache hits, {stats['stale']} stale (image changed "
          f"since detection), {stats['detected']} detected, "
          f"{len(stats['failures'])} failed -> {cache.path}")
    for path, reason in stats["failures"]:
        print(f"  failed: {path}: {reason}", file=sys.stderr)
    return 1 if stats["failures"] else 0


def cmd_baseline(args) -> int:
    from facealign.training.baselines import get_trained_baseline
    make_config, train = get_trained_baseline(args.method)
    overrides = {k: getattr(args, k) for k in ("out", "cache_dir", "threads") if getattr(args, k) is not None}
    cfg = make_config(data=args.data, **overrides, **_set_pairs(args.set))
    summary = train(cfg)
    val = summary.get("best_val_nme")
    print(f"{cfg.name}: validation NME {'-' if val is None else f'{val:.4f}'}, trained in "
          f"{summary['train_seconds']:.0f} s -> {cfg.run_dir} (evaluate: facealign evaluate --model {cfg.run_dir} "
          f"--data {args.data})")
    return 0


def cmd_evaluate(args) -> int:
    from facealign.data.counts import format_counts
    from facealign.detection.boxes import get_miss_policy
    from facealign.evaluation.evaluate import check_scheme, evaluate, format_summary_line, load_evaluated
    from facealign.detection.boxes import DetectorConfig
    from facealign.detection.detectors import get_detector
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


def cmd_experiments(args) -> int:
    import shlex

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
                    train_missing=not args.no_train, **_overrides(args))
    if not rows:  # nothing finished and evaluated: an empty report is not a result
        print(f"facealign: error: no finished, evaluated run in {runs}: the report has no rows", file=sys.stderr)
        return 1
    print(f"{len(rows)} rows -> {(args.report or args.output) / 'results.md'}")
    return 0


def cmd_card(args) -> int:
    import shlex

    from facealign.evaluation.evaluate import format_summary_line
    from facealign.inference.release import card_latency, remeasure_packaged
    if args.latency_from is not None:
        card = card_latency(args.model, args.latency_from)
        print(f"latency in the card of {args.model}: {card['latency']['ms_per_face']} ms per face, dlib "
              f"{card['latency']['dlib_ms_per_face']} ms (weights untouched)")
        return 0
    if args.data is None:
        raise ValueError("--data is required (or --latency-from BENCH_JSON)")
    parts = ["facealign", "card", str(args.model), "--data", str(args.data), "--split", args.split]
    command = shlex.join(parts + (["--cache-dir", str(args.cache_dir)] if args.cache_dir else []))
    card = remeasure_packaged(args.model, args.data, args.split, args.cache_dir, command)
    for m in card["metrics"].values():
        print(format_summary_line(m))
    print(f"rewrote the card of {args.model} (weights untouched, sha256 {card['weights_sha256'][:12]}...)")
    return 0


def cmd_demo(args) -> int:
    from facealign.demo import demo
    return demo(args.data)


def cmd_bench(args) -> int:
    from facealign.evaluation.bench import run_bench
    result = run_bench(args.data, args.model, args.backend, args.split, args.repeats, args.threads, args.output,
                       args.max_images, args.cache_dir, log=lambda m: print(m, file=sys.stderr))
    print(result["markdown"])
    if args.output is not None:
        print(f"wrote {args.output}")
    return 0


# ---------------------------------------------------------------- parser
def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", type=Path, help="data root (e.g. a 300W folder)")
    _add_layout_args(p)


def _add_layout_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layout", default="auto", type=str.lower, help="300w, menpo, generic or auto (default); any case")
    p.add_argument("--splits", type=Path, default=None, metavar="FILE", help=SPLITS_HELP)


SPLITS_HELP = ("generic layout: a split file, JSON {split: [paths]} or CSV path,split (paths relative to the root); "
               "without it a generic root's splits are its top-level folders when one is named train, val or test, "
               "else one split 'all' (docs/data.md)")


SCHEME_HELP = ("landmark scheme of the .pts files: ibug68 (default), wflw98, cofw29 or a scheme .json file "
               "(docs/data.md)")

FLIP_CHOICES = {"on": True, "off": False, None: None}  # --flip-tta; None: the evaluation convention (on)

MISS_HELP = ("how a face the detector misses is handled: gt-box (default: its ground-truth landmark box, the same "
             "for every method), whole-image (the study's protocol) or skip (left out of the metric)")


# Subcommands with a module of their own in facealign.commands (HELP, add_arguments, run; DESCRIPTION optional).
SUBCOMMAND_MODULES = ("predict", "quantize", "export", "report")


def _add_module_command(sub, name: str) -> None:
    import importlib
    module = importlib.import_module(f"facealign.commands.{name}")
    description = getattr(module, "DESCRIPTION", None)
    p = sub.add_parser(name, help=module.HELP, description=description,
                       formatter_class=argparse.RawDescriptionHelpFormatter if description else argparse.HelpFormatter)
    module.add_arguments(p)
    p.set_defaults(func=module.run)


class OneLineErrors(argparse.ArgumentParser):
    """A usage error (e.g. a missing --data) is one line on stderr and exit status 2, not the whole usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the options)\n")


def build_parser() -> argparse.ArgumentParser:
    from facealign.version import __version__
    parser = OneLineErrors(prog="facealign", description="68-point facial landmark toolkit")
    parser.add_argument("--version", action="version", version=f"facealign {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="inspect datasets").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("summary", help="layouts, split counts, missing folders, skipped and flagged files")
    _add_data_args(p)
    p.add_argument("--strict", action="store_true",
                   help="exit status 1 if any problem was found (missing folders, skipped faces other than Menpo's "
                        "profile faces, images without .pts, duplicate stems, landmarks far outside the image)")
    p.add_argument("--no-decode", action="store_true",
                   help="read image headers only (faster; misses truncated pixel data)")
    p.add_argument("--scheme", default=None, help=SCHEME_HELP)
    p.set_defaults(func=cmd_data_summary)
    p = data.add_parser("show", help="grid of face crops with landmarks drawn")
    _add_data_args(p)
    p.add_argument("--split", default="train", help="split to draw from (`facealign data summary` lists them)")
    p.add_argument("-n", type=int, default=16, help="number of faces")
    p.add_argument("-o", "--output", type=Path, default=Path("grid.png"), help="PNG to write (default grid.png)")
    p.add_argument("--box", default="gt", help="box protocol: detector, gt or seed (detector/seed need `facealign boxes`)")
    p.add_argument("--size", type=int, default=224, help="side of each drawn crop, pixels (default 224)")
    p.add_argument("--seed", type=int, default=0, help="which faces are drawn (random sample seed, default 0)")
    p.add_argument("--cache-dir", type=Path, default=None, help="box cache folder (as for `facealign boxes`)")
    p.add_argument("--scheme", default=None, help=SCHEME_HELP)
    p.set_defaults(func=cmd_data_show)
    p = data.add_parser("pack", help="one portable file of JPEG face crops, landmarks, boxes and metadata for "
                                     "`facealign train --data PACK`")
    _add_data_args(p)
    p.add_argument("-o", "--output", type=Path, required=True, help="pack file to write (e.g. train.fapack)")
    p.add_argument("--split", nargs="+", default=["train"], help="split(s) to pack (default: train)")
    p.add_argument("--box", default="detector", help="box protocol: detector (default; faces the detector misses are "
                                                      "packed with the gt box and flagged), seed or gt")
    p.add_argument("--max-size", dest="size", type=int, default=256,
                   help="largest network input size served at full resolution (default 256; crops are max-size x "
                        "margin pixels)")
    p.add_argument("--context", type=float, default=0.4, help="box enlargement (default 0.4, the `default` preset's)")
    p.add_argument("--margin", type=float, default=1.5, help="augmentation margin (default 1.5)")
    p.add_argument("--quality", type=int, default=None, help="JPEG quality (default 90)")
    p.add_argument("--cache-dir", type=Path, default=None, help="box cache folder (as for `facealign boxes`)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--scheme", default=None, help=SCHEME_HELP)
    p.set_defaults(func=cmd_data_pack)

    p = sub.add_parser("boxes", help="precompute face-detector boxes into a cache")
    _add_data_args(p)
    p.add_argument("--detector", default="dlib", help="face detector: dlib (HOG, default), dlib-cnn, mtcnn "
                   "(docs/detection.md)")
    p.add_argument("--upsample", type=int, default=1, help="dlib HOG upsampling steps (1 finds faces >= ~40 px)")
    p.add_argument("--workers", type=int, default=2, help="detection processes (default 2)")
    p.add_argument("--cache-dir", type=Path, default=None, help="default: ~/.cache/facealign/<root>-<hash> (or $FACEALIGN_CACHE)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_boxes)

    _add_module_command(sub, "train")

    p = sub.add_parser("baseline", help="train a baseline method on our training faces (dlib-ert: dlib's ERT shape "
                                        "predictor, the equal-data comparison)")
    p.add_argument("method", help="dlib-ert (dlib.train_shape_predictor with dlib's default options on the same "
                                  "split, detector boxes and faces as `facealign train`, plus their mirror images)")
    p.add_argument("--data", type=str, required=True, help="data root, e.g. a 300W folder (docs/data.md)")
    p.add_argument("--out", help="parent folder of the run folder (default runs/; the run goes to OUT/dlib-ert)")
    p.add_argument("--cache-dir", dest="cache_dir", help="box cache folder (as for `facealign boxes`)")
    p.add_argument("--threads", type=int, help="training threads (default: every available core)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any option of the method's config, e.g. --set cascade_depth=12 --set mirror=false "
                        "(an unknown name is an error listing the valid ones)")
    p.set_defaults(func=cmd_baseline)

    p = sub.add_parser("evaluate", help="evaluate a checkpoint, a packaged model or dlib on data splits")
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
    _add_layout_args(p)
    p.add_argument("--box", default="detector", help="box protocol: detector (default), gt, seed")
    p.add_argument("--miss", default=FAIR_MISS, help=MISS_HELP)
    p.add_argument("--detector", default="dlib", help="face detector of the detector protocol: dlib (HOG), dlib-cnn, "
                   "mtcnn (docs/detection.md)")
    p.add_argument("--upsample", type=int, default=1, help="detector upsampling steps (default 1)")
    p.add_argument("-o", "--output", type=Path, default=Path("results/eval"),
                   help="folder for the summary JSON, per-face CSV and CED plot (default results/eval)")
    p.add_argument("--cache-dir", type=Path, default=None, help="box cache folder (as for `facealign boxes`)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("experiments", help="the study's 12-run grid (+ an ImageNet variant) plus dlib (resumable)")
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
    p.add_argument("--report", type=Path, default=None, help="report folder (default OUT), e.g. docs/results")
    p.add_argument("--add-run", type=Path, default=None, metavar="RUN",
                   help="instead: evaluate a finished run made elsewhere (e.g. `facealign baseline dlib-ert`) into "
                        "OUT/runs with the grid's protocol and rebuild the report with its row")
    p.add_argument("--import", dest="import_file", type=Path, default=None, metavar="GRID_JSON",
                   help="instead: merge a grid.json of benchmarks/device_grid.sh (runs from a lent GPU) into OUT/runs "
                        "and rebuild the report; each row names its device")
    _add_train_flags(p, grid=True)
    p.set_defaults(func=cmd_experiments)

    _add_module_command(sub, "package")

    p = sub.add_parser("card", help="re-measure a packaged model's card metrics; the weights are not touched")
    p.add_argument("model", help="packaged name ('default', 'default160', 'fast') or a .safetensors stem, e.g. src/facealign/weights/default")
    p.add_argument("--data", type=Path, default=None, help="evaluate on this data root")
    p.add_argument("--split", default="common", help="split to evaluate on (default common)")
    p.add_argument("--cache-dir", type=Path, default=None, help="box cache folder (as for `facealign boxes`)")
    p.add_argument("--latency-from", type=Path, default=None, metavar="BENCH_JSON",
                   help="instead: copy this model's and dlib's per-face latency from a `facealign bench` .json")
    p.set_defaults(func=cmd_card)

    p = sub.add_parser("demo", help="landmarks on a sample photo with the packaged default model (results/demo)")
    p.add_argument("--data", type=Path, default=None,
                   help="a 300W data root for the metrics demo run while no default model is installed (default: "
                        "a generated 300W-style fixture)")
    p.set_defaults(func=cmd_demo)

    for name in SUBCOMMAND_MODULES:  # subcommands that own their arguments, run and printing
        _add_module_command(sub, name)

    p = sub.add_parser("serve", help="HTTP landmark service and web page (needs the serve extras)")
    from facealign.serve.command import add_arguments as _add_serve_arguments, run as _serve
    _add_serve_arguments(p)
    p.set_defaults(func=_serve)

    p = sub.add_parser("bench", help="every packaged model x backend vs dlib: accuracy, latency, start-up, memory")
    from facealign.evaluation.bench import add_arguments as _add_bench_arguments
    _add_bench_arguments(p)
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command line, for run records
    warnings.showwarning = _warn_one_line
    try:
        return args.func(args)
    except USER_ERRORS as e:
        print(f"facealign: error: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:  # non-finite training loss: the message names the step and checkpoint
        print(f"facealign: training stopped: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        hint = INTERRUPT_HINTS.get(args.command)
        print("facealign: interrupted" + (f"; {hint}" if hint else ""), file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout went away (`... -o - | head`): stop quietly
        return _quiet_broken_pipe()


# What to do after Ctrl-C, per subcommand.
INTERRUPT_HINTS = {
    "train": "continue from the last finished epoch with the same command plus --resume",
    "experiments": "run the same command again to continue (finished runs are kept, the interrupted one resumes)",
}
SIGPIPE_STATUS = 141  # 128 + SIGPIPE: what a shell reports for a tool stopped by a closed pipe


def _quiet_broken_pipe() -> int:
    """Point stdout at /dev/null so the interpreter's final flush cannot raise again, and exit 141."""
    import os
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (captured): nothing is flushed to a pipe
        pass
    return SIGPIPE_STATUS


if __name__ == "__main__":
    sys.exit(main())
