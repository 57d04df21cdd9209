"""Shared test helpers: a content-sensitive stand-in network and a synthetic video writer."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

# Tiny training settings for tests on generated 96 px faces (seconds per run on 2 CPU cores).
TINY = dict(input_size=32, batch_size=4, epochs=2, train_box="gt", val_box="gt", workers=0, lr=3e-3)


def tiny_config(data: Path, tmp_path: Path, **overrides):
    """A TrainConfig for `data` writing runs and caches under `tmp_path`; TINY plus `overrides`."""
    from facealign.training.config import make_config
    return make_config(data=str(data), out=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"),
                       **{**TINY, **overrides})


CARD = {"name": "test", "backbone": "efficientnet_b0", "head": "heatmap", "feature_index": -1, "head_kwargs": {},
        "input_size": 64, "context": 0.1, "box_protocol": "detector", "detector": "dlib", "flip_tta": False}


class PointwiseBackend:
    """(B, 3, S, S) -> (B, 68, 2): soft-argmax of a fixed random per-pixel colour projection per landmark."""

    def __init__(self, seed: int = 0, temperature: float = 3.0):
        self.w = np.random.default_rng(seed).normal(size=(68, 3)) * temperature
        self.calls: list[int] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.calls.append(len(batch))
        b, _, s, _ = batch.shape
        logits = np.einsum("kc,bcij->bkij", self.w, batch.astype(np.float64)).reshape(b, 68, -1)
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        centres = (np.arange(s) + 0.5) / s
        u = (p.reshape(b, 68, s, s).sum(2) * centres).sum(-1)
        v = (p.reshape(b, 68, s, s).sum(3) * centres).sum(-1)
        return np.stack([u, v], -1).astype(np.float32)


def write_clip(path: Path, n: int = 8, drift: float = 2.0, jitter: float = 0.0, noise: float = 0.0, seed: int = 0,
               fourcc: str = "MJPG") -> list[np.ndarray]:
    """n frames (240 x 240) around the astronaut's face, drifting `drift` px/frame, plus random jitter/noise."""
    rng = np.random.default_rng(seed)
    from skimage import data as skimage_data
    astro = skimage_data.astronaut().astype(np.float32)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, (240, 240))
    assert writer.isOpened()
    frames = []
    for i in range(n):
        dx, dy = drift * i + rng.uniform(-jitter, jitter), rng.uniform(-jitter, jitter)
        m = np.array([[1, 0, -(100 + dx)], [0, 1, -dy]], np.float64)
        frame = cv2.warpAffine(astro, m, (240, 240), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        frame = np.clip(frame + rng.normal(0, noise, frame.shape), 0, 255).astype(np.uint8)
        frames.append(frame)
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return frames


SECOND_FACE = 20    # index in skimage.data.lfw_subset() of the cut clip's second person (an LFW face)
SECOND_FACE_PX = 150  # its side in the frame; dlib HOG's box then overlaps the astronaut's by IoU ~0.5


def second_shot(i: int, drift: float = 2.0) -> np.ndarray:
    """Frame i (240 x 240 RGB uint8) of another shot: an LFW face (skimage.data.lfw_subset, 25 x 25 px,
    upscaled) over scikit-image's coffee photo, at about the place the astronaut's face has in `write_clip`,
    drifting `drift` px/frame to the left."""
    from skimage import data as skimage_data
    canvas = cv2.resize(skimage_data.coffee(), (320, 240), interpolation=cv2.INTER_AREA)
    face = (skimage_data.lfw_subset()[SECOND_FACE] * 255).round().astype(np.uint8)
    face = cv2.resize(face, (SECOND_FACE_PX, SECOND_FACE_PX), interpolation=cv2.INTER_CUBIC)
    canvas[50:50 + SECOND_FACE_PX, 40:40 + SECOND_FACE_PX] = face[..., None]
    m = np.array([[1, 0, -drift * i], [0, 1, 0]], np.float64)
    return cv2.warpAffine(canvas, m, (240, 240), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def write_cut_clip(path: Path, n: int = 20, cut: int = 10, fourcc: str = "MJPG") -> list[np.ndarray]:
    """Issue 24's clip: n frames (240 x 240, 10 fps); frames 0..cut-1 are `write_clip`'s astronaut drifting
    2 px/frame, frames cut..n-1 cut to another person (`second_shot`) whose face box overlaps hers."""
    astro = write_clip(Path(path).with_suffix(".first.avi"), cut)
    Path(path).with_suffix(".first.avi").unlink()
    frames = astro + [second_shot(i) for i in range(n - cut)]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, (240, 240))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return frames
