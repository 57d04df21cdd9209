"""Landmarks on video: frames via OpenCV, face tracks, and temporal smoothing (One Euro filter).

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
"""
from __future__ import annotations

import math
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from facealign.data.boxes import iou

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")
DEFAULT_BETA = 10.0   # cut-off gain per (face size / frame) of speed
D_CUTOFF = 0.05       # cycles per frame, cut-off of the speed estimate
RESET_IOU = 0.3       # a box overlapping its track's last box less than this starts a new track
MAX_MISSED = 3        # frames a track survives without a matching face
DEFAULT_FPS = 25.0    # used when a file does not state a usable frame rate


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

    Call once per frame with that frame's faces; returns (faces with smoothed landmarks, track ids). Faces
    are matched to the live tracks by box IoU (>= `reset_iou`, greedy, best first), whatever the number of
    faces. A track that finds no face is kept for `max_missed` frames, so a face the detector misses for a
    frame or two, or a stray detection elsewhere, changes neither its id nor its smoothing; an unmatched
    face starts a new track with a new id (ids are never reused).
    """

    def __init__(self, alpha: float = 1.0, beta: float = DEFAULT_BETA, reset_iou: float = RESET_IOU,
                 max_missed: int = MAX_MISSED):
        check_smoothing(alpha, beta)
        if int(max_missed) != max_missed or max_missed < 0:
            raise ValueError(f"max_missed must be a whole number >= 0, got {max_missed}")
        self.alpha, self.beta, self.reset_iou, self.max_missed = alpha, beta, reset_iou, int(max_missed)
        self.next_id = 0
        self.tracks: list[Track] = []

    def __call__(self, faces: Sequence) -> tuple[list, list[int]]:
        from facealign.inference.aligner import Face
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


# ---------------------------------------------------------------- reading and writing video
def open_video(path: str | os.PathLike) -> tuple[cv2.VideoCapture, float, int | None]:
    """(capture, fps, frame count or None if unknown); ValueError if OpenCV cannot open it."""
    # FFmpeg prints its own errors ("moov atom not found") straight to stderr; we report one line per
    # file instead. Read by OpenCV when it first uses FFmpeg; a value the user set is kept.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")  # AV_LOG_FATAL
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise ValueError(f"{path}: cannot open video (OpenCV/FFmpeg cannot read this file)")
    fps = cap.get(cv2.CAP_PROP_FPS)
    fps = fps if math.isfinite(fps) and 0 < fps < 1000 else DEFAULT_FPS
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    return cap, float(fps), (count if count > 0 else None)


def iter_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """RGB uint8 frames of a video file, in order."""
    cap, _, _ = open_video(path)
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()


@contextmanager
def atomic_video_writer(path: Path, fps: float, size: tuple[int, int]) -> Iterator[cv2.VideoWriter]:
    """A cv2.VideoWriter (mp4v) on a temporary file with the same extension, renamed onto `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    try:
        if not writer.isOpened():
            raise ValueError(f"cannot write {path.name} with OpenCV's mp4v encoder")
        yield writer
        writer.release()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        writer.release()
        Path(tmp).unlink(missing_ok=True)
        raise


def predict_video(aligner, path: str | os.PathLike, smooth: float | None = None, beta: float = DEFAULT_BETA,
                  frames_per_batch: int = 8) -> Iterator[tuple[int, np.ndarray, list, list[int]]]:
    """Yield (frame index, RGB frame, faces, track ids) for every frame; landmarks smoothed if `smooth`."""
    smoother = LandmarkSmoother(1.0 if smooth is None else smooth, beta)
    buffer: list[tuple[np.ndarray, tuple]] = []
    index = 0
    frames = iter_frames(path)
    while True:
        frame = next(frames, None)
        if frame is not None:
            buffer.append((frame, aligner.detect(frame)))
        if buffer and (frame is None or len(buffer) == frames_per_batch):
            results = aligner.align([f for f, _ in buffer], [d for _, d in buffer])
            for (rgb, _), faces in zip(buffer, results):
                faces, tracks = smoother(faces)
                yield index, rgb, faces, tracks
                index += 1
            buffer = []
        if frame is None:
            return


def process_video(aligner, path: Path, names, stem: str, pts: bool = False, draw: bool = False,
                  smooth: float | None = None, beta: float = DEFAULT_BETA, rows: list | None = None,
                  progress: bool = True) -> dict:
    """`facealign predict` on one video: OUTDIR/<stem>/frame_NNNNNN.json per frame, video.json (summary),
    optional frame_NNNNNN_<i>.pts and annotated.mp4; CSV rows appended to `rows`."""
    import sys
    import time

    from tqdm import tqdm

    from facealign.data.pts import write_pts
    from facealign.outputs import annotate, csv_row, write_json
    cap, fps, count = open_video(path)
    ok, first = cap.read()
    cap.release()
    if not ok:
        raise ValueError(f"{path}: no video frame could be decoded")
    height, width = first.shape[:2]
    folder = names.path(stem)
    folder.mkdir(parents=True, exist_ok=True)
    n_frames = n_faces = 0
    bar = tqdm(total=count, desc=Path(path).name, unit="frame", disable=not progress, file=sys.stderr)
    t0 = time.perf_counter()
    with _maybe_writer(names.path(stem, "annotated.mp4") if draw else None, fps, (width, height)) as writer:
        for i, rgb, faces, tracks in predict_video(aligner, path, smooth, beta):
            write_json(names.path(stem, f"frame_{i:06d}.json"), {
                "source": str(path), "frame": i, "time_s": round(i / fps, 6),
                "faces": [{**f.to_dict(), "track": t} for f, t in zip(faces, tracks)]})
            if pts:
                for k, face in enumerate(faces):
                    write_pts(names.path(stem, f"frame_{i:06d}_{k}.pts"), face.landmarks)
            if rows is not None:
                rows += [csv_row(str(path), i, k, f, t) for k, (f, t) in enumerate(zip(faces, tracks))]
            if writer is not None:
                drawn = np.asarray(annotate(rgb, faces))
                if drawn.shape[:2] != (height, width):
                    drawn = cv2.resize(drawn, (width, height), interpolation=cv2.INTER_AREA)
                writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
            n_frames += 1
            n_faces += len(faces)
            bar.update(1)
            bar.set_postfix_str(f"{n_faces / max(time.perf_counter() - t0, 1e-9):.1f} faces/s")
    bar.close()
    complete = count is None or n_frames >= count
    if not complete:  # damaged or cut-off file: keep what decoded, but say so
        tqdm.write(f"facealign: warning: {path}: decoded {n_frames} of {count} frames "
                   f"(the file ends early or is damaged)", file=sys.stderr)
    summary = {
        "source": str(path), "model": aligner.name, "backend": aligner.backend_name,
        "detector": aligner.detector_name, "frames": n_frames, "frames_in_header": count, "complete": complete,
        "fps": fps, "width": width, "height": height,
        "faces": n_faces,
        "smoothing": None if smooth is None else {"method": "one-euro", "alpha": smooth, "beta": beta,
                                                  "d_cutoff": D_CUTOFF, "reset_iou": RESET_IOU},
        "annotated": "annotated.mp4" if draw else None,
        "coordinates": "image pixels (x, y), 0-based pixel centres: the top-left pixel's centre is (0, 0)",
    }
    write_json(names.path(stem, "video.json"), summary)
    return summary


@contextmanager
def _maybe_writer(path: Path | None, fps: float, size: tuple[int, int]):
    if path is None:
        yield None
    else:
        with atomic_video_writer(path, fps, size) as w:
            yield w
