"""Landmark models: timm backbones (and MediaPipe's face-mesh trunk), regression/heatmap heads, heatmap encode/decode.

All coordinates are normalised crop coordinates in [0, 1], (B, K, 2) as (x, y);
see `facealign.models.heatmap` for the exact convention.

Names load on first use, so `facealign.models.weights` (packaged model files) imports no torch or timm.
"""
from facealign._lazy import lazy_attributes
_LAZY = {
    **dict.fromkeys(("PACKAGED_WEIGHTS", "NON_TIMM_BACKBONES", "STUDY_BACKBONES", "Backbone", "build_backbone",
                     "load_efficientnet_lite_imagenet", "load_weights"), "facealign.models.backbone"),
    **dict.fromkeys(("HEADS", "HeatmapHead", "LandmarkModel", "RegressionHead", "build_model"),
                    "facealign.models.heads"),
    **dict.fromkeys(("FaceMeshBackbone", "FaceMeshNet"), "facealign.models.facemesh"),
    **dict.fromkeys(("cell_centres", "gaussian_heatmaps", "soft_argmax"), "facealign.models.heatmap"),
}
__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_attributes("facealign.models", _LAZY, globals())
