"""Linear probing before fine-tuning (`--linear-probe`): fit a head's last linear map in closed form first.

A pretrained network with a freshly initialised output map is first trained through a map that is wrong, and
its early, large gradients damage the pretrained features. Fitting the map by ridge regression on the frozen
network's outputs, then fine-tuning everything (LP-FT: Kumar et al., "Fine-Tuning can Distort Pretrained
Features and Underperform Out-of-Distribution", ICLR 2022), starts training from a good map instead.

A head opts in with two methods:
    probe_inputs(features) -> (B, D, 2) the inputs of its linear map, per axis;
    fit_linear(inputs (N, D, 2), targets (N, K, 2), ridge) -> sets the map, returns a summary dict.
"""
from __future__ import annotations

import numpy as np
import torch

from facealign.data.dataset import CachedFaces
from facealign.data.transforms import flip_order

__all__ = ["RIDGE", "fit_linear_probe", "supports_linear_probe"]

# Ridge penalty on the map's weights, in units of the design's squared crop coordinates. For the mesh head,
# 1e-4 ... 1e-1 gave validation NME 0.0475 ... 0.0497, flat below 1e-3 (`benchmarks/mesh_vertex_map.py`,
# docs/facemesh.md); 1e-3 keeps the solve well conditioned.
RIDGE = 1e-3


def supports_linear_probe(head) -> bool:
    return hasattr(head, "probe_inputs") and hasattr(head, "fit_linear")


@torch.no_grad()
def fit_linear_probe(model, train_cache, device, mirror: np.ndarray | None = None, batch: int = 64,
                     ridge: float = RIDGE) -> dict:
    """Fit `model.head`'s linear map on every training crop, unaugmented, and its mirror image.

    Returns the head's summary (faces used, ridge, RMS training residual in crop units)."""
    if not supports_linear_probe(model.head):
        raise ValueError(f"--linear-probe needs a head with a linear output map (mesh); "
                         f"the {type(model.head).__name__} head has none")
    was_training = model.training
    model.eval()
    ds = CachedFaces(train_cache, mirror=mirror)
    inputs, targets = [], []
    for start in range(0, len(ds), batch):
        items = [ds[i] for i in range(start, min(start + batch, len(ds)))]
        images = torch.stack([it["image"] for it in items]).to(device)
        coords = [it["coords"].numpy() for it in items]
        for flip in (False, True):
            x = torch.flip(images, dims=[3]) if flip else images
            inputs.append(model.head.probe_inputs(model.backbone(x)).float().cpu())
            # mirrored crop: u -> 1 - u, then relabel left/right so point i is again landmark i
            t = [flip_order(np.stack([1.0 - c[:, 0], c[:, 1]], 1), mirror) for c in coords] if flip else coords
            targets.append(torch.from_numpy(np.stack(t).astype(np.float32)))
    model.train(was_training)
    return model.head.fit_linear(torch.cat(inputs), torch.cat(targets), ridge)
