"""Every loss against values worked out by hand on tiny tensors."""
import math

import pytest
import torch

from facealign.training.losses import (
    LOSSES,
    adaptive_wing_loss,
    build_loss,
    compute_loss,
    coord_mse,
    heatmap_bce,
    heatmap_focal,
    heatmap_mse,
    loss_names,
    wing_loss,
)
from facealign.models.heatmap import gaussian_heatmaps

LN3 = math.log(3.0)  # logit of p = 0.75


def t(*values):
    return torch.tensor(values, dtype=torch.float32)


# ------------------------------------------------------------------ regression


def test_coord_mse():
    # errors (0.1, -0.2): (0.01 + 0.04) / 2 = 0.025
    pred = t(0.5, 0.5).view(1, 1, 2)
    target = t(0.6, 0.3).view(1, 1, 2)
    assert coord_mse(pred, target).item() == pytest.approx(0.025, rel=1e-5)


def test_wing_both_branches():
    # scale 64: errors 1/64 and 32/64 of the crop -> x = 1 and x = 32 units.
    pred = t(1 / 64, 0.5).view(1, 1, 2)
    target = torch.zeros(1, 1, 2)
    # x = 1 < w = 10:  10 ln(1 + 1/2) = 10 * 0.4054651 = 4.054651
    # x = 32 >= 10:    C = 10 - 10 ln(1 + 10/2) = 10 - 17.917595 = -7.917595
    #                  32 - C = 39.917595
    # mean = (4.054651 + 39.917595) / 2 = 21.986123
    assert wing_loss(pred, target).item() == pytest.approx(21.986123, rel=1e-5)
    assert wing_loss(pred[..., :1], target[..., :1]).item() == pytest.approx(4.054651, rel=1e-5)
    assert wing_loss(pred[..., 1:], target[..., 1:]).item() == pytest.approx(39.917595, rel=1e-5)


def test_wing_continuous_at_w():
    # At x = w = 10 both pieces give 10 ln 6 = 17.917595.
    below = wing_loss(t(9.999 / 64).view(1, 1, 1), torch.zeros(1, 1, 1)).item()
    above = wing_loss(t(10.0 / 64).view(1, 1, 1), torch.zeros(1, 1, 1)).item()
    assert below == pytest.approx(17.9176, abs=2e-3)
    assert above == pytest.approx(17.917595, rel=1e-5)


def test_wing_zero_error():
    assert wing_loss(torch.full((2, 3, 2), 0.3), torch.full((2, 3, 2), 0.3)).item() == 0.0


def test_awing_both_branches():
    # Exponent alpha - y = 2.1 - 1 = 1.1; theta/epsilon = 0.5.
    # 0.5^1.1 = 0.4665165, 0.5^0.1 = 0.9330330
    # A = 14 / (1 + 0.4665165) * 1.1 * 0.9330330 / 1 = 14 * 0.6818880 * 1.1 * 0.9330330 = 9.797850
    # C = 0.5 * A - 14 ln(1.4665165) = 4.898925 - 14 * 0.3828899 = 4.898925 - 5.360458 = -0.461533
    # x = 0.25 unit (error 1/256 of the crop) < theta:
    #     14 ln(1 + 0.25^1.1) = 14 ln(1.2176376) = 14 * 0.1969126 = 2.756777
    # x = 2 units (error 1/32) >= theta: 2A - C = 19.595699 + 0.461533 = 20.057232
    pred = t(1 / 256, 1 / 32).view(1, 1, 2)
    target = torch.zeros(1, 1, 2)
    assert adaptive_wing_loss(pred[..., :1], target[..., :1]).item() == pytest.approx(2.756777, rel=1e-5)
    assert adaptive_wing_loss(pred[..., 1:], target[..., 1:]).item() == pytest.approx(20.057232, rel=1e-5)
    # mean of the two = (2.756777 + 20.057232) / 2 = 11.407005
    assert adaptive_wing_loss(pred, target).item() == pytest.approx(11.407005, rel=1e-5)


def test_awing_continuous_and_finite_gradient_at_zero():
    # At x = theta = 0.5: 14 ln(1 + 0.4665165) = 5.360458 = 0.5 A - C.
    val = adaptive_wing_loss(t(0.5 / 64).view(1, 1, 1), torch.zeros(1, 1, 1)).item()
    assert val == pytest.approx(5.360458, rel=1e-5)
    pred = torch.zeros(1, 1, 2, requires_grad=True)
    adaptive_wing_loss(pred, torch.zeros(1, 1, 2)).backward()
    assert torch.isfinite(pred.grad).all()


# --------------------------------------------------------------------- heatmap


def test_heatmap_mse():
    # sigmoid(0) = 0.5 vs 1 -> 0.25; sigmoid(ln 3) = 0.75 vs 0 -> 0.5625; mean = 0.40625
    logits = t(0.0, LN3).view(1, 1, 1, 2)
    target = t(1.0, 0.0).view(1, 1, 1, 2)
    assert heatmap_mse(logits, target).item() == pytest.approx(0.40625, rel=1e-5)


def test_heatmap_bce_one_element():
    # logit 0 (p = 0.5), y = 1: -ln 0.5 = 0.693147
    assert heatmap_bce(t(0.0).view(1, 1, 1, 1), t(1.0).view(1, 1, 1, 1)).item() == pytest.approx(
        0.693147, rel=1e-5
    )
    # p = 0.75, soft y = 0.5: -(0.5 ln 0.75 + 0.5 ln 0.25) = 0.5 (0.287682 + 1.386294) = 0.836988
    assert heatmap_bce(t(LN3).view(1, 1, 1, 1), t(0.5).view(1, 1, 1, 1)).item() == pytest.approx(
        0.836988, rel=1e-5
    )


@pytest.mark.parametrize(
    "y,expected",
    [
        # y = 1: (1 - 0.75)^2 * -ln 0.75 = 0.0625 * 0.287682 = 0.017980; / max(1, 1)
        (1.0, 0.017980),
        # y = 0: 0.75^2 * -ln 0.25 = 0.5625 * 1.386294 = 0.779791; / max(0, 1) = 1
        (0.0, 0.779791),
        # y = 0.5: |0.5 - 0.75|^2 * 0.836988 = 0.0625 * 0.836988 = 0.052312; / max(0.5, 1) = 1
        (0.5, 0.052312),
    ],
)
def test_heatmap_focal_one_element(y, expected):
    got = heatmap_focal(t(LN3).view(1, 1, 1, 1), t(y).view(1, 1, 1, 1)).item()
    assert got == pytest.approx(expected, rel=1e-4)


def test_heatmap_focal_normalised_by_target_mass():
    # Two cells, targets (1, 1): sum of per-cell terms (2 * 0.017980) / 2 = 0.017980
    logits = t(LN3, LN3).view(1, 1, 1, 2)
    assert heatmap_focal(logits, torch.ones(1, 1, 1, 2)).item() == pytest.approx(0.017980, rel=1e-4)


# -------------------------------------------------------------------- registry


def test_registry_contents():
    assert loss_names("heatmap") == ["bce", "focal", "integral", "integral_bce", "mse"]
    assert loss_names("regression") == ["awing", "mse", "wing"]
    assert len(LOSSES) == 8
    spec = build_loss("regression", "wing")
    assert spec.head == "regression" and spec.fn is wing_loss and spec.key == "regression-wing"


@pytest.mark.parametrize("head,name", [("heatmap", "wing"), ("heatmap", "awing"), ("regression", "bce"),
                                       ("regression", "focal")])
def test_mismatched_head_and_loss_rejected(head, name):
    with pytest.raises(ValueError) as err:
        build_loss(head, name)
    for valid in loss_names(head):
        assert valid in str(err.value)


def test_unknown_head_rejected():
    with pytest.raises(ValueError, match="heatmap, regression"):
        build_loss("transformer", "mse")


def test_compute_loss_regression():
    coords = torch.full((1, 2, 2), 0.5)
    outputs = {"coords": coords + 0.1}
    # every error 0.1 -> mse 0.01
    assert compute_loss(build_loss("regression", "mse"), outputs, coords).item() == pytest.approx(0.01)


def test_compute_loss_heatmap_builds_targets_at_logit_resolution():
    coords = torch.tensor([[[0.3, 0.6]]])
    target = gaussian_heatmaps(coords, (5, 7), 1.0)
    # Logits whose sigmoid equals the target exactly give zero MSE only at that resolution.
    logits = torch.logit(target.clamp(1e-6, 1 - 1e-6))
    outputs = {"heatmaps": logits, "coords": coords}
    val = compute_loss(build_loss("heatmap", "mse"), outputs, coords, sigma=1.0)
    assert val.item() < 1e-10
    with pytest.raises(ValueError, match="sigma"):
        compute_loss(build_loss("heatmap", "bce"), outputs, coords)


def test_compute_loss_rejects_outputs_of_the_other_head():
    coords = torch.full((1, 1, 2), 0.5)
    with pytest.raises(ValueError, match="regression head"):
        compute_loss(build_loss("heatmap", "bce"), {"coords": coords}, coords, sigma=1.0)
    with pytest.raises(ValueError, match="heatmap head"):
        compute_loss(build_loss("regression", "wing"),
                     {"coords": coords, "heatmaps": torch.zeros(1, 1, 2, 2)}, coords)


def test_integral_bce_combines_wing_and_bce_by_hand():
    import math

    import torch

    from facealign.training.losses import build_loss, compute_loss
    spec = build_loss("heatmap", "integral_bce")
    coords = torch.full((1, 1, 2), 0.5)
    # logits 0 everywhere: BCE per cell = ln 2 whatever the target; coords off by 1/64 in x only
    outputs = {"coords": coords + torch.tensor([[[1 / 64, 0.0]]]), "heatmaps": torch.zeros(1, 1, 4, 4)}
    wing = (10 * math.log1p(1 / 2) + 0.0) / 2  # mean over x (error 1 unit) and y (0)
    expected = wing + 10 * math.log(2)
    assert abs(compute_loss(spec, outputs, coords, sigma=1.0).item() - expected) < 1e-4
