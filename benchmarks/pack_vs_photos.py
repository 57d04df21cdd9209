"""Does evaluating from a pack (benchmarks/device_grid.py, no dlib or photos) match the photo harness?

Scores one model on the test pack's split from its stored boxes (`device_grid.evaluate_pack`) and on the raw
photos with the harness (`facealign.evaluation.evaluate.evaluate_split`, detector boxes, misses -> gt-box), then compares
the per-face NME of the same faces. Needs the data root and `make device-grid-prep`'s .device/seed-common.fapack.

    PYTHONPATH=src python benchmarks/pack_vs_photos.py --model default --data ../shared/data/300W
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import warnings
from pathlib import Path

import numpy as np


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default")
    p.add_argument("--data", default="../shared/data/300W")
    p.add_argument("--pack", default=".device/seed-common.fapack")
    p.add_argument("--split", default="common")
    a = p.parse_args()
    warnings.simplefilter("ignore")
    spec = importlib.util.spec_from_file_location("device_grid", Path(__file__).with_name("device_grid.py"))
    dg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dg)
    from facealign.evaluation.evaluate import TorchPredictor, evaluate_split
    predictor = TorchPredictor(a.model)
    packed = dg.evaluate_pack(predictor, a.pack, a.split)
    summary, errors, keys = evaluate_split(predictor, a.data, a.split, "detector", "gt-box")
    by_key = dict(zip(keys, errors))
    photo = np.array([by_key[k] for k in packed["faces"]])
    pack = np.array(packed["errors"])
    print(f"{a.model} on {a.split}: pack NME {pack.mean():.5f}, photos NME {photo.mean():.5f} "
          f"({len(pack)} faces, same faces: {sorted(keys) == sorted(packed['faces'])}); per face: "
          f"mean |diff| / photo NME {np.mean(np.abs(pack - photo) / photo):.1%}, max |diff| {np.abs(pack - photo).max():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
