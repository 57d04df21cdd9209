"""Face tracks across video frames, shot-cut detection and temporal smoothing (One Euro filter).

Smoothing follows the One Euro filter (Casiez, Roussel & Vogel, CHI 2012): an exponential moving
average whose smoothing factor adapts to speed. A still face is smoothed strongly (low jitter); a
moving face gets a higher cut-off, so it lags little. Time is counted in frames, so the parameters are
per frame:

- `alpha` in (0, 1]: the EMA weight of the new frame when the face is still (1 = no smoothing;
  0.3 = strong). It sets the minimum cut-off `f_min = alpha / (2 pi (1 - alpha))` cycles/frame.
- `beta` >= 0: how fast the cut-off rises with speed, `f = f_min + beta * speed`, where speed is the
  (low-passed) displacement of each landmark per frame divided by the face box's size, so the
  behaviour does not depend on the image resolution. `beta = 0` is a plain EMA with weight `alpha`.

Each face is a track, matched to the live tracks' last boxes by IoU (>= 0.3). A face that matches no track
starts a new one (no smoothing across the cut), so smoothing never blends two different faces. A track
that finds no face survives `MAX_MISSED` (3) frames: a one- or two-frame detector miss, or a stray
detection elsewhere, changes neither its id nor its smoothing.

A shot cut ends every track. Box overlap alone cannot see a cut to another person framed at the same
place (issue 24: IoU 0.47 kept one id across two people), so each frame is also compared with the one
before: the Pearson correlation of their 32 x 32 grayscale thumbnails (`CutDetector`). Within a shot it
stays near 1 (motion, shake and noise change few of the 1,024 coarse pixels); across a cut it falls.
The threshold `CUT_MIN_CORRELATION` and its margin were measured with `benchmarks/video_cuts.py`
(docs/video.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from facealign.detection.boxes import iou

DEFAULT_BETA = 10.0   # cut-off gain per (face size / frame) of speed
D_CUTOFF = 0.05       # cycles per frame, cut-off of the speed estimate
RESET_IOU = 0.3       # a box overlapping its track's last box less than this starts a new track
MAX_MISSED = 3        # frames a track survives without a matching face
THUMB_SIZE = 32       # side of the grayscale thumbnail compared between frames, pixels
MAX_SHIFT = 2         # thumbnail pixels (1/16 of the frame) a shot may move between frames: pans, shake
FLAT_STD = 1.0        # grey levels: a thumbnail this uniform (a black or white frame) has nothing to compare
# Below this thumbnail correlation two consecutive frames are a cut. Measured (benchmarks/video_cuts.py,
# docs/video.md): within shots >= 0.950 (pans up to 10 px/frame on 240 px, shake, noise, zoom, 300W
# photos), across cuts <= 0.712 (200 pairs of 300W photos; LFW faces <= 0.30). Halfway: ~0.12 margin each side.
CUT_MIN_CORRELATION = 0.83


def alpha_from_cutoff(cutoff):
    """EMA weight of a first-order low-pass filter with `cutoff` cycles/frame, sampled once a frame."""
    cutoff = np.asarray(cutoff, dtype=np.float64)
    return 1.0 / (1.0 + 1.0 / (2.0 * math.pi * cutoff))


def cutoff_from_alpha(alpha: float) -> float:
    """Inverse of `alpha_from_cutoff` (inf for alpha = 1)."""
    return math.inf if alpha >= 1.0 else alpha / (2.0 * math.pi * (1.0 - alpha))


def check_smoothing(alpha: float, beta: float = DEFAULT_BETA) -> None:
    if not (0.0 < alpha <= 1.0):
        raise ValueError(f"smoothing alpha must be in (0, 1] (1 = off, smaller = smoother), got {alpha}")
    if not (beta >= 0.0 and math.isfinite(beta)):
        raise ValueError(f"smoothing beta must be a finite number >= 0, got {beta}")


class OneEuroFilter:
    """One Euro filter on arrays of points (..., D), one call per frame; speed is per point (norm over D)."""

    def __init__(self, alpha: float = 0.5, beta: float = DEFAULT_BETA, d_cutoff: float = D_CUTOFF):
        check_smoothing(alpha, beta)
        self.alpha, self.beta = float(alpha), float(beta)
        self.min_cutoff = cutoff_from_alpha(alpha)
        self.alpha_d = float(alpha_from_cutoff(d_cutoff))
        self.reset()

    def reset(self) -> None:
        self.x: np.ndarray | None = None
        self.dx: np.ndarray | None = None

    def __call__(self, x: np.ndarray, scale: float = 1.0) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.x is None or self.alpha >= 1.0:
            self.x, self.dx = x.copy(), np.zeros_like(x)
            return x.astype(np.float32)
        dx = x - self.x
        self.dx = self.alpha_d * dx + (1.0 - self.alpha_d) * self.dx
        speed = np.linalg.norm(self.dx, axis=-1, keepdims=True) / max(float(scale), 1e-9)
        a = alpha_from_cutoff(self.min_cutoff + self.beta * speed)
        self.x = a * x + (1.0 - a) * self.x
        return self.x.astype(np.float32)


def smooth_track(points: np.ndarray, alpha: float, beta: float = DEFAULT_BETA, scale: float = 1.0) -> np.ndarray:
    """Smooth one track (T, K, 2) frame by frame; `scale` is the face size in the same units."""
    f = OneEuroFilter(alpha, beta)
    return np.stack([f(p, scale) for p in np.asarray(points)]) if len(points) else np.asarray(points, np.float32)


# ---------------------------------------------------------------- shot cuts
def frame_thumbnail(rgb: np.ndarray, size: int = THUMB_SIZE) -> np.ndarray:
    """(size, size) float32 grayscale thumbnail (0-255) of an (H, W, 3) uint8 RGB frame, area-averaged."""
    gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    return cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a.ravel() - a.mean()
    b = b.ravel() - b.mean()
    denom = math.sqrt(float(a @ a) * float(b @ b))
    return 1.0 if denom < 1e-6 else float(a @ b) / denom


def thumbnail_correlation(a: np.ndarray, b: np.ndarray, max_shift: int = MAX_SHIFT) -> float:
    """Highest Pearson correlation, in [-1, 1], of two (S, S) thumbnails over shifts of b by up to
    `max_shift` thumbnail pixels each way (compared on the overlap), so a pan or shake within a shot is
    not a change. 1.0 when a side is flat (no structure to compare: a fade to black is not called a cut)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n = a.shape[0]
    best = -1.0
    for dy in range(-max_shift, max_shift + 1):
        for dx in range(-max_shift, max_shift + 1):
            ya, yb = slice(max(dy, 0), n + min(dy, 0)), slice(max(-dy, 0), n + min(-dy, 0))
            xa, xb = slice(max(dx, 0), n + min(dx, 0)), slice(max(-dx, 0), n + min(-dx, 0))
            best = max(best, _pearson(a[ya, xa], b[yb, xb]))
    return best


class CutDetector:
    """Call once per frame with the (H, W, 3) RGB frame; True when it starts a new shot (a cut).

    A cut is a thumbnail correlation with the previous frame below `min_correlation`; the first frame is
    not a cut (there is nothing to carry over). A flat frame (thumbnail std < `FLAT_STD` grey levels: a
    fade to black) is never a cut and is skipped as the reference, so the frame after a fade is compared
    with the last frame before it: a dip to black between two people is still a cut. `last` holds the
    last frame's correlation (None at first and on flat frames).
    """

    def __init__(self, min_correlation: float = CUT_MIN_CORRELATION):
        if not -1.0 <= min_correlation <= 1.0:
            raise ValueError(f"min_correlation must be in [-1, 1], got {min_correlation}")
        self.min_correlation = float(min_correlation)
        self.previous: np.ndarray | None = None
        self.last: float | None = None

    def __call__(self, rgb: np.ndarray) -> bool:
        thumb = frame_thumbnail(rgb)
        if float(thumb.std()) < FLAT_STD:
            self.last = None
            return False
        self.last = None if self.previous is None else thumbnail_correlation(self.previous, thumb)
        self.previous = thumb
        return self.last is not None and self.last < self.min_correlation


# ---------------------------------------------------------------- tracks
def _match(prev: Sequence[np.ndarray], cur: Sequence[np.ndarray], min_iou: float) -> dict[int, int]:
    """Greedy highest-IoU matching: current index -> previous index, pairs below `min_iou` left out."""
    pairs = sorted(((iou(p, c), i, j) for i, p in enumerate(prev) for j, c in enumerate(cur)), reverse=True)
    used_prev, out = set(), {}
    for score, i, j in pairs:
        if score < min_iou:
            break
        if i not in used_prev and j not in out:
            used_prev.add(i)
            out[j] = i
    return out


@dataclass
class Track:
    """One followed face: its id, last box, smoothing filter and frames since it was last seen."""

    id: int
    box: np.ndarray
    filter: OneEuroFilter
    missed: int = 0


class LandmarkSmoother:
    """Tracks faces across frames and smooths each track's landmarks (alpha = 1: tracking only).

    Call once per frame with that frame's faces (a list of `Face`: box (4,) pixels, landmarks (68, 2)
    pixels) and `cut=True` on the first frame of a new shot; returns (faces with smoothed landmarks, track
    ids), in the input order. Faces are matched to the live tracks by box IoU (>= `reset_iou`, greedy, best
    first), whatever the number of faces. A track that finds no face is kept for `max_missed` frames, so a
    face the detector misses for a frame or two, or a stray detection elsewhere, changes neither its id nor
    its smoothing; an unmatched face starts a new track with a new id (ids are never reused). A cut ends
    every track first, so nothing is matched or smoothed across it.
    """

    def __init__(self, alpha: float = 1.0, beta: float = DEFAULT_BETA, reset_iou: float = RESET_IOU,
                 max_missed: int = MAX_MISSED):
        check_smoothing(alpha, beta)
        if int(max_missed) != max_missed or max_missed < 0:
            raise ValueError(f"max_missed must be a whole number >= 0, got {max_missed}")
        self.alpha, self.beta, self.reset_iou, self.max_missed = alpha, beta, reset_iou, int(max_missed)
        self.next_id = 0
        self.tracks: list[Track] = []

    def end_tracks(self) -> None:
        """Forget every live track (a cut); the next faces start new tracks with new ids."""
        self.tracks = []

    def __call__(self, faces: Sequence, cut: bool = False) -> tuple[list, list[int]]:
        from facealign.inference.aligner import Face
        if cut:
            self.end_tracks()
        matched = _match([t.box for t in self.tracks], [f.box for f in faces], self.reset_iou)
        out, ids, seen = [], [], set()
        for j, face in enumerate(faces):
            if j in matched:
                track = self.tracks[matched[j]]
                track.box, track.missed = face.box, 0
            else:
                track = Track(self.next_id, face.box, OneEuroFilter(self.alpha, self.beta))
                self.next_id += 1
                self.tracks.append(track)
            seen.add(track.id)
            side = float(max(face.box[2] - face.box[0], face.box[3] - face.box[1]))
            out.append(Face(face.box, face.score, track.filter(face.landmarks, side)))
            ids.append(track.id)
        for t in self.tracks:
            if t.id not in seen:
                t.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        return out, ids
