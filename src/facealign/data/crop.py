"""Face crops as affine maps between image pixels and normalised crop coordinates.

Frames:
- image: 0-based pixel centres (pixels); pixel i spans [i - 0.5, i + 0.5].
- normalised crop: u in [0, 1] across the crop's full extent; output pixel j of
  an S-pixel crop is centred at u = (j + 0.5) / S.

A `CropTransform` holds the 2x3 matrix A with u = A @ [x, y, 1]. Every crop,
augmentation and flip composes such matrices, so the inverse back to original
image pixels is exact for any of them.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

DEFAULT_CONTEXT = 0.10  # the study enlarges the face box by 10% of its size


CV_MAX_SIDE = 32767  # OpenCV's remap (behind warpAffine) refuses images with a side of SHRT_MAX or more


def _source_window(image: np.ndarray, m: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The part of `image` a size x size crop samples from (plus a 2 px margin, clipped to the image),
    and the pixel matrix `m` re-expressed for that window. Sampling, including replicated borders at
    the image edges, is unchanged; only the array OpenCV sees is smaller."""
    inv = np.linalg.inv(_to3(m))[:2]
    corners = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5]])
    src = corners @ inv[:, :2].T + inv[:, 2]
    h, w = image.shape[:2]
    x0 = int(np.clip(np.floor(src[:, 0].min()) - 2, 0, w - 1))
    y0 = int(np.clip(np.floor(src[:, 1].min()) - 2, 0, h - 1))
    x1 = int(np.clip(np.ceil(src[:, 0].max()) + 3, x0 + 1, w))
    y1 = int(np.clip(np.ceil(src[:, 1].max()) + 3, y0 + 1, h))
    shift = np.array([[1, 0, x0], [0, 1, y0]], np.float64)  # window pixel -> image pixel
    return image[y0:y1, x0:x1], (_to3(m) @ _to3(shift))[:2]


def _to3(m: np.ndarray) -> np.ndarray:
    return np.vstack([m, [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class CropTransform:
    """matrix: (2, 3) float64, image pixels -> normalised crop coordinates."""

    matrix: np.ndarray

    @classmethod
    def from_box(cls, box: np.ndarray, context: float = DEFAULT_CONTEXT) -> "CropTransform":
        """Square crop centred on `box` (x0, y0, x1, y1 in image pixels), side = max(w, h) * (1 + context).

        Square, so the face keeps its aspect ratio when resized.
        """
        x0, y0, x1, y1 = map(float, box)
        side = max(x1 - x0, y1 - y0) * (1.0 + context)
        if not side > 0:
            raise ValueError(f"degenerate face box {box}")
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        return cls(np.array([[1 / side, 0, 0.5 - cx / side], [0, 1 / side, 0.5 - cy / side]]))

    def then(self, m: np.ndarray) -> "CropTransform":
        """Compose: apply this crop, then the (2, 3) map `m` in normalised coordinates."""
        return CropTransform((_to3(m) @ _to3(self.matrix))[:2])

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """(..., 2) image pixels -> normalised crop coordinates, float32."""
        p = np.asarray(points, dtype=np.float64)
        return (p @ self.matrix[:, :2].T + self.matrix[:, 2]).astype(np.float32)

    def to_image(self, coords: np.ndarray) -> np.ndarray:
        """(..., 2) normalised crop coordinates -> image pixels, float32 (exact inverse of to_crop)."""
        inv = np.linalg.inv(_to3(self.matrix))[:2]
        c = np.asarray(coords, dtype=np.float64)
        return (c @ inv[:, :2].T + inv[:, 2]).astype(np.float32)

    def pixel_matrix(self, size: int) -> np.ndarray:
        """(2, 3) map from image pixel centres to output pixel centres of a size x size crop."""
        scale = np.array([[size, 0, -0.5], [0, size, -0.5]])  # u -> j = u * S - 0.5
        return (_to3(scale) @ _to3(self.matrix))[:2]

    def warp(self, image: np.ndarray, size: int, border: str = "replicate") -> np.ndarray:
        """Resample `image` (H, W, C) uint8 into a (size, size, C) crop (bilinear; area-like when shrinking)."""
        m = self.pixel_matrix(size)
        if max(image.shape[:2]) >= CV_MAX_SIDE:
            image, m = _source_window(image, m, size)
        scale = np.sqrt(abs(np.linalg.det(m[:, :2])))
        src = image
        if scale < 0.5:
            # Pre-shrink so bilinear sampling does not alias on big downscales.
            f = 1 / scale / 1.5
            h, w = image.shape[:2]
            src = cv2.resize(image, (max(1, round(w / f)), max(1, round(h / f))), interpolation=cv2.INTER_AREA)
            sx, sy = src.shape[1] / w, src.shape[0] / h
            # x_small = (x + 0.5) * s - 0.5 -> compose its inverse into m
            pre = np.array([[1 / sx, 0, 0.5 / sx - 0.5], [0, 1 / sy, 0.5 / sy - 0.5]])
            m = (_to3(m) @ _to3(pre))[:2]
        mode = {"replicate": cv2.BORDER_REPLICATE, "constant": cv2.BORDER_CONSTANT}[border]
        return cv2.warpAffine(src, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=mode)


def crop_face(image: np.ndarray, box: np.ndarray, landmarks: np.ndarray | None, size: int = 224,
              context: float = DEFAULT_CONTEXT) -> tuple[np.ndarray, np.ndarray | None, CropTransform]:
    """Crop a face: returns (crop (size, size, 3) uint8, landmarks (K, 2) normalised or None, transform)."""
    t = CropTransform.from_box(box, context)
    crop = t.warp(image, size)
    return crop, (None if landmarks is None else t.to_crop(landmarks)), t
