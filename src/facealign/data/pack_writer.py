"""Writing a training pack (`facealign data pack`): a data root's faces, boxed under a protocol (detections from the
box cache, run where missing), cropped, JPEG-encoded and stored with their landmarks and metadata in one file
(the format: `facealign.data.pack`)."""
from __future__ import annotations

import io
import json
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np

from facealign.data.cache import CacheSpec, decode_photos, zoom_out
from facealign.data.crop import CropTransform
from facealign.data.errors import DataError
from facealign.data.pack import (ARRAYS, DEFAULT_CONTEXT, DEFAULT_MARGIN, DEFAULT_QUALITY, DEFAULT_SIZE, FORMAT,
                                 FORMAT_VERSION)


def _check_options(box: str, size: int, context: float, margin: float, quality: int) -> None:
    from facealign.detection.boxes import BOX_PROTOCOLS
    if box not in BOX_PROTOCOLS:
        raise ValueError(f"unknown box protocol {box!r}; valid: {', '.join(BOX_PROTOCOLS)}")
    if not 8 <= size <= 4096:
        raise ValueError(f"--size must be between 8 and 4096 pixels, got {size}")
    if not 0 <= context <= 10:
        raise ValueError(f"--context must be between 0 and 10, got {context:g}")
    if not 1 <= margin <= 4:
        raise ValueError(f"--margin must be between 1 and 4, got {margin:g}")
    if not 1 <= quality <= 100:
        raise ValueError(f"--quality must be between 1 and 100, got {quality}")


def encode_jpeg(crop: np.ndarray, quality: int) -> bytes:
    """Baseline JPEG, 4:2:0 chroma, optimised Huffman tables (lossless, a few % smaller)."""
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, "JPEG", quality=quality, subsampling="4:2:0", optimize=True)
    return buf.getvalue()


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def _face_boxes(records, box: str, root: Path, cache_dir, progress: bool):
    """Per face: (box in image pixels, detected 1/0/-1) under protocol `box`; the detector fallback is the
    ground-truth landmark box. Detections come from the box cache, else are run (and cached); `gt` uses
    cached detections only to fill the flag."""
    from tqdm import tqdm

    from facealign.detection.boxes import BoxCache, DetectorConfig, best_detection, get_box_protocol, landmark_box
    from facealign.detection.detectors import get_detector
    from facealign.data.images import ImageLoadError, load_rgb
    cache = BoxCache(root, cache_dir, DetectorConfig())
    detector = get_detector(cache.detector.name)
    fn = get_box_protocol(box)
    todo = [r for r in records if box != "gt" and cache.get(r.image) is None]
    for image in tqdm(sorted({r.image for r in todo}), desc="detecting (not in the box cache)", unit="img",
                      disable=not (progress and todo)):
        try:
            cache.put(image, detector(load_rgb(image), cache.detector.upsample))
        except ImageLoadError:
            pass  # the face is skipped when its crop cannot be decoded
    if todo:
        cache.save()
    boxes, flags = [], []
    for r in records:
        try:
            dets = cache.get(r.image)
        except ValueError:  # the box cache keys resolved paths; a symlink out of the root has no entry
            if box != "gt":
                raise
            dets = None
        if dets is None:  # gt without cached detections, or an undecodable image
            boxes.append(landmark_box(r.landmarks))
            flags.append(-1)
            continue
        found = best_detection(dets, r.landmarks)
        flags.append(int(found is not None))
        if box == "detector" and found is None:
            boxes.append(landmark_box(r.landmarks))  # fallback: the face is still packed, and flagged
        else:
            boxes.append(np.asarray(fn(r.landmarks, dets, r.width, r.height), np.float32))
    cache.stale.clear()
    return np.stack(boxes).astype(np.float32), np.array(flags, np.int8), cache.detector


def write_pack(root, output, splits=("train",), box: str = "detector", size: int = DEFAULT_SIZE,
               context: float = DEFAULT_CONTEXT, margin: float = DEFAULT_MARGIN, quality: int = DEFAULT_QUALITY,
               layout: str = "auto", cache_dir=None, progress: bool = True, split_file=None, num_points: int = 68) -> dict:
    """Pack `splits` of a data root (`num_points`-point faces) into one file (written atomically): a summary dict."""
    from tqdm import tqdm

    from facealign.version import __version__
    from facealign.data.layouts import index_dataset
    from facealign.data.images import ImageLoadError
    from facealign.atomic import atomic_path
    t_start = time.time()
    _check_options(box, size, context, margin, quality)
    root, output = Path(root), Path(output)
    if output.is_dir():
        raise ValueError(f"output {output} is a folder; give a file name such as {output / 'train.fapack'}")
    splits = list(dict.fromkeys([splits] if isinstance(splits, str) else splits))
    if not splits:
        raise ValueError("no split to pack")
    index = index_dataset(root, layout, split_file, num_points=num_points)
    records, member = [], {}
    for s in splits:
        for r in index.split(s):
            if r.key not in member:
                member[r.key] = []
                records.append(r)
            member[r.key].append(s)
    boxes, flags, detector = _face_boxes(records, box, root, cache_dir, progress)
    spec = CacheSpec(size=size, margin=margin, context=context)
    res = spec.cache_size
    kept, failed, rows = [], [], {k: [] for k in ARRAYS}
    with atomic_path(output) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            faces = list(zip(records, boxes, flags))
            for (r, b, flag), last_image in tqdm(zip(faces, decode_photos(f[0] for f in faces)), total=len(faces),
                                                 desc=f"packing crops ({res}px, q{quality})", unit="face",
                                                 disable=not progress):
                if isinstance(last_image, ImageLoadError):
                    failed.append(str(last_image))
                    continue
                t = CropTransform.from_box(b, context).then(zoom_out(spec.true_margin))
                pm = t.pixel_matrix(res)
                crop = t.warp(last_image, res)
                zf.writestr(f"crops/{len(kept):06d}.jpg", encode_jpeg(crop, quality))
                lm = np.asarray(r.landmarks, np.float64)
                corners = b.reshape(2, 2).astype(np.float64) @ pm[:, :2].T + pm[:, 2]
                rows["landmarks"].append((lm @ pm[:, :2].T + pm[:, 2]).astype(np.float32))
                rows["image_landmarks"].append(np.asarray(r.landmarks, np.float32))
                rows["transforms"].append(pm)
                rows["boxes"].append(corners.reshape(4).astype(np.float32))
                rows["image_boxes"].append(b)
                rows["detected"].append(flag)
                kept.append((r, flag))
            if not kept:
                raise DataError("no face could be packed: every image failed to decode")
            for name, (dtype, _) in ARRAYS.items():
                zf.writestr(f"{name}.npy", _npy(np.asarray(np.stack(rows[name]) if name != "detected"
                                                           else np.array(rows[name]), dtype)))
            undetected = int(sum(int(f) == 0 for _, f in kept))
            meta = {
                "format": FORMAT, "format_version": FORMAT_VERSION, "facealign_version": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "source_root": str(root.resolve()), "layout": index.layout, "splits": splits,
                "box_protocol": box,
                "detector": {"name": detector.name, "upsample": detector.upsample},
                "detector_fallback": ("ground-truth landmark box, flagged detected=0" if box == "detector" else
                                      "whole image (seed protocol)" if box == "seed" else None),
                "crop": {"size": size, "margin": margin, "context": context, "resolution": res,
                         "true_margin": spec.true_margin,
                         "definition": "CropTransform.from_box(box, context).then(zoom-out by true_margin), "
                                       "resolution x resolution pixels"},
                "jpeg": {"quality": quality, "subsampling": "4:2:0", "optimize": True},
                "arrays": {
                    "landmarks": f"(N, {num_points}, 2) float32, packed-crop pixels (0-based pixel centres)",
                    "image_landmarks": f"(N, {num_points}, 2) float32, original image pixels (0-based pixel centres)",
                    "transforms": "(N, 2, 3) float64, original image pixels -> packed-crop pixels",
                    "boxes": "(N, 4) float32 x0 y0 x1 y1, the protocol's box in packed-crop pixels",
                    "image_boxes": "(N, 4) float32, the same box in original image pixels",
                    "detected": "(N,) int8: 1 detector found the face, 0 it did not, -1 unknown",
                },
                "counts": {"faces": len(kept), "undetected": undetected, "undecodable": len(failed),
                           **{s: int(sum(s in member[r.key] for r, _ in kept)) for s in splits}},
                "faces": [{"key": r.key, "subset": r.subset, "group": r.group, "splits": member[r.key],
                           "image": _relative(r.image, root), "width": r.width, "height": r.height,
                           "detected": None if int(f) < 0 else bool(f)} for r, f in kept],
            }
            zf.writestr("meta.json", json.dumps(meta, indent=1))
    if failed:
        warnings.warn(f"skipped {len(failed)} face(s) whose image cannot be decoded, e.g. {failed[0]}; "
                      f"`facealign data summary --strict` lists them", stacklevel=2)
    return {"path": str(output), "faces": len(kept), "bytes": output.stat().st_size, "resolution": res,
            "quality": quality, "box_protocol": box, "undetected": undetected, "undecodable": len(failed),
            "splits": splits, "seconds": time.time() - t_start}


def _relative(path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)
