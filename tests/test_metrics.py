"""Metrics against hand-computed values."""
import numpy as np
import pytest

from facealign.data.scheme import LEFT_EYE, LEFT_EYE_OUTER, NUM_LANDMARKS, RIGHT_EYE, RIGHT_EYE_OUTER
from facealign.evaluation.metrics import (
    NORMALIZERS,
    auc,
    ced_curve,
    evaluate_landmarks,
    failure_rate,
    per_image_nme,
    summarize,
)

OFFSET = np.array([3.0, 4.0])  # a 3-4-5 triangle: every point is exactly 5 px off

# Offsets summing to zero, so each eye's mean is exactly its centre.
EYE_OFFSETS = np.array([[-2, 0], [2, 0], [0, -1], [0, 1], [-1, -1], [1, 1]], dtype=float)


def ocular_face(distance=100.0):
    """(68, 2) face with outer eye corners `distance` px apart, other points scattered inside."""
    rng = np.random.default_rng(0)
    gt = rng.uniform(10, 90, size=(NUM_LANDMARKS, 2))
    gt[RIGHT_EYE_OUTER] = [0.0, 50.0]
    gt[LEFT_EYE_OUTER] = [distance, 50.0]
    return gt


def constructed_face():
    """(68, 2) face: eye centres (10, 20) and (40, 60) -> inter-pupil 50 px;
    points span (0, 0)..(60, 80) -> bbox diagonal 100 px."""
    gt = np.zeros((NUM_LANDMARKS, 2))
    gt[list(RIGHT_EYE)] = np.array([10.0, 20.0]) + EYE_OFFSETS
    gt[list(LEFT_EYE)] = np.array([40.0, 60.0]) + EYE_OFFSETS
    gt[8] = [60.0, 80.0]  # chin sets the far corner; point 0 stays at the origin
    return gt


def test_inter_ocular_uniform_offset_is_exactly_five_percent():
    gt = ocular_face(100.0)
    assert per_image_nme(gt + OFFSET, gt) == pytest.approx([0.05], abs=1e-12)


def test_nme_is_mean_of_euclidean_distances_not_rms():
    gt = ocular_face(100.0)
    pred = gt.copy()
    pred[0] += [6.0, 8.0]  # one point 10 px off, the others exact
    assert per_image_nme(pred, gt)[0] == pytest.approx(10.0 / NUM_LANDMARKS / 100.0, rel=1e-12)


def test_normalizer_distances_on_constructed_face():
    gt = constructed_face()[None]
    # outer corners: 36 = (8, 20), 45 = (40, 61) -> sqrt(32^2 + 41^2)
    assert NORMALIZERS["inter_ocular"](gt) == pytest.approx([np.hypot(32.0, 41.0)])
    assert NORMALIZERS["inter_pupil"](gt) == pytest.approx([50.0])
    assert NORMALIZERS["bbox_diagonal"](gt) == pytest.approx([100.0])


@pytest.mark.parametrize("norm, expected", [("inter_pupil", 5.0 / 50.0), ("bbox_diagonal", 5.0 / 100.0)])
def test_nme_other_normalizers(norm, expected):
    gt = constructed_face()
    assert per_image_nme(gt + OFFSET, gt, norm=norm) == pytest.approx([expected], abs=1e-12)


def test_batch_and_single_face_agree():
    faces = np.stack([ocular_face(100.0), ocular_face(50.0)])
    errors = per_image_nme(faces + OFFSET, faces)
    assert errors.shape == (2,)
    assert errors == pytest.approx([0.05, 0.10])
    assert per_image_nme(faces[1] + OFFSET, faces[1]) == pytest.approx([0.10])


@pytest.mark.parametrize("norm", sorted(NORMALIZERS))
def test_scale_and_translation_invariance(norm):
    rng = np.random.default_rng(1)
    gt = rng.uniform(0, 200, size=(5, NUM_LANDMARKS, 2))
    pred = gt + rng.normal(0, 3, size=gt.shape)
    base = per_image_nme(pred, gt, norm)
    assert per_image_nme(pred * 3.7, gt * 3.7, norm) == pytest.approx(base, rel=1e-10)
    assert per_image_nme(pred + 123.0, gt + 123.0, norm) == pytest.approx(base, rel=1e-9)


def test_unknown_normalizer_lists_valid_names():
    gt = ocular_face()
    with pytest.raises(ValueError) as info:
        per_image_nme(gt, gt, norm="interocular")
    for name in NORMALIZERS:
        assert name in str(info.value)


def test_shape_validation():
    gt = ocular_face()
    with pytest.raises(ValueError, match="shape"):
        per_image_nme(gt[:5], gt[:5])
    with pytest.raises(ValueError, match="differ"):
        per_image_nme(np.stack([gt, gt]), gt)


def test_zero_normalizer_raises():
    gt = np.stack([ocular_face(), np.zeros((NUM_LANDMARKS, 2))])
    with pytest.raises(ValueError, match=r"\[1\]"):
        per_image_nme(gt, gt)


ERRORS = [0.0, 0.04, 0.08, 0.2]


def test_auc_hand_computed():
    # per image: 1 - min(e, t)/t = 1, 0.5, 0, 0
    assert auc(ERRORS, 0.08) == pytest.approx(0.375, abs=1e-12)


def test_failure_rate_is_strict():
    assert failure_rate(ERRORS, 0.08) == 0.25  # 0.08 itself is a success
    assert failure_rate([0.08], 0.08) == 0.0


def test_ced_curve_hand_computed():
    x, y = ced_curve(ERRORS, 0.08, num=3)
    np.testing.assert_allclose(x, [0.0, 0.04, 0.08])
    np.testing.assert_allclose(y, [0.25, 0.5, 0.75])
    x, y = ced_curve(ERRORS)
    assert x.shape == y.shape == (1001,)
    assert np.all(np.diff(y) >= 0)


def test_auc_closed_form_matches_trapezoid():
    rng = np.random.default_rng(2)
    errors = rng.gamma(2.0, 0.02, size=500)  # mostly below t, with a tail above
    t = 0.08
    x, y = ced_curve(errors, t, num=200_001)
    trapezoid = getattr(np, "trapezoid", None) or np.trapz
    assert auc(errors, t) == pytest.approx(trapezoid(y, x) / t, abs=1e-4)


def test_summarize_hand_computed():
    s = summarize(ERRORS, 0.08)
    assert s == pytest.approx(
        {"n": 4, "nme": 0.08, "nme_median": 0.06, "auc": 0.375, "fr": 0.25, "threshold": 0.08}
    )


@pytest.mark.parametrize("bad", [[], [[0.1]], [np.nan], [-0.1]])
def test_invalid_errors_raise(bad):
    with pytest.raises(ValueError):
        auc(bad)


@pytest.mark.parametrize("t", [0.0, -0.08, np.inf])
def test_invalid_threshold_raises(t):
    with pytest.raises(ValueError, match="threshold"):
        failure_rate(ERRORS, t)


def test_evaluate_landmarks_records_norm():
    faces = np.stack([ocular_face(100.0), ocular_face(50.0)])
    errors, summary = evaluate_landmarks(faces + OFFSET, faces, norm="inter_ocular", threshold=0.08)
    assert errors == pytest.approx([0.05, 0.10])
    assert summary["norm"] == "inter_ocular"
    assert summary["n"] == 2
    assert summary["nme"] == pytest.approx(0.075)
    assert summary["auc"] == pytest.approx((1 - 0.05 / 0.08) / 2)
    assert summary["fr"] == 0.5
