"""Generated faces for tests and offline demos: a parametric 68-point shape drawn on noise.

Not a face model: just enough structure for the pipeline (layouts, crops,
training) to be exercised end to end without real data.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from facealign.data.pts import write_pts
from facealign.data.scheme import NUM_LANDMARKS, REGIONS


def _ring(n: int, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """n points on an ellipse starting at its image-left end, going over the top (clockwise on screen)."""
    t = np.pi + np.arange(n) * (2 * np.pi / n)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


def _arc(n: int, cx: float, cy: float, rx: float, ry: float, a0: float, a1: float) -> np.ndarray:
    t = np.linspace(a0, a1, n)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


def template_shape() -> np.ndarray:
    """(68, 2) float32 in a unit face box [0, 1]^2, iBUG order, subject's right on the image left."""
    parts = [
        _arc(17, 0.5, 0.35, 0.5, 0.65, np.pi, 0.0),  # jaw: image-left, chin (8), image-right
        _arc(5, 0.3, 0.3, 0.14, 0.06, np.pi, 2 * np.pi),  # right eyebrow, outer to inner
        _arc(5, 0.7, 0.3, 0.14, 0.06, np.pi, 2 * np.pi),  # left eyebrow, inner to outer
        np.stack([np.full(4, 0.5), np.linspace(0.4, 0.58, 4)], 1),  # nose bridge, top to tip
        _arc(5, 0.5, 0.6, 0.08, 0.03, 0.8 * np.pi, 0.2 * np.pi),  # lower nose, image-left to right
        _ring(6, 0.32, 0.42, 0.08, 0.035),  # right eye: outer corner 36 first
        _ring(6, 0.68, 0.42, 0.08, 0.035),  # left eye: inner corner 42 first
        _ring(12, 0.5, 0.78, 0.16, 0.07),  # outer lips from corner 48
        _ring(8, 0.5, 0.78, 0.1, 0.03),  # inner lips from corner 60
    ]
    shape = np.concatenate(parts)
    assert shape.shape == (NUM_LANDMARKS, 2)
    return shape.astype(np.float32)


def random_face(rng: np.random.Generator, size: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """A (size, size, 3) uint8 image and its (68, 2) landmarks (pixel centres) for a jittered template."""
    side = rng.uniform(0.45, 0.65) * size
    x0, y0 = rng.uniform(0.1 * size, size - side - 0.1 * size, size=2)
    pts = template_shape() * side + [x0, y0] + rng.normal(0, 0.01 * side, (NUM_LANDMARKS, 2))
    img = Image.fromarray(rng.integers(60, 120, (size, size, 3), dtype=np.uint8))
    draw = ImageDraw.Draw(img)
    for region, idx in REGIONS.items():
        draw.line([tuple(p) for p in pts[list(idx)]], fill=(230, 200, 170), width=2)
    return np.asarray(img), pts.astype(np.float32)


def write_faces(folder: Path, n: int, rng: np.random.Generator, size: int = 160, prefix: str = "face",
                n_points: int = NUM_LANDMARKS) -> list[Path]:
    """Write n image + .pts pairs (`{prefix}{i}_1.jpg/.pts`); n_points=39 writes profile-style files."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        img, pts = random_face(rng, size)
        stem = folder / f"{prefix}{i:03d}_1"
        Image.fromarray(img).save(stem.with_suffix(".jpg"), quality=95)
        write_pts(stem.with_suffix(".pts"), pts[:n_points])
        out.append(stem.with_suffix(".pts"))
    return out


def make_300w_fixture(root: Path, counts: dict[str, int], seed: int = 0, size: int = 160) -> Path:
    """A 300W-layout tree with `counts[subset_folder]` faces each (e.g. {'afw': 3, 'helen/testset': 2})."""
    rng = np.random.default_rng(seed)
    for folder, n in counts.items():
        write_faces(Path(root) / folder, n, rng, size, prefix=folder.replace("/", "_") + "_")
    return Path(root)
