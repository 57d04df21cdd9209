"""The batched tensor augmentation against the per-sample numpy path (CachedFaces)."""
import dataclasses

import numpy as np
import pytest
import torch

from facealign.detection.boxes import boxes_for
from facealign.data.cache import CacheSpec, build_crop_cache
from facealign.data.dataset import CachedFaces
from facealign.data.layouts import index_dataset
from facealign.data.synthetic import make_300w_fixture
from facealign.data.tensor_augment import DeviceFaces, grid_theta, occlude_batch, photometric_batch, sample_params
from facealign.data.transforms import IMAGENET_MEAN, IMAGENET_STD, AugmentConfig


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("aug")
    root = make_300w_fixture(tmp / "300W", {"afw": 6}, size=96)
    records = index_dataset(root).records("train")
    boxes, _ = boxes_for(records, "gt")
    return build_crop_cache(records, boxes, CacheSpec(size=48, context=0.4), tmp / "cache", progress=False)


def _unnormalise(chw: np.ndarray) -> np.ndarray:
    """(3, S, S) ImageNet-normalised -> (S, S, 3) in [0, 1]."""
    return chw.transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN


def test_grid_theta_identity_window():
    # Output pixel j of an S crop centred in a C cache samples cache pixel j + (C - S) / 2: a pure crop.
    c, s = 12, 8
    a = np.array([[[1 / s, 0, (0.5 - (c - s) / 2) / s], [0, 1 / s, (0.5 - (c - s) / 2) / s]]])  # x -> u
    theta = torch.from_numpy(grid_theta(a, c)).float()
    img = torch.arange(c * c, dtype=torch.float32).view(1, 1, c, c)
    grid = torch.nn.functional.affine_grid(theta, [1, 1, s, s], align_corners=False)
    out = torch.nn.functional.grid_sample(img, grid, align_corners=False)
    assert torch.allclose(out[0, 0], img[0, 0, 2:10, 2:10], atol=1e-3)


def test_unaugmented_batch_is_the_centre_window(cache):
    faces = DeviceFaces(cache)
    x, coords = faces.batch([0, 3])
    ref = CachedFaces(cache)
    for k, i in enumerate([0, 3]):
        item = ref[i]
        # an exact pixel-aligned window: both paths give the cached pixels (float rounding only)
        assert np.abs(x[k].numpy() - item["image"].numpy()).max() < 1e-4
        assert np.abs(coords[k].numpy() - item["coords"].numpy()).max() < 1e-6


def test_same_augmentation_as_numpy_path(cache):
    cfg = AugmentConfig(rotation_deg=15, scale=0.1, shift=0.05, flip_prob=0.5, brightness=0.2, contrast=0.2)
    ref = CachedFaces(cache, augment=cfg, seed=7)
    ref.set_epoch(3)
    faces = DeviceFaces(cache, augment=cfg, seed=7)
    idx = np.arange(len(cache))
    x, coords = faces.batch(idx, epoch=3)
    params = sample_params(idx, 7, 3, cfg)
    assert params.flip.any() and not params.flip.all()  # both branches exercised with this seed
    for k, i in enumerate(idx):
        crop, pts = ref.sample(i)
        # landmarks: the same float64 maps -> identical to 1e-4 (normalised crop units)
        assert np.abs(coords[k].numpy() - pts).max() < 1e-4
        # pixels: bilinear in float vs OpenCV's 1/32-px fixed point + uint8 rounding
        diff = np.abs(_unnormalise(x[k].numpy()) - crop)
        assert diff.mean() < 0.01 and np.quantile(diff, 0.99) < 0.05, (diff.mean(), diff.max())


def test_batch_is_a_function_of_seed_epoch_index(cache):
    cfg = AugmentConfig()
    faces = DeviceFaces(cache, augment=cfg, seed=1)
    a, ca = faces.batch([1, 2, 4], epoch=5)
    b, cb = faces.batch([4, 1], epoch=5)  # other batch composition and order
    assert torch.equal(a[0], b[1]) and torch.equal(a[2], b[0]) and torch.equal(ca[0], cb[1])
    c, _ = faces.batch([1], epoch=6)
    assert not torch.equal(a[0], c[0])


def test_photometric_batch_hand_computed():
    x = torch.tensor([0.2, 0.4, 0.6, 0.8]).view(1, 1, 2, 2).repeat(1, 3, 1, 1)  # mean 0.5
    out = photometric_batch(x.clone(), torch.tensor([0.1]), torch.tensor([2.0]))
    # (v - 0.5) * 2 + 0.5 + 0.1, clipped: 0.0, 0.4, 0.8, 1.0 (1.2 clipped)
    assert torch.allclose(out[0, 0].flatten(), torch.tensor([0.0, 0.4, 0.8, 1.0]), atol=1e-6)


def test_bf16_detection_reads_flags():
    from facealign.hardware import cpu_has_fast_bf16
    assert not cpu_has_fast_bf16(frozenset({"avx2", "fma", "avx512f"}))  # the AMD EPYC seen here
    assert cpu_has_fast_bf16(frozenset({"avx2", "amx_bf16", "amx_tile"}))
    assert cpu_has_fast_bf16(frozenset({"avx512_bf16"}))


def test_occlusion_mask_hand_computed():
    from facealign.data.transforms import occlusion_mask
    # 4 px: centres u = 0.125, 0.375, 0.625, 0.875; [0.3, 0.7) covers columns 1-2, [0.0, 0.2) row 0
    m = occlusion_mask(np.array([0.3, 0.0, 0.7, 0.2, 0, 0, 0]), 4)
    assert m.tolist() == [[False, True, True, False]] + [[False] * 4] * 3
    x = torch.zeros(1, 3, 4, 4)
    out = occlude_batch(x, torch.tensor([[0.3, 0.0, 0.7, 0.2, 0.1, 0.5, 0.9]], dtype=torch.float64))
    assert torch.allclose(out[0, :, 0, 1], torch.tensor([0.1, 0.5, 0.9])) and out[0, :, 1:].abs().sum() == 0
    assert torch.equal(occlude_batch(x, torch.zeros(1, 7, dtype=torch.float64)), x)  # zeros: no occluder


def test_occlusion_same_in_both_paths_and_off_changes_nothing(cache):
    base = AugmentConfig(rotation_deg=15, scale=0.1, shift=0.05, flip_prob=0.5, brightness=0.2, contrast=0.2)
    occluded = dataclasses.replace(base, occlusion=1.0, occlusion_size=0.5)
    idx = np.arange(len(cache))
    # occlusion is drawn after every earlier draw: geometry, flip and photometry stay as without it
    p0, p1 = sample_params(idx, 7, 3, base), sample_params(idx, 7, 3, occluded)
    assert np.array_equal(p0.geometry, p1.geometry) and np.array_equal(p0.brightness, p1.brightness)
    assert not p0.occlusion.any() and (p1.occlusion[:, 2] > p1.occlusion[:, 0]).all()
    sides = np.concatenate([p1.occlusion[:, 2] - p1.occlusion[:, 0], p1.occlusion[:, 3] - p1.occlusion[:, 1]])
    assert sides.min() >= 0.1 and sides.max() <= 0.5
    ref = CachedFaces(cache, augment=occluded, seed=7)
    ref.set_epoch(3)
    x, coords = DeviceFaces(cache, augment=occluded, seed=7).batch(idx, epoch=3)
    x_plain, coords_plain = DeviceFaces(cache, augment=base, seed=7).batch(idx, epoch=3)
    assert torch.equal(coords, coords_plain)  # landmarks never move with an occluder
    for k, i in enumerate(idx):
        crop, _ = ref.sample(i)
        mask = torch.from_numpy(occlusion_mask_of(p1.occlusion[k], crop.shape[0]))
        colour = p1.occlusion[k, 4:7].astype(np.float32)
        assert mask.any()
        # inside the rectangle both paths paint exactly the occluder's colour, outside it the plain image
        assert np.allclose(crop[mask.numpy()], colour, atol=1e-6)
        assert np.allclose(_unnormalise(x[k].numpy())[mask.numpy()], colour, atol=1e-5)
        assert torch.equal(x[k][:, ~mask], x_plain[k][:, ~mask])


def occlusion_mask_of(occluder, size):
    from facealign.data.transforms import occlusion_mask
    return occlusion_mask(occluder, size)
