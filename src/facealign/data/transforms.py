"""Landmark-aware augmentation in normalised crop coordinates, and ImageNet normalisation.

Every geometric step is a (2, 3) affine map on u in [0, 1]^2 composed onto the
sample's `CropTransform`, so images and landmarks always move together.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facealign.data.scheme import MIRROR_PERMUTATION

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation (the study's list plus a mirrored flip). Ranges are +/- unless noted."""

    rotation_deg: float = 15.0
    scale: float = 0.10  # relative zoom
    shift: float = 0.05  # fraction of the crop side
    flip_prob: float = 0.5
    brightness: float = 0.2  # additive, fraction of full range
    contrast: float = 0.2  # multiplicative around the mean
    occlusion: float = 0.0  # probability of one solid random-colour rectangle over the crop (0: off)
    occlusion_size: float = 0.4  # the rectangle's largest side, fraction of the crop side (smallest: 0.1)


FLIP_X = np.array([[-1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])  # u -> 1 - u


def random_geometry(rng: np.random.Generator, cfg: AugmentConfig) -> tuple[np.ndarray, bool]:
    """A random similarity about the crop centre, (2, 3) on normalised coords, and whether to flip."""
    angle = np.deg2rad(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg))
    s = 1.0 + rng.uniform(-cfg.scale, cfg.scale)
    tx, ty = rng.uniform(-cfg.shift, cfg.shift, size=2)
    c, si = np.cos(angle) * s, np.sin(angle) * s
    # u' = R s (u - 0.5) + 0.5 + t
    m = np.array([[c, -si, 0.0], [si, c, 0.0]])
    m[:, 2] = 0.5 - m[:, :2] @ [0.5, 0.5] + [tx, ty]
    flip = bool(rng.random() < cfg.flip_prob)
    if flip:
        m = np.vstack([FLIP_X, [0, 0, 1]])[:2] @ np.vstack([m, [0, 0, 1]])
    return m, flip


def flip_order(landmarks: np.ndarray, mirror: np.ndarray | None = None) -> np.ndarray:
    """After mirroring coordinates, relabel so point i is again the scheme's i-th landmark.

    mirror: the scheme's `mirror_permutation` (None: the 68-point scheme's)."""
    return landmarks[..., MIRROR_PERMUTATION if mirror is None else mirror, :]


def photometric(image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Random brightness/contrast on (H, W, 3) float32 in [0, 1]."""
    b = rng.uniform(-cfg.brightness, cfg.brightness)
    c = 1.0 + rng.uniform(-cfg.contrast, cfg.contrast)
    mean = image.mean()
    return np.clip((image - mean) * c + mean + b, 0.0, 1.0)


NO_OCCLUSION = np.zeros(7)  # an empty rectangle: x0 = x1 = 0


def random_occlusion(rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """(7,) occluder: rectangle (x0, y0, x1, y1) in normalised crop coords, then its RGB colour in [0, 1];
    all zeros (empty) when none is drawn. Draws nothing when `cfg.occlusion` is 0, so runs without
    occlusion see exactly the samples they saw before the option existed."""
    if cfg.occlusion <= 0 or rng.random() >= cfg.occlusion:
        return NO_OCCLUSION
    w, h = rng.uniform(0.1, max(cfg.occlusion_size, 0.1), size=2)
    cx, cy = rng.uniform(0.0, 1.0, size=2)
    return np.concatenate([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], rng.uniform(0.0, 1.0, size=3)])


def occlusion_mask(occluder: np.ndarray, size: int) -> np.ndarray:
    """(size, size) bool: output pixels whose centre u = (j + 0.5) / size lies in [x0, x1) x [y0, y1)."""
    u = (np.arange(size) + 0.5) / size
    inside_x = (u >= occluder[0]) & (u < occluder[2])
    inside_y = (u >= occluder[1]) & (u < occluder[3])
    return inside_y[:, None] & inside_x[None, :]


def occlude(image: np.ndarray, occluder: np.ndarray) -> np.ndarray:
    """(S, S, 3) float32 in [0, 1] with the occluder's rectangle painted in its colour (a copy)."""
    out = image.copy()
    out[occlusion_mask(occluder, image.shape[0])] = occluder[4:7]
    return out


def normalize(image_u8: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 ImageNet-normalised."""
    x = image_u8.astype(np.float32) / 255.0
    return ((x - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)


def normalize_float(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] -> (3, H, W) ImageNet-normalised."""
    return ((image - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1).astype(np.float32)
