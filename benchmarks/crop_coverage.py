"""How many faces keep all 68 landmarks inside the crop, per box protocol and context.

Usage: python benchmarks/crop_coverage.py --data ../shared/data/300W [--split train] [--protocol detector]
Needs the dlib box cache (`facealign boxes ROOT`). Faces without a detection are left out.
"""
from __future__ import annotations

import argparse
import warnings

import numpy as np

from facealign.detection.boxes import BoxCache, best_detection, get_box_protocol
from facealign.data.crop import CropTransform
from facealign.data.layouts import index_dataset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="train")
    p.add_argument("--protocol", default="detector")
    p.add_argument("--contexts", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.5])
    args = p.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records = index_dataset(args.data).split(args.split)
    cache, fn = BoxCache(args.data), get_box_protocol(args.protocol)
    pairs = []
    for r in records:
        dets = cache.get(r.image)
        if dets is None:
            raise SystemExit(f"no cached detections for {r.image}; run `facealign boxes {args.data}` first")
        if best_detection(dets, r.landmarks) is not None:
            pairs.append((fn(r.landmarks, dets, r.width, r.height), r.landmarks))
    print(f"{args.split}: {len(pairs)} of {len(records)} faces detected; protocol {args.protocol}\n")
    print("| context | landmarks outside the crop | faces with any landmark outside |\n|---:|---:|---:|")
    for ctx in args.contexts:
        u = np.stack([CropTransform.from_box(b, ctx).to_crop(lm) for b, lm in pairs])
        outside = ((u < 0) | (u > 1)).any(-1)
        print(f"| {ctx:.1f} | {outside.mean():.2%} | {outside.any(1).mean():.1%} |")


if __name__ == "__main__":
    main()
