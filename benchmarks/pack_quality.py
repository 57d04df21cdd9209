"""Training packs: JPEG quality versus size and error, and a pack's pixel error against the raw crop caches.

Usage:
  python benchmarks/pack_quality.py quality --data ../shared/data/300W [--every 5]
      every Nth face of the train split cropped at 384 px (256 x margin 1.5, context 0.4, gt boxes), encoded at
      several JPEG qualities and chroma subsamplings: KB per face, the size extrapolated to the whole split,
      mean absolute error and PSNR against the uncompressed crop.
  python benchmarks/pack_quality.py error --pack train.fapack [--sizes 256 160]
      crop caches built from the pack versus `build_crop_cache` on the raw photos (the source root named in the
      pack, same boxes): pixel error and landmark difference per network size.
"""
from __future__ import annotations

import argparse
import io
import tempfile
import time
import warnings

import numpy as np
from PIL import Image


def quality(args) -> None:
    from facealign.detection.boxes import landmark_box
    from facealign.data.cache import CacheSpec, zoom_out
    from facealign.data.crop import CropTransform
    from facealign.data.layouts import index_dataset
    from facealign.data.images import load_rgb
    records = index_dataset(args.data).records(args.split)
    sample = records[::args.every]
    spec = CacheSpec(args.size, args.margin, args.context)
    crops = []
    for r in sample:
        t = CropTransform.from_box(landmark_box(r.landmarks), spec.context).then(zoom_out(spec.true_margin))
        crops.append(t.warp(load_rgb(r.image), spec.cache_size))
    print(f"{len(sample)} of {len(records)} faces, {spec.cache_size} px crops")
    print("| quality | chroma | KB/face | split MB | mean abs error (levels) | PSNR (dB) |\n|---|---|---|---|---|---|")
    for sub in ("4:2:0", "4:4:4"):
        for q in args.qualities:
            sizes, errs, sq = [], [], []
            for c in crops:
                buf = io.BytesIO()
                Image.fromarray(c).save(buf, "JPEG", quality=q, subsampling=sub, optimize=True)
                d = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")).astype(np.float64) - c
                sizes.append(buf.tell())
                errs.append(np.abs(d).mean())
                sq.append((d ** 2).mean())
            kb = np.mean(sizes) / 1e3
            print(f"| {q} | {sub} | {kb:.1f} | {kb * len(records) / 1e3:.1f} | {np.mean(errs):.2f} | "
                  f"{10 * np.log10(255 ** 2 / np.mean(sq)):.1f} |")


def error(args) -> None:
    from facealign.data.cache import CacheSpec, build_crop_cache
    from facealign.data.layouts import index_dataset
    from facealign.data.pack import cache_from_pack, read_pack
    with read_pack(args.pack) as pack, tempfile.TemporaryDirectory() as tmp:
        by_key = {r.key: r for r in index_dataset(pack.meta["source_root"], pack.meta["layout"]).records(pack.splits)}
        records = [by_key[f.key] for f in pack.faces]
        for size in args.sizes:
            spec = CacheSpec(size=size, margin=pack.spec.margin, context=pack.spec.context)
            t0 = time.time()
            raw = build_crop_cache(records, pack.image_boxes, spec, f"{tmp}/raw", progress=False)
            t_raw, t0 = time.time() - t0, time.time()
            pc = cache_from_pack(pack, pack.faces, spec, f"{tmp}/pack", progress=False)
            t_pack = time.time() - t0
            d = pc.images.astype(np.float64) - raw.images
            print(f"size {size} ({spec.cache_size} px cache), {len(records)} faces: mean |diff| {np.abs(d).mean():.2f} "
                  f"levels, PSNR {10 * np.log10(255 ** 2 / (d ** 2).mean()):.1f} dB, p99 |diff| "
                  f"{np.percentile(np.abs(d), 99):.0f}; landmark max diff "
                  f"{np.abs(pc.landmarks - raw.landmarks).max() * spec.cache_size:.2g} px; cache build {t_raw:.1f} s "
                  f"from the photos, {t_pack:.1f} s from the pack")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--data", required=True)
    q.add_argument("--split", default="train")
    q.add_argument("--every", type=int, default=5)
    q.add_argument("--size", type=int, default=256)
    q.add_argument("--margin", type=float, default=1.5)
    q.add_argument("--context", type=float, default=0.4)
    q.add_argument("--qualities", type=int, nargs="+", default=[75, 80, 85, 88, 90, 92, 95])
    q.set_defaults(func=quality)
    e = sub.add_parser("error")
    e.add_argument("--pack", required=True)
    e.add_argument("--sizes", type=int, nargs="+", default=[256, 160])
    e.set_defaults(func=error)
    args = p.parse_args()
    warnings.simplefilter("ignore")
    args.func(args)


if __name__ == "__main__":
    main()
