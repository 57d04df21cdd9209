"""How far off is a first stage's aligned crop? The spread that a second stage's augmentation must cover.

For each validation face (the training pool's held-out 20%, by photo, seed 0, detector misses left out:
the split `facealign train` validates on), the first stage predicts landmarks on the detector box; the
similarity-aligned crop they place (`facealign.data.aligned.aligned_transform`) is compared with the one the
ground truth places (`frame_error`): rotation, log side ratio, centre shift in crop sides. Also printed: the
aligned crop's side against the detector crop's (box side x (1 + the first stage's context)).

    python benchmarks/stage_jitter.py --data ../shared/data/300W --first default160 --context 0.3
"""
from __future__ import annotations

import argparse
import warnings

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--first", default="default160")
    p.add_argument("--context", type=float, default=0.3, help="the second stage's aligned-crop context")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    from facealign.data.aligned import aligned_transform, frame_error
    from facealign.data.images import load_rgb
    from facealign.data.layouts import index_dataset, split_train_val
    from facealign.detection.boxes import BoxCache, best_detection, boxes_for
    from facealign.evaluation.metrics import evaluate_landmarks
    from facealign.inference.backends import load_runner
    warnings.simplefilter("ignore")
    index = index_dataset(args.data)
    cache = BoxCache(args.data)
    _, val = split_train_val(index.records("train"), 0.2, 0)
    val = [r for r in val if best_detection(cache.get(r.image), r.landmarks) is not None]
    boxes, _ = boxes_for(val, "detector", cache=cache)
    runner = load_runner(args.first, "torch", threads=args.threads)
    pred = np.stack([runner.predict(load_rgb(r.image), b[None])[0] for r, b in zip(val, boxes)])
    gt = np.stack([r.landmarks for r in val])
    _, s = evaluate_landmarks(pred, gt)
    err = frame_error(pred, gt, args.context)
    sides = [1 / np.sqrt(abs(np.linalg.det(aligned_transform(t, args.context).matrix[:, :2]))) for t in gt]
    det_sides = [max(b[2] - b[0], b[3] - b[1]) * (1 + runner.context) for b in boxes]
    print(f"{len(val)} validation faces; first stage {args.first} (flip {runner.flip_tta}): NME {s['nme']:.5f}")
    print(f"aligned crop side / detector crop side: median {np.median(np.array(sides) / det_sides):.3f} "
          f"(aligned context {args.context}, detector context {runner.context})")
    print("| frame error | mean | std | 95th pct of abs | max abs |\n|---|---:|---:|---:|---:|")
    for j, name in enumerate(["rotation (deg)", "log side ratio", "centre shift x (sides)", "centre shift y (sides)"]):
        e = err[:, j]
        print(f"| {name} | {e.mean():+.4f} | {e.std():.4f} | {np.percentile(abs(e), 95):.4f} | {abs(e).max():.4f} |")


if __name__ == "__main__":
    main()
