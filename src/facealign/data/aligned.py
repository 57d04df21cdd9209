"""Similarity-aligned face crops, placed by landmarks: the input frame of a second-stage model.

A second stage sees each face the same way up and the same size whatever the photo: the crop is rotated so
the line through the eye centres is level, centred on the landmarks' tight box in that rotated frame, and
its side is the box's longer side times (1 + context). At training time the landmarks are the ground truth
(augmentation supplies the first stage's errors as jitter); at inference they are the first stage's
prediction. Both use this one function, so the frames agree exactly.
"""
from __future__ import annotations

import numpy as np

from facealign.data.crop import CropTransform
from facealign.data.schemes import get_scheme


def eye_centres(landmarks: np.ndarray, scheme=None) -> tuple[np.ndarray, np.ndarray]:
    """(subject's right eye, subject's left eye) centres, (..., 2) pixels, from (..., K, 2) landmarks: the
    scheme's pupil groups' centroids, else its outer eye corners. ValueError for a scheme with neither."""
    s = get_scheme(scheme)
    lm = np.asarray(landmarks, np.float64)
    if s.pupils is not None:
        return lm[..., list(s.pupils[0]), :].mean(-2), lm[..., list(s.pupils[1]), :].mean(-2)
    if s.eye_corners is not None:
        return lm[..., s.eye_corners[0], :], lm[..., s.eye_corners[1], :]
    raise ValueError(f"scheme {s.name} names no eyes (pupils or eye_corners), so it cannot align crops")


def roll(landmarks: np.ndarray, scheme=None) -> float:
    """In-plane rotation of a face, radians: the angle of the line from the subject's right eye (image left
    on a frontal face) to the left eye, measured from the image x axis (y down: positive is clockwise)."""
    right, left = eye_centres(landmarks, scheme)
    v = left - right
    return float(np.arctan2(v[1], v[0]))


def aligned_transform(landmarks: np.ndarray, context: float, scheme=None) -> CropTransform:
    """The aligned crop of a face whose (K, 2) landmarks (image pixels) are given: rotated by -roll about
    the landmarks' tight box centre in the rotated frame, side = that box's longer side * (1 + context).

    Returns the `CropTransform` (image pixels -> normalised crop coords); its crop is upright (eye line
    level, left to right in the image) whatever the photo's roll."""
    lm = np.asarray(landmarks, np.float64)
    if lm.ndim != 2 or lm.shape[1] != 2 or not np.isfinite(lm).all():
        raise ValueError(f"landmarks must be a finite (K, 2) array, got shape {lm.shape}")
    a = roll(lm, scheme)
    rot = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])  # rotates by -a
    r = lm @ rot.T
    lo, hi = r.min(0), r.max(0)
    side = float((hi - lo).max()) * (1.0 + context)
    if not side > 0:
        raise ValueError("degenerate landmarks: every point in one place")
    centre_r = (lo + hi) / 2
    # u = (rot x - centre_r) / side + 0.5
    m = np.zeros((2, 3))
    m[:, :2] = rot / side
    m[:, 2] = 0.5 - centre_r / side
    return CropTransform(m)


def aligned_or_box(landmarks: np.ndarray, box: np.ndarray, context: float, scheme=None) -> CropTransform:
    """`aligned_transform` of a first stage's landmarks, or the box's square crop (`CropTransform.from_box`,
    same context) when they are degenerate (NaN, or every point in one place): an untrained or broken first
    stage degrades a second stage's input instead of failing the photo."""
    try:
        return aligned_transform(landmarks, context, scheme)
    except ValueError:
        return CropTransform.from_box(box, context)


def frame_error(predicted: np.ndarray, truth: np.ndarray, context: float, scheme=None) -> np.ndarray:
    """How far the aligned crop from `predicted` landmarks is from the one from `truth`, per face:
    (N, 4) float64 columns (rotation degrees, log side ratio, centre shift x, centre shift y), the shifts in
    fractions of the true crop's side and in its frame. Its spread sizes a second stage's jitter."""
    out = []
    for p, t in zip(np.asarray(predicted), np.asarray(truth)):
        tp, tt = aligned_transform(p, context, scheme), aligned_transform(t, context, scheme)
        rot = np.degrees(roll(p, scheme) - roll(t, scheme))
        rot = (rot + 180) % 360 - 180
        ratio = np.log(np.sqrt(abs(np.linalg.det(tt.matrix[:, :2]))) / np.sqrt(abs(np.linalg.det(tp.matrix[:, :2]))))
        centre = tt.to_crop(tp.to_image(np.array([[0.5, 0.5]])))[0] - 0.5
        out.append([rot, ratio, centre[0], centre[1]])
    return np.asarray(out, np.float64).reshape(-1, 4)
