"""Landmark heads and the backbone + head model.

Two heads, both sized from the backbone's `channels` (timm feature_info):

* "regression": global average pool -> MLP -> (B, K, 2) coordinates.
* "heatmap": small conv stack -> (B, K, h, w) logits at the feature map's
  resolution (h = H / stride); coordinates come from `soft_argmax`.

Every head has `kind` (its name in `HEADS`, which losses check against) and
`outputs(raw) -> dict`, so `LandmarkModel` needs no per-head branching.
"""
from __future__ import annotations

import os
from typing import Callable

from torch import Tensor, nn

from .backbone import Backbone, build_backbone
from .facemesh import MeshHead
from .heatmap import soft_argmax

__all__ = ["RegressionHead", "HeatmapHead", "FPNHeatmapHead", "FPN4HeatmapHead", "HEADS", "LandmarkModel", "build_model"]


class RegressionHead(nn.Module):
    """Direct coordinate regression.

    forward(features (B, C, h, w)) -> (B, K, 2) RAW values interpreted as normalised
    (x, y) crop coordinates (see `facealign.models.heatmap` for the convention).
    No sigmoid: it would squash gradients near the crop border and forbid the
    slightly-outside-the-crop landmarks that real faces have (e.g. a cut-off jaw).
    """

    kind = "regression"

    def __init__(self, in_channels: int, num_landmarks: int = 68, hidden: int = 512,
                 dropout: float = 0.2):
        super().__init__()
        self.num_landmarks = num_landmarks
        self.in_channels = in_channels
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.mlp = nn.Sequential(
            nn.Flatten(1),
            nn.Linear(in_channels, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_landmarks * 2),
        )
        # Start every prediction near the crop centre (0.5, 0.5) instead of around 0:
        # the first losses are then a face-sized error, not a crop-sized one.
        last = self.mlp[-1]
        nn.init.zeros_(last.bias)
        last.bias.data.add_(0.5)
        last.weight.data.mul_(0.1)

    def forward(self, features: Tensor) -> Tensor:
        return self.mlp(self.pool(features)).view(-1, self.num_landmarks, 2)

    def outputs(self, raw: Tensor) -> dict[str, Tensor]:
        return {"coords": raw}


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    # bias=False: BatchNorm's shift makes a conv bias redundant.
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class HeatmapHead(nn.Module):
    """Per-landmark heatmap logits at the feature map's resolution.

    forward(features (B, C, h, w)) -> (B, K, h, w) logits (unbounded; sigmoid gives
    the [0, 1] heatmap that Gaussian targets describe). One cell covers `stride`
    input pixels; `outputs` adds (B, K, 2) normalised coords via soft_argmax(beta).
    """

    kind = "heatmap"

    def __init__(self, in_channels: int, num_landmarks: int = 68, mid: int = 256,
                 beta: float = 1.0):
        super().__init__()
        self.num_landmarks = num_landmarks
        self.in_channels = in_channels
        self.beta = beta
        self.body = nn.Sequential(_conv_bn_relu(in_channels, mid), _conv_bn_relu(mid, mid))
        self.out = nn.Conv2d(mid, num_landmarks, 1)
        # Background prior: sigmoid(-2.19) ~= 0.1 (Lin et al. 2017). Almost every target
        # cell is ~0, so starting at 0.5 would make the first BCE/focal steps spend
        # themselves on the background. soft_argmax is unaffected (shift-invariant).
        nn.init.constant_(self.out.bias, -2.19)

    def forward(self, features: Tensor) -> Tensor:
        return self.out(self.body(features))

    def outputs(self, raw: Tensor) -> dict[str, Tensor]:
        return {"heatmaps": raw, "coords": soft_argmax(raw, self.beta)}


class FPNHeatmapHead(nn.Module):
    """A finer heatmap head: fuses three backbone levels (strides 8, 16, 32) top-down.

    forward([f8, f16, f32]) -> (B, K, H/8, W/8) logits: 1x1 lateral convs to `width`
    channels, nearest upsampling and addition (a light FPN, Lin et al. 2017), two
    [conv3x3 -> BN -> ReLU] blocks, then a 1x1 conv to K maps. At 128 px the maps are
    16x16 instead of the study head's 4x4. Coordinates: soft_argmax(beta).
    """

    kind = "heatmap"
    levels = (-3, -2, -1)  # the backbone feature indices this head consumes

    def __init__(self, in_channels: list[int], num_landmarks: int = 68, width: int = 96, beta: float = 1.0):
        super().__init__()
        self.num_landmarks = num_landmarks
        self.beta = beta
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in in_channels)
        self.body = nn.Sequential(_conv_bn_relu(width, width), _conv_bn_relu(width, width))
        self.out = nn.Conv2d(width, num_landmarks, 1)
        nn.init.constant_(self.out.bias, -2.19)

    def forward(self, features: list[Tensor]) -> Tensor:
        x = self.lateral[-1](features[-1])
        for lat, f in zip(reversed(self.lateral[:-1]), reversed(features[:-1])):
            x = nn.functional.interpolate(x, size=f.shape[-2:], mode="nearest") + lat(f)
        return self.out(self.body(x))

    def outputs(self, raw: Tensor) -> dict[str, Tensor]:
        return {"heatmaps": raw, "coords": soft_argmax(raw, self.beta)}


class FPN4HeatmapHead(FPNHeatmapHead):
    """The `fpn` head continued to stride 4: (B, K, H/4, W/4) logits (40x40 at 160 px).

    The stride-8 fusion and its two 3x3 blocks are the `fpn` head's; their output is upsampled x2, the
    stride-4 level added through a 1x1 lateral conv, then one depthwise 3x3 -> BN -> ReLU and a 1x1 conv
    to K maps. The stride-4 part is kept light (depthwise, no 3x3 at full width): at 160 px it adds about
    12 MMAC to the `fpn` head's 74, against 4x that head's cost for its two 3x3 blocks at stride 4.
    """

    levels = (-4, -3, -2, -1)

    def __init__(self, in_channels: list[int], num_landmarks: int = 68, width: int = 96, beta: float = 1.0):
        super().__init__(in_channels[1:], num_landmarks, width, beta)
        self.lateral4 = nn.Conv2d(in_channels[0], width, 1)
        self.fine = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, groups=width, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU(inplace=True))

    def forward(self, features: list[Tensor]) -> Tensor:
        f4, rest = features[0], features[1:]
        x = self.lateral[-1](rest[-1])
        for lat, f in zip(reversed(self.lateral[:-1]), reversed(rest[:-1])):
            x = nn.functional.interpolate(x, size=f.shape[-2:], mode="nearest") + lat(f)
        x = self.body(x)
        x = nn.functional.interpolate(x, size=f4.shape[-2:], mode="bilinear", align_corners=False) + self.lateral4(f4)
        return self.out(self.fine(x))


class FPN16HeatmapHead(FPNHeatmapHead):
    """The `fpn` fusion on the strides 4, 8 and 16 of a backbone PRUNED after stride 16, narrow (32 channels):
    (B, K, H/4, W/4) logits (24x24 at 96 px). For the `fast` model: the stride-32 stages, most of an
    EfficientNet's multiply-adds at these sizes, are not built at all."""

    levels = (1, 2, 3)  # timm feature indices: strides 4, 8, 16 for the EfficientNet family
    prune = True

    def __init__(self, in_channels: list[int], num_landmarks: int = 68, width: int = 32, beta: float = 1.0):
        super().__init__(in_channels, num_landmarks, width, beta)


# Head name -> factory(in_channels, num_landmarks, **kwargs). A head with a `levels`
# attribute gets those backbone levels and a list of their channel counts.
HEADS: dict[str, Callable[..., nn.Module]] = {
    "regression": RegressionHead,
    "heatmap": HeatmapHead,
    "fpn": FPNHeatmapHead,
    "fpn4": FPN4HeatmapHead,
    "fpn16": FPN16HeatmapHead,
    "mesh": MeshHead,  # mediapipe_facemesh only: the original mesh branch + a learned mesh -> landmark map
}


class LandmarkModel(nn.Module):
    """Backbone + head: images -> landmark outputs, nothing else.

    forward(images (B, 3, H, W), normalised as the data pipeline does, ImageNet
    mean/std by default) -> dict:
        "coords": (B, K, 2) normalised (x, y) in crop units, always;
        "heatmaps": (B, K, H/stride, W/stride) logits, heatmap head only.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    @property
    def head_kind(self) -> str:
        return self.head.kind

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        return self.head.outputs(self.head(self.backbone(images)))


def build_model(
    backbone: str = "efficientnet_b0",
    head: str = "heatmap",
    num_landmarks: int = 68,
    init: str | os.PathLike | None = None,
    feature_index: int = -1,
    **head_kwargs,
) -> LandmarkModel:
    """Build a `LandmarkModel`.

    Args:
        backbone: timm model name (see backbone.STUDY_BACKBONES).
        head: a key of HEADS ("heatmap" or "regression").
        num_landmarks: K.
        init: backbone weights, see `build_backbone` (None = random init).
        feature_index: which timm feature map feeds the head (-1 = last).
        **head_kwargs: passed to the head (hidden/dropout, or mid/beta).
    """
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; valid: {', '.join(sorted(HEADS))}")
    factory = HEADS[head]
    levels = getattr(factory, "levels", None)
    body: Backbone = build_backbone(backbone, feature_index=levels or feature_index, init=init,
                                    prune=getattr(factory, "prune", False))
    # Heads size themselves from timm's feature_info, via Backbone.channels.
    in_channels = body.level_channels if levels else body.channels
    head_module = factory(in_channels, num_landmarks, **head_kwargs)
    if init is not None and hasattr(head_module, "load_init"):
        head_module.load_init(init)  # a head that reuses pretrained layers (MeshHead) loads them too
    return LandmarkModel(body, head_module)
