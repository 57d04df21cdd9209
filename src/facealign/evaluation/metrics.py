"""Landmark accuracy metrics: normalised mean error (NME), CED curve, AUC and failure rate.

Pure numpy. Landmarks are float arrays of shape (N, K, 2) in pixels, (x, y), K from the landmark scheme
(`facealign.data.schemes`; default ibug68, K = 68), which also names the normalising points.
Per-image errors are dimensionless (pixel error / pixel normaliser).
See docs/metrics.md for the exact definitions.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from facealign.data.schemes import LandmarkScheme, get_scheme

# 300W convention (Sagonas et al.): failure / AUC cut-off of 8% of the inter-ocular distance.
DEFAULT_THRESHOLD = 0.08
DEFAULT_NORM = "inter_ocular"  # ibug68's; a norm of None means the scheme's own (`LandmarkScheme.norm`)
# Points on the CED grid; 1001 gives a step of t/1000, fine enough for plotting.
DEFAULT_CED_POINTS = 1001


def _inter_ocular(gt: np.ndarray, scheme: LandmarkScheme | None = None) -> np.ndarray:
    """Distance between the scheme's outer eye corners (ibug68: 36 and 45), (N, K, 2) -> (N,) pixels."""
    scheme = get_scheme(scheme)
    if scheme.eye_corners is None:
        raise ValueError(f"scheme {scheme.name} names no eye corners: inter_ocular is undefined; valid: "
                         f"{scheme.norm}, bbox_diagonal")
    a, b = scheme.eye_corners
    return np.linalg.norm(gt[:, a] - gt[:, b], axis=-1)


def _inter_pupil(gt: np.ndarray, scheme: LandmarkScheme | None = None) -> np.ndarray:
    """Distance between the pupils, (N, K, 2) -> (N,) pixels: the centroids of the scheme's pupil groups (ibug68:
    the eye centres, means of 36-41 and of 42-47; wflw98: points 96, 97; cofw29: points 16, 17)."""
    scheme = get_scheme(scheme)
    if scheme.pupils is None:
        raise ValueError(f"scheme {scheme.name} names no pupils: inter_pupil is undefined; valid: "
                         f"{scheme.norm}, bbox_diagonal")
    right, left = (gt[:, list(g)].mean(axis=1) for g in scheme.pupils)
    return np.linalg.norm(right - left, axis=-1)


def _bbox_diagonal(gt: np.ndarray, scheme: LandmarkScheme | None = None) -> np.ndarray:
    """Diagonal sqrt(w^2 + h^2) of the tight box around the gt points, (N, K, 2) -> (N,) pixels."""
    wh = gt.max(axis=1) - gt.min(axis=1)
    return np.hypot(wh[:, 0], wh[:, 1])


# normaliser(gt (N, K, 2), scheme=None: ibug68) -> (N,) pixels
NORMALIZERS: dict[str, Callable[..., np.ndarray]] = {
    "inter_ocular": _inter_ocular,
    "inter_pupil": _inter_pupil,
    "bbox_diagonal": _bbox_diagonal,
}


def get_normalizer(name: str) -> Callable[..., np.ndarray]:
    """Look up a normaliser by name; an unknown name raises ValueError listing the valid ones."""
    try:
        return NORMALIZERS[name]
    except KeyError:
        raise ValueError(
            f"unknown normaliser {name!r}; valid names: {', '.join(sorted(NORMALIZERS))}"
        ) from None


def _as_landmarks(a, what: str, k: int) -> np.ndarray:
    """Return `a` as float (N, K, 2); a single (K, 2) face is promoted to N=1."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[1:] != (k, 2):
        raise ValueError(f"{what} must have shape (N, {k}, 2) or ({k}, 2), got {a.shape}")
    return a


def _as_errors(errors) -> np.ndarray:
    """Return per-image errors as a non-empty, finite, non-negative 1-D float array."""
    e = np.asarray(errors, dtype=np.float64)
    if e.ndim != 1 or e.size == 0:
        raise ValueError(f"errors must be a non-empty 1-D array, got shape {e.shape}")
    if not np.all(np.isfinite(e)) or np.any(e < 0):
        raise ValueError("errors must be finite and non-negative")
    return e


def _check_threshold(threshold: float) -> float:
    t = float(threshold)
    if not (np.isfinite(t) and t > 0):
        raise ValueError(f"threshold must be a positive finite number, got {threshold!r}")
    return t


def per_image_nme(pred, gt, norm: str | None = None, scheme: LandmarkScheme | str | None = None) -> np.ndarray:
    """Normalised mean error per image.

    pred, gt: (N, K, 2) or (K, 2) pixels, K the scheme's point count (default ibug68: 68). Returns (N,)
    dimensionless errors: mean over the K points of ||pred - gt||_2, divided by NORMALIZERS[norm](gt, scheme)
    (norm None: the scheme's standard normaliser). A zero normaliser (degenerate gt) raises ValueError rather
    than returning inf.
    """
    scheme = get_scheme(scheme)
    norm = scheme.norm if norm is None else norm
    normalizer = get_normalizer(norm)
    pred, gt = _as_landmarks(pred, "pred", scheme.num_points), _as_landmarks(gt, "gt", scheme.num_points)
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt shapes differ: {pred.shape} vs {gt.shape}")
    d = normalizer(gt, scheme)
    bad = np.flatnonzero(~(d > 0))  # also catches NaN
    if bad.size:
        raise ValueError(f"{norm} normaliser is zero or invalid for image(s) {bad.tolist()}")
    return np.linalg.norm(pred - gt, axis=-1).mean(axis=1) / d


def auc(errors, threshold: float = DEFAULT_THRESHOLD) -> float:
    """Area under the CED curve on [0, t], divided by t (so 1.0 is perfect).

    Closed form: CED(x) = mean_i 1[e_i <= x], so swapping the mean and the integral,
        (1/t) * int_0^t CED(x) dx = mean_i (1/t) * int_0^t 1[e_i <= x] dx
                                  = mean_i (t - min(e_i, t)) / t
                                  = mean_i (1 - min(e_i, t) / t).
    This is exact, unlike trapezoid integration of a sampled step function.
    """
    e, t = _as_errors(errors), _check_threshold(threshold)
    return float(np.mean(1.0 - np.minimum(e, t) / t))


def failure_rate(errors, threshold: float = DEFAULT_THRESHOLD) -> float:
    """Fraction of images with error strictly greater than the threshold (e == t is a success)."""
    e, t = _as_errors(errors), _check_threshold(threshold)
    return float(np.mean(e > t))


def ced_curve(
    errors, threshold: float = DEFAULT_THRESHOLD, num: int = DEFAULT_CED_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution sampled on x = linspace(0, t, num).

    Returns (x, y), both (num,): y[k] = fraction of errors <= x[k].
    """
    e, t = _as_errors(errors), _check_threshold(threshold)
    if num < 2:
        raise ValueError(f"num must be >= 2, got {num}")
    x = np.linspace(0.0, t, num)
    # searchsorted(..., "right") counts the errors <= x in O((n + num) log n).
    y = np.searchsorted(np.sort(e), x, side="right") / e.size
    return x, y


def summarize(errors, threshold: float = DEFAULT_THRESHOLD) -> dict:
    """Summary statistics of per-image errors.

    Keys: n (images), nme (mean), nme_median, auc, fr (failure rate), threshold.
    Values are plain Python numbers, so the dict is JSON-serialisable.
    """
    e, t = _as_errors(errors), _check_threshold(threshold)
    return {
        "n": int(e.size),
        "nme": float(e.mean()),
        "nme_median": float(np.median(e)),
        "auc": auc(e, t),
        "fr": failure_rate(e, t),
        "threshold": t,
    }


def evaluate_landmarks(
    pred, gt, norm: str | None = None, threshold: float = DEFAULT_THRESHOLD,
    scheme: LandmarkScheme | str | None = None,
) -> tuple[np.ndarray, dict]:
    """Per-image NME (N,) and its summary dict; the summary also records `norm` and the `scheme`'s name."""
    scheme = get_scheme(scheme)
    norm = scheme.norm if norm is None else norm
    errors = per_image_nme(pred, gt, norm, scheme)
    return errors, {**summarize(errors, threshold), "norm": norm, "scheme": scheme.name}
