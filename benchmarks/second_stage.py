"""Second-stage models (`facealign train --first-stage MODEL`): each second stage behind each first stage, against
one-stage models, on the same faces and boxes.

Faces: `val` is the training pool's held-out 20% (by photo, seed 0, detector misses left out: the faces
`facealign train` validates on); `common` is helen/testset with dlib HOG boxes, a face the detector misses
getting its ground-truth landmark box (`gt-box`, the same box for every row). A one-stage row runs the model
on the box with its card's flip; a two-stage row runs the first stage on the box (its card's flip unless
--first-no-flip), then the second on the crop aligned from those landmarks (`facealign.data.aligned`), with
flip; with --iterate, also the second stage run again on the crop its own landmarks place (`x2`). Times are
median ms per face of the whole prediction (crops included), torch, --threads threads; only comparable between
rows of one run on an otherwise idle machine.

    python benchmarks/second_stage.py --data ../shared/data/300W --second RUN --first default160 fast \
        --baselines default default160
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def faces(data: str, split: str):
    """(records, boxes (N, 4)) of a split: `val` or an index split (`common`), boxes as the docstring says."""
    from facealign.data.layouts import index_dataset, split_train_val
    from facealign.detection.boxes import BoxCache, best_detection
    index = index_dataset(data)
    cache = BoxCache(data)
    if split == "val":
        _, val = split_train_val(index.records("train"), 0.2, 0)
        records = [r for r in val if best_detection(cache.get(r.image), r.landmarks) is not None]
    else:
        records = index.split(split)
    boxes = []
    for r in records:
        d = best_detection(cache.get(r.image) or [], r.landmarks)
        boxes.append(d[:4] if d is not None else np.concatenate([r.landmarks.min(0), r.landmarks.max(0)]))
    return records, np.asarray(boxes, np.float32)


def score(runner, records, boxes, images) -> tuple[dict, float]:
    """(NME/AUC/FR summary, median ms per face)."""
    from facealign.evaluation.metrics import evaluate_landmarks
    preds, times = [], []
    for b, image in zip(boxes, images):
        t = time.perf_counter()
        preds.append(runner.predict(image, b[None])[0])
        times.append(time.perf_counter() - t)
    _, s = evaluate_landmarks(np.stack(preds), np.stack([r.landmarks for r in records]))
    return s, 1000 * float(np.median(times))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--second", nargs="+", required=True, help="second-stage models (run folders, checkpoints, ...)")
    p.add_argument("--first", nargs="+", default=["default160"], help="first stages to pair each second stage with")
    p.add_argument("--baselines", nargs="*", default=["default", "default160"], help="one-stage models")
    p.add_argument("--splits", nargs="+", default=["val", "common"])
    p.add_argument("--first-no-flip", action="store_true", help="also rows with the first stage's flip off")
    p.add_argument("--iterate", action="store_true", help="also rows that run each second stage twice (its own "
                                                               "output placing its second crop)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    from facealign.data.images import load_rgb
    from facealign.inference.backends import BACKENDS
    from facealign.inference.staged import StagedRunner
    warnings.simplefilter("ignore")

    def plain(spec, flip=None):  # the model alone: no first stage even if its card names one
        return BACKENDS["torch"].runner(spec, "cpu", flip, args.threads)

    rows = [(b, plain(b)) for b in args.baselines]
    for second in args.second:
        for first in args.first:
            for flip in ([None, False] if args.first_no_flip else [None]):
                f = plain(first, flip)
                name, staged = f"{first}{'' if f.flip_tta else ' (no flip)'} -> {second}", StagedRunner(f, plain(second, True))
                rows.append((name, staged))
                if args.iterate:
                    rows.append((f"{name} x2", StagedRunner(staged, plain(second, True))))
    for split in args.splits:
        records, boxes = faces(args.data, split)
        images = [load_rgb(r.image) for r in records]
        print(f"\n{split}: {len(records)} faces; torch, {args.threads} thread(s)")
        print("| model | NME | AUC@0.08 | FR@0.08 | ms per face |\n|---|---:|---:|---:|---:|")
        for name, runner in rows:
            s, ms = score(runner, records, boxes, images)
            print(f"| {name} | {s['nme']:.5f} | {s['auc']:.4f} | {s['fr']:.4f} | {ms:.1f} |", flush=True)


if __name__ == "__main__":
    main()
