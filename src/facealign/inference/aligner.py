"""The public predictor: `FaceAligner` (detect faces, predict 68 landmarks) and `Face`.

Imports no torch: the backend named at construction (`facealign.inference.backends`) decides what loads.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np
from PIL import Image

from facealign.detection.detectors import DEFAULT_DETECTOR, DETECTORS, default_min_score, get_detector
from facealign.data.images import load_rgb
from facealign.inference.backends import BACKENDS, default_backend, load_runner

CHUNK = 32  # face crops per network call


def _f32(v: float) -> float:
    """The shortest decimal that reads back as the same float32 (compact, exact JSON)."""
    return float(str(np.float32(v)))


@dataclass(frozen=True, eq=False)
class Face:
    """One face: `box` (4,) float32 (x0, y0, x1, y1), detector `score` (NaN when the box was given),
    `landmarks` (68, 2) float32 (x, y) in original image pixels (0-based pixel centres)."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    def __post_init__(self):
        box = np.array(self.box, dtype=np.float32).reshape(4)
        landmarks = np.array(self.landmarks, dtype=np.float32).reshape(-1, 2)
        box.setflags(write=False)
        landmarks.setflags(write=False)
        object.__setattr__(self, "box", box)
        object.__setattr__(self, "landmarks", landmarks)
        object.__setattr__(self, "score", float(self.score))

    def __repr__(self) -> str:
        return (f"Face(box={[round(float(v), 1) for v in self.box]}, score={self.score:.3f}, "
                f"landmarks=<{len(self.landmarks)}x2>)")

    def to_dict(self) -> dict:
        """JSON-ready: lists of floats (exact float32 values); a NaN score becomes None (null)."""
        return {"box": [_f32(v) for v in self.box],
                "score": None if np.isnan(self.score) else _f32(self.score),
                "landmarks": [[_f32(x), _f32(y)] for x, y in self.landmarks]}


ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]


def as_rgb(image: ImageLike, bgr: bool = False) -> np.ndarray:
    """Any supported image -> (H, W, 3) uint8 RGB, C-contiguous.

    Paths and PIL images go through `load_rgb` (EXIF orientation applied). Arrays: (H, W) grayscale,
    (H, W, 1), (H, W, 3) RGB, or (H, W, 4) RGBA (alpha composited on white, as for files); with
    `bgr=True` the colour channels are BGR/BGRA (OpenCV order). uint8, bool, uint16 (scaled by 1/257)
    and float arrays in [0, 1] are accepted (floats outside [0, 1] are a ValueError, never guessed). `bgr` is ignored for paths and PIL images.
    """
    if isinstance(image, (str, os.PathLike, Image.Image)):
        return load_rgb(image)
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        pass
    elif arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint16:
        arr = ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError("image array contains NaN or infinite values")
        if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
            # A float image in [0, 255] would silently become white: refuse rather than guess the range.
            raise ValueError(f"float image values must be in [0, 1] (got {arr.min():g}..{arr.max():g}); for 0-255 "
                             "floats pass image.astype(np.uint8), or divide by 255")
        arr = np.rint(arr * 255.0).astype(np.uint8)
    else:
        raise ValueError(f"unsupported image dtype {arr.dtype}; use uint8, uint16, bool or float in [0, 1]")
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or 0 in arr.shape:
        raise ValueError(f"image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {arr.shape}")
    if arr.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(arr, 3, axis=2))
    colour, alpha = arr[..., :3], (arr[..., 3:] if arr.shape[2] == 4 else None)
    if bgr:
        colour = colour[..., ::-1]
    if alpha is not None:  # composite on white, like load_rgb does for RGBA files
        a = alpha.astype(np.float32) / 255.0
        colour = np.rint(colour * a + 255.0 * (1.0 - a)).astype(np.uint8)
    return np.ascontiguousarray(colour)


def _check_boxes(boxes) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float32)
    if b.size == 0:
        return np.zeros((0, 4), np.float32)
    if b.ndim == 1 and b.shape[0] == 4:
        b = b[None]
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4) (x0, y0, x1, y1); got shape {b.shape}")
    if not np.isfinite(b).all() or ((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])).any():
        raise ValueError("boxes must be finite (x0, y0, x1, y1) with x1 > x0 and y1 > y0; for (x, y, w, h) boxes "
                         "pass (x, y, x + w, y + h)")
    return b


# ---------------------------------------------------------------- FaceAligner
class FaceAligner:
    """Detect faces and predict 68 landmarks on images.

    >>> fa = FaceAligner()                      # the packaged default model, MTCNN detector, CPU
    >>> faces = fa.predict("photo.jpg")         # list[Face]; landmarks in original image pixels

    Args:
        model: a packaged model name ("default": 224 px; "default160": the previous default, 160 px; "fast":
            96 px, one crop; their accuracy and speed: each one's model card, facealign/weights/NAME.json, and
            docs/status.md), a .safetensors file (model card beside it), a training checkpoint (.pt), or an
            .onnx file.
        detector: a name from `facealign.detection.detectors.DETECTORS` ("dlib": HOG, "dlib-cnn": dlib's MMOD CNN,
            "mtcnn", the default: `DEFAULT_DETECTOR`; see docs/detection.md) or a callable
            `(image_rgb_uint8, upsample) -> list[(box (4,), score)]`.
        device: torch device for the torch backend ("cpu", "cuda", ...).
        backend: "torch", "onnx" or "onnx-int8" (a key of `BACKENDS`); None: a packaged model's fastest
            measured backend that keeps its accuracy (`DEFAULT_BACKENDS`, `MAX_DEFAULT_NME_CHANGE`), "onnx" for
            an .onnx file, else "torch".
        upsample: detector upsampling steps (1: faces down to about 20 px with mtcnn, 40 px with dlib).
        min_score: detections scoring below this are dropped; None: the detector's measured default
            (`facealign.detection.detectors.DEFAULT_MIN_SCORES`; 0 for a callable). Scores are not comparable
            between detectors (dlib: SVM margin; mtcnn: probability).
        flip_tta: override the model card's flip test-time augmentation.
        threads: CPU threads of the network (None: the backend's default, one per core).
    """

    def __init__(self, model: str | Path = "default", detector: str | Callable = DEFAULT_DETECTOR, device: str = "cpu",
                 backend: str | None = None, upsample: int = 1, min_score: float | None = None,
                 flip_tta: bool | None = None, threads: int | None = None):
        if backend is None:  # the measured best for a packaged model; otherwise the file says what it is
            backend = default_backend(model)
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
        if threads is not None and (int(threads) != threads or threads < 1):
            raise ValueError(f"threads must be a whole number >= 1, got {threads}")
        if isinstance(detector, str):
            self.detector_name = detector
            self._detector = get_detector(detector)  # ValueError listing valid names
        elif callable(detector):
            self.detector_name = getattr(detector, "__name__", "custom")
            self._detector = detector
        else:
            raise ValueError(f"detector must be a name ({', '.join(DETECTORS)}) or a callable")
        if int(upsample) != upsample or upsample < 0:
            raise ValueError(f"upsample must be a whole number >= 0, got {upsample}")
        self.upsample = int(upsample)
        self.min_score = float(default_min_score(self.detector_name) if min_score is None else min_score)
        self.backend_name = backend
        self.runner = load_runner(model, backend, device, flip_tta, threads)

    @property
    def name(self) -> str:
        return self.runner.name

    @property
    def card(self) -> dict:
        return self.runner.card

    def __repr__(self) -> str:
        return (f"FaceAligner(model={self.name!r}, detector={self.detector_name!r}, backend={self.backend_name!r}, "
                f"upsample={self.upsample}, min_score={self.min_score})")

    def detect(self, image: ImageLike, bgr: bool = False, min_score: float | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Face boxes (N, 4) float32 and scores (N,) float32, best score first; detections scoring below
        `min_score` (None: the aligner's `min_score`) are dropped."""
        rgb = as_rgb(image, bgr)
        threshold = self.min_score if min_score is None else float(min_score)
        dets = [(b, s) for b, s in self._detector(rgb, self.upsample) if s >= threshold]
        dets.sort(key=lambda d: -d[1])
        if not dets:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        return (np.stack([np.asarray(b, np.float32) for b, _ in dets]),
                np.array([s for _, s in dets], np.float32))

    def predict(self, image: ImageLike, boxes: np.ndarray | None = None, bgr: bool = False) -> list[Face]:
        """Faces in one image (path, PIL image or array; see `as_rgb`).

        With `boxes` (N, 4) (x0, y0, x1, y1 in pixels, same protocol as the detector's boxes) the
        detector is skipped and every score is NaN.
        """
        return self.predict_batch([image], None if boxes is None else [boxes], bgr)[0]

    def predict_batch(self, images: Sequence[ImageLike], boxes: Sequence[np.ndarray | None] | None = None,
                      bgr: bool = False) -> list[list[Face]]:
        """One list of faces per image; all face crops of all images go through the network together
        (chunks of 32). `boxes`, if given, has one entry per image: (N, 4) boxes or None (detect)."""
        arrays = [as_rgb(im, bgr) for im in images]
        if boxes is None:
            boxes = [None] * len(arrays)
        if len(boxes) != len(arrays):
            raise ValueError(f"{len(boxes)} box sets for {len(arrays)} images")
        dets = []
        for rgb, b in zip(arrays, boxes):
            if b is None:
                dets.append(self.detect(rgb))
            else:
                b = _check_boxes(b)
                h, w = rgb.shape[:2]
                outside = (b[:, 2] <= -0.5) | (b[:, 3] <= -0.5) | (b[:, 0] >= w - 0.5) | (b[:, 1] >= h - 0.5)
                if outside.any():
                    raise ValueError(f"box {b[np.argmax(outside)].tolist()} lies entirely outside the {w}x{h} image "
                                     "(boxes are x0, y0, x1, y1 in pixels)")
                dets.append((b, np.full(len(b), np.nan, np.float32)))
        return self.align(arrays, dets)

    def align(self, arrays: Sequence[np.ndarray], detections: Sequence[tuple[np.ndarray, np.ndarray]]
              ) -> list[list[Face]]:
        """Landmarks for given (boxes, scores) per RGB uint8 array; crops are built chunk by chunk, so
        memory stays bounded however many faces there are."""
        jobs = [(i, box) for i, (b, _) in enumerate(detections) for box in b]
        points: list[np.ndarray] = []
        for start in range(0, len(jobs), CHUNK):
            chunk = jobs[start:start + CHUNK]
            crops, transforms = zip(*(self.runner.crops(arrays[i], box[None]) for i, box in chunk))
            coords = self.runner.predict_crops(np.concatenate(crops))
            points += [t[0].to_image(c) for t, c in zip(transforms, coords)]
        out, k = [], 0
        for b, s in detections:
            out.append([Face(box, score, points[k + j]) for j, (box, score) in enumerate(zip(b, s))])
            k += len(b)
        return out
