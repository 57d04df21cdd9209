"""Shared test helpers: a content-sensitive stand-in network and a synthetic video writer."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

# Tiny training settings for tests on generated 96 px faces (seconds per run on 2 CPU cores).
TINY = dict(size=32, batch_size=4, epochs=2, train_box="gt", val_box="gt", workers=0, lr=3e-3)


def tiny_config(data: Path, tmp_path: Path, **overrides):
    """A TrainConfig for `data` writing runs and caches under `tmp_path`; TINY plus `overrides`."""
    from facealign.train import make_config
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
