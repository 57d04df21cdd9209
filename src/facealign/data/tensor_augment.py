"""Batched augmentation as tensor ops on the training device.

The per-sample numpy path (`CachedFaces`: cv2.warpAffine + numpy photometric steps, run in DataLoader
workers) starves a GPU and costs CPU time that the network needs. Here the whole crop cache lives on the
device as uint8, and a batch is augmented in one `affine_grid` + `grid_sample` call plus a few
elementwise ops.

Determinism: the random parameters of sample `j` in epoch `e` are drawn exactly as `CachedFaces` draws
them (`np.random.default_rng([seed, e, j])`, same order of draws), so both paths see the same geometry,
flip, brightness and contrast, and a resumed run sees the same samples. Landmarks are mapped in float64
numpy by the same `CropTransform` code as the numpy path, so they are identical; pixels differ from
OpenCV's only by interpolation rounding (OpenCV quantises bilinear weights to 1/32 px).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from facealign.data.cache import CropCache
from facealign.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, AugmentConfig, flip_order, random_geometry,
                                       random_occlusion)


@dataclass(frozen=True)
class SampleParams:
    """Augmentation parameters of a batch. geometry: (B, 2, 3) float64 maps on normalised crop coords;
    flip: (B,) bool; brightness: (B,) additive, fraction of full range; contrast: (B,) multiplicative;
    occlusion: (B, 7) rectangle (x0, y0, x1, y1) in normalised crop coords and RGB in [0, 1] (zeros: none)."""

    geometry: np.ndarray
    flip: np.ndarray
    brightness: np.ndarray
    contrast: np.ndarray
    occlusion: np.ndarray


def sample_params(indices, seed: int, epoch: int, cfg: AugmentConfig) -> SampleParams:
    """The augmentation of each cache index, drawn as `CachedFaces.sample` draws it."""
    geometry, flip, bright, contrast, occlusion = [], [], [], [], []
    for j in indices:
        rng = np.random.default_rng([seed, epoch, int(j)])
        m, f = random_geometry(rng, cfg)
        # same draw order as transforms.photometric: brightness, then contrast; then the occluder
        bright.append(rng.uniform(-cfg.brightness, cfg.brightness))
        contrast.append(1.0 + rng.uniform(-cfg.contrast, cfg.contrast))
        occlusion.append(random_occlusion(rng, cfg))
        geometry.append(m)
        flip.append(f)
    return SampleParams(np.stack(geometry), np.array(flip, bool), np.array(bright), np.array(contrast),
                        np.stack(occlusion))


def grid_theta(pixel_to_crop: np.ndarray, cache_size: int) -> np.ndarray:
    """(B, 2, 3) `affine_grid` matrices (align_corners=False) for (B, 2, 3) maps from cached-crop pixel
    centres to the output crop's normalised coords u in [0, 1].

    affine_grid gives output pixel j the grid coordinate g = 2u - 1; grid_sample reads source pixel x at
    g = (2x + 1) / C - 1. So theta = P_C . A^-1 . Q with Q: g -> u and P_C: x -> g.
    """
    a = np.concatenate([pixel_to_crop, np.broadcast_to([[[0.0, 0.0, 1.0]]], (len(pixel_to_crop), 1, 3))], axis=1)
    q = np.array([[0.5, 0.0, 0.5], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]])
    c = float(cache_size)
    p = np.array([[2.0 / c, 0.0, 1.0 / c - 1.0], [0.0, 2.0 / c, 1.0 / c - 1.0], [0.0, 0.0, 1.0]])
    return (p @ np.linalg.inv(a) @ q)[:, :2]


class DeviceFaces:
    """A crop cache held on `device` as (N, C, C, 3) uint8, served in augmented, normalised batches.

    `batch(indices, epoch)` -> (images (B, 3, S, S) float32 ImageNet-normalised on the device,
    coords (B, K, 2) float32 normalised crop coords on the device). With `augment=None` the centre
    S-pixel window is returned unchanged (validation).
    """

    def __init__(self, cache: CropCache, device: torch.device | str = "cpu", augment: AugmentConfig | None = None,
                 seed: int = 0, mirror: np.ndarray | None = None):
        self.cache = cache
        self.mirror = mirror  # the landmark scheme's mirror permutation (None: the 68-point one)
        self.device = torch.device(device)
        self.augment = augment
        self.seed = seed
        self.images = torch.from_numpy(np.array(cache.images)).to(self.device)  # a copy: the memmap is read-only
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    def __len__(self) -> int:
        return len(self.cache)

    def _maps(self, indices, params: SampleParams | None) -> tuple[np.ndarray, np.ndarray]:
        """(B, 2, 3) cached pixel -> crop maps and (B, K, 2) landmarks in crop coords (float32)."""
        c = self.cache.spec.cache_size
        maps, coords = [], []
        for k, j in enumerate(indices):
            t = self.cache.pixel_to_crop(None if params is None else params.geometry[k])
            pts = t.to_crop(self.cache.landmarks[j] * c - 0.5)
            coords.append(flip_order(pts, self.mirror) if params is not None and params.flip[k] else pts)
            maps.append(t.matrix)
        return np.stack(maps), np.stack(coords)

    def params(self, indices, epoch: int = 0) -> SampleParams | None:
        """The augmentation `batch` applies to these cache indices in this epoch (None: no augmentation)."""
        return None if self.augment is None else sample_params(indices, self.seed, epoch, self.augment)

    def batch(self, indices, epoch: int = 0, params: SampleParams | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """params: `self.params(indices, epoch)` when already drawn (e.g. for a second cache of the same faces)."""
        indices = np.asarray(indices, dtype=np.int64)
        size = self.cache.spec.size
        params = self.params(indices, epoch) if params is None else params
        maps, coords = self._maps(indices, params)
        src = self.images[torch.from_numpy(indices).to(self.device)].permute(0, 3, 1, 2).float().div_(255.0)
        theta = torch.from_numpy(grid_theta(maps, self.cache.spec.cache_size)).float().to(self.device)
        grid = F.affine_grid(theta, [len(indices), 3, size, size], align_corners=False)
        x = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if params is not None:
            x = photometric_batch(x, torch.from_numpy(params.brightness).float().to(self.device),
                                  torch.from_numpy(params.contrast).float().to(self.device))
            if params.occlusion.any():
                x = occlude_batch(x, torch.from_numpy(params.occlusion).to(self.device))
        x = (x - self.mean) / self.std
        return x, torch.from_numpy(coords).to(self.device)


def photometric_batch(x: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
    """`transforms.photometric` on a batch: x (B, 3, S, S) in [0, 1]; brightness, contrast (B,)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    c, b = contrast.view(-1, 1, 1, 1), brightness.view(-1, 1, 1, 1)
    return ((x - mean) * c + mean + b).clamp_(0.0, 1.0)


def occlude_batch(x: torch.Tensor, occluders: torch.Tensor) -> torch.Tensor:
    """`transforms.occlude` on a batch: x (B, 3, S, S) in [0, 1]; occluders (B, 7) float64 (zeros: none).
    Pixel j is covered when its centre u = (j + 0.5) / S lies in [x0, x1), as in `transforms.occlusion_mask`."""
    s = x.shape[-1]
    u = (torch.arange(s, device=x.device, dtype=torch.float64) + 0.5) / s
    o = occluders.view(-1, 7, 1)
    inside_x = (u >= o[:, 0]) & (u < o[:, 2])  # (B, S)
    inside_y = (u >= o[:, 1]) & (u < o[:, 3])
    mask = (inside_y[:, :, None] & inside_x[:, None, :]).unsqueeze(1)  # (B, 1, S, S)
    colour = occluders[:, 4:7].to(x.dtype).view(-1, 3, 1, 1)
    return torch.where(mask, colour, x)
