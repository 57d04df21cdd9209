"""The face-region crop against the whole-image pre-shrink it replaced: pixels, NME and time.

    python benchmarks/crop_window.py --data ../shared/data/300W [--faces 120] [--model default]

Prints the pixel difference of the two crops on helen/testset faces (ground-truth boxes, 224 and 160 px,
context 0.4), their median times, and the model's NME on helen/testset (detector boxes, misses -> gt-box)
with each crop, on the onnx backend (1 thread).
"""
from __future__ import annotations

import argparse
import time
import warnings

import cv2
import numpy as np

import facealign.data.crop as crop
from facealign.detection.boxes import landmark_box
from facealign.data.layouts import index_dataset
from facealign.evaluation.evaluate import evaluate_split
from facealign.data.images import load_rgb
from facealign.inference import load_runner


def full_image_warp(self: crop.CropTransform, image: np.ndarray, size: int, border: str = "replicate") -> np.ndarray:
    """The crop before the change: the WHOLE image pre-shrunk (INTER_AREA), then warped."""
    m = self.pixel_matrix(size)
    scale = np.sqrt(abs(np.linalg.det(m[:, :2])))
    src = image
    if scale < 0.5:
        f = 1 / scale / 1.5
        h, w = image.shape[:2]
        src = cv2.resize(image, (max(1, round(w / f)), max(1, round(h / f))), interpolation=cv2.INTER_AREA)
        sx, sy = src.shape[1] / w, src.shape[0] / h
        pre = np.array([[1 / sx, 0, 0.5 / sx - 0.5], [0, 1 / sy, 0.5 / sy - 0.5]])
        m = crop.CropTransform(pre).then(m).matrix  # pre, then m
    return cv2.warpAffine(src, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--faces", type=int, default=120)
    p.add_argument("--model", default="default")
    args = p.parse_args()
    warnings.simplefilter("ignore")
    records = index_dataset(args.data).split("common")[: args.faces]
    diffs, t_new, t_old = [], [], []
    for r in records:
        img = load_rgb(r.image)
        for size in (224, 160):
            t = crop.CropTransform.from_box(landmark_box(r.landmarks), 0.4)
            t0 = time.perf_counter()
            a = t.warp(img, size)
            t1 = time.perf_counter()
            b = full_image_warp(t, img, size)
            t2 = time.perf_counter()
            t_new.append(t1 - t0)
            t_old.append(t2 - t1)
            d = np.abs(a.astype(int) - b.astype(int))
            diffs.append((d.mean(), d.max()))
    d = np.array(diffs)
    print(f"{len(records)} faces x 2 sizes: mean |diff| {d[:, 0].mean():.3f} grey levels (worst face "
          f"{d[:, 0].max():.3f}), max {int(d[:, 1].max())}")
    print(f"median crop time: face region {np.median(t_new) * 1e3:.2f} ms, whole image {np.median(t_old) * 1e3:.2f} ms")
    runner = load_runner(args.model, "onnx", threads=1)
    new_warp = crop.CropTransform.warp
    for name, warp in (("face region", new_warp), ("whole image", full_image_warp)):
        crop.CropTransform.warp = warp
        s, _, _ = evaluate_split(runner, args.data, "common", "detector", "gt-box")
        print(f"NME ({args.model}, helen/testset, misses -> gt-box) with the {name} crop: {s['nme']:.5f}")
    crop.CropTransform.warp = new_warp


if __name__ == "__main__":
    main()
