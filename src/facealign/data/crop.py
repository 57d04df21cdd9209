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


def _window_bounds(image: np.ndarray, m: np.ndarray, size: int, margin: int = 2) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the pixels a size x size crop through pixel matrix `m` samples from, plus `margin`
    px, clipped to the image."""
    inv = np.linalg.inv(_to3(m))[:2]
    corners = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5]])
    src = corners @ inv[:, :2].T + inv[:, 2]
    h, w = image.shape[:2]
    x0 = int(np.clip(np.floor(src[:, 0].min()) - margin, 0, w - 1))
    y0 = int(np.clip(np.floor(src[:, 1].min()) - margin, 0, h - 1))
    x1 = int(np.clip(np.ceil(src[:, 0].max()) + margin + 1, x0 + 1, w))
    y1 = int(np.clip(np.ceil(src[:, 1].max()) + margin + 1, y0 + 1, h))
    return x0, y0, x1, y1


def _source_window(image: np.ndarray, m: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The part of `image` a size x size crop samples from (plus a 2 px margin, clipped to the image),
    and the pixel matrix `m` re-expressed for that window. Sampling, including replicated borders at
    the image edges, is unchanged; only the array OpenCV sees is smaller."""
    x0, y0, x1, y1 = _window_bounds(image, m, size)
    shift = np.array([[1, 0, x0], [0, 1, y0]], np.float64)  # window pixel -> image pixel
    return image[y0:y1, x0:x1], (_to3(m) @ _to3(shift))[:2]


def _snap(lo: int, hi: int, s: float, limit: int, step: int) -> int:
    """From `lo` moving by `step` (at most `limit` px, within [0, hi]), the x whose x * s is nearest an integer."""
    xs = [x for x in range(lo, lo + step * (limit + 1), step) if 0 <= x <= hi]
    return min(xs, key=lambda x: abs(x * s - round(x * s)))


def _grid_window(image: np.ndarray, m: np.ndarray, size: int, sx: float, sy: float):
    """((x0, x1), (y0, y1)): the crop's source window, grown to edges that fall (nearly) on the area grid of
    the whole image shrunk by (sx, sy), so shrinking the window reproduces shrinking the whole image there."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = _window_bounds(image, m, size, margin=2 + int(np.ceil(2 / min(sx, sy))))
    lx, ly = int(np.ceil(3 / sx)), int(np.ceil(3 / sy))  # search about three shrunk pixels
    return ((_snap(x0, w, sx, lx, -1), _snap(x1, w, sx, lx, 1)), (_snap(y0, h, sy, ly, -1), _snap(y1, h, sy, ly, 1)))


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
        scale = np.sqrt(abs(np.linalg.det(m[:, :2])))
        if max(image.shape[:2]) >= CV_MAX_SIDE and scale >= 0.5:
            image, m = _source_window(image, m, size)
        src = image
        if scale < 0.5:
            # Pre-shrink so bilinear sampling does not alias on big downscales. Only the face's region is
            # shrunk (its cost is the face's pixels, not the photo's), on the same area grid as shrinking
            # the whole image by f would use, so the crop stays what it was to within the grid's rounding.
            f = 1 / scale / 1.5
            h, w = image.shape[:2]
            sx, sy = max(1, round(w / f)) / w, max(1, round(h / f)) / h  # the whole image's shrink
            (x0, x1), (y0, y1) = _grid_window(image, m, size, sx, sy)
            src = cv2.resize(image[y0:y1, x0:x1], (max(1, round((x1 - x0) * sx)), max(1, round((y1 - y0) * sy))),
                             interpolation=cv2.INTER_AREA)
            wx, wy = src.shape[1] / (x1 - x0), src.shape[0] / (y1 - y0)
            # image x -> window-small x = (x - x0 + 0.5) * wx - 0.5; compose its inverse into m
            pre = np.array([[1 / wx, 0, x0 + 0.5 / wx - 0.5], [0, 1 / wy, y0 + 0.5 / wy - 0.5]])
            m = (_to3(m) @ _to3(pre))[:2]
        mode = {"replicate": cv2.BORDER_REPLICATE, "constant": cv2.BORDER_CONSTANT}[border]
        return cv2.warpAffine(src, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=mode)


def crop_face(image: np.ndarray, box: np.ndarray, landmarks: np.ndarray | None, size: int = 224,
              context: float = DEFAULT_CONTEXT) -> tuple[np.ndarray, np.ndarray | None, CropTransform]:
    """Crop a face: returns (crop (size, size, 3) uint8, landmarks (K, 2) normalised or None, transform)."""
    t = CropTransform.from_box(box, context)
    crop = t.warp(image, size)
    return crop, (None if landmarks is None else t.to_crop(landmarks)), t
