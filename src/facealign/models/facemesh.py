"""MediaPipe's face-mesh landmark network rebuilt in PyTorch, and its trunk as a landmark backbone.

The network (`face_landmark.tflite`, 192x192 RGB in [0, 1] -> 468 mesh points + a face-presence logit) is a
stack of residual blocks: depthwise 3x3 -> pointwise 1x1, added to the block input (max-pooled and
zero-padded in channels when the block halves the resolution), then PReLU. Its weights are read from the
tflite file by `facealign.models.facemesh_tflite`; the architecture is written out here, so a trained model
built on this backbone loads without that file.

Padding follows TensorFlow's SAME rule (stride-2 3x3 convs on an even side pad one pixel at the bottom and
right only), so the rebuilt network reproduces the original's numbers, not just its shapes.

Levels (outputs of `FaceMeshNet.features`), at a 192-px input:
    0: stride 2, 16 ch, 96x96    1: stride 4, 32 ch, 48x48    2: stride 8, 64 ch, 24x24
    3: stride 16, 128 ch, 12x12  4: stride 32, 128 ch, 6x6
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FaceMeshNet", "FaceMeshBackbone", "MeshHead", "LEVEL_CHANNELS", "LEVEL_STRIDES", "MESH_POINTS",
           "INPUT_SIZE", "MESH_VERTEX_OF_68"]

INPUT_SIZE = 192  # the original network's input side, pixels
MESH_POINTS = 468
LEVEL_CHANNELS = (16, 32, 64, 128, 128)
LEVEL_STRIDES = (2, 4, 8, 16, 32)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _tf(base: str, i: int) -> str:
    """Keras' layer names: the first layer of a kind has no suffix ("conv2d"), later ones "_1", "_2", ..."""
    return base if i == 0 else f"{base}_{i}"


def _same_pad(x: Tensor, k: int, stride: int) -> Tensor:
    """TensorFlow SAME padding for a k x k window: the odd pixel goes to the bottom/right."""
    pads = []
    for side in (int(x.shape[-1]), int(x.shape[-2])):  # F.pad wants (left, right, top, bottom)
        total = max((math.ceil(side / stride) - 1) * stride + k - side, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


class TFConv(nn.Conv2d):
    """A k x k conv with TF SAME padding (`same=True`) or VALID; `tf_name` is its layer name in the tflite file."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, same: bool = True,
                 tf_name: str = ""):
        super().__init__(cin, cout, k, stride, padding=0, groups=groups, bias=True)
        self.same, self.tf_name = same, tf_name

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(_same_pad(x, self.kernel_size[0], self.stride[0]) if self.same else x)


class TFPReLU(nn.PReLU):
    """Per-channel PReLU; `tf_name` is its layer name in the tflite file."""

    def __init__(self, channels: int, tf_name: str):
        super().__init__(channels)
        self.tf_name = tf_name


class Residual(nn.Module):
    """PReLU(x' + pointwise(depthwise(x))), x' = x, or at stride 2 max-pool(x) zero-padded to `cout` channels.

    forward((B, cin, H, W)) -> (B, cout, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(self, cin: int, cout: int, stride: int, names: tuple[str, str, str]):
        super().__init__()
        dw, pw, act = names
        self.depthwise = TFConv(cin, cin, 3, stride, groups=cin, tf_name=dw)
        self.pointwise = TFConv(cin, cout, 1, tf_name=pw)
        self.act = TFPReLU(cout, act)
        self.stride, self.extra = stride, cout - cin

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        if self.stride == 2:
            # ceil_mode: an odd side (non-192 inputs) keeps the depthwise branch's ceil(side / 2)
            shortcut = F.max_pool2d(x, 2, 2, ceil_mode=True)
        if self.extra:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra))  # the tflite graph's "channel_padding"
        return self.act(shortcut + self.pointwise(self.depthwise(x)))


def _trunk_levels() -> list[nn.Sequential]:
    """The five trunk levels. Main-path block j uses the tflite layers depthwise_conv2d_j, conv2d_{j+1},
    p_re_lu_{j+1} (the stem is conv2d + p_re_lu)."""
    levels = [[TFConv(3, 16, 3, 2, tf_name="conv2d"), TFPReLU(16, "p_re_lu")]]
    j, cin = 0, 16
    for level, cout in enumerate(LEVEL_CHANNELS):
        blocks = levels[0] if level == 0 else []
        for b in range(2 if level == 0 else 3):
            stride = 2 if (level > 0 and b == 0) else 1
            blocks.append(Residual(cin, cout, stride, (_tf("depthwise_conv2d", j), _tf("conv2d", j + 1),
                                                       _tf("p_re_lu", j + 1))))
            j, cin = j + 1, cout
        if level > 0:
            levels.append(blocks)
    return [nn.Sequential(*blocks) for blocks in levels]


def _branch(first: tuple[str, str, str], second: tuple[str, str, str], third: tuple[str, str, str] | None,
            reduce: tuple[str, str], block32: tuple[str, str, str], out: str, out_channels: int) -> nn.Sequential:
    """A stride-64 output branch from level 4: residual block(s) at 3x3, 1x1 to 32 ch + PReLU, a 32-ch block,
    then a 3x3 VALID conv to (B, out_channels, 1, 1)."""
    blocks = [Residual(128, 128, 2, first)] + [Residual(128, 128, 1, n) for n in (second, third) if n]
    return nn.Sequential(*blocks, TFConv(128, 32, 1, tf_name=reduce[0]), TFPReLU(32, reduce[1]),
                         Residual(32, 32, 1, block32), TFConv(32, out_channels, 3, 3, same=False, tf_name=out))


def mesh_branch() -> nn.Sequential:
    """The original network's mesh output branch: level 4 (B, 128, 6, 6) -> (B, 1404, 1, 1) = 468 x (x, y, z)."""
    return _branch(("depthwise_conv2d_14", "conv2d_15", "p_re_lu_15"), ("depthwise_conv2d_15", "conv2d_16", "p_re_lu_16"),
                   ("depthwise_conv2d_16", "conv2d_17", "p_re_lu_17"), ("conv2d_18", "p_re_lu_18"),
                   ("depthwise_conv2d_17", "conv2d_19", "p_re_lu_19"), "conv2d_20", MESH_POINTS * 3)


class FaceMeshNet(nn.Module):
    """The face-mesh network (or its first `levels` trunk levels when `branches=False`).

    forward(images (B, 3, 192, 192) RGB in [0, 1]) -> (mesh (B, 468, 3): x, y in pixels of the 192-px crop and
    z in the same units, relative depth; face (B,): face-presence logit). `features(images)` -> the list of
    level maps (see module doc).
    """

    def __init__(self, levels: int = len(LEVEL_CHANNELS), branches: bool = True):
        super().__init__()
        if not 1 <= levels <= len(LEVEL_CHANNELS):
            raise ValueError(f"levels must be 1..{len(LEVEL_CHANNELS)}, got {levels}")
        if branches and levels != len(LEVEL_CHANNELS):
            raise ValueError("the mesh and face branches start from the last level: build all levels")
        self.levels = nn.ModuleList(_trunk_levels()[:levels])
        if branches:
            self.mesh = mesh_branch()
            self.face = _branch(("depthwise_conv2d_22", "conv2d_27", "p_re_lu_25"), None, None,
                                ("conv2d_28", "p_re_lu_26"), ("depthwise_conv2d_23", "conv2d_29", "p_re_lu_27"),
                                "conv2d_30", 1)

    def features(self, images: Tensor) -> list[Tensor]:
        out, x = [], images
        for level in self.levels:
            x = level(x)
            out.append(x)
        return out

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        last = self.features(images)[-1]
        return self.mesh(last).reshape(-1, MESH_POINTS, 3), self.face(last).reshape(-1)


class FaceMeshBackbone(nn.Module):
    """The face-mesh trunk as a landmark backbone, with the attributes heads read from timm backbones.

    forward(images (B, 3, H, W) ImageNet-normalised, as the whole pipeline feeds every model) -> the map of
    `feature_index` (B, channels, H / stride, W / stride), or a list of maps (shallow to deep) for a tuple of
    indices. Indices address levels 0..4 (strides 2..32, see module doc); negative ones count from 4.

    The original weights expect RGB in [0, 1]: the first step undoes the ImageNet normalisation, inside the
    network, so training, torch inference and the ONNX graph all feed it identically. Levels deeper than the
    deepest requested one are not built (no head would read them; `prune` is accepted for the interface).
    """

    def __init__(self, name: str = "mediapipe_facemesh", feature_index: int | tuple[int, ...] = -1,
                 prune: bool = False):
        super().__init__()
        self.multi = isinstance(feature_index, (tuple, list))
        n = len(LEVEL_CHANNELS)
        requested = tuple(feature_index) if self.multi else (feature_index,)
        bad = [i for i in requested if not -n <= i < n]
        if bad:
            raise ValueError(f"feature_index {bad[0]} out of range for {name!r} (levels 0..{n - 1})")
        self.indices = tuple(i % n for i in requested)
        self.body = FaceMeshNet(levels=max(self.indices) + 1, branches=False)
        self.name, self.feature_index = name, feature_index
        self.level_channels = [LEVEL_CHANNELS[i] for i in self.indices]
        self.level_strides = [LEVEL_STRIDES[i] for i in self.indices]
        self.channels, self.stride = self.level_channels[-1], self.level_strides[-1]
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD  # what this backbone's input is normalised with
        # Buffers, not parameters: fixed, and saved with the model so an exported graph carries them.
        self.register_buffer("in_scale", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_shift", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor | list[Tensor]:
        feats = self.body.features(images * self.in_scale + self.in_shift)  # back to RGB in [0, 1]
        picked = [feats[i] for i in self.indices]
        return picked if self.multi else picked[-1]


# For each 300-W landmark (0..67), the face-mesh vertex closest to it on average, in the training split's
# detector-box crops at context 0.4 (`python benchmarks/mesh_vertex_map.py --data <300-W root>`).
# It only initialises `MeshHead`'s map, which training then learns.
MESH_VERTEX_OF_68 = (
    127, 227, 177, 58, 172, 150, 149, 148, 152, 377, 378, 365, 397, 435, 401, 447, 356,  # jaw 0-16
    70, 63, 52, 65, 55, 336, 296, 334, 293, 300,  # brows 17-26
    168, 197, 5, 4, 240, 97, 164, 326, 460,  # nose 27-35
    7, 159, 158, 133, 153, 144, 382, 385, 387, 263, 373, 374,  # eyes 36-47
    61, 80, 72, 11, 302, 304, 291, 406, 314, 17, 84, 181, 77, 82, 13, 268, 375, 316, 15, 86,  # mouth 48-67
)


class MeshHead(nn.Module):
    """MediaPipe's own mesh branch on the trunk's last level, then a learned linear map from mesh to landmarks.

    forward(features (B, 128, h, w): `mediapipe_facemesh` level 4, 6x6 at 192 px) -> (B, K, 2) normalised
    (x, y) crop coordinates. Landmark k = sum over vertices v of `mix[v, k]` * mesh point v (x and y share the
    weight, so the map commutes with translation and scale when a column sums to 1) + `bias[k]`; `mix` is
    stored multiplied by 468 (see `__init__`).

    Unlike the `fpn`/`regression` heads, which start fresh on the trunk, this head keeps the face-pretrained
    part of the original network that predicts points: with `init="mediapipe"` its branch gets the tflite
    weights (`load_init`), and `mix` starts as the one-hot `MESH_VERTEX_OF_68` table (for another K, as the
    mean of all vertices), so step 0 already outputs face landmarks. The original was trained at 192 px;
    other input sizes average the branch's output map.
    """

    kind = "regression"

    def __init__(self, in_channels: int, num_landmarks: int = 68):
        super().__init__()
        if in_channels != LEVEL_CHANNELS[-1]:
            raise ValueError(f"the mesh head reads mediapipe_facemesh's last level ({LEVEL_CHANNELS[-1]} channels), "
                             f"got a {in_channels}-channel feature map: use --backbone mediapipe_facemesh")
        self.num_landmarks = num_landmarks
        self.mesh = mesh_branch()
        mix = torch.full((MESH_POINTS, num_landmarks), 1.0 / MESH_POINTS)
        if num_landmarks == len(MESH_VERTEX_OF_68):
            mix.zero_()
            mix[list(MESH_VERTEX_OF_68), range(num_landmarks)] = 1.0
        # Stored x MESH_POINTS: Adam moves every element by about the learning rate, so a landmark that sums 468
        # weights would otherwise move hundreds of times further per step than through `bias`.
        self.mix = nn.Parameter(mix * MESH_POINTS)
        self.bias = nn.Parameter(torch.zeros(num_landmarks, 2))

    def load_init(self, init) -> None:
        """Give the branch the original weights for `init="mediapipe"`; any other init leaves it as built."""
        if init == "mediapipe":
            from .facemesh_tflite import load_facemesh_mediapipe  # reads the tflite file only when asked
            load_facemesh_mediapipe(self.mesh)

    def pretrained_parameters(self) -> list[nn.Parameter]:
        """The parameters that come from the original network (trained at the backbone's rate)."""
        return list(self.mesh.parameters())

    def no_decay_parameters(self) -> list[nn.Parameter]:
        """The map and its bias: weight decay would pull every landmark towards `bias` (see `param_groups`)."""
        return [self.mix, self.bias]

    def probe_inputs(self, features: Tensor) -> Tensor:
        """(B, 468, 2): the mesh's (x, y) points in crop units, the inputs of the linear map."""
        out = F.adaptive_avg_pool2d(self.mesh(features), 1).reshape(-1, MESH_POINTS, 3)
        return out[..., :2] / INPUT_SIZE  # crop pixels of the original 192-px input -> [0, 1]

    def forward(self, features: Tensor) -> Tensor:
        return torch.einsum("bvc,vk->bkc", self.probe_inputs(features), self.mix / MESH_POINTS) + self.bias

    @torch.no_grad()
    def fit_linear(self, points: Tensor, targets: Tensor, ridge: float) -> dict:
        """Set `mix` and `bias` to the ridge-regression fit of targets (N, K, 2) on mesh points (N, 468, 2).

        Each (face, axis) pair is one row: 468 vertex coordinates on that axis plus one intercept per axis
        (not penalised), so x and y share the vertex weights as in `forward`. Returns a summary."""
        n = points.shape[0]
        design = points.double().permute(0, 2, 1).reshape(n * 2, MESH_POINTS)
        axis = torch.eye(2, dtype=torch.float64).repeat(n, 1)  # (2n, 2): the per-axis intercepts
        a = torch.cat([design, axis], 1)
        b = targets.double().permute(0, 2, 1).reshape(n * 2, -1)
        penalty = torch.zeros(MESH_POINTS + 2, dtype=torch.float64)
        penalty[:MESH_POINTS] = ridge
        w = torch.linalg.solve(a.T @ a + torch.diag(penalty), a.T @ b)
        self.mix.copy_((w[:MESH_POINTS] * MESH_POINTS).to(self.mix.dtype))
        self.bias.copy_(w[MESH_POINTS:].T.to(self.bias.dtype))
        rms = float(((a @ w - b) ** 2).mean().sqrt())
        return {"samples": n, "ridge": ridge, "rms_residual": rms}

    def outputs(self, raw: Tensor) -> dict[str, Tensor]:
        return {"coords": raw}
