"""Training batches from a crop cache: `workers` (per-sample numpy augmentation in DataLoader worker processes)
or `tensor` (batched augmentation on the training device), chosen by `TrainConfig.loader`."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from facealign.data.dataset import CachedFaces, EpochSampler
from facealign.data.tensor_augment import DeviceFaces
from facealign.training.config import TrainConfig


class WorkerBatches:
    """The per-sample numpy path: `CachedFaces` in DataLoader worker processes that persist across epochs."""

    def __init__(self, cache, cfg: TrainConfig, sampler, batch_size: int, device: torch.device, mirror=None):
        self.dataset = CachedFaces(cache, augment=cfg.augment, seed=cfg.seed, mirror=mirror)
        self.device = device
        self.sampler = EpochSampler(sampler)
        self.loader = DataLoader(self.dataset, batch_size=batch_size, sampler=self.sampler, num_workers=cfg.workers,
                                 drop_last=True, persistent_workers=cfg.workers > 0,
                                 pin_memory=device.type == "cuda")

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, epoch: int):
        # Persistent workers hold a copy of the dataset: the epoch travels with each index instead.
        self.sampler.set_epoch(epoch)
        for batch in self.loader:
            yield (batch["image"].to(self.device, non_blocking=True), batch["coords"].to(self.device, non_blocking=True))


class TensorBatches:
    """Batched augmentation on the training device (`DeviceFaces`); no worker processes.

    With `teacher_cache` (the same faces, in the same order, cached at a distillation teacher's larger input
    size) each batch also carries the same augmented crops rendered at that size: (images, coords,
    teacher_images), the teacher seeing the face at its own resolution instead of the student's crop scaled up."""

    def __init__(self, cache, cfg: TrainConfig, sampler, batch_size: int, device: torch.device, mirror=None,
                 teacher_cache=None):
        self.faces = DeviceFaces(cache, device, augment=cfg.augment, seed=cfg.seed, mirror=mirror)
        self.teacher_faces = None
        if teacher_cache is not None:
            if list(teacher_cache.keys) != list(cache.keys):
                raise ValueError("the teachers' crop cache holds other faces than the student's")
            self.teacher_faces = DeviceFaces(teacher_cache, device, augment=cfg.augment, seed=cfg.seed,
                                             mirror=mirror)
        self.sampler, self.batch_size = sampler, batch_size

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size  # drop_last, like the DataLoader path

    def epoch(self, epoch: int):
        order = list(self.sampler)  # the sampler was set to this epoch: same order as the DataLoader path
        for b in range(len(self)):
            indices = order[b * self.batch_size:(b + 1) * self.batch_size]
            if self.teacher_faces is None:
                yield self.faces.batch(indices, epoch)
                continue
            params = self.faces.params(indices, epoch)  # drawn once: the same geometry, flip, photometry, occluder
            yield (*self.faces.batch(indices, epoch, params), self.teacher_faces.batch(indices, epoch, params)[0])


LOADERS = {"tensor": TensorBatches, "workers": WorkerBatches}


def build_batches(cache, cfg: TrainConfig, sampler, batch_size: int, device: torch.device, mirror=None,
                  teacher_cache=None):
    """mirror: the landmark scheme's mirror permutation for flips (None: the 68-point one); teacher_cache:
    see `TensorBatches` (the `tensor` loader only)."""
    if cfg.loader not in LOADERS:
        raise ValueError(f"unknown loader {cfg.loader!r}; valid: {', '.join(LOADERS)}")
    if teacher_cache is None:
        return LOADERS[cfg.loader](cache, cfg, sampler, batch_size, device, mirror)
    if cfg.loader != "tensor":
        raise ValueError(f"distillation teachers with a larger input than the student's need --loader tensor, "
                         f"not {cfg.loader!r}")
    return TensorBatches(cache, cfg, sampler, batch_size, device, mirror, teacher_cache)
