"""Landmark models: timm backbones, regression/heatmap heads, heatmap encode/decode.

All coordinates are normalised crop coordinates in [0, 1], (B, K, 2) as (x, y);
see `facealign.models.heatmap` for the exact convention.
"""
from .backbone import (
    PACKAGED_WEIGHTS,
    STUDY_BACKBONES,
    Backbone,
    build_backbone,
    load_efficientnet_lite0_imagenet,
    load_weights,
)
from .heads import HEADS, HeatmapHead, LandmarkModel, RegressionHead, build_model
from .heatmap import cell_centres, gaussian_heatmaps, soft_argmax

__all__ = [
    "PACKAGED_WEIGHTS",
    "STUDY_BACKBONES",
    "Backbone",
    "build_backbone",
    "load_efficientnet_lite0_imagenet",
    "load_weights",
    "HEADS",
    "HeatmapHead",
    "LandmarkModel",
    "RegressionHead",
    "build_model",
    "cell_centres",
    "gaussian_heatmaps",
    "soft_argmax",
]
