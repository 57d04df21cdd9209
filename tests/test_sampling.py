"""Pose balancing (facealign.data.sampling): Procrustes alignment, the first-component pose score, the bin
weights and the balanced epoch sampler."""
import numpy as np

from facealign.data.sampling import BalancedSampler, align_shapes, pose_scores, pose_weights
from facealign.data.synthetic import template_shape


def _similar(shape, angle, scale, shift):
    c, s = np.cos(angle), np.sin(angle)
    return scale * shape @ np.array([[c, s], [-s, c]]) + shift


def test_similar_copies_align_onto_one_shape():
    base = np.asarray(template_shape(), np.float64)
    shapes = np.stack([_similar(base, a, s, t) for a, s, t in
                       [(0.0, 1.0, (0, 0)), (0.4, 2.5, (30, -7)), (-1.1, 0.3, (-5, 100))]])
    aligned = align_shapes(shapes)
    assert np.abs(aligned - aligned[0]).max() < 1e-9
    # centred, unit RMS size
    assert np.abs(aligned.mean(axis=1)).max() < 1e-12
    assert np.allclose(np.sqrt((aligned ** 2).sum(axis=(1, 2)) / 68), 1.0)


def _deformed(t, rng, n):
    """n copies of the mean shape with the nose and mouth (27-67) moved sideways by t (a yaw-like change
    that no similarity undoes), each at a random similarity."""
    base = np.asarray(template_shape(), np.float64)
    out = []
    for _ in range(n):
        s = base.copy()
        s[27:, 0] += t
        out.append(_similar(s, rng.uniform(-0.3, 0.3), rng.uniform(0.5, 2.0), rng.uniform(-20, 20, 2)))
    return out


def test_rare_poses_get_their_bin_share(rng):
    # 8 frontal faces and 2 turned ones: first-component scores split into the two end bins
    shapes = np.stack(_deformed(0.0, rng, 8) + _deformed(0.15, rng, 2))
    s = pose_scores(shapes)
    assert np.ptp(s[:8]) < 1e-6 and np.ptp(s[8:]) < 1e-6 and abs(s[0] - s[8]) > 0.05
    # power 1: each occupied bin is drawn equally often: 1/8 per frontal face, 1/2 per turned one, / 2
    assert np.allclose(pose_weights(shapes, 1.0), [1 / 16] * 8 + [1 / 4] * 2)
    # power 0.5: 8^-0.5 and 2^-0.5, normalised
    w = np.array([8 ** -0.5] * 8 + [2 ** -0.5] * 2)
    assert np.allclose(pose_weights(shapes, 0.5), w / w.sum())
    assert np.allclose(pose_weights(shapes, 0.0), 0.1)


def test_balanced_sampler_is_seeded_per_epoch_and_shares_an_epoch_between_ranks():
    p = np.array([0.7, 0.1, 0.1, 0.1])
    a, b = BalancedSampler(p, seed=3), BalancedSampler(p, seed=3)
    a.set_epoch(2), b.set_epoch(2)
    assert list(a) == list(b) and len(list(a)) == 4
    b.set_epoch(3)
    draws = []
    for e in range(500):
        a.set_epoch(e)
        draws += list(a)
    assert abs(np.mean(np.array(draws) == 0) - 0.7) < 0.03
    ranks = [BalancedSampler(p, num_replicas=2, rank=r, seed=3) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(5)
    a.set_epoch(5)
    assert len(ranks[0]) == 2 and sorted(list(ranks[0]) + list(ranks[1])) == sorted(list(a))

