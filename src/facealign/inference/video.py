"""Landmarks on video: frames via OpenCV, per-frame and summary JSON, and an annotated copy.

Tracking, shot-cut detection and smoothing live in `facealign.inference.tracking`: each frame's
faces go through a `LandmarkSmoother`, told by a `CutDetector` when a new shot starts.
"""
from __future__ import annotations

import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from facealign.inference.tracking import (CUT_MIN_CORRELATION, D_CUTOFF, DEFAULT_BETA, MAX_MISSED, MAX_SHIFT, RESET_IOU, THUMB_SIZE,
                                CutDetector, LandmarkSmoother)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")
DEFAULT_FPS = 25.0    # used when a file does not state a usable frame rate
FRAME_SCHEMA_FILE = "video_frame.schema.json"  # facealign/schema/: one frame_NNNNNN.json
VIDEO_SCHEMA_FILE = "video.schema.json"        # facealign/schema/: video.json, the summary


def video_schema_path(kind: str = "video") -> Path:
    """The JSON Schema (draft 2020-12) of `video.json` (kind "video") or of a frame's JSON (kind "frame")."""
    from importlib import resources
    name = {"video": VIDEO_SCHEMA_FILE, "frame": FRAME_SCHEMA_FILE}[kind]
    return Path(str(resources.files("facealign") / "schema" / name))


# ---------------------------------------------------------------- reading and writing video
def open_video(path: str | os.PathLike) -> tuple[cv2.VideoCapture, float, int | None]:
    """(capture, fps, frame count or None if unknown); ValueError if OpenCV cannot open it."""
    # FFmpeg prints its own errors ("moov atom not found") straight to stderr; we report one line per
    # file instead. Read by OpenCV when it first uses FFmpeg; a value the user set is kept.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")  # AV_LOG_FATAL
    if os.path.isfile(path) and os.path.getsize(path) == 0:  # OpenCV would only say it cannot open it
        raise ValueError(f"{path}: empty file (0 bytes), not a video")
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
                  frames_per_batch: int = 8, cut_correlation: float | None = CUT_MIN_CORRELATION,
                  cuts: list[int] | None = None) -> Iterator[tuple[int, np.ndarray, list, list[int]]]:
    """Yield (frame index, RGB frame (H, W, 3) uint8, faces, track ids) for every frame.

    Landmarks are smoothed if `smooth` (alpha). A frame whose thumbnail correlation with the previous one
    is below `cut_correlation` is a cut: every track ends there (None: never). The index of each cut frame
    is appended to `cuts` (if given) before that frame is yielded.
    """
    smoother = LandmarkSmoother(1.0 if smooth is None else smooth, beta)
    detector = None if cut_correlation is None else CutDetector(cut_correlation)
    buffer: list[tuple[np.ndarray, tuple, bool]] = []
    index = 0
    frames = iter_frames(path)
    while True:
        frame = next(frames, None)
        if frame is not None:
            buffer.append((frame, aligner.detect(frame), detector is not None and detector(frame)))
        if buffer and (frame is None or len(buffer) == frames_per_batch):
            results = aligner.align([f for f, _, _ in buffer], [d for _, d, _ in buffer])
            for (rgb, _, cut), faces in zip(buffer, results):
                if cut and cuts is not None:
                    cuts.append(index)
                faces, tracks = smoother(faces, cut=cut)
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
    from facealign.inference.outputs import (BOX_FORMAT, COORDINATES, SCHEMA_VERSION, annotate, csv_row, landmark_scheme,
                                   write_json)
    from facealign.version import __version__
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
    cuts: list[int] = []
    # The fields every document of this video shares with predict's image document (schema_version first).
    common = {"schema_version": SCHEMA_VERSION, "facealign_version": __version__, "source": str(path),
              "model": aligner.name, "model_version": str(aligner.card.get("weights_sha256", ""))[:12]}
    with _maybe_writer(names.path(stem, "annotated.mp4") if draw else None, fps, (width, height)) as writer:
        for i, rgb, faces, tracks in predict_video(aligner, path, smooth, beta, cuts=cuts):
            write_json(names.path(stem, f"frame_{i:06d}.json"), {
                **common, "frame": i, "time_s": round(i / fps, 6), "cut": bool(cuts and cuts[-1] == i),
                "faces": [{**f.to_dict(), "track": t} for f, t in zip(faces, tracks)]})
            if pts:
                for k, face in enumerate(faces, 1):  # 1-based, like the image outputs
                    write_pts(names.path(stem, f"frame_{i:06d}_{k}.pts"), face.landmarks)
            if rows is not None:
                rows += [csv_row(str(path), i, k, f, t) for k, (f, t) in enumerate(zip(faces, tracks), 1)]
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
        **common, "backend": aligner.backend_name,
        "detector": aligner.detector_name, "frames": n_frames, "frames_in_header": count, "complete": complete,
        "fps": fps, "width": width, "height": height,
        "faces": n_faces, "cuts": cuts,
        "landmark_scheme": landmark_scheme(aligner.card), "box_format": BOX_FORMAT,
        "tracking": {"reset_iou": RESET_IOU, "max_missed": MAX_MISSED, "cut_min_correlation": CUT_MIN_CORRELATION,
                     "cut_thumbnail": THUMB_SIZE, "cut_max_shift": MAX_SHIFT},
        "smoothing": None if smooth is None else {"method": "one-euro", "alpha": smooth, "beta": beta,
                                                  "d_cutoff": D_CUTOFF, "reset_iou": RESET_IOU},
        "annotated": "annotated.mp4" if draw else None,
        "coordinates": COORDINATES,
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
