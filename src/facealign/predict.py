"""Landmark prediction on images: crop each face box, run a backend, map back to image pixels."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from facealign.data.crop import CropTransform
from facealign.data.scheme import MIRROR_PERMUTATION
from facealign.data.transforms import normalize
from facealign.models.packaged import load_model

# backend(batch (B, 3, S, S) float32 ImageNet-normalised) -> (B, 68, 2) normalised crop coords
Backend = Callable[[np.ndarray], np.ndarray]


class TorchBackend:
    def __init__(self, model: torch.nn.Module, device: str = "cpu"):
        torch.set_flush_denormal(True)  # denormals slow CPU inference badly
        self.device = torch.device(device)
        self.model = model.to(self.device).eval().to(memory_format=torch.channels_last)

    @torch.no_grad()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device).contiguous(memory_format=torch.channels_last)
        return self.model(x)["coords"].float().cpu().numpy()


class LandmarkRunner:
    """predict(image (H, W, 3) uint8 RGB, boxes (N, 4) pixels) -> (N, 68, 2) float32 image pixels.

    Boxes follow the model card's protocol (dlib detector boxes for shipped models); each is made
    square, enlarged by the card's context and resized to its input size. With `flip_tta` the
    mirrored crop is predicted too and averaged after undoing the flip and relabelling points.
    """

    def __init__(self, model: str | Path = "default", device: str = "cpu", backend: Backend | None = None,
                 flip_tta: bool | None = None):
        net, card = load_model(model)
        self.card = card
        self.name = card["name"]
        self.input_size = int(card["input_size"])
        self.context = float(card.get("context", 0.1))
        self.flip_tta = card.get("flip_tta", False) if flip_tta is None else flip_tta
        self.model = net
        self.backend: Backend = backend or TorchBackend(net, device)

    def crops(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, list[CropTransform]]:
        transforms = [CropTransform.from_box(b, self.context) for b in boxes]
        return np.stack([normalize(t.warp(image, self.input_size)) for t in transforms]), transforms

    def predict_crops(self, batch: np.ndarray) -> np.ndarray:
        """(B, 3, S, S) normalised crops -> (B, 68, 2) normalised coords (with flip TTA if enabled)."""
        if not self.flip_tta:
            return self.backend(batch)
        both = self.backend(np.concatenate([batch, batch[..., ::-1]]))
        plain, mirrored = both[: len(batch)], both[len(batch):]
        mirrored = mirrored[:, MIRROR_PERMUTATION].copy()
        mirrored[..., 0] = 1.0 - mirrored[..., 0]  # u -> 1 - u undoes a flip of the crop
        return (plain + mirrored) / 2

    def predict(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        if len(boxes) == 0:
            return np.zeros((0, 68, 2), np.float32)
        batch, transforms = self.crops(image, boxes)
        coords = self.predict_crops(batch)
        return np.stack([t.to_image(c) for t, c in zip(transforms, coords)]).astype(np.float32)
