"""The 68-point iBUG mirror table, written out here by hand and checked against the package's table and
every code path that flips landmarks (flip_landmarks, training's flip_order, the runner's flip TTA).

Why a literal table: a mis-paired eye or mouth point keeps MIRROR_PERMUTATION an involution and keeps
flip -> flip the identity, so only an independent statement of the pairs can catch it (such a mutant
raised NME on helen by 14% while passing the old flip tests).
"""
from __future__ import annotations

import numpy as np
import pytest

from facealign.data.scheme import MIRROR_PERMUTATION, NUM_LANDMARKS, flip_landmarks
from facealign.data.synthetic import template_shape
from facealign.data.transforms import flip_order
from facealign.inference.runner import CropRunner

# iBUG 68-point markup, 0-based; the subject's right side first in each pair.
IBUG_PAIRS = [
    # jaw: ear to chin on each side, the chin (8) maps to itself
    (0, 16), (1, 15), (2, 14), (3, 13), (4, 12), (5, 11), (6, 10), (7, 9),
    # eyebrows: outer to inner
    (17, 26), (18, 25), (19, 24), (20, 23), (21, 22),
    # nose wings
    (31, 35), (32, 34),
    # eyes: outer corner, upper lid (2), inner corner, lower lid (2)
    (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46),
    # outer mouth: corner, upper lip (2), lower lip (2)
    (48, 54), (49, 53), (50, 52), (55, 59), (56, 58),
    # inner mouth: corner, upper lip, lower lip
    (60, 64), (61, 63), (65, 67),
]
# On the face's vertical midline: chin, nose bridge and tip, below the nose, lip middles.
IBUG_SELF = [8, 27, 28, 29, 30, 33, 51, 57, 62, 66]


def partner(i: int) -> int:
    """The mirror point of i, looked up in the literal table above (no arrays, no MIRROR_PERMUTATION)."""
    for a, b in IBUG_PAIRS:
        if i == a:
            return b
        if i == b:
            return a
    assert i in IBUG_SELF, i
    return i


def reference_flip(points, width: float) -> list[tuple[float, float]]:
    """Mirror (68, 2) pixel-centre points in an image `width` px wide, one point at a time:
    flipped point i is original point partner(i) with x -> width - 1 - x."""
    return [(width - 1 - float(points[partner(i)][0]), float(points[partner(i)][1])) for i in range(NUM_LANDMARKS)]


def distinct_points(seed: int = 0) -> np.ndarray:
    """68 points with all-different x and y, so any wrong pairing moves some point."""
    rng = np.random.default_rng(seed)
    return (template_shape() * 300 + 40 + rng.uniform(-2, 2, (NUM_LANDMARKS, 2))).astype(np.float32)


def test_the_literal_table_covers_every_point_once():
    # a check of the table written above, so that a typo in it cannot hide a package bug
    listed = [i for pair in IBUG_PAIRS for i in pair] + IBUG_SELF
    assert sorted(listed) == list(range(NUM_LANDMARKS))
    assert len(IBUG_PAIRS) == 29 and len(IBUG_SELF) == 10


def test_mirror_permutation_equals_the_ibug_table():
    expected = [partner(i) for i in range(NUM_LANDMARKS)]
    assert MIRROR_PERMUTATION.tolist() == expected
    # spelled out per region too, so a failure names the region
    perm = MIRROR_PERMUTATION
    assert perm[[36, 37, 38, 39, 40, 41]].tolist() == [45, 44, 43, 42, 47, 46]  # eyes
    assert perm[[48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59]].tolist() == \
        [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer mouth
    assert perm[[60, 61, 62, 63, 64, 65, 66, 67]].tolist() == [64, 63, 62, 61, 60, 67, 66, 65]  # inner mouth
    assert perm[list(range(17))].tolist() == list(range(16, -1, -1))  # jaw
    assert perm[list(range(17, 27))].tolist() == list(range(26, 16, -1))  # brows
    assert perm[list(range(27, 36))].tolist() == [27, 28, 29, 30, 35, 34, 33, 32, 31]  # nose


@pytest.mark.parametrize("width", [64, 501, 4000])
def test_flip_landmarks_matches_the_reference_flip(width):
    pts = distinct_points()
    flipped = flip_landmarks(pts, width)
    np.testing.assert_array_equal(flipped, np.array(reference_flip(pts, width), np.float32))
    # the reference flip undoes flip_landmarks: flip -> unflip gives the original back
    unflipped = np.array(reference_flip(flipped, width))
    np.testing.assert_allclose(unflipped, pts, atol=np.spacing(np.float32(2 * width)))


def test_flip_landmarks_hand_worked_points():
    """Three points worked by hand in a 100 px wide image (x -> 99 - x, labels swapped)."""
    pts = np.zeros((NUM_LANDMARKS, 2), np.float32)
    pts[:, 0] = np.arange(NUM_LANDMARKS)  # x = the point's own index
    pts[:, 1] = 1000 + np.arange(NUM_LANDMARKS)
    out = flip_landmarks(pts, 100)
    assert out[37].tolist() == [99 - 44, 1044]  # upper lid of the right eye <- left eye's 44
    assert out[61].tolist() == [99 - 63, 1063]  # inner upper lip
    assert out[57].tolist() == [99 - 57, 1057]  # the lower lip's middle stays itself


def test_batched_flip_and_training_flip_order_match_the_reference():
    pts = np.stack([distinct_points(0), distinct_points(1)])
    flipped = flip_landmarks(pts, 640)
    for b in range(2):
        np.testing.assert_array_equal(flipped[b], np.array(reference_flip(pts[b], 640), np.float32))
    # training relabels mirrored crop coordinates (u -> 1 - u already applied) with flip_order
    u = pts[0] / 1000.0
    mirrored = u.copy()
    mirrored[:, 0] = 1 - mirrored[:, 0]
    expected = [(float(mirrored[partner(i)][0]), float(mirrored[partner(i)][1])) for i in range(NUM_LANDMARKS)]
    np.testing.assert_array_equal(flip_order(mirrored), np.array(expected, np.float32))


class MirrorAwareBackend:
    """A perfect stand-in network: returns `truth` (normalised crop coords) for a crop and, for the mirrored
    crop, the mirrored truth with the labels swapped by the literal table (what a real model predicts).

    A crop is told from its mirror by a marker column: bright at the left edge of the plain crop.
    """

    def __init__(self, truth: np.ndarray):
        self.truth = truth

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        out = []
        for crop in batch:
            mirrored_input = crop[0, :, -1].mean() > crop[0, :, 0].mean()
            if mirrored_input:
                out.append([(1.0 - float(self.truth[partner(i)][0]), float(self.truth[partner(i)][1]))
                            for i in range(NUM_LANDMARKS)])
            else:
                out.append(self.truth)
        return np.asarray(out, np.float32)


def test_flip_tta_unflips_with_the_ibug_table():
    truth = (distinct_points() / 400.0).astype(np.float32)  # inside [0, 1]
    runner = CropRunner(MirrorAwareBackend(truth), {"input_size": 16, "context": 0.1}, flip_tta=True)
    batch = np.zeros((1, 3, 16, 16), np.float32)
    batch[:, :, :, 0] = 5.0  # the marker: the plain crop is bright on its left edge
    # both halves agree only if the runner undoes the flip with the right labels: the average is the truth
    np.testing.assert_allclose(runner.predict_crops(batch)[0], truth, atol=1e-6)
