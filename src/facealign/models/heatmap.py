"""Encode landmarks as Gaussian heatmaps and decode heatmap logits to coordinates.

Coordinate convention (shared by the whole package):

* Landmarks are NORMALISED crop coordinates in [0, 1], shaped (B, K, 2) as (x, y).
  For an S-pixel crop, u = (x + 0.5) / S where x is the 0-based pixel-centre
  coordinate, so u = 0 is the crop's left (top) edge and u = 1 its right (bottom) edge.
* A heatmap with W columns covers the same [0, 1] extent; column j is the cell
  centred at u = (j + 0.5) / W (rows likewise with H). Encoding and decoding both
  use these cell centres, so encode -> decode is unbiased at any heatmap resolution.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["cell_centres", "gaussian_heatmaps", "soft_argmax"]


def cell_centres(n: int, *, device=None, dtype=torch.float32) -> Tensor:
    """Normalised centres of `n` cells spanning [0, 1]: (n,) tensor of (j + 0.5) / n."""
    return (torch.arange(n, device=device, dtype=dtype) + 0.5) / n


def gaussian_heatmaps(coords: Tensor, size: tuple[int, int], sigma: float) -> Tensor:
    """Render one unnormalised Gaussian per landmark.

    Args:
        coords: (B, K, 2) normalised (x, y) landmark coordinates.
        size: (H, W) of the heatmaps in cells.
        sigma: standard deviation in heatmap CELLS (not pixels, not normalised units),
            so the blob looks the same whatever the heatmap resolution.

    Returns:
        (B, K, H, W) float tensor, value exp(-d^2 / (2 sigma^2)) where d is the distance
        in cells between each cell centre and the landmark. The continuous Gaussian
        peaks at exactly 1 on the landmark; a sampled cell reaches 1 only when the
        landmark sits on its centre (sub-cell positions are kept, not rounded, which is
        what lets soft-argmax recover them).
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0 heatmap cells, got {sigma}")
    if coords.ndim != 3 or coords.shape[-1] != 2:
        raise ValueError(f"coords must be (B, K, 2), got {tuple(coords.shape)}")
    h, w = int(size[0]), int(size[1])
    # Compute in float32 at least: half precision loses the sub-cell offsets.
    dtype = torch.promote_types(coords.dtype, torch.float32)
    coords = coords.to(dtype)
    xs = cell_centres(w, device=coords.device, dtype=dtype)
    ys = cell_centres(h, device=coords.device, dtype=dtype)
    # Distances in cells: normalised offset times the number of cells on that axis.
    dx = (xs.view(1, 1, 1, w) - coords[..., 0, None, None]) * w  # (B, K, 1, W)
    dy = (ys.view(1, 1, h, 1) - coords[..., 1, None, None]) * h  # (B, K, H, 1)
    # Separable: exp(-(dx^2 + dy^2)/2s^2) = exp(-dx^2/2s^2) * exp(-dy^2/2s^2).
    inv = 1.0 / (2.0 * float(sigma) ** 2)
    return torch.exp(-dy.square() * inv) * torch.exp(-dx.square() * inv)


def soft_argmax(logits: Tensor, beta: float = 1.0) -> Tensor:
    """Differentiable peak location: softmax over each map, then the expected cell centre.

    Args:
        logits: (B, K, H, W) heatmap logits (any real values).
        beta: inverse temperature applied before the softmax; larger -> closer to a
            hard argmax (and to a zero gradient almost everywhere).

    Returns:
        (B, K, 2) normalised (x, y) coordinates in [(0.5/W), 1 - 0.5/W] x [...H].

    Bias: the output is a probability-weighted mean of ALL cell centres, so any mass
    left on the background pulls the estimate toward the map centre (0.5, 0.5); a flat
    map decodes to exactly the centre. The estimate is unbiased only when the softmax
    mass is concentrated and symmetric around the landmark. Training with the
    heatmap losses drives background logits strongly negative and the peak strongly
    positive (sharp logits), so the residual background mass is negligible; with
    untrained or blurry logits expect coordinates shrunk toward the centre. A blob
    truncated by the map border is likewise biased inward. On logits equal to
    logit(Gaussian target) (what the heatmap losses aim for), beta = 1 recovers
    sub-cell positions to ~0.1 cell; a large beta tends to the hard argmax and its
    up-to-half-a-cell quantisation error.
    """
    if logits.ndim != 4:
        raise ValueError(f"logits must be (B, K, H, W), got {tuple(logits.shape)}")
    b, k, h, w = logits.shape
    # Softmax and expectation in float32: under autocast fp16/bf16 the sums over
    # H*W cells lose more than a sub-cell of precision.
    prob = torch.softmax(beta * logits.float().reshape(b, k, h * w), dim=-1).reshape(b, k, h, w)
    xs = cell_centres(w, device=logits.device)
    ys = cell_centres(h, device=logits.device)
    x = (prob.sum(dim=2) * xs).sum(dim=-1)  # marginal over rows -> columns
    y = (prob.sum(dim=3) * ys).sum(dim=-1)  # marginal over columns -> rows
    return torch.stack((x, y), dim=-1)
