"""`dlib-ert`: dlib's ensemble-of-regression-trees shape predictor (Kazemi & Sullivan 2014,
`dlib.train_shape_predictor`) trained by us on exactly our models' training faces: the equal-data baseline.

The pool is built as `facealign.training.prepare.prepare_data` builds it: the `train` split (300W: afw + helen/trainset),
`val_fraction` held out by photo with the same seed, detector boxes from the shared box cache, and faces the
detector misses dropped (`drop_undetected`). Each training face is also added mirrored (`mirror`: image flipped,
box mirrored, landmarks through `facealign.data.scheme.flip_landmarks`), as in dlib's own 300-W training set.

To keep memory small each sample is a crop of its photo around the face (`crop_margin` face sizes on every
side), cut at integer pixel offsets so that boxes and landmarks only shift; ERT reads pixels near the shape,
well inside that margin. Boxes become dlib rectangles through the shipped-dlib wrapper's own conversion
(`facealign.inference.dlib_predictor.box_to_dlib_rect`), so training and evaluation see identical rectangles.

A run folder (`OUT/dlib-ert/`) holds config.json (resolved config, face counts, environment), predictor.dat
(the dlib model) and final.json (counts, training seconds, validation NME). `facealign evaluate --model RUN`
evaluates it through `DlibPredictor`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from facealign.detection.boxes import BoxCache, DetectorConfig, face_boxes, landmark_box, union_box
from facealign.data.counts import DETECTOR_MISS, face_counts, format_counts, split_skipped
from facealign.data.errors import DataError
from facealign.data.layouts import index_dataset, split_train_val
from facealign.data.scheme import flip_landmarks
from facealign.inference.dlib_predictor import ERT_MODEL_FILE as MODEL_FILE, ERT_NAME as NAME
from facealign.atomic import atomic_path, atomic_write_json

# The fields of DlibErtConfig that are dlib.shape_predictor_training_options attributes, copied one to one.
DLIB_OPTIONS = ("cascade_depth", "num_trees_per_cascade_level", "tree_depth", "oversampling_amount",
                "oversampling_translation_jitter", "nu", "feature_pool_size", "lambda_param", "num_test_splits",
                "feature_pool_region_padding", "random_seed")


@dataclass(frozen=True)
class DlibErtConfig:
    """Every `dlib-ert` default lives here (dlib's own training defaults for the ERT options)."""

    data: str | None = None  # the data root (required: `facealign baseline dlib-ert --data`)
    layout: str = "auto"
    splits: str | None = None  # generic layout: a split file (TrainConfig.splits, docs/data.md)
    train_split: str = "train"
    val_fraction: float = 0.2  # held out by photo, same split as `facealign train` with the same seed
    seed: int = 0  # the train/validation split's seed (TrainConfig.seed)
    train_box: str = "detector"  # dlib's shipped model was trained on its HOG detector's boxes
    val_box: str = "detector"
    drop_undetected: bool = True  # detector boxes: skip faces the detector missed (as `facealign train`)
    mirror: bool = True  # add every training face mirrored: 2x the samples
    crop_margin: float = 1.0  # crop each sample this many face sizes beyond the box on every side
    # dlib.shape_predictor_training_options (dlib 20's defaults)
    cascade_depth: int = 10
    num_trees_per_cascade_level: int = 500
    tree_depth: int = 4
    oversampling_amount: int = 20
    oversampling_translation_jitter: float = 0.0
    nu: float = 0.1
    feature_pool_size: int = 400
    lambda_param: float = 0.1
    num_test_splits: int = 20
    feature_pool_region_padding: float = 0.0
    random_seed: str = ""
    threads: int | None = None  # dlib's num_threads; None: every available core
    verbose: bool = True  # dlib's be_verbose: its per-cascade progress on stdout
    cache_dir: str | None = None  # box cache folder (default: the user cache, as `facealign boxes`)
    out: str = "runs"  # parent of the run folder

    @property
    def name(self) -> str:
        return NAME

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / self.name


def make_config(**overrides) -> DlibErtConfig:
    """DlibErtConfig with `overrides` (None values ignored); an unknown name raises ValueError listing the valid ones."""
    fields = [f.name for f in dataclasses.fields(DlibErtConfig)]
    if overrides.get("scheme") not in (None, "ibug68"):
        raise ValueError(f"{NAME} trains the 68-point ibug68 scheme only (dlib comparisons stay 68-point), not "
                         f"scheme={overrides['scheme']}; train another scheme with `facealign train --set scheme=...`")
    overrides = {k: v for k, v in overrides.items() if k != "scheme"}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"unknown {NAME} option(s): {', '.join(unknown)}; valid: {', '.join(fields)}")
    defaults = DlibErtConfig()
    values = {}
    for k, v in overrides.items():
        if v is None:
            continue
        kind = type(getattr(defaults, k))
        if kind is str or k == "cache_dir":  # `--set random_seed=7` arrives as an int
            v = str(v)
        elif kind is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        elif kind is not type(None) and not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
            raise ValueError(f"{NAME} option {k} expects {kind.__name__}, got {v!r}")
        values[k] = v
    cfg = DlibErtConfig(**values)
    if not 0 <= cfg.val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {cfg.val_fraction}")
    return cfg


# ---------------------------------------------------------------- samples
@dataclass(frozen=True)
class Sample:
    """One training sample: image (h, w, 3) uint8 RGB; box (4,) float32 and landmarks (68, 2) float32 in its
    pixels (0-based pixel centres); key: the face; mirrored: a flipped copy."""

    image: np.ndarray
    box: np.ndarray
    landmarks: np.ndarray
    key: str
    mirrored: bool = False


def crop_sample(image: np.ndarray, box: np.ndarray, landmarks: np.ndarray, key: str, margin: float = 1.0) -> Sample:
    """The part of `image` around the face: the box and landmark box joined, grown by `margin` times its larger
    side on every side, clipped to the image, cut at whole pixels (so box and landmarks shift by integers)."""
    h, w = image.shape[:2]
    region = union_box(np.asarray(box, np.float32), landmark_box(landmarks))
    grow = margin * float(max(region[2] - region[0], region[3] - region[1]))
    x0, y0 = max(0, math.floor(region[0] - grow)), max(0, math.floor(region[1] - grow))
    x1, y1 = min(w, math.ceil(region[2] + grow) + 1), min(h, math.ceil(region[3] + grow) + 1)
    shift = np.array([x0, y0], np.float32)
    return Sample(np.ascontiguousarray(image[y0:y1, x0:x1]), (np.asarray(box, np.float32) - np.tile(shift, 2)),
                  (np.asarray(landmarks, np.float32) - shift), key)


def mirror_sample(s: Sample) -> Sample:
    """The sample flipped left-right: pixels, box (x0, x1 -> W-1-x1, W-1-x0) and landmarks with the 68-point
    mirror permutation (the subject's right eye stays the right eye)."""
    w = s.image.shape[1]
    x0, y0, x1, y1 = (float(v) for v in s.box)
    box = np.array([w - 1 - x1, y0, w - 1 - x0, y1], np.float32)
    return Sample(np.ascontiguousarray(s.image[:, ::-1]), box, flip_landmarks(s.landmarks, w), s.key, True)


def to_dlib(samples: list[Sample]):
    """(images, objects) as `dlib.train_shape_predictor` takes them: one full_object_detection per image;
    landmarks rounded to dlib's integer points (pixel centres)."""
    import dlib

    from facealign.inference.dlib_predictor import box_to_dlib_rect
    images, objects = [], []
    for s in samples:
        parts = dlib.points([dlib.point(int(round(float(x))), int(round(float(y)))) for x, y in s.landmarks])
        images.append(s.image)
        objects.append([dlib.full_object_detection(box_to_dlib_rect(s.box), parts)])
    return images, objects


def _boxes(records, protocol: str, cfg: DlibErtConfig, cache: BoxCache):
    """(kept records, their boxes (n, 4), dropped count): misses are dropped under `drop_undetected`."""
    miss = "skip" if cfg.drop_undetected else "whole-image"  # as facealign.training.prepare.prepare_data
    fb = face_boxes(records, protocol, miss, cache=cache, detect=True)
    kept = np.flatnonzero(fb.kept)
    return [records[i] for i in kept], fb.boxes[kept], len(records) - len(kept)


def build_pool(cfg: DlibErtConfig):
    """(training samples, validation records, their boxes (n, 4), counts) for `cfg`."""
    from facealign.data.pack import is_pack
    from facealign.data.images import load_rgb
    if cfg.data is None:
        raise DataError(f"{NAME}: no data root given (--data ROOT)")
    if is_pack(cfg.data):
        raise DataError(f"{NAME} needs the photos: pass the data root, not a pack file ({cfg.data})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing 300W subset folders
        index = index_dataset(cfg.data, cfg.layout, cfg.splits)
    pool = index.records(cfg.train_split)
    train, val = split_train_val(pool, cfg.val_fraction, cfg.seed)
    cache = BoxCache(cfg.data, cfg.cache_dir, DetectorConfig())
    train_kept, train_boxes, train_dropped = _boxes(train, cfg.train_box, cfg, cache)
    val_kept, val_boxes, val_dropped = (_boxes(val, cfg.val_box, cfg, cache) if val else ([], np.zeros((0, 4)), 0))
    cache.save()
    samples = []
    for r, box in zip(train_kept, train_boxes):
        s = crop_sample(load_rgb(r.image), box, r.landmarks, r.key, cfg.crop_margin)
        samples += [s, mirror_sample(s)] if cfg.mirror else [s]
    if not samples:
        raise DataError(f"no training faces left in {cfg.data} (split {cfg.train_split!r}, {train_dropped} "
                        f"dropped: no detection); run `facealign boxes {cfg.data}` or set drop_undetected=false")
    counts = {"split_faces": len(train) + len(val), "train_faces": len(train), "train_used": len(train_kept),
              "train_dropped_undetected": train_dropped, "mirrored": len(samples) - len(train_kept),
              "samples": len(samples), "val_faces": len(val), "val_used": len(val_kept),
              "val_dropped_undetected": val_dropped}
    used = {"training": len(train_kept), **({"validation": len(val_kept)} if cfg.val_fraction > 0 else {})}
    counts["data_counts"] = face_counts(cfg.train_split, len(pool), split_skipped(index, cfg.train_split), used,
                                        {DETECTOR_MISS: train_dropped + val_dropped})  # as `facealign train`'s
    return samples, val_kept, val_boxes, counts


# ---------------------------------------------------------------- training
def dlib_options(cfg: DlibErtConfig, threads: int):
    import dlib
    options = dlib.shape_predictor_training_options()
    for k in DLIB_OPTIONS:
        setattr(options, k, getattr(cfg, k))
    options.num_threads = threads
    options.be_verbose = cfg.verbose
    return options


def environment() -> dict:
    import dlib

    from facealign.training.loop import environment as train_environment
    return {**train_environment(), "dlib": dlib.__version__}


def train_ert(cfg: DlibErtConfig, log: Callable[[str], None] = lambda m: print(m, flush=True)) -> dict:
    """Train dlib's ERT on `cfg`'s pool and write the run folder; returns final.json's content.

    Raises ValueError if the run folder already holds a predictor (nothing to resume: one dlib call)."""
    import dlib

    from facealign.evaluation.evaluate import predict_records
    from facealign.hardware import available_cpus
    from facealign.evaluation.metrics import per_image_nme
    run_dir = cfg.run_dir
    if (run_dir / MODEL_FILE).is_file():
        raise ValueError(f"{run_dir} already holds a {NAME} run ({MODEL_FILE}); choose another --out or delete it")
    threads = cfg.threads or available_cpus()
    options = dlib_options(cfg, threads)  # a bad option value fails before the pool is built
    samples, val_records, val_boxes, counts = build_pool(cfg)
    resolved = {**asdict(cfg), "threads": threads}
    atomic_write_json(run_dir / "config.json", {"config": resolved, "method": NAME, "counts": counts,
                                                "data_counts": counts["data_counts"], "environment": environment()})
    log(format_counts(counts["data_counts"]))
    log(f"{NAME}: training on {counts['samples']} samples ({counts['train_used']} faces"
        f"{' + their mirror images' if cfg.mirror else ''}; {counts['train_dropped_undetected']} of "
        f"{counts['train_faces']} training faces dropped: no detection), cascade_depth {cfg.cascade_depth}, "
        f"{cfg.num_trees_per_cascade_level} trees of depth {cfg.tree_depth}, oversampling {cfg.oversampling_amount}, "
        f"{threads} threads -> {run_dir}")
    images, objects = to_dlib(samples)
    del samples
    t0 = time.time()
    predictor = dlib.train_shape_predictor(images, objects, options)
    seconds = time.time() - t0
    del images, objects
    with atomic_path(run_dir / MODEL_FILE) as tmp:
        predictor.save(str(tmp))
    val_nme = None
    if val_records:
        from facealign.inference.dlib_predictor import DlibPredictor
        pred = predict_records(DlibPredictor(run_dir / MODEL_FILE, NAME), val_records, val_boxes)
        val_nme = float(per_image_nme(pred, np.stack([r.landmarks for r in val_records])).mean())
    summary = {"name": NAME, "best_val_nme": val_nme, "val_nme": val_nme, "train_seconds": round(seconds, 1),
               "threads": threads, "counts": counts, "model_bytes": (run_dir / MODEL_FILE).stat().st_size,
               "history": []}
    atomic_write_json(run_dir / "final.json", summary)
    val_text = "-" if val_nme is None else f"{val_nme:.4f} on {counts['val_used']} faces"
    log(f"{NAME}: trained in {seconds:.0f} s; validation NME {val_text} -> {run_dir / MODEL_FILE}")
    return summary
