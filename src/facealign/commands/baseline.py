"""`facealign baseline NAME`: train a baseline method (dlib-ert) on the same training faces as `facealign train`."""
from __future__ import annotations

import argparse

from facealign.commands.train import set_pairs

HELP = ("train a baseline method on our training faces (dlib-ert: dlib's ERT shape predictor, the equal-data "
        "comparison)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("method", help="dlib-ert (dlib.train_shape_predictor with dlib's default options on the same "
                                  "split, detector boxes and faces as `facealign train`, plus their mirror images)")
    p.add_argument("--data", type=str, required=True, help="data root, e.g. a 300W folder (docs/data.md)")
    p.add_argument("--out", help="parent folder of the run folder (default runs/; the run goes to OUT/dlib-ert)")
    p.add_argument("--cache-dir", dest="cache_dir", help="box cache folder (as for `facealign boxes`)")
    p.add_argument("--threads", type=int, help="training threads (default: every available core)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any option of the method's config, e.g. --set cascade_depth=12 --set mirror=false "
                        "(an unknown name is an error listing the valid ones)")


def run(args) -> int:
    from facealign.training.baselines import get_trained_baseline
    make_config, train = get_trained_baseline(args.method)
    overrides = {k: getattr(args, k) for k in ("out", "cache_dir", "threads") if getattr(args, k) is not None}
    cfg = make_config(data=args.data, **overrides, **set_pairs(args.set))
    summary = train(cfg)
    val = summary.get("best_val_nme")
    print(f"{cfg.name}: validation NME {'-' if val is None else f'{val:.4f}'}, trained in "
          f"{summary['train_seconds']:.0f} s -> {cfg.run_dir} (evaluate: facealign evaluate --model {cfg.run_dir} "
          f"--data {args.data})")
    return 0
