"""PyTorch dataset over a crop cache, with deterministic per-(seed, epoch, index) augmentation."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from facealign.data.cache import CropCache
from facealign.data.transforms import (AugmentConfig, flip_order, normalize_float, occlude, photometric,
                                       random_geometry, random_occlusion)


class CachedFaces(Dataset):
    """Items: {"image": (3, S, S) float32 ImageNet-normalised, "coords": (K, 2) normalised crop coords,
    "index": int}. Augmentation is a pure function of (seed, epoch, index), so an interrupted and
    resumed run sees exactly the same samples."""

    def __init__(self, cache: CropCache, indices=None, augment: AugmentConfig | None = None, seed: int = 0,
                 mirror: np.ndarray | None = None):
        self.cache = cache
        self.mirror = mirror  # the landmark scheme's mirror permutation (None: the 68-point one)
        self.indices = np.arange(len(cache)) if indices is None else np.asarray(indices)
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices)

    def sample(self, i: int, epoch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(crop (S, S, 3) float32 in [0, 1], coords (K, 2) normalised) for the i-th item in `epoch`
        (default: the one set by `set_epoch`)."""
        epoch = self.epoch if epoch is None else epoch
        j = int(self.indices[i])
        size = self.cache.spec.size
        geometry, flip, rng = None, False, None
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, epoch, j])
            geometry, flip = random_geometry(rng, self.augment)
        t = self.cache.pixel_to_crop(geometry)
        # landmarks are stored in cached-crop coords: convert to cached pixel centres, then map like the image
        coords = t.to_crop(self.cache.landmarks[j] * self.cache.spec.cache_size - 0.5)
        if flip:
            coords = flip_order(coords, self.mirror)
        crop = t.warp(np.asarray(self.cache.images[j]), size).astype(np.float32) / 255.0
        if rng is not None:
            crop = photometric(crop, rng, self.augment)
            crop = occlude(crop, random_occlusion(rng, self.augment))  # drawn last: earlier draws unchanged
        return crop, coords

    def __getitem__(self, i: int | tuple[int, int]) -> dict:
        """`i` is an item index, or (epoch, index) so that persistent DataLoader workers, which hold a
        copy of this dataset, follow the epoch (see `EpochSampler`)."""
        epoch, i = i if isinstance(i, tuple) else (None, i)
        crop, coords = self.sample(i, epoch)
        return {"image": torch.from_numpy(normalize_float(crop)), "coords": torch.from_numpy(coords),
                "index": int(self.indices[i])}


class EpochSampler(torch.utils.data.Sampler):
    """Yields (epoch, index) pairs in `sampler`'s order; the epoch is read in the main process."""

    def __init__(self, sampler):
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return ((self.epoch, int(i)) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)
