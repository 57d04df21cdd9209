"""Generated faces for tests and offline demos: a parametric 68-point (or 98-point WFLW) shape drawn on noise.

Not a face model: just enough structure for the pipeline (layouts, crops,
training) to be exercised end to end without real data.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from facealign.data.pts import write_pts
from facealign.data.scheme import NUM_LANDMARKS
from facealign.data.schemes import get_scheme


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


def wflw_template() -> np.ndarray:
    """(98, 2) float32 in a unit face box, WFLW order (`facealign.data.schemes.wflw98`), mirror-symmetric about
    x = 0.5 under the scheme's pairs."""
    brow_y = [0.27, 0.24, 0.23, 0.24, 0.27]
    parts = [
        _arc(33, 0.5, 0.35, 0.5, 0.65, np.pi, 0.0),  # contour 0-32: image-left, chin (16), image-right
        np.stack([np.linspace(0.16, 0.44, 5), brow_y], 1),  # right eyebrow top 33-37, outer to inner
        np.stack([[0.41, 0.34, 0.27, 0.20], np.full(4, 0.30)], 1),  # its lower edge 38-41, inner to outer
        np.stack([np.linspace(0.56, 0.84, 5), brow_y[::-1]], 1),  # left eyebrow top 42-46, inner to outer
        np.stack([[0.80, 0.73, 0.66, 0.59], np.full(4, 0.30)], 1),  # its lower edge 47-50, outer to inner
        np.stack([np.full(4, 0.5), np.linspace(0.4, 0.58, 4)], 1),  # nose bridge 51-54, top to tip
        _arc(5, 0.5, 0.6, 0.08, 0.03, 0.8 * np.pi, 0.2 * np.pi),  # nose bottom 55-59, image-left to right
        _ring(8, 0.32, 0.42, 0.08, 0.035),  # right eye 60-67: outer corner 60 first
        _ring(8, 0.68, 0.42, 0.08, 0.035),  # left eye 68-75: inner corner 68 first, outer 72
        _ring(12, 0.5, 0.78, 0.16, 0.07),  # outer lips 76-87 from corner 76
        _ring(8, 0.5, 0.78, 0.1, 0.03),  # inner lips 88-95 from corner 88
        np.array([[0.32, 0.42], [0.68, 0.42]]),  # pupils 96, 97
    ]
    return np.concatenate(parts).astype(np.float32)


TEMPLATES = {"ibug68": template_shape, "wflw98": wflw_template}  # scheme name -> unit-box template


def random_face(rng: np.random.Generator, size: int = 160, scheme: str = "ibug68") -> tuple[np.ndarray, np.ndarray]:
    """A (size, size, 3) uint8 image and its (K, 2) landmarks (pixel centres) for a jittered template of
    `scheme` (a `TEMPLATES` name)."""
    template = TEMPLATES[scheme]()
    side = rng.uniform(0.45, 0.65) * size
    x0, y0 = rng.uniform(0.1 * size, size - side - 0.1 * size, size=2)
    pts = template * side + [x0, y0] + rng.normal(0, 0.01 * side, template.shape)
    img = Image.fromarray(rng.integers(60, 120, (size, size, 3), dtype=np.uint8))
    draw = ImageDraw.Draw(img)
    for region, idx in get_scheme(scheme).regions.items():
        draw.line([tuple(p) for p in pts[list(idx)]], fill=(230, 200, 170), width=2)
    return np.asarray(img), pts.astype(np.float32)


def write_faces(folder: Path, n: int, rng: np.random.Generator, size: int = 160, prefix: str = "face",
                n_points: int | None = None, scheme: str = "ibug68") -> list[Path]:
    """Write n image + .pts pairs (`{prefix}{i}_1.jpg/.pts`) of `scheme`; n_points=39 writes the first 39 points
    (profile-style files)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        img, pts = random_face(rng, size, scheme)
        stem = folder / f"{prefix}{i:03d}_1"
        Image.fromarray(img).save(stem.with_suffix(".jpg"), quality=95)
        write_pts(stem.with_suffix(".pts"), pts[:n_points])
        out.append(stem.with_suffix(".pts"))
    return out


def make_300w_fixture(root: Path, counts: dict[str, int], seed: int = 0, size: int = 160,
                      scheme: str = "ibug68") -> Path:
    """A 300W-layout tree with `counts[subset_folder]` faces each (e.g. {'afw': 3, 'helen/testset': 2}); with
    scheme="wflw98", 98-point faces (any folder names: a generic root with split folders train/, test/ ...)."""
    rng = np.random.default_rng(seed)
    for folder, n in counts.items():
        write_faces(Path(root) / folder, n, rng, size, prefix=folder.replace("/", "_") + "_", scheme=scheme)
    return Path(root)
