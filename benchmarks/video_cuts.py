"""Measure the shot-cut signal of `facealign.inference.tracking.CutDetector` on natural clips and on cuts.

The signal is the Pearson correlation of consecutive frames' 32 x 32 grayscale thumbnails, at the best
of the shifts up to 2 thumbnail pixels each way (`facealign.inference.tracking.MAX_SHIFT`). Natural clips
(one shot) should stay high; cuts (another shot) should fall. Prints one row per clip family: the lowest
correlation within shots and the highest across cuts, the detector's cost per frame, then the margin
each side of the threshold.

    .venv/bin/python benchmarks/video_cuts.py [--data ../shared/data/300W]

Clips are written with OpenCV's MJPG codec and decoded again, so compression artefacts are included.
Families:
- synthetic one-shot clips: tests/helpers.write_clip (the astronaut) with drift 0-20 px/frame on a 240 px
  frame, shake (jitter) 0-3 px and sensor noise 0-8 grey levels, and a slow zoom (2%/frame);
- 300W one-shot clips (with --data): 20 photos, each panned 4 px/frame with noise 3 over 8 frames;
- cuts: issue 24's clip (tests/helpers.write_cut_clip), the astronaut cut to each of the 100 LFW faces of
  skimage.data.lfw_subset on the coffee photo, and (with --data) 200 pairs of different 300W photos.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import timeit
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import SECOND_FACE_PX, write_clip, write_cut_clip  # noqa: E402

from facealign.inference.tracking import CUT_MIN_CORRELATION, CutDetector, frame_thumbnail, thumbnail_correlation  # noqa: E402
from facealign.inference.video import iter_frames  # noqa: E402


def correlations(frames: list[np.ndarray]) -> np.ndarray:
    thumbs = [frame_thumbnail(f) for f in frames]
    return np.array([thumbnail_correlation(a, b) for a, b in zip(thumbs, thumbs[1:])])


def through_codec(frames: list[np.ndarray], tmp: Path) -> list[np.ndarray]:
    """The frames after an MJPG round trip (what the video pipeline sees)."""
    path = tmp / "clip.avi"
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return list(iter_frames(path))


def zoom_clip(n: int = 10, rate: float = 0.02) -> list[np.ndarray]:
    from skimage import data
    astro = data.astronaut()
    out = []
    for i in range(n):
        s = (1 + rate) ** i
        m = cv2.getRotationMatrix2D((220.0, 120.0), 0.0, s)
        m[:, 2] -= (100, 0)
        out.append(cv2.warpAffine(astro, m, (240, 240), borderMode=cv2.BORDER_REFLECT))
    return out


def pan(photo: np.ndarray, n: int, step: float, noise: float, rng) -> list[np.ndarray]:
    h, w = photo.shape[:2]
    side = min(h, w) * 3 // 4
    out = []
    for i in range(n):
        m = np.array([[1, 0, -(w - side) / 4 - step * i], [0, 1, -(h - side) / 2]], np.float64)
        f = cv2.warpAffine(photo, m, (side, side), borderMode=cv2.BORDER_REFLECT).astype(np.float32)
        out.append(cv2.resize(np.clip(f + rng.normal(0, noise, f.shape), 0, 255).astype(np.uint8), (240, 240),
                              interpolation=cv2.INTER_AREA))
    return out


def photos_300w(data: Path, k: int, rng) -> list[np.ndarray]:
    from facealign.data.images import load_rgb
    files = sorted(p for p in data.rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    return [load_rgb(files[i]) for i in rng.choice(len(files), size=k, replace=False)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/300W"))
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []  # (family, kind, clips, pairs, value): min within shots / max across cuts
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for drift in (0.0, 2.0, 5.0, 10.0, 15.0, 20.0):
            for jitter, noise in ((0.0, 0.0), (1.0, 3.0), (3.0, 8.0)):
                c = np.concatenate([correlations(write_clip(tmp / "c.avi", 10, drift, jitter, noise, seed) and
                                                 list(iter_frames(tmp / "c.avi"))) for seed in range(3)])
                rows.append((f"astronaut, drift {drift:g} px/frame, jitter {jitter:g}, noise {noise:g}", "shot",
                             3, len(c), c.min()))
        c = correlations(through_codec(zoom_clip(), tmp))
        rows.append(("astronaut, zoom 2%/frame", "shot", 1, len(c), c.min()))
        write_cut_clip(tmp / "cut.avi")
        c = correlations(list(iter_frames(tmp / "cut.avi")))
        rows.append(("issue 24 clip: within its two shots", "shot", 1, len(c) - 1, np.delete(c, 9).min()))
        rows.append(("issue 24 clip: the cut (frame 9 -> 10)", "cut", 1, 1, c[9]))
        from skimage import data as sk
        astro_last = write_clip(tmp / "a.avi", 10)[-1]
        coffee = cv2.resize(sk.coffee(), (320, 240), interpolation=cv2.INTER_AREA)[:, :240]
        cut = []
        for face in sk.lfw_subset()[:100]:
            shot = coffee.copy()
            shot[50:50 + SECOND_FACE_PX, 40:40 + SECOND_FACE_PX] = cv2.resize(
                (face * 255).round().astype(np.uint8), (SECOND_FACE_PX,) * 2, interpolation=cv2.INTER_CUBIC)[..., None]
            cut.append(correlations(through_codec([astro_last, shot], tmp))[0])
        rows.append(("astronaut -> each LFW face on coffee", "cut", 100, 100, max(cut)))
        if args.data.is_dir():
            photos = photos_300w(args.data, 60, rng)
            c = np.concatenate([correlations(through_codec(pan(p, 8, 4.0, 3.0, rng), tmp)) for p in photos[:20]])
            rows.append(("300W photos panned 4 px/frame (of 240), noise 3", "shot", 20, len(c), c.min()))
            pairs = [(photos[i], photos[j]) for i, j in rng.integers(0, len(photos), (400, 2)) if i != j][:200]
            cut = [correlations(through_codec([pan(a, 1, 0, 0, rng)[0], pan(b, 1, 0, 0, rng)[0]], tmp))[0]
                   for a, b in pairs]
            rows.append(("pairs of different 300W photos", "cut", len(cut), len(cut), max(cut)))
        else:
            print(f"({args.data} not found: 300W rows left out)")
    print("| clips | kind | clips | frame pairs | min corr. within shots / max across cuts |")
    print("|---|---|---|---|---|")
    for name, kind, n, pairs, v in rows:
        print(f"| {name} | {kind} | {n} | {pairs} | {v:.3f} |")
    lo = min(v for name, k, _, _, v in rows if k == "shot" and "drift 20" not in name)
    hi = max(v for _, k, _, _, v in rows if k == "cut")
    t = CUT_MIN_CORRELATION
    for h, w in ((240, 240), (720, 1280), (1080, 1920)):  # what the check adds to every frame
        frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(2)]
        detector = CutDetector()
        detector(frames[0])
        seconds = timeit.timeit(lambda: detector(frames[1]), number=100) / 100
        print(f"CutDetector cost, {w} x {h} frame: {seconds * 1e3:.1f} ms (one thread)")
    print(f"\nlowest within a shot {lo:.3f} (pans up to 15 px/frame; 20 px/frame exceeds MAX_SHIFT, left out), "
          f"highest across a cut {hi:.3f}; threshold {t}: margin "
          f"{lo - t:+.3f} above (shots kept), {t - hi:+.3f} below (cuts found)")


if __name__ == "__main__":
    main()
