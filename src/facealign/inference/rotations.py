"""Faces turned by a quarter turn: retry detection on the image turned (`facealign predict --rotations`).

Both detectors look for upright faces only: on scikit-image's astronaut photo turned by 90, 180 or 270
degrees neither keeps a face (`benchmarks/rotated_faces.py`, docs/predict.md). With the retry, an image in
which no face is found is turned by 1, 2 and 3 quarter turns counter-clockwise (`np.rot90`) in that order;
the first turn with a face is used: its faces are predicted on the turned image and mapped back into the
original image's pixels. The price is up to 3 more detector passes on every image without an upright
face, and nothing on images with one.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

QUARTER_TURNS = (1, 2, 3)  # np.rot90's k, tried in this order: 90, 180, 270 degrees counter-clockwise


def turn_points(points: np.ndarray, k: int, width: int, height: int) -> np.ndarray:
    """(N, 2) points (x, y) in pixels of `np.rot90(image, k)` -> the same points in `image` (width x height
    pixels), 0-based pixel centres. The map is exact: it sends pixel centres onto pixel centres."""
    p = np.asarray(points, np.float64).reshape(-1, 2)
    x, y = p[:, 0], p[:, 1]
    return {0: p.copy(), 1: np.stack([width - 1 - y, x], 1), 2: np.stack([width - 1 - x, height - 1 - y], 1),
            3: np.stack([y, height - 1 - x], 1)}[k % 4]


def turn_faces(faces: Sequence, k: int, width: int, height: int) -> list:
    """Faces found on `np.rot90(image, k)` -> the same faces in `image` (width x height pixels): landmarks
    (68, 2) mapped point by point, box (4,) from its mapped corners (still axis-aligned)."""
    from facealign.inference.aligner import Face
    out = []
    for f in faces:
        corners = turn_points(np.array([f.box[:2], f.box[2:]], np.float64), k, width, height)
        out.append(Face([*corners.min(0), *corners.max(0)], f.score, turn_points(f.landmarks, k, width, height)))
    return out


def detect_turned(aligner, rgb: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], int]:
    """(image to align, its detections (boxes (N, 4), scores (N,)), k) for an (H, W, 3) uint8 RGB image:
    the image itself when a face is found upright, else the first quarter turn `np.rot90(rgb, k)` with a
    face; (rgb, no detections, 0) when no turn has one."""
    found = aligner.detect(rgb)
    if len(found[0]):
        return rgb, found, 0
    for k in QUARTER_TURNS:
        turned = np.ascontiguousarray(np.rot90(rgb, k))
        dets = aligner.detect(turned)
        if len(dets[0]):
            return turned, dets, k
    return rgb, found, 0
