"""Two-stage models: a first model's landmarks place a second model's similarity-aligned crop.

A model card with `first_stage` (a model spec: packaged name, run folder, checkpoint or .safetensors) names
the model whose landmarks on the face box place this model's crop (`facealign.data.aligned`); `load_runner`
wraps such a model in a `StagedRunner` on the same backend, so every caller (FaceAligner, evaluate, bench,
serve) gets both stages.
"""
from __future__ import annotations

import numpy as np

from facealign.data.aligned import aligned_or_box
from facealign.inference.runner import CropRunner


class StagedRunner(CropRunner):
    """predict(image (H, W, 3) uint8 RGB, boxes (N, 4) pixels) -> (N, K, 2) float32 image pixels: `first`
    on the boxes, then `second` (this runner's card, backend and flip) on crops aligned from those landmarks."""

    def __init__(self, first: CropRunner, second: CropRunner):
        super().__init__(second.backend, second.card, second.flip_tta, model=second.model)
        if first.scheme.num_points != second.scheme.num_points:
            raise ValueError(f"first stage {first.name!r} predicts {first.scheme.num_points} points, the second "
                             f"stage {second.name!r} {second.scheme.num_points}")
        self.first = first

    def crops(self, image: np.ndarray, boxes: np.ndarray):
        """The second stage's crops: aligned from the first stage's landmarks on `boxes`."""
        first = self.first.predict(image, boxes)
        return self.warp_crops(image, [aligned_or_box(lm, b, self.context, self.scheme) for lm, b in zip(first, boxes)])
