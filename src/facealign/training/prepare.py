"""Training data preparation: the training pool's records, their boxes (one detect pass per detector) and the
crop caches of the train and validation parts, from a data root or a `facealign data pack` file."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from facealign.data.aligned import aligned_or_box, aligned_transform
from facealign.data.cache import CacheSpec, build_crop_cache, decode_photos
from facealign.data.counts import DETECTOR_MISS, UNDECODABLE, face_counts, split_skipped
from facealign.data.errors import DataError
from facealign.data.images import load_rgb
from facealign.data.layouts import index_dataset, split_train_val
from facealign.data.schemes import get_scheme
from facealign.detection.boxes import BoxCache, DetectorConfig, best_detection, boxes_for, detect_missing
from facealign.detection.detectors import get_detector
from facealign.training.config import TrainConfig


def prepare_data(cfg: TrainConfig, progress: bool = True, counts: dict | None = None):
    """Crop caches for the train and validation parts of the training pool.

    counts: filled with the faces found, used and dropped by reason (`facealign.data.counts.face_counts`)."""
    from facealign.data.pack import is_pack, pack_caches
    counts = {} if counts is None else counts
    if cfg.data is None:
        raise DataError("no training data given: `facealign train --data ROOT` (a data root or a pack file)")
    detectors = cfg.train_detectors.split("+")
    if is_pack(cfg.data):  # a `facealign data pack` file: no raw photos, detector or box cache needed
        if cfg.first_stage:
            raise DataError("first_stage: a second stage crops from the photos; train it from the data root, "
                            "not a pack")
        if len(detectors) > 1 and cfg.train_box == "detector":
            raise DataError(f"train_detectors={cfg.train_detectors}: a pack holds one detector's boxes; train "
                            "from the data root to crop with several detectors")
        out = pack_caches(cfg.data, cfg.train_split, cfg.val_fraction, cfg.seed,
                          CacheSpec(size=cfg.input_size, context=cfg.context), cfg.train_box, cfg.val_box,
                          cfg.drop_undetected, cfg.cache_dir, progress=progress)
        counts.update(_pack_counts(cfg, out[0], out[1]))
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = index_dataset(cfg.data, cfg.layout, cfg.splits, num_points=get_scheme(cfg.scheme).num_points)
    pool = index.records(cfg.train_split)
    train, val = split_train_val(pool, cfg.val_fraction, cfg.seed)
    before = len(train) + len(val)
    # the first detector's cache also serves validation and the counts; the others add training crops only
    box_caches = [BoxCache(cfg.data, cfg.cache_dir, DetectorConfig(name=d)) for d in detectors]
    box_cache = box_caches[0]
    folder = Path(cfg.cache_dir) if cfg.cache_dir else box_cache.path.parent
    spec = CacheSpec(size=cfg.input_size, context=cfg.context)
    # one visible, parallel detection pass (as `facealign boxes`) instead of a silent one face at a time below
    detect_missing(train + val, (cfg.train_box, cfg.val_box), box_cache, progress=progress)
    for extra in box_caches[1:]:
        detect_missing(train, (cfg.train_box,), extra, progress=progress)
    if cfg.drop_undetected:
        # A whole-image fallback box would teach the model nonsense crops, and in validation
        # the few such faces (NME ~2.6 each) would swamp the mean that picks the best checkpoint.
        val = [r for r in val if _detected(r, box_cache)] if cfg.val_box == "detector" else val
    train_records, train_boxes, crops_per_detector = _training_crops(
        train, cfg, box_caches if cfg.train_box == "detector" else box_caches[:1])
    frames = None if not cfg.first_stage else np.stack(
        [aligned_transform(r.landmarks, cfg.context, cfg.scheme).matrix for r in train_records])
    caches = [build_crop_cache(train_records, train_boxes, spec, folder, progress=progress, frames=frames)]
    if cfg.val_fraction != 0:
        boxes, _ = boxes_for(val, cfg.val_box, cache=box_cache, detect=True)
        frames = None if not cfg.first_stage else first_stage_frames(cfg.first_stage, val, boxes, cfg.context,
                                                                       cfg.scheme, progress)
        caches.append(build_crop_cache(val, boxes, spec, folder, progress=progress, frames=frames))
    for c in box_caches:
        c.save()
    # counts are faces: a face cropped by two detectors is one training face (two crops)
    found_train, cached_train = {r.key for r in train_records}, set(caches[0].keys)
    used = {"training": len(cached_train), **({"validation": len(caches[1])} if len(caches) > 1 else {})}
    undecodable = len(found_train - cached_train) + (len(val) - len(caches[1]) if len(caches) > 1 else 0)
    counts.update(face_counts(cfg.train_split, len(pool), split_skipped(index, cfg.train_split), used,
                              {DETECTOR_MISS: before - len(found_train) - len(val), UNDECODABLE: undecodable}))
    if len(box_caches) > 1 and cfg.train_box == "detector":
        counts["training_crops"] = crops_per_detector  # crops before decoding, per detector
    if len(caches) == 1:
        return caches[0], None, []  # a final fit on every training face: no validation
    cached = set(caches[1].keys)  # faces whose image failed to decode are not in the cache
    return caches[0], caches[1], [r for r in val if r.key in cached]


def first_stage_frames(first_stage: str, records, boxes: np.ndarray, context: float, scheme: str,
                       progress: bool = True) -> np.ndarray:
    """(N, 2, 3) aligned-crop matrices placed by the first stage's landmarks on each face's box, as a
    second stage sees its faces at inference (the first stage on the torch backend, its card's flip)."""
    from tqdm import tqdm

    from facealign.inference.backends import load_runner
    runner = load_runner(first_stage, backend="torch")
    out = []
    for (r, box), image in tqdm(zip(zip(records, boxes), decode_photos(records)), total=len(records),
                                desc="first stage", unit="face", disable=not progress):
        if isinstance(image, Exception):  # the crop cache skips it too; any frame keeps the count
            out.append(aligned_transform(r.landmarks, context, scheme).matrix)
            continue
        out.append(aligned_or_box(runner.predict(image, box[None])[0], box, context, scheme).matrix)
    return np.stack(out)


def _training_crops(train, cfg: TrainConfig, box_caches: list[BoxCache]):
    """(records, boxes (N, 4), {detector: crops}) of the training crops: each face once per detector in
    `box_caches` (once for a protocol without a detector); with drop_undetected, a detector's misses are left
    out of its crops."""
    records, boxes, per_detector = [], [], {}
    for box_cache in box_caches:
        kept = [r for r in train if _detected(r, box_cache)] if cfg.drop_undetected and \
            cfg.train_box == "detector" else train
        per_detector[box_cache.detector.name] = len(kept)
        if kept:
            records += kept
            boxes.append(boxes_for(kept, cfg.train_box, cache=box_cache, detect=True)[0])
    if not records:
        raise DataError(f"no training face was found by the detector(s) {cfg.train_detectors}")
    return records, np.concatenate(boxes), per_detector


def _pack_counts(cfg: TrainConfig, train_cache, val_cache) -> dict:
    """A pack's training counts: its faces of the split; the only drop left is a detector miss."""
    from facealign.data.pack import read_pack
    with read_pack(cfg.data) as pack:
        found = len(pack.records(cfg.train_split))
    used = {"training": len(train_cache), **({"validation": len(val_cache)} if val_cache is not None else {})}
    return face_counts(cfg.train_split, found, [], used, {DETECTOR_MISS: found - sum(used.values())})


def _detected(record, box_cache: BoxCache) -> bool:
    dets = box_cache.get(record.image)
    if dets is None:
        dets = get_detector(box_cache.detector.name)(load_rgb(record.image), box_cache.detector.upsample)
        box_cache.put(record.image, dets)
    return best_detection(dets, record.landmarks) is not None


def check_scheme(cache, scheme, data) -> None:
    """A cache (from a pack, or a root indexed with the scheme) whose faces have another point count is an error."""
    k = cache.landmarks.shape[1]
    if k != scheme.num_points:
        raise ValueError(f"{data} holds {k}-point faces but the scheme {scheme.name} has {scheme.num_points} "
                         f"points; choose the scheme with --set scheme=NAME")
