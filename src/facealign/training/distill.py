"""Ensemble distillation: trained teacher networks whose mean landmarks on each training batch are a second target
for the student (`TrainConfig.distill_teachers`, `distill_weight`, `distill_flip`; issue 20).

Every teacher sees the augmented crops the student sees. When the largest teacher input is larger than the
student's, the training loop renders those crops (same geometry, flip, photometry and occluder) at that size from
a second crop cache, so a 224-px teacher of a 96-px student sees the face at 224 px; otherwise it passes the
student's crops. Each teacher gets them resized to its own input size (the crops cover the same face region at
every size; bilinear, antialiased when shrinking), and predicts normalised crop coordinates in
[0, 1], whatever its head. The term added to the ground-truth loss is `distill_weight` x Wing(student coords,
mean teacher coords), the Wing of the coordinate losses (`facealign.training.losses.wing_loss`, errors in units
of 1/64 of the crop). Teachers run in eval mode without gradients; a teacher must crop as the student does
(`context`), take the same input normalisation and predict the same landmark scheme.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from facealign.training.losses import wing_loss

# What the training pipeline feeds every network (facealign.data.transforms.normalize): ImageNet mean/std on
# RGB in [0, 1]. Cards of training checkpoints carry no `normalisation`; they were trained on this.
PIPELINE_NORMALISATION = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def check_teacher(spec: str, card: dict, context: float, scheme) -> None:
    """A one-line ValueError naming the card field in which teacher `spec` differs from the student's run."""
    from facealign.models.packaged import card_scheme
    where = f"distill teacher {spec!r}"
    if float(card.get("context", 0.1)) != float(context):
        raise ValueError(f"{where}: context {card.get('context', 0.1)} differs from this run's {context} (a "
                         "teacher must crop the face as the student does)")
    norm = card.get("normalisation", PIPELINE_NORMALISATION)
    if norm != PIPELINE_NORMALISATION:
        raise ValueError(f"{where}: normalisation {norm} differs from the training pipeline's "
                         f"{PIPELINE_NORMALISATION}")
    have = card_scheme(card)
    if (have.name, have.num_points) != (scheme.name, scheme.num_points):
        raise ValueError(f"{where}: scheme {have.name} ({have.num_points} points) differs from this run's "
                         f"{scheme.name} ({scheme.num_points})")


class Teachers:
    """The teacher networks of a run, loaded once onto the training device.

    targets(images) -> (B, K, 2) mean normalised coords of every teacher on the student's batch;
    loss(images, student_coords) -> the weighted distillation term (a scalar)."""

    def __init__(self, specs, weight: float, context: float, scheme, device: torch.device,
                 memory_format=torch.contiguous_format, flip: bool = False, autocast_dtype=None):
        from facealign.models.packaged import load_model
        self.members = []
        for spec in specs:
            model, card = load_model(spec)
            check_teacher(spec, card, context, scheme)
            model = model.to(device).to(memory_format=memory_format).eval().requires_grad_(False)
            self.members.append((model, int(card["input_size"])))
        self.input_size = max(size for _, size in self.members)  # the size the training loop renders for them
        self.weight, self.flip, self.memory_format = float(weight), flip, memory_format
        self.mirror = torch.as_tensor(scheme.mirror_permutation.copy(), device=device)
        self.device_type, self.autocast_dtype = device.type, autocast_dtype

    def _coords(self, model, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            if not self.flip:
                return model(x)["coords"].float()
            both = model(torch.cat([x, x.flip(-1)]))["coords"].float()
        plain, mirrored = both[: len(x)], both[len(x):][:, self.mirror]
        mirrored = torch.stack([1.0 - mirrored[..., 0], mirrored[..., 1]], -1)  # u -> 1 - u undoes the flip
        return (plain + mirrored) / 2

    @torch.no_grad()
    def targets(self, images: torch.Tensor) -> torch.Tensor:
        out = []
        for model, size in self.members:
            x = images
            if x.shape[-1] != size:
                x = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False,
                                  antialias=size < x.shape[-1])
            out.append(self._coords(model, x.contiguous(memory_format=self.memory_format)))
        return torch.stack(out).mean(0)

    def loss(self, images: torch.Tensor, student_coords: torch.Tensor) -> torch.Tensor:
        return self.weight * wing_loss(student_coords.float(), self.targets(images))


def distill_source(cfg) -> dict:
    """For config.json and final.json: {"distill_sources": [{spec, sha256}]} naming the exact weights of each
    teacher (a packaged name such as `default` changes meaning when a new model ships); {} without teachers."""
    if not cfg.distill_teachers:
        return {}
    from facealign.atomic import sha256_file
    from facealign.models.weights import model_file
    return {"distill_sources": [{"spec": s, "sha256": sha256_file(model_file(s))} for s in cfg.distill_teachers]}
