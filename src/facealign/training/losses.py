"""Training losses, each tied to the head output it consumes.

Registry `LOSSES` maps "<head>-<name>" to a `LossSpec(name, head, fn)`:

Regression head, on coords (B, K, 2) in NORMALISED crop units ([0, 1] spans the crop):
    regression-mse    mean squared error in normalised units.
    regression-wing   Wing loss (Feng et al., CVPR 2018), w=10, eps=2.
    regression-awing  Adaptive Wing loss (Wang et al., ICCV 2019), alpha=2.1, omega=14,
                      epsilon=1, theta=0.5.
  Units for wing/awing: the paper constants are in PIXELS of a 64-px face crop (Feng
  et al.'s CNN-6 input), so errors are multiplied by `scale` = 64 before the loss:
  one unit = 1/64 of the crop width, whatever the real input resolution. Wing's log
  regime therefore covers errors below 10/64 ~ 16 % of the crop. AWing is defined on
  heatmap intensities in its paper; here it is applied to the coordinate error in the
  same scaled units with the exponent at its foreground value alpha - y, y = 1
  (every coordinate is a foreground target), so it is log-like below theta = 0.5 unit
  (0.8 % of the crop) and linear (slope A ~ 9.8) above.

Heatmap head, on logits (B, K, H, W) against Gaussian targets in [0, 1]:
    heatmap-mse    mean squared error between sigmoid(logits) and the target.
    heatmap-bce    binary cross-entropy with logits, mean over all cells.
    heatmap-focal  binary focal loss, gamma = 2, generalised to soft targets:
                   |y - p|^gamma * BCE(p, y), summed and divided by the target mass
                   sum(y) (>= 1). For y in {0, 1} this is exactly Lin et al.'s (2017)
                   (1 - p_t)^gamma * -log(p_t) without alpha balancing; for soft y it is
                   the Quality Focal Loss of Li et al. (2020). Chosen over CornerNet's
                   penalty-reduced variant because that needs cells whose target is
                   exactly 1, which sub-cell Gaussian centres almost never produce.
                   Normalising by target mass, like Lin et al.'s by positives, keeps the
                   value independent of map size and sigma.

All losses return a scalar mean (wing/awing: mean over the B*K*2 coordinates).
`compute_loss` turns model outputs + target coords into the loss value, building
Gaussian targets at the heatmap resolution when the loss needs them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from facealign.models.heatmap import gaussian_heatmaps

__all__ = [
    "COORD_SCALE",
    "LossSpec",
    "LOSSES",
    "build_loss",
    "loss_names",
    "compute_loss",
    "coord_mse",
    "wing_loss",
    "adaptive_wing",
    "adaptive_wing_loss",
    "heatmap_mse",
    "heatmap_bce",
    "heatmap_focal",
]

# Normalised coordinate errors are multiplied by this before wing/awing: paper
# constants are in pixels of a 64-px crop.
COORD_SCALE = 64.0


# --------------------------------------------------------------- regression losses


def coord_mse(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over (B, K, 2) normalised coordinates (units: crop^2)."""
    return F.mse_loss(pred, target)


def wing_loss(pred: Tensor, target: Tensor, w: float = 10.0, eps: float = 2.0,
              scale: float = COORD_SCALE) -> Tensor:
    """Wing loss on (B, K, 2) normalised coords; w, eps in units of 1/scale crop.

    x = |pred - target| * scale;  w ln(1 + x/eps) if x < w, else x - C with
    C = w - w ln(1 + w/eps) making the two pieces meet at x = w.
    """
    x = (pred - target).abs() * scale
    c = w - w * math.log1p(w / eps)
    return torch.where(x < w, w * torch.log1p(x / eps), x - c).mean()


def adaptive_wing(err: Tensor, y: Tensor | float, alpha: float = 2.1, omega: float = 14.0,
                  epsilon: float = 1.0, theta: float = 0.5) -> Tensor:
    """Elementwise Adaptive Wing of absolute errors `err` with target intensity `y`.

    omega ln(1 + (err/epsilon)^(alpha - y))   if err < theta
    A err - C                                 otherwise, with
    A = omega / (1 + (theta/epsilon)^(alpha-y)) * (alpha-y) * (theta/epsilon)^(alpha-y-1) / epsilon
    C = theta A - omega ln(1 + (theta/epsilon)^(alpha-y))   (continuous, C^1 at theta).
    """
    p = alpha - torch.as_tensor(y, dtype=err.dtype, device=err.device)
    r = theta / epsilon
    a = omega / (1 + r ** p) * p * r ** (p - 1) / epsilon
    c = theta * a - omega * torch.log1p(r ** p)
    return torch.where(err < theta, omega * torch.log1p((err / epsilon) ** p), a * err - c)


def adaptive_wing_loss(pred: Tensor, target: Tensor, alpha: float = 2.1, omega: float = 14.0,
                       epsilon: float = 1.0, theta: float = 0.5,
                       scale: float = COORD_SCALE) -> Tensor:
    """Adaptive Wing on (B, K, 2) normalised coords, errors in units of 1/scale crop, y = 1."""
    err = (pred - target).abs() * scale
    return adaptive_wing(err, 1.0, alpha, omega, epsilon, theta).mean()


# ------------------------------------------------------------------ heatmap losses


def heatmap_mse(logits: Tensor, target: Tensor) -> Tensor:
    """Mean over cells of (sigmoid(logits) - target)^2; logits, target (B, K, H, W)."""
    return F.mse_loss(torch.sigmoid(logits), target)


def heatmap_bce(logits: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy with logits against soft targets in [0, 1], mean over cells."""
    return F.binary_cross_entropy_with_logits(logits, target)


def heatmap_focal(logits: Tensor, target: Tensor, gamma: float = 2.0) -> Tensor:
    """Soft-target binary focal loss: sum |y - p|^gamma BCE(p, y) / max(sum y, 1)."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    weight = (target - torch.sigmoid(logits)).abs().pow(gamma)
    return (weight * bce).sum() / target.sum().clamp(min=1.0)


# ---------------------------------------------------------------------- registry


def integral_with_heatmap(pred, target, heatmap_weight: float = 10.0) -> Tensor:
    """Wing on soft-argmax coords plus `heatmap_weight` x BCE of the logits against Gaussians.

    pred = (coords (B, K, 2), logits (B, K, H, W)); target = (coords, Gaussian maps). The
    heatmap term gives every cell a direct gradient, which the coordinate term alone does not.
    """
    return wing_loss(pred[0], target[0]) + heatmap_weight * heatmap_bce(pred[1], target[1])


@dataclass(frozen=True)
class LossSpec:
    """A loss and the head output it needs.

    fn(prediction, target) -> scalar, where prediction/target are (B, K, 2) coords
    for head "regression" and (B, K, H, W) logits / Gaussian targets for "heatmap".
    """

    name: str
    head: str
    fn: Callable[[Tensor, Tensor], Tensor]
    inputs: str = ""  # "coords" or "maps"; defaults to the head's natural output

    @property
    def uses(self) -> str:
        return self.inputs or {"regression": "coords", "heatmap": "maps"}[self.head]  # or "both"

    @property
    def key(self) -> str:
        return f"{self.head}-{self.name}"


LOSSES: dict[str, LossSpec] = {
    spec.key: spec
    for spec in (
        LossSpec("mse", "regression", coord_mse),
        LossSpec("wing", "regression", wing_loss),
        LossSpec("awing", "regression", adaptive_wing_loss),
        LossSpec("mse", "heatmap", heatmap_mse),
        LossSpec("bce", "heatmap", heatmap_bce),
        LossSpec("focal", "heatmap", heatmap_focal),
        # Integral regression (Sun et al. 2018): Wing on the heatmap head's soft-argmax
        # coordinates, so the decoded position itself is trained and carries no centre bias.
        LossSpec("integral", "heatmap", wing_loss, inputs="coords"),
        LossSpec("integral_bce", "heatmap", integral_with_heatmap, inputs="both"),
    )
}


def loss_names(head: str) -> list[str]:
    """Loss names valid for `head`, sorted."""
    return sorted(spec.name for spec in LOSSES.values() if spec.head == head)


def build_loss(head: str, name: str) -> LossSpec:
    """Look up the loss `name` for `head`; ValueError naming the valid ones otherwise."""
    heads = sorted({spec.head for spec in LOSSES.values()})
    if head not in heads:
        raise ValueError(f"unknown head {head!r}; valid heads: {', '.join(heads)}")
    spec = LOSSES.get(f"{head}-{name}")
    if spec is None:
        raise ValueError(
            f"loss {name!r} is not defined for the {head} head; "
            f"valid losses for {head}: {', '.join(loss_names(head))}"
        )
    return spec


def _regression_pair(outputs, coords, sigma):
    return outputs["coords"], coords


def _heatmap_pair(outputs, coords, sigma):
    if sigma is None:
        raise ValueError("heatmap losses need sigma (Gaussian std in heatmap cells)")
    logits = outputs["heatmaps"]
    # Targets at the logits' own resolution, so any backbone stride works.
    target = gaussian_heatmaps(coords.detach(), tuple(logits.shape[-2:]), sigma)
    return logits, target.to(logits.dtype)


# Head -> (outputs, target coords, sigma) -> (prediction, target) for spec.fn.
def _both_pair(outputs, coords, sigma):
    logits, target = _heatmap_pair(outputs, coords, sigma)
    return (outputs["coords"], logits), (coords, target)


_PAIRS: dict[str, Callable] = {"coords": _regression_pair, "maps": _heatmap_pair, "both": _both_pair}


def compute_loss(spec: LossSpec, outputs: dict[str, Tensor], target_coords: Tensor,
                 sigma: float | None = None) -> Tensor:
    """Scalar loss for model `outputs` (LandmarkModel's dict) vs (B, K, 2) normalised coords.

    sigma: Gaussian std in heatmap cells; required for heatmap losses, ignored otherwise.
    """
    # Only the heatmap head emits "heatmaps"; its "coords" come from soft-argmax and
    # must not silently be trained with a regression loss (that is a different study arm).
    produced = "heatmap" if "heatmaps" in outputs else "regression"
    if produced != spec.head:
        raise ValueError(
            f"loss {spec.key!r} is for the {spec.head} head but the outputs come from a "
            f"{produced} head; valid losses for it: {', '.join(loss_names(produced))}"
        )
    prediction, target = _PAIRS[spec.uses](outputs, target_coords, sigma)
    return spec.fn(prediction, target)
