"""Gaussian encoding / soft-argmax decoding under the package's coordinate convention."""
import math

import pytest
import torch

from facealign.models.heatmap import cell_centres, gaussian_heatmaps, soft_argmax


def test_cell_centres():
    # 4 cells over [0, 1]: centres at 0.125, 0.375, 0.625, 0.875.
    assert cell_centres(4).tolist() == [0.125, 0.375, 0.625, 0.875]


def test_gaussian_peak_and_distance_in_cells():
    # Landmark on the centre of cell (row 2, col 5) of an 8x16 map: u = 5.5/16, v = 2.5/8.
    coords = torch.tensor([[[5.5 / 16, 2.5 / 8]]])
    hm = gaussian_heatmaps(coords, (8, 16), sigma=2.0)
    assert hm.shape == (1, 1, 8, 16)
    assert hm[0, 0, 2, 5].item() == pytest.approx(1.0)
    assert hm.max().item() == pytest.approx(1.0)
    # One cell to the right: exp(-1 / (2 * 2^2)) = exp(-0.125).
    assert hm[0, 0, 2, 6].item() == pytest.approx(math.exp(-0.125), rel=1e-6)
    # One cell down and two left: d^2 = 1 + 4 = 5 -> exp(-5/8).
    assert hm[0, 0, 3, 3].item() == pytest.approx(math.exp(-5 / 8), rel=1e-6)


def test_gaussian_rejects_bad_sigma():
    with pytest.raises(ValueError):
        gaussian_heatmaps(torch.zeros(1, 1, 2), (4, 4), sigma=0.0)


def test_delta_decodes_to_cell_centre():
    h, w = 7, 9
    for i, j in [(0, 0), (3, 5), (6, 8), (2, 0)]:
        logits = torch.full((1, 1, h, w), -1e4)
        logits[0, 0, i, j] = 0.0
        xy = soft_argmax(logits)[0, 0]
        expected = torch.tensor([(j + 0.5) / w, (i + 0.5) / h])
        torch.testing.assert_close(xy, expected, rtol=0, atol=1e-7)


def test_flat_map_decodes_to_centre():
    # The documented bias: no information -> the map centre.
    xy = soft_argmax(torch.zeros(2, 3, 5, 8))
    torch.testing.assert_close(xy, torch.full((2, 3, 2), 0.5))


@pytest.mark.parametrize("size,sigma", [((64, 64), 2.0), ((32, 48), 1.5), ((16, 16), 1.0)])
def test_round_trip_log_heatmap(size, sigma):
    gen = torch.Generator().manual_seed(0)
    h, w = size
    # Keep landmarks 4 sigma (in cells) from every border so the Gaussian is not truncated.
    lo = torch.tensor([4 * sigma / w, 4 * sigma / h])
    coords = lo + torch.rand(3, 20, 2, generator=gen) * (1 - 2 * lo)
    hm = gaussian_heatmaps(coords, size, sigma)
    # softmax(log(hm)) = hm / sum(hm): the expectation of the sampled Gaussian.
    decoded = soft_argmax(torch.log(hm + 1e-12))
    assert (decoded - coords).abs().max().item() < 1e-3


def test_round_trip_large_beta():
    gen = torch.Generator().manual_seed(1)
    h = w = 32
    sigma = 2.0
    lo = 4 * sigma / w
    coords = lo + torch.rand(2, 10, 2, generator=gen) * (1 - 2 * lo)
    hm = gaussian_heatmaps(coords, (h, w), sigma)
    # A large beta sharpens to the peak cell: within half a cell, not sub-cell exact.
    decoded = soft_argmax(hm, beta=1e3)
    assert (decoded - coords).abs().max().item() <= 0.5 / w + 1e-6


def test_soft_argmax_is_differentiable_and_float32():
    logits = torch.randn(2, 4, 6, 6, dtype=torch.float16).float().requires_grad_()
    xy = soft_argmax(logits)
    assert xy.shape == (2, 4, 2) and xy.dtype == torch.float32
    xy.sum().backward()
    assert torch.isfinite(logits.grad).all()
    assert soft_argmax(logits.detach().half()).dtype == torch.float32
