"""Turn a `facealign boxes` cache (dlib HOG, all detections with score >= 0) into a detector run for
benchmarks/detectors.py, so the HOG up1 boxes the landmark models were trained on are not detected again.

    python benchmarks/detection_from_cache.py --data ../shared/data/300W -o results/detection/dlib-up1.json

Photos missing from the cache, or changed since, are detected now (and cached). Times are not in a cache: the run's seconds are NaN, and docs/detection.md takes every time from the
separate `--timing` pass of benchmarks/detectors.py.
"""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from facealign.detection.boxes import BoxCache, DetectorConfig
from facealign.detection.detectors import get_detector
from facealign.data.layouts import index_dataset
from facealign.detection.evaluation import photos_of
from facealign.data.images import load_rgb
from facealign.atomic import atomic_write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--upsample", type=int, default=1)
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = index_dataset(args.data)
    cache = BoxCache(args.data, detector=DetectorConfig("dlib", args.upsample))
    photos, out, fresh = photos_of(index.records("train")) + photos_of(index.records("common")), {}, 0
    for p in photos:
        dets = cache.get(p.image)
        rgb = load_rgb(p.image)
        if dets is None:  # not cached, or the image changed since: detect now, same detector and settings
            dets = get_detector("dlib")(rgb, args.upsample)
            cache.put(p.image, dets)
            fresh += 1
        h, w = rgb.shape[:2]
        out[p.key] = {"mpx": h * w / 1e6, "seconds": float("nan"), "boxes": [[float(v) for v in b] for b, _ in dets],
                      "scores": [float(s) for _, s in dets]}
    atomic_write_json(args.output, {"detector": "dlib", "upsample": args.upsample, "photos": out,
                                    "source": str(cache.path.name)})
    cache.save()
    print(f"{len(out)} photos ({fresh} detected now, the rest from {cache.path}) -> {args.output}")


if __name__ == "__main__":
    main()
