"""Static int8 (QDQ) quantization of exported facealign ONNX models, for CPU inference.

Recipe (see `quantize_int8`): fix the batch axis so onnxruntime can constant-fold the shape arithmetic of
the `tf_` backbones' "same" padding (`fix_batch`), then quantize statically in QDQ form with per-channel
int8 weights, calibrated on face crops, keeping the first conv and the coordinate tail in fp32
(`fp32_nodes`). Everything-int8 broke accuracy, and dynamic quantization (ConvInteger) ran slower than
fp32, so neither is offered.

Importing this module does not import torch; onnx and onnxruntime are imported when first needed.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

from facealign.inference.onnx_runtime import CARD_KEY, INPUT_NAME, QUANT_KEY, OnnxExportError
from facealign.atomic import atomic_write_bytes


SCHEME = "static-int8-qdq"

__all__ = ["QUANT_KEY", "fix_batch", "fp32_nodes", "node_count", "quantize_int8"]


def _require(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise ImportError(f"quantization needs {module}: pip install -e '.[dev]' or `pip install {module}`") from None


def _load(path) -> tuple:
    """(ModelProto, input size S) of a facealign ONNX file; ValueError (OnnxExportError) for anything else."""
    onnx = _require("onnx")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"ONNX model {path} does not exist")
    if not path.is_file():
        raise OnnxExportError(f"ONNX model {path} is not a file")
    try:
        proto = onnx.load(str(path))
    except Exception as e:  # protobuf DecodeError and friends
        raise OnnxExportError(f"{path}: not an ONNX model ({e.__class__.__name__})") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    inputs = [i for i in proto.graph.input if i.name == INPUT_NAME]
    if CARD_KEY not in meta or not inputs:
        raise OnnxExportError(f"{path}: not a facealign ONNX file (no {CARD_KEY!r} metadata or no "
                              f"{INPUT_NAME!r} input); export it with `facealign export`")
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] != 3 or dims[2] <= 0 or dims[2] != dims[3]:
        raise OnnxExportError(f"{path}: input {INPUT_NAME!r} has shape {dims}, expected (B, 3, S, S)")
    return proto, dims[2]


def node_count(model) -> int:
    """Number of nodes in the main graph of an ONNX file path or ModelProto (Constant nodes included)."""
    if not hasattr(model, "graph"):
        model = _require("onnx").load(str(model))
    return len(model.graph.node)


def fix_batch(src_path: str | os.PathLike, dst_path: str | os.PathLike, batch: int = 1) -> Path:
    """Write `src_path` with input/output batch axes fixed to `batch` and the graph optimised offline.

    `images` becomes (batch, 3, S, S) and `coords` (batch, 68, 2). With every shape static, onnxruntime's
    basic optimisations fold the Shape/Gather/Ceil/Pad arithmetic of "same" padding into constants
    (compare `node_count` before and after). ORT_ENABLE_BASIC only: it keeps standard ONNX ops that the
    quantizer understands (EXTENDED adds FusedConv, ALL an NCHWc layout tied to the building CPU).
    The metadata_props are kept. Written atomically; returns the path.
    """
    onnx, ort = _require("onnx"), _require("onnxruntime")
    if not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    proto, _ = _load(src_path)
    for value in list(proto.graph.input) + list(proto.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_value = int(batch)
    del proto.graph.value_info[:]  # inferred shapes still say "batch"; let onnxruntime re-infer them
    dst = Path(dst_path)
    with tempfile.TemporaryDirectory(prefix="facealign-fix-") as tmp:
        fixed, optimised = Path(tmp, "fixed.onnx"), Path(tmp, "optimised.onnx")
        onnx.save(proto, str(fixed))
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(optimised)
        opts.intra_op_num_threads = 1  # only builds the graph; no inference runs
        opts.log_severity_level = 3
        ort.InferenceSession(str(fixed), opts, providers=["CPUExecutionProvider"])
        out = onnx.load(str(optimised))
    # onnxruntime declares every domain it knows; keep the ones the graph uses.
    used = {n.domain for n in out.graph.node} | {""}
    kept = [o for o in out.opset_import if o.domain in used]
    del out.opset_import[:]
    out.opset_import.extend(kept)
    for i, node in enumerate(out.graph.node):  # nodes_to_exclude works by name: every node needs one
        node.name = node.name or f"{node.op_type}_{i}"
    _set_metadata(out, proto.metadata_props)  # onnxruntime keeps them today; do not depend on it
    onnx.checker.check_model(out)
    atomic_write_bytes(dst, out.SerializeToString())
    return dst


def _set_metadata(proto, props, extra: dict[str, str] | None = None) -> None:
    items = [(p.key, p.value) for p in props] + list((extra or {}).items())
    del proto.metadata_props[:]
    for key, value in items:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def fp32_nodes(model_proto) -> list[str]:
    """Names of the nodes `quantize_int8` keeps in fp32, in graph order.

    * the first Conv: it sees the raw normalised pixels, whose int8 rounding costs the most;
    * the tail: the last Conv and every node downstream of it. For a heatmap head that is the logits conv
      and the softmax + soft-argmax (Softmax, ReduceSum, Mul, ...), whose sub-cell precision int8 would
      destroy; for a regression head the final conv, pooling and the Gemm/MatMul chain to the coordinates.

    Found from the graph structure (op types and edges), not names. ONNX graphs list nodes in topological
    order (onnx.checker enforces it), so "first"/"last" are taken in that order.
    """
    if not hasattr(model_proto, "graph"):
        model_proto = _require("onnx").load(str(model_proto))
    nodes = list(model_proto.graph.node)
    convs = [i for i, n in enumerate(nodes) if n.op_type == "Conv"]
    if not convs:
        raise ValueError("the graph has no Conv node; fp32_nodes expects a convolutional landmark model")
    keep = {convs[0], convs[-1]}
    reached = set(nodes[convs[-1]].output)
    for i in range(convs[-1] + 1, len(nodes)):  # downstream closure of the last conv
        if reached.intersection(nodes[i].input):
            keep.add(i)
            reached.update(nodes[i].output)
    unnamed = [nodes[i].op_type for i in keep if not nodes[i].name]
    if unnamed:
        raise ValueError(f"unnamed nodes ({', '.join(unnamed)}) cannot be excluded by name; run fix_batch first")
    return [nodes[i].name for i in sorted(keep)]


def _calibration_array(calibration, size: int) -> np.ndarray:
    """(N, 3, S, S) float32 from one array or an iterable of (n, 3, S, S) / (3, S, S) arrays."""
    parts = [calibration] if isinstance(calibration, np.ndarray) else list(calibration)
    arrays = []
    for part in parts:
        a = np.asarray(part, dtype=np.float32)
        a = a[None] if a.ndim == 3 else a
        if a.ndim != 4 or a.shape[1:] != (3, size, size):
            raise ValueError(f"calibration crops must be (N, 3, {size}, {size}) float32 (the model's input size, "
                             f"ImageNet-normalised); got shape {tuple(np.shape(part))}")
        arrays.append(a)
    x = np.concatenate(arrays) if arrays else np.zeros((0, 3, size, size), np.float32)
    if len(x) == 0:
        raise ValueError("calibration is empty: give at least one (3, S, S) face crop")
    if not np.isfinite(x).all():
        raise ValueError("calibration crops contain NaN or infinite values")
    return x


def _reader(crops: np.ndarray, batch: int):
    from onnxruntime.quantization import CalibrationDataReader

    class Crops(CalibrationDataReader):
        """Feeds (batch, 3, S, S) slices of the crops to the calibration session."""

        def __init__(self):
            self._batches = iter([crops[i:i + batch] for i in range(0, len(crops), batch)])

        def get_next(self):
            b = next(self._batches, None)
            return None if b is None else {INPUT_NAME: np.ascontiguousarray(b)}

    return Crops()


def quantize_int8(fp32_path: str | os.PathLike, out_path: str | os.PathLike,
                  calibration: np.ndarray | Iterable[np.ndarray], batch: int = 1, per_channel: bool = True,
                  reduce_range: bool = True) -> Path:
    """Static int8 QDQ quantization of a facealign ONNX file; returns `out_path` (written atomically).

    `calibration`: face crops (N, 3, S, S) float32, ImageNet-normalised like the model's input (one array or
    an iterable of arrays), ideally real crops of the deployment's detector boxes; they set the activation
    ranges (MinMax). They are fed in batches of `batch`, which is also the batch the output graph is fixed
    to (see `fix_batch`); a remainder of N % batch crops is not used, and N < batch is an error.

    Weights: int8, symmetric, per output channel when `per_channel`; with `reduce_range` (default) they use 7
    bits. Why: x86 CPUs without VNNI (AVX2 only) multiply u8 x s8 pairs with VPMADDUBSW, whose 16-bit sums
    saturate with full-range weights, so a full-range graph scores worse there than on a VNNI CPU (measured
    in docs/reliability.md, "int8 on CPUs without VNNI"); with 7-bit weights both compute exactly and agree.
    Activations: uint8 (asymmetric), because
    onnxruntime's x86 QLinearConv kernels run u8 activations x s8 weights fastest (s8 x s8 measured
    slower). The nodes of `fp32_nodes` stay fp32. The output keeps the input's metadata_props and adds
    `facealign.quantization` (JSON: scheme, per_channel, weight/activation types, excluded nodes,
    calibration_count, batch).
    """
    onnx, ort = _require("onnx"), _require("onnxruntime")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    source, size = _load(fp32_path)
    if not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    crops = _calibration_array(calibration, size)
    used = len(crops) - len(crops) % batch
    if used == 0:
        raise ValueError(f"{len(crops)} calibration crops cannot fill one batch of {batch}")
    out = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="facealign-quant-") as tmp:
        fixed = fix_batch(fp32_path, Path(tmp, "fixed.onnx"), batch)
        excluded = fp32_nodes(onnx.load(str(fixed)))
        try:  # symbolic + onnx shape inference: the quantizer then knows every tensor's shape
            from onnxruntime.quantization.shape_inference import quant_pre_process
            prepared = Path(tmp, "prepared.onnx")
            quant_pre_process(str(fixed), str(prepared), skip_optimization=True)  # fix_batch optimised already
        except Exception:  # older onnxruntime, or symbolic inference failing on an op: quantize as is
            prepared = fixed
        quantized = Path(tmp, "int8.onnx")
        quantize_static(str(prepared), str(quantized), _reader(crops[:used], batch), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=excluded, calibrate_method=CalibrationMethod.MinMax, reduce_range=reduce_range,
                        calibration_providers=["CPUExecutionProvider"])
        proto = onnx.load(str(quantized))
    info = {"scheme": SCHEME, "per_channel": bool(per_channel), "weight_type": "int8", "activation_type": "uint8",
            "calibrate_method": "minmax", "excluded_nodes": excluded, "calibration_count": int(used),
            "batch": int(batch), "reduce_range": bool(reduce_range), "onnxruntime": ort.__version__}
    # Only the source's properties plus ours: the tools add their own (e.g. onnx.infer), which say nothing useful.
    props = [p for p in source.metadata_props if p.key != QUANT_KEY]
    _set_metadata(proto, props, {QUANT_KEY: json.dumps(info, sort_keys=True)})
    onnx.checker.check_model(proto)
    atomic_write_bytes(out, proto.SerializeToString())
    return out
