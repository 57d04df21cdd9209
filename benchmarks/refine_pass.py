"""Does a second pass that re-crops the face from the first pass's landmarks help? Accuracy and cost.

Pass 1: the model on the dlib HOG box (faces the detector missed get the ground-truth landmark box, the
same for every row). Pass 2 re-crops from pass-1 landmarks and runs the same model again:
- `box`: a detector-like box synthesised from the landmarks' bounding box. The map (centre offset and
  side, relative to the landmark box's longer side) is the median over the training split's detected
  faces, so pass 2 sees crops framed like its training crops;
- `similarity`: the same centre and side, rotated so that the eye centres are level (similarity-aligned);
- `oracle`: the `box` crop from the ground-truth landmarks (an upper bound on what better framing gives).
`x2` rows iterate pass 2 once more. The validation faces are the training pool's held-out 20% (by photo,
seed 0: the split `facealign train` uses), with the detector's misses left out, as in training.

    python benchmarks/refine_pass.py --data ../shared/data/300W --model default
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def landmark_frame(lm: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre (2,) and longer side (pixels) of the tight box around (68, 2) landmarks."""
    lo, hi = lm.min(0), lm.max(0)
    return (lo + hi) / 2, float((hi - lo).max())


def fit_box_map(records, box_cache) -> tuple[np.ndarray, float]:
    """Median detector-box centre offset (in landmark-box sides) and side ratio over detected faces."""
    from facealign.detection.boxes import best_detection
    offsets, ratios = [], []
    for r in records:
        d = best_detection(box_cache.get(r.image) or [], r.landmarks)
        if d is None:
            continue
        c, s = landmark_frame(r.landmarks)
        offsets.append(((d[:2] + d[2:]) / 2 - c) / s)
        ratios.append(max(d[2] - d[0], d[3] - d[1]) / s)
    return np.median(offsets, axis=0), float(np.median(ratios))


def recrop(runner, image, lm, box_map, rotate: bool) -> np.ndarray:
    """Pass 2: the model on a crop placed by landmarks `lm`; returns (68, 2) image pixels."""
    from facealign.data.crop import CropTransform
    from facealign.data.scheme import LEFT_EYE, RIGHT_EYE
    from facealign.data.transforms import normalize
    offset, ratio = box_map
    c, s = landmark_frame(lm)
    c = c + offset * s
    side = ratio * s * (1 + runner.context)
    angle = 0.0
    if rotate:
        v = lm[list(LEFT_EYE)].mean(0) - lm[list(RIGHT_EYE)].mean(0)  # subject's right eye is on the image left
        angle = float(np.arctan2(v[1], v[0]))
    cos, sin = np.cos(-angle), np.sin(-angle)
    m = np.array([[cos, -sin, 0.0], [sin, cos, 0.0]]) / side  # u = R (x - c) / side + 0.5
    m[:, 2] = 0.5 - m[:, :2] @ c
    t = CropTransform(m)
    coords = runner.predict_crops(normalize(t.warp(image, runner.input_size))[None])[0]
    return t.to_image(coords)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--model", default="default")
    p.add_argument("--splits", nargs="+", default=["val", "common"])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    from facealign.detection.boxes import BoxCache, best_detection, boxes_for
    from facealign.data.layouts import index_dataset, split_train_val
    from facealign.data.images import load_rgb
    from facealign.evaluation.metrics import evaluate_landmarks
    from facealign.inference import LandmarkRunner
    warnings.simplefilter("ignore")
    index = index_dataset(args.data)
    cache = BoxCache(args.data)
    train, val = split_train_val(index.records("train"), 0.2, 0)
    box_map = fit_box_map(train, cache)
    print(f"box map from {len(train)} training faces: centre offset {box_map[0].round(4)} sides, "
          f"side ratio {box_map[1]:.4f}")
    runner = LandmarkRunner(args.model)
    for split in args.splits:
        records = [r for r in val if best_detection(cache.get(r.image), r.landmarks) is not None] \
            if split == "val" else index.split(split)
        boxes, counts = boxes_for(records, "detector", cache=cache)
        rows = {k: [] for k in ("pass 1", "box", "box x2", "similarity", "similarity x2", "oracle")}
        times = {"pass 1": [], "pass 2": []}
        for r, b in zip(records, boxes):
            image = load_rgb(r.image)
            if best_detection(cache.get(r.image), r.landmarks) is None:
                b = np.concatenate([r.landmarks.min(0), r.landmarks.max(0)])  # same fallback for every row
            t = time.perf_counter()
            p1 = runner.predict(image, b[None])[0]
            times["pass 1"].append(time.perf_counter() - t)
            rows["pass 1"].append(p1)
            t = time.perf_counter()
            p2 = recrop(runner, image, p1, box_map, rotate=True)
            times["pass 2"].append(time.perf_counter() - t)
            rows["similarity"].append(p2)
            rows["similarity x2"].append(recrop(runner, image, p2, box_map, rotate=True))
            q2 = recrop(runner, image, p1, box_map, rotate=False)
            rows["box"].append(q2)
            rows["box x2"].append(recrop(runner, image, q2, box_map, rotate=False))
            rows["oracle"].append(recrop(runner, image, r.landmarks, box_map, rotate=False))
        gt = np.stack([r.landmarks for r in records])
        print(f"\n{split}: {len(records)} faces ({counts['no_detection']} without detection, ground-truth box); "
              f"model {args.model}, {args.threads} thread(s)")
        print("| pass | NME | AUC@0.08 | FR@0.08 |\n|---|---:|---:|---:|")
        for name, pred in rows.items():
            _, s = evaluate_landmarks(np.stack(pred), gt)
            print(f"| {name} | {s['nme']:.5f} | {s['auc']:.4f} | {s['fr']:.4f} |")
        print(f"median ms per face: pass 1 {1000 * np.median(times['pass 1']):.2f}, "
              f"pass 2 {1000 * np.median(times['pass 2']):.2f} (crop + network with the model's flip TTA)")


if __name__ == "__main__":
    main()
