"""Face-detector evaluation on annotated photos: recall, unmatched detections, time, box maps.

A *photo* is every annotated face of one picture (afw stores an identical copy of the photo per face, so
files are grouped by their bytes). A detection *matches* a face when its centre lies inside the face's
tight landmark box and its size is 0.4-2.5x the landmark box's (sqrt of the area ratio): box conventions
differ between detectors, so IoU with the landmark box would penalise some for their convention alone.
Each face takes at most one detection, greedily by score. Detections that match no annotated face are
*unmatched*: false positives, or real faces the dataset did not annotate (helen annotates one face per
photo, so crowds count against every detector that finds them).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facealign.detection.boxes import landmark_box
from facealign.detection.detectors import fit_box_map, raw_detector
from facealign.data.images import load_rgb
from facealign.atomic import atomic_write_json

MIN_SIZE_RATIO, MAX_SIZE_RATIO = 0.4, 2.5


@dataclass(frozen=True)
class Photo:
    """One picture: `image` path, `faces` (F, 4) tight landmark boxes, `key` subset/group; `images` every
    file of the picture (afw stores a copy per face)."""

    key: str
    image: Path
    faces: np.ndarray
    images: tuple = ()


def photos_of(records) -> list[Photo]:
    """Group face records into photos: files with identical bytes are one photo (afw stores a copy of the
    photo per face; helen's `<id>_1`, `<id>_2` are different crops, so the file name cannot decide)."""
    import hashlib
    groups: dict[tuple, list] = {}
    digests: dict[Path, tuple] = {}
    for r in records:
        if r.image not in digests:
            digests[r.image] = (r.subset, hashlib.md5(Path(r.image).read_bytes()).hexdigest())
        groups.setdefault(digests[r.image], []).append(r)
    return [Photo(f"{rs[0].subset}/{Path(rs[0].image).name}", rs[0].image,
                  np.stack([landmark_box(r.landmarks) for r in rs]).astype(np.float32),
                  tuple(dict.fromkeys(r.image for r in rs))) for rs in groups.values()]


def match(boxes: np.ndarray, scores: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(D,) index of the face each detection matches, or -1; highest scores choose first."""
    boxes, faces = np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(faces, np.float64).reshape(-1, 4)
    out = np.full(len(boxes), -1, int)
    taken = np.zeros(len(faces), bool)
    for d in np.argsort(-np.asarray(scores), kind="stable"):
        cx, cy = (boxes[d, 0] + boxes[d, 2]) / 2, (boxes[d, 1] + boxes[d, 3]) / 2
        area = max(boxes[d, 2] - boxes[d, 0], 0) * max(boxes[d, 3] - boxes[d, 1], 0)
        best, best_dist = -1, np.inf
        for f in np.flatnonzero(~taken):
            x0, y0, x1, y1 = faces[f]
            ratio = np.sqrt(area / max((x1 - x0) * (y1 - y0), 1e-9))
            if x0 <= cx <= x1 and y0 <= cy <= y1 and MIN_SIZE_RATIO <= ratio <= MAX_SIZE_RATIO:
                dist = np.hypot(cx - (x0 + x1) / 2, cy - (y0 + y1) / 2)
                if dist < best_dist:
                    best, best_dist = f, dist
        if best >= 0:
            out[d], taken[best] = best, True
    return out


def run_detector(photos: list[Photo], name: str, upsample: int, out: Path | None = None,
                 progress: bool = True) -> dict:
    """Raw (unmapped) detections of detector `name` on every photo, with time and megapixels per photo.

    Resumable: with `out`, finished photos are saved there (JSON) every 25 photos and skipped next time."""
    detect = raw_detector(name)
    done: dict = {}
    if out is not None and Path(out).is_file():
        done = json.loads(Path(out).read_text())["photos"]
    from tqdm import tqdm
    for i, p in enumerate(tqdm(photos, desc=f"{name} up{upsample}", disable=not progress), 1):
        if p.key in done:
            continue
        rgb = load_rgb(p.image)
        t0 = time.perf_counter()
        dets = detect(rgb, upsample)
        seconds = time.perf_counter() - t0
        done[p.key] = {"mpx": rgb.shape[0] * rgb.shape[1] / 1e6, "seconds": seconds,
                       "boxes": [[float(v) for v in b] for b, _ in dets], "scores": [float(s) for _, s in dets]}
        if out is not None and i % 25 == 0:
            atomic_write_json(out, {"detector": name, "upsample": upsample, "photos": done})
    result = {"detector": name, "upsample": upsample, "photos": done}
    if out is not None:
        atomic_write_json(out, result)
    return result


def _arrays(entry: dict) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(entry["boxes"], np.float32).reshape(-1, 4), np.asarray(entry["scores"], np.float32)


def tradeoff(photos: list[Photo], run: dict, thresholds) -> list[dict]:
    """Recall and unmatched detections per photo at each score threshold (detections below it dropped)."""
    faces = sum(len(p.faces) for p in photos)
    rows = []
    for t in thresholds:
        hit = unmatched = 0
        for p in photos:
            boxes, scores = _arrays(run["photos"][p.key])
            keep = scores >= t
            m = match(boxes[keep], scores[keep], p.faces)
            hit += int((m >= 0).sum())
            unmatched += int((m < 0).sum())
        rows.append({"min_score": float(t), "recall": hit / faces, "missed": faces - hit,
                     "unmatched_per_photo": unmatched / len(photos), "unmatched": unmatched})
    return rows


def timing(photos: list[Photo], run: dict) -> dict:
    """Median ms per photo and total ms per megapixel over the photos of `run`."""
    entries = [run["photos"][p.key] for p in photos]
    seconds = np.array([e["seconds"] for e in entries])
    mpx = np.array([e["mpx"] for e in entries])
    return {"photos": len(entries), "median_ms": float(np.median(seconds) * 1e3),
            "ms_per_mpx": float(seconds.sum() / mpx.sum() * 1e3), "median_mpx": float(np.median(mpx))}


def matched_pairs(photos: list[Photo], run: dict, reference: dict, min_score: float = -np.inf,
                  reference_min_score: float = -np.inf) -> tuple[np.ndarray, np.ndarray]:
    """(raw boxes, reference boxes), (N, 4) each, of the faces both runs matched (for `fit_box_map`)."""
    raw, ref = [], []
    for p in photos:
        a, sa = _arrays(run["photos"][p.key])
        b, sb = _arrays(reference["photos"][p.key])
        a, sa, b, sb = a[sa >= min_score], sa[sa >= min_score], b[sb >= reference_min_score], sb[sb >= reference_min_score]
        ma, mb = match(a, sa, p.faces), match(b, sb, p.faces)
        for f in range(len(p.faces)):
            if (ma == f).any() and (mb == f).any():
                raw.append(a[np.argmax(ma == f)])
                ref.append(b[np.argmax(mb == f)])
    return np.asarray(raw, np.float32).reshape(-1, 4), np.asarray(ref, np.float32).reshape(-1, 4)


def box_map_report(train: list[Photo], test: list[Photo], run: dict, reference: dict) -> dict:
    """Fit the map raw -> reference on `train` photos; report mean IoU with the reference on `test`, raw
    and mapped."""
    from facealign.detection.boxes import iou
    train_raw, train_ref = matched_pairs(train, run, reference)
    m = fit_box_map(train_raw, train_ref)
    raw, ref = matched_pairs(test, run, reference)
    raw_iou = float(np.mean([iou(a, b) for a, b in zip(raw, ref)])) if len(raw) else float("nan")
    mapped_iou = float(np.mean([iou(m.apply(a), b) for a, b in zip(raw, ref)])) if len(raw) else float("nan")
    return {"map": {"dx": m.dx, "dy": m.dy, "sx": m.sx, "sy": m.sy}, "train_pairs": int(len(train_raw)),
            "test_pairs": int(len(raw)), "test_iou_raw": raw_iou, "test_iou_mapped": mapped_iou}
