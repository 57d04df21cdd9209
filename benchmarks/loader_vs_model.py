"""Loader throughput (cached crops + augmentation) next to the model's training throughput.

The crop cache exists so that an epoch never decodes full-size photos; this script checks
that the cached loader keeps well ahead of the training step it feeds. Everything is
measured in ONE run on the same machine, so the loader/model ratio is meaningful even
when the absolute numbers are noisy (shared machines).

For each input size S (default 128 and 224 px) it reports:

* the one-off crop-cache build time for the train split (or "reused" if an identical
  cache already existed: delete the folder, or pass --rebuild, to time a fresh build);
* the loader's images/s: torch DataLoader over `CachedFaces` with augmentation,
  shuffle, batch --batch, for each --workers value; the first batch is warm-up;
* the same per-sample work without the DataLoader (`dataset[i]` in a loop): the cost of
  facealign's own code, free of torch's collate and worker machinery;
* a raw-decode baseline: images/s of decoding the original JPEG and cropping one face
  per sample (`load_rgb` + `crop_face`), i.e. what a loader without the cache would do;
* the model's training images/s: efficientnet_b0 (facealign `build_model`, regression
  head, random init) in train mode, channels_last, AdamW, MSE on random targets, one
  warm-up step, then batch / median step time over --steps timed steps.

Loader, baseline and model measurements alternate for --rounds rounds and the best round
of each is reported (per-round values are printed too), so a burst of load from another
process hits one round rather than one side of the ratio. On an oversubscribed machine
torch's multi-threaded ops (the model step, and the batch collate in a workers=0 loader)
slow down far more than single-threaded numpy/OpenCV work, so the load average is printed.

Usage:
    .venv/bin/python benchmarks/loader_vs_model.py --data ../shared/data/300W \
        [--sizes 128 224] [--batch 32] [--workers 0 1] [--steps 3] [--rounds 2]
"""
from __future__ import annotations

import argparse
import datetime
import os
import random
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from facealign.detection.boxes import BoxCache, boxes_for
from facealign.data.cache import CacheSpec, build_crop_cache, cache_key
from facealign.data.crop import crop_face
from facealign.data.dataset import CachedFaces
from facealign.data.layouts import index_dataset
from facealign.data.transforms import AugmentConfig
from facealign.hardware import cpu_model
from facealign.data.images import load_rgb

TARGET_RATIO = 3.0


def load_records(root: Path, split: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing 300W subset folders: one warning each, expected
        index = index_dataset(root)
    return index.split(split), index.missing


def face_boxes(records, root: Path) -> tuple[np.ndarray, str]:
    """Seed-protocol boxes from the cached dlib detections; `gt` boxes if any image is not cached."""
    try:
        boxes, counts = boxes_for(records, "seed", cache=BoxCache(root))
        return boxes, f"seed (cached dlib detections; {counts['no_detection']} faces without a detection)"
    except LookupError as e:
        boxes, _ = boxes_for(records, "gt")
        return boxes, f"gt (FALLBACK: detection cache incomplete: {e})"


def loader_rate(dataset: CachedFaces, batch: int, workers: int, images: int, seed: int) -> tuple[float, int]:
    """Images/s through a shuffling DataLoader, first batch excluded; returns (rate, images timed)."""
    g = torch.Generator()
    g.manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, generator=g,
                        drop_last=True, persistent_workers=False)
    batches = max(2, 1 + -(-images // batch))  # warm-up batch + enough to cover `images`
    it = iter(loader)
    count, start = 0, None
    for i in range(batches):
        try:
            b = next(it)
        except StopIteration:  # dataset smaller than asked: start another epoch
            dataset.set_epoch(dataset.epoch + 1)
            it = iter(loader)
            b = next(it)
        if i == 0:
            start = time.perf_counter()  # warm-up batch (worker start-up, page cache) not timed
            continue
        count += b["image"].shape[0]
    elapsed = time.perf_counter() - start
    del it, loader
    return count / elapsed, count


def item_rate(dataset: CachedFaces, images: int, seed: int) -> float:
    """Images/s of `dataset[i]` alone (augment + normalise, no DataLoader, no collate), random order."""
    order = np.random.default_rng(seed).permutation(len(dataset))[:images + 1]
    dataset[int(order[0])]  # warm-up
    start = time.perf_counter()
    for i in order[1:]:
        dataset[int(i)]
    return (len(order) - 1) / (time.perf_counter() - start)


def raw_decode_rate(records, boxes: np.ndarray, size: int, images: int, seed: int) -> tuple[float, int]:
    """Images/s of decode-the-photo + crop-one-face, in random order (no cache, no augmentation)."""
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    order = order[:images + 1]
    crop_face(load_rgb(records[order[0]].image), boxes[order[0]], None, size=size)  # warm-up, not timed
    order = order[1:]
    start = time.perf_counter()
    for i in order:
        crop_face(load_rgb(records[i].image), boxes[i], records[i].landmarks, size=size)
    return len(order) / (time.perf_counter() - start), len(order)


def build_train_model(name: str, source: str):
    if source == "facealign":
        from facealign.models import build_model
        return build_model(name, head="regression"), f"facealign build_model({name!r}, head='regression')"
    import timm
    return (timm.create_model(name, pretrained=False, num_classes=136),
            f"timm.create_model({name!r}, pretrained=False, num_classes=136)")


class ModelBench:
    """One training setup: train mode, channels_last, AdamW, MSE on random targets; 1 warm-up step."""

    def __init__(self, model_name: str, source: str, size: int, batch: int, seed: int):
        torch.manual_seed(seed)
        model, self.desc = build_train_model(model_name, source)
        self.model = model.to(memory_format=torch.channels_last).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
        self.y = torch.rand(batch, 68, 2)
        self.batch = batch
        self.step()  # warm-up (allocations, oneDNN kernel selection, optimizer state)

    def step(self) -> float:
        start = time.perf_counter()
        out = self.model(self.x)
        coords = out["coords"] if isinstance(out, dict) else out.view(self.batch, 68, 2)
        loss = torch.nn.functional.mse_loss(coords, self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return time.perf_counter() - start

    def rate(self, steps: int) -> float:
        """Images/s from the median step time (robust to one step hit by another process)."""
        return self.batch / float(np.median([self.step() for _ in range(steps)]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="300W root")
    p.add_argument("--split", default="train")
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    p.add_argument("--steps", type=int, default=3, help="timed model steps per size and round (after 1 warm-up)")
    p.add_argument("--rounds", type=int, default=2,
                   help="alternating loader/baseline/model measurements per size; the best round is reported")
    p.add_argument("--loader-images", type=int, default=416,
                   help="images timed per loader measurement (after the warm-up batch)")
    p.add_argument("--decode-images", type=int, default=64, help="faces for the raw-decode baseline")
    p.add_argument("--model", default="efficientnet_b0")
    p.add_argument("--model-source", choices=["facealign", "timm"], default="facealign",
                   help="facealign build_model (regression head) or a plain timm classifier with 136 outputs")
    p.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "facealign" / "bench")
    p.add_argument("--rebuild", action="store_true", help="delete an identical cache first, to time a fresh build")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    # the interpreter invocation exactly as typed (sys.orig_argv keeps "python" and its flags)
    command = shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    load_start = os.getloadavg()
    records, missing = load_records(args.data, args.split)
    boxes, box_note = face_boxes(records, args.data)
    print(f"data: {args.data} split={args.split}: {len(records)} faces"
          + (f" (missing subsets: {', '.join(missing)})" if missing else ""))
    print(f"boxes: {box_note}")

    rows, builds = [], []
    for size in args.sizes:
        spec = CacheSpec(size=size)
        folder = args.cache_dir / f"{args.data.resolve().name}-{args.split}"
        key = cache_key(records, boxes, spec)
        if args.rebuild:
            for ext in ("json", "u8", "npz"):
                (folder / f"crops-{key}.{ext}").unlink(missing_ok=True)
        existed = (folder / f"crops-{key}.json").is_file()
        start = time.perf_counter()
        cache = build_crop_cache(records, boxes, spec, folder, progress=False)
        build_s = time.perf_counter() - start
        mb = cache.images.nbytes / 2 ** 20
        builds.append(f"| {size} | {spec.cache_size} | {len(cache)} | {mb:.0f} | "
                      f"{'reused (load only) ' if existed else ''}{build_s:.1f} s |")

        dataset = CachedFaces(cache, augment=AugmentConfig(), seed=args.seed)
        bench = ModelBench(args.model, args.model_source, size, args.batch, args.seed)
        model_desc = bench.desc
        # Rounds alternate loader / baseline / model, and each keeps its best round: on a shared
        # machine every figure is then the least-disturbed one, measured minutes apart at most.
        loader_runs = {w: [] for w in args.workers}
        item_runs, raw_runs, model_runs = [], [], []
        for rnd in range(args.rounds):
            for w in args.workers:
                rate, n_loader = loader_rate(dataset, args.batch, w, args.loader_images, args.seed + rnd)
                loader_runs[w].append(rate)
            item_runs.append(item_rate(dataset, args.loader_images, args.seed + rnd))
            rate, n_raw = raw_decode_rate(records, boxes, size, args.decode_images, args.seed + rnd)
            raw_runs.append(rate)
            model_runs.append(bench.rate(args.steps))
        del bench
        loader = {w: max(v) for w, v in loader_runs.items()}
        item, raw, model = max(item_runs), max(raw_runs), max(model_runs)
        rows.append((size, loader, item, raw, model))
        fmt = lambda v, d=0: "/".join(f"{x:.{d}f}" for x in v)  # noqa: E731
        print(f"size {size} (rounds {fmt(range(1, args.rounds + 1))}): loader "
              f"{', '.join(f'w={w} {fmt(v)}' for w, v in loader_runs.items())} img/s ({n_loader} images each); "
              f"dataset[i] {fmt(item_runs)} img/s; "
              f"raw decode {fmt(raw_runs)} img/s ({n_raw} faces each); "
              f"model {fmt(model_runs, 1)} img/s (median of {args.steps} steps x {args.batch}); "
              f"load avg {os.getloadavg()[0]:.2f}", flush=True)

    total = time.perf_counter() - t0
    print()
    print(f"command: `{command}`")
    print(f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"torch {torch.__version__}, torch threads {torch.get_num_threads()}, "
          f"os.cpu_count() {os.cpu_count()}, CPU: {cpu_model()}")
    print(f"load average (1 min) at start {load_start[0]:.2f}, at end {os.getloadavg()[0]:.2f}")
    print(f"model: {model_desc}, random init, train mode, channels_last, AdamW, MSE on random targets, "
          f"batch {args.batch}, 1 warm-up step, then rate = batch / median of {args.steps} step times")
    print(f"loader: CachedFaces + AugmentConfig() (rotation/scale/shift/flip/brightness/contrast), "
          f"DataLoader(batch {args.batch}, shuffle), first batch = warm-up, {n_loader} images timed")
    print("dataset[i]: CachedFaces.__getitem__ in this process (same augmentation), no DataLoader/collate")
    print(f"raw decode: load_rgb(original photo) + crop_face(seed box), {n_raw} random faces, no augmentation")
    print(f"every rate is the best of {args.rounds} alternating rounds (per-round values above)")
    print(f"boxes: {box_note}")
    print()
    print("Crop cache (one-off, not part of the per-epoch rate):")
    print()
    print("| size | cached side | faces | MiB | build time |")
    print("|---:|---:|---:|---:|---|")
    for line in builds:
        print(line)
    print()
    wcols = " | ".join(f"loader img/s (workers={w})" for w in args.workers)
    print(f"| size | raw decode+crop img/s (no cache) | dataset[i] img/s (no DataLoader) | {wcols} | model train img/s | "
          f"ratio loader/model | target >={TARGET_RATIO:g}x met? |")
    print("|---:|---:|---:|" + "---:|" * len(args.workers) + "---:|---|---|")
    for size, loader, item, raw, model in rows:
        best_w = max(loader, key=loader.get)
        ratios = {w: r / model for w, r in loader.items()}
        ratio_txt = ", ".join(f"{ratios[w]:.1f}x (w={w})" for w in loader)
        met = "yes" if ratios[best_w] >= TARGET_RATIO else "NO"
        if met == "yes" and min(ratios.values()) < TARGET_RATIO:
            met += f" (w={best_w} only)"
        lcols = " | ".join(f"{loader[w]:.0f}" for w in args.workers)
        print(f"| {size} | {raw:.0f} | {item:.0f} | {lcols} | {model:.1f} | {ratio_txt} | {met} |")
    print()
    print(f"total benchmark time: {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
