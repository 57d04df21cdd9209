"""Pose balancing: draw rare head poses more often in training.

The pose of a face is summarised by one number, its score on the first principal component of the training
shapes after similarity (Procrustes) alignment: on 300-W that component is mostly yaw, so frontal faces
crowd the middle of its range and profiles sit in its thin tails. `pose_weights` gives each face a drawing
weight from how crowded its bin of that score is, and `BalancedSampler` draws an epoch with those weights.
"""
from __future__ import annotations

import numpy as np
import torch


def align_shapes(shapes: np.ndarray, iterations: int = 3) -> np.ndarray:
    """Generalised Procrustes alignment: each (K, 2) shape moved by the similarity (rotation, scale,
    translation; no reflection) that best fits the running mean shape.

    shapes: (N, K, 2) in any consistent units. Returns (N, K, 2) float64, each centred with unit RMS size.
    """
    x = np.asarray(shapes, np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    x /= np.sqrt((x ** 2).sum(axis=(1, 2), keepdims=True) / x.shape[1])
    mean = x[0]
    for _ in range(iterations):
        # complex form: z = x + iy; the best similarity of z onto m is a * z with a = <z, m> / <z, z>
        z = x[..., 0] + 1j * x[..., 1]
        m = mean[:, 0] + 1j * mean[:, 1]
        a = (np.conj(z) * m).sum(axis=1) / (np.abs(z) ** 2).sum(axis=1)
        z = z * a[:, None]
        x = np.stack([z.real, z.imag], axis=-1)
        x /= np.sqrt((x ** 2).sum(axis=(1, 2), keepdims=True) / x.shape[1])
        mean = x.mean(axis=0)
        mean /= np.sqrt((mean ** 2).sum() / len(mean))
    return x


def pose_scores(shapes: np.ndarray) -> np.ndarray:
    """(N,) each aligned shape's score on the first principal component of the aligned shapes (sign arbitrary)."""
    x = align_shapes(shapes).reshape(len(shapes), -1)
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[0]


def pose_weights(shapes: np.ndarray, power: float, bins: int = 10) -> np.ndarray:
    """(N,) drawing probabilities (sum 1): face i gets count(bin of i) ** -power, the bins being `bins` equal
    widths of the first-component score's range (so the thin tails, the rare poses, are their own bins).

    power 0: uniform (every face alike); 1: every occupied bin is drawn equally often; in between: a mix.
    """
    n = len(shapes)
    if power == 0 or n < 2:
        return np.full(n, 1.0 / max(n, 1))
    s = pose_scores(shapes)
    edges = np.linspace(s.min(), s.max(), bins + 1)
    b = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, bins - 1)
    counts = np.bincount(b, minlength=bins).astype(np.float64)
    w = counts[b] ** -float(power)
    return w / w.sum()


class BalancedSampler(torch.utils.data.Sampler):
    """Each epoch: len(weights) indices drawn with replacement with probabilities `weights`, from
    `np.random.default_rng([seed, epoch])` (so a resumed run draws the same epochs), then this rank's share
    (every num_replicas-th index from `rank`), as DistributedSampler shares an epoch."""

    def __init__(self, weights: np.ndarray, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        self.weights = np.asarray(weights, np.float64)
        self.num_replicas, self.rank, self.seed = num_replicas, rank, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        n = len(self.weights)
        drawn = np.random.default_rng([self.seed, self.epoch]).choice(n, size=n, replace=True, p=self.weights)
        return iter(drawn[self.rank:len(self) * self.num_replicas:self.num_replicas].tolist())

    def __len__(self) -> int:
        return len(self.weights) // self.num_replicas
