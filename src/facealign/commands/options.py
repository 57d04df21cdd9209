"""Options and help texts shared by several subcommands (data root and layout, landmark scheme, detector misses)."""
from __future__ import annotations

import argparse
from pathlib import Path

SPLITS_HELP = ("generic layout: a split file, JSON {split: [paths]} or CSV path,split (paths relative to the root); "
               "without it a generic root's splits are its top-level folders when one is named train, val or test, "
               "else one split 'all' (docs/data.md)")

SCHEME_HELP = ("landmark scheme of the .pts files: ibug68 (default), wflw98, cofw29 or a scheme .json file "
               "(docs/data.md)")

MISS_HELP = ("how a face the detector misses is handled: gt-box (default: its ground-truth landmark box, the same "
             "for every method), whole-image (the study's protocol) or skip (left out of the metric)")


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", type=Path, help="data root (e.g. a 300W folder)")
    add_layout_args(p)


def add_layout_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layout", default="auto", type=str.lower, help="300w, menpo, generic or auto (default); any case")
    p.add_argument("--splits", type=Path, default=None, metavar="FILE", help=SPLITS_HELP)
