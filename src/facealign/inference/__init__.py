"""Inference: crop -> network -> image pixels, behind named backends, and the public `FaceAligner`.

Layering: this package sits on `facealign.data` and `facealign.models` and imports nothing above it
(training, evaluation, export, commands). torch and timm are imported only on the torch backend's path;
`FaceAligner(backend="onnx")` runs on onnxruntime alone once the model's ONNX file exists.

Attributes load on first use, so `import facealign.inference` stays light.
"""
from facealign._lazy import lazy_attributes
_LAZY = {
    "FaceAligner": "facealign.inference.aligner",
    "Face": "facealign.inference.aligner",
    "as_rgb": "facealign.inference.aligner",
    "CropRunner": "facealign.inference.runner",
    "BACKENDS": "facealign.inference.backends",
    "load_runner": "facealign.inference.backends",
    "LandmarkRunner": "facealign.inference.backends",
    "TorchBackend": "facealign.inference.backends",
    "OnnxBackend": "facealign.inference.onnx_runtime",
    "load_onnx_runner": "facealign.inference.onnx_runtime",
}
__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_attributes("facealign.inference", _LAZY, globals())
