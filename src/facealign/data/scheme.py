"""The iBUG 68-point markup as named constants.

Indices are 0-based. "Left"/"right" are the *subject's* sides, as in the iBUG
annotation guide: the subject's right eye (points 36-41) appears on the left of
a frontal image.
"""
from __future__ import annotations

import numpy as np

NUM_LANDMARKS = 68

# Face regions: name -> index range (start inclusive, stop exclusive).
REGIONS: dict[str, range] = {
    "jaw": range(0, 17),
    "right_eyebrow": range(17, 22),
    "left_eyebrow": range(22, 27),
    "nose_bridge": range(27, 31),
    "nose_lower": range(31, 36),
    "right_eye": range(36, 42),
    "left_eye": range(42, 48),
    "outer_lips": range(48, 60),
    "inner_lips": range(60, 68),
}

RIGHT_EYE = REGIONS["right_eye"]
LEFT_EYE = REGIONS["left_eye"]

# Outer eye corners, the standard inter-ocular normaliser (300W, Sagonas et al. 2016).
RIGHT_EYE_OUTER = 36
LEFT_EYE_OUTER = 45
RIGHT_EYE_INNER = 39
LEFT_EYE_INNER = 42
NOSE_TIP = 30
CHIN = 8
MOUTH_RIGHT = 48
MOUTH_LEFT = 54

# Pairs that swap under a horizontal flip; every index not listed maps to itself.
_MIRROR_PAIRS: tuple[tuple[int, int], ...] = (
    # jaw
    *((i, 16 - i) for i in range(8)),
    # eyebrows
    (17, 26), (18, 25), (19, 24), (20, 23), (21, 22),
    # lower nose
    (31, 35), (32, 34),
    # eyes
    (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46),
    # outer lips
    (48, 54), (49, 53), (50, 52), (55, 59), (56, 58),
    # inner lips
    (60, 64), (61, 63), (65, 67),
)


def _mirror_permutation() -> np.ndarray:
    perm = np.arange(NUM_LANDMARKS)
    for a, b in _MIRROR_PAIRS:
        perm[a], perm[b] = b, a
    return perm


# After flipping x, point i of the flipped face is point MIRROR_PERMUTATION[i] of the original.
MIRROR_PERMUTATION: np.ndarray = _mirror_permutation()
MIRROR_PERMUTATION.setflags(write=False)


def flip_landmarks(points: np.ndarray, width: float) -> np.ndarray:
    """Mirror landmarks horizontally inside an image of `width` pixels.

    points: (..., 68, 2) in 0-based pixel-centre coordinates (pixels).
    Under the pixel-centre convention a column x maps to width - 1 - x; the
    left/right indices are swapped with MIRROR_PERMUTATION.
    """
    out = np.array(points, dtype=np.float32, copy=True)
    out[..., 0] = (width - 1) - out[..., 0]
    return out[..., MIRROR_PERMUTATION, :]
