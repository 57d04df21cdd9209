"""The onnxruntime backend: ONNX file(s) -> batch of crops -> coordinates, without torch.

An exported model is one self-describing ONNX file (`facealign.inference.onnx_build`): input ``images``
(B, 3, S, S) float32 ImageNet-normalised crops, output ``coords`` (B, 68, 2) normalised crop coordinates,
and the model card in its metadata. Beside it may lie fixed-batch variants, ``NAME.b1.onnx`` and
``NAME.b2.onnx`` (one face; one face + its mirror for flip TTA), optimised offline: with the batch fixed,
the ~200 Shape/Ceil/Pad nodes of the `tf_` backbones' "same" padding fold away. `OnnxBackend` runs a
batch on the variant of its size when there is one, else on the dynamic graph.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from facealign.inference.runner import CropRunner

CARD_KEY = "facealign.card"
IO_KEY = "facealign.io"
VERSION_KEY = "facealign.version"
QUANT_KEY = "facealign.quantization"
INPUT_NAME = "images"
OUTPUT_NAME = "coords"
FIXED_BATCHES = (1, 2)  # one face; one face and its mirror (flip TTA)


class OnnxExportError(ValueError):
    """An ONNX file that cannot be written, read or trusted; the message names the file."""


def _require(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise OnnxExportError(f"{module} is not installed; `pip install {module}`") from None


def check_file(onnx_path) -> Path:
    path = Path(onnx_path)
    if not path.exists():
        raise FileNotFoundError(f"ONNX model {path} does not exist")
    if not path.is_file():
        raise OnnxExportError(f"ONNX model {path} is not a file")
    return path


def fixed_batch_path(onnx_path: str | os.PathLike, batch: int) -> Path:
    """Where the fixed-batch variant of an ONNX file lives: NAME.onnx -> NAME.b{batch}.onnx."""
    p = Path(onnx_path)
    return p.with_name(f"{p.stem}.b{batch}{p.suffix}")


def session_options(threads: int | None = None):
    """CPU session options: sequential execution, no busy-waiting threads.

    Spinning threads (onnxruntime's default) made 2 threads slower than 1 on a machine with one busy
    core and slowed other work in the same process; off, they cost nothing when idle
    (docs/benchmarks-inference.md).
    """
    ort = _require("onnxruntime")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


def open_session(path: Path, threads: int | None = None):
    ort = _require("onnxruntime")
    try:
        return ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types
        raise OnnxExportError(f"{path}: onnxruntime cannot load it ({e.__class__.__name__}: "
                              f"{str(e).splitlines()[0][:200]})") from None


class OnnxBackend:
    """backend(batch (B, 3, S, S) float32 ImageNet-normalised) -> (B, 68, 2) normalised coords, via onnxruntime.

    `threads`: intra-op threads (None = onnxruntime's default, one per core). Fixed-batch variants beside
    the file (`fixed_batch_path`) are opened on first use of their batch size. `.card` is the model card
    from the file's metadata ({} for a foreign ONNX file).
    """

    def __init__(self, onnx_path: str | os.PathLike, threads: int | None = None, fixed: bool = True):
        self.path = check_file(onnx_path)
        self.threads = threads
        self.session = open_session(self.path, threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        self.card = json.loads(meta[CARD_KEY]) if CARD_KEY in meta else {}
        self.quantization = json.loads(meta[QUANT_KEY]) if QUANT_KEY in meta else None
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        dim = self.session.get_inputs()[0].shape[0]
        self.static_batch = dim if isinstance(dim, int) and dim > 0 else None  # e.g. an int8 graph
        self.fixed = {b: fixed_batch_path(self.path, b) for b in FIXED_BATCHES
                      if fixed and fixed_batch_path(self.path, b).is_file()}
        self._sessions: dict[int, object] = {}

    def session_for(self, batch: int):
        """The session that runs a batch of this size: its fixed-batch variant if there is one."""
        if batch not in self.fixed:
            return self.session
        if batch not in self._sessions:
            self._sessions[batch] = open_session(self.fixed[batch], self.threads)
        return self._sessions[batch]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if self.static_batch is None or len(x) == self.static_batch:
            return self.session_for(len(x)).run([self.output_name], {self.input_name: x})[0]
        # a file with a fixed batch size runs any batch in chunks of that size (the last one padded)
        b = self.static_batch
        out = []
        for start in range(0, len(x), b):
            chunk = x[start:start + b]
            pad = np.concatenate([chunk, np.repeat(chunk[-1:], b - len(chunk), axis=0)]) if len(chunk) < b else chunk
            out.append(self.session.run([self.output_name], {self.input_name: pad})[0][: len(chunk)])
        return np.concatenate(out) if out else np.zeros((0, (self.card.get("scheme") or {}).get("num_points", 68), 2),
                                                        np.float32)


class OnnxLandmarkRunner(CropRunner):
    """`CropRunner` from an ONNX file alone (card from its metadata), without torch."""

    def __init__(self, onnx_path: str | os.PathLike, threads: int | None = None, flip_tta: bool | None = None,
                 backend=None):
        backend = backend or OnnxBackend(onnx_path, threads)
        card = backend.card
        if not card:
            raise OnnxExportError(f"{onnx_path}: ONNX file has no facealign model card (not made by `facealign export`)")
        if "input_size" not in card:
            raise OnnxExportError(f"{onnx_path}: model card has no input_size")
        super().__init__(backend, {"name": Path(onnx_path).stem, **card}, flip_tta)


def load_onnx_runner(onnx_path: str | os.PathLike, threads: int | None = None,
                     flip_tta: bool | None = None) -> OnnxLandmarkRunner:
    """A runner (predict(image, boxes) -> image pixels) built from the ONNX file alone."""
    return OnnxLandmarkRunner(onnx_path, threads, flip_tta)
