import numpy as np

from facealign.data.scheme import (LEFT_EYE_OUTER, MIRROR_PERMUTATION, NUM_LANDMARKS, REGIONS, RIGHT_EYE_OUTER,
                                   flip_landmarks)
from facealign.data.synthetic import template_shape


def test_regions_partition_the_68_points():
    idx = sorted(i for r in REGIONS.values() for i in r)
    assert idx == list(range(NUM_LANDMARKS))


def test_permutation_is_an_involution_that_swaps_eyes():
    assert sorted(MIRROR_PERMUTATION) == list(range(NUM_LANDMARKS))
    np.testing.assert_array_equal(MIRROR_PERMUTATION[MIRROR_PERMUTATION], np.arange(NUM_LANDMARKS))
    assert MIRROR_PERMUTATION[RIGHT_EYE_OUTER] == LEFT_EYE_OUTER
    assert MIRROR_PERMUTATION[8] == 8 and MIRROR_PERMUTATION[0] == 16


def test_flip_on_asymmetric_labelling():
    # Every point gets a distinct position, so a wrong permutation cannot go unnoticed.
    rng = np.random.default_rng(0)
    pts = (template_shape() * 100 + rng.normal(0, 3, (68, 2))).astype(np.float32)
    width = 120
    flipped = flip_landmarks(pts, width)
    # the left eye's outer corner lands where the mirrored right eye's outer corner was
    np.testing.assert_allclose(flipped[LEFT_EYE_OUTER], [width - 1 - pts[RIGHT_EYE_OUTER, 0], pts[RIGHT_EYE_OUTER, 1]])
    np.testing.assert_allclose(flipped[RIGHT_EYE_OUTER], [width - 1 - pts[LEFT_EYE_OUTER, 0], pts[LEFT_EYE_OUTER, 1]])
    # after flipping, the subject's right side is again on the image left
    assert flipped[RIGHT_EYE_OUTER, 0] < flipped[LEFT_EYE_OUTER, 0]
    assert flipped[0, 0] < flipped[16, 0]
    # a wrong (identity) relabelling would put the right eye on the image right
    assert (width - 1 - pts[RIGHT_EYE_OUTER, 0]) > (width - 1 - pts[LEFT_EYE_OUTER, 0])
