"""The crop -> network -> image-pixels engine shared by every backend (imports no torch)."""
from __future__ import annotations

from typing import Callable

import numpy as np

from facealign.data.crop import CropTransform
from facealign.data.schemes import get_scheme
from facealign.data.transforms import normalize

# backend(batch (B, 3, S, S) float32 ImageNet-normalised) -> (B, K, 2) normalised crop coords
Backend = Callable[[np.ndarray], np.ndarray]


class CropRunner:
    """predict(image (H, W, 3) uint8 RGB, boxes (N, 4) pixels) -> (N, K, 2) float32 image pixels, K the card's
    landmark scheme's point count (`scheme`; cards without one: ibug68, 68).

    Boxes follow the model card's protocol (dlib detector boxes for shipped models); each is made
    square, enlarged by the card's context and resized to its input size. With `flip_tta` the
    mirrored crop is predicted too and averaged after undoing the flip and relabelling points.
    """

    def __init__(self, backend: Backend, card: dict, flip_tta: bool | None = None, model=None):
        self.backend = backend
        self.card = card
        self.name = card.get("name", "model")
        self.input_size = int(card["input_size"])
        self.context = float(card.get("context", 0.1))
        self.flip_tta = bool(card.get("flip_tta", False)) if flip_tta is None else flip_tta
        self.model = model
        self.scheme = get_scheme(card.get("scheme"))

    def crops(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, list[CropTransform]]:
        return self.warp_crops(image, [CropTransform.from_box(b, self.context) for b in boxes])

    def warp_crops(self, image: np.ndarray, transforms: list[CropTransform]) -> tuple[np.ndarray, list[CropTransform]]:
        """((N, 3, S, S) normalised network crops, `transforms`) of `image` through each transform."""
        return np.stack([normalize(t.warp(image, self.input_size)) for t in transforms]), transforms

    def predict_crops(self, batch: np.ndarray) -> np.ndarray:
        """(B, 3, S, S) normalised crops -> (B, K, 2) normalised coords (with flip TTA if enabled)."""
        if not self.flip_tta:
            return self.backend(batch)
        both = self.backend(np.concatenate([batch, batch[..., ::-1]]))
        plain, mirrored = both[: len(batch)], both[len(batch):]
        mirrored = mirrored[:, self.scheme.mirror_permutation].copy()
        mirrored[..., 0] = 1.0 - mirrored[..., 0]  # u -> 1 - u undoes a flip of the crop
        return (plain + mirrored) / 2

    def predict(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        if len(boxes) == 0:
            return np.zeros((0, self.scheme.num_points, 2), np.float32)
        batch, transforms = self.crops(image, boxes)
        coords = self.predict_crops(batch)
        return np.stack([t.to_image(c) for t, c in zip(transforms, coords)]).astype(np.float32)
