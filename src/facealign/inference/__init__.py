"""Inference: crop -> network -> image pixels, behind named backends, and the public `FaceAligner`.

- The core: `aligner` (`FaceAligner`), `backends`, `runner`, `onnx_build`, `onnx_runtime`, `quantize`, and
  `dlib_predictor` (dlib's shape predictor, run through the same harness as our models).
- The jobs on top of it: `predict` (images, folders, globs), `video` with `tracking` (One Euro smoothing, cuts),
  `rotations` (retry on quarter turns), `outputs` (JSON, .pts, CSV, drawings).
- `export` (ONNX, int8) and `release` (a run's checkpoint shipped as a packaged model with its card) check what
  they write with the evaluation harness, so those two sit one layer higher (tests/test_layers.py).

Layering: the core sits on `facealign.data`, `facealign.detection` and `facealign.models` and imports nothing
above it (training, evaluation, commands). torch and timm are imported only on the torch backend's path;
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
