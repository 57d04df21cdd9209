"""`facealign boxes`: run a face detector over a dataset's images once and keep the boxes in a cache."""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from facealign.commands.options import add_data_args

HELP = "precompute face-detector boxes into a cache"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data_args(p)
    p.add_argument("--detector", default="dlib", help="face detector: dlib (HOG, default), dlib-cnn, mtcnn "
                   "(docs/detection.md)")
    p.add_argument("--upsample", type=int, default=1, help="dlib HOG upsampling steps (1 finds faces >= ~40 px)")
    p.add_argument("--workers", type=int, default=2, help="detection processes (default 2)")
    p.add_argument("--cache-dir", type=Path, default=None, help="default: ~/.cache/facealign/<root>-<hash> (or $FACEALIGN_CACHE)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from facealign.data.layouts import index_dataset
    from facealign.detection.boxes import BoxCache, DetectorConfig, precompute_boxes
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
