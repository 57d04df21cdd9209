"""ONNX export of landmark models, an onnxruntime backend, and a torch-free ONNX runner.

The exported graph is one self-describing file:

* input ``images``: (B, 3, S, S) float32, ImageNet-normalised crops (`facealign.data.transforms.normalize`),
  dynamic batch B, fixed S = the card's ``input_size``;
* output ``coords``: (B, 68, 2) normalised crop coordinates (the model's ``"coords"`` output only);
* ``metadata_props``: ``facealign.card`` (the model card, JSON), ``facealign.io`` (input/output
  description, JSON) and ``facealign.version``.

`OnnxBackend` is a `facealign.predict.Backend` (batch -> coords), so
``LandmarkRunner(model, backend=OnnxBackend(path))`` runs the ONNX graph behind the usual runner.
`load_onnx_runner(path)` needs only the ONNX file: it reads the card from the metadata and never
imports torch (what a deployment with onnxruntime alone looks like).

Importing this module does not import torch; only `export_onnx` and `compare_backends` do.
"""
from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from facealign.data.crop import CropTransform
from facealign.data.transforms import normalize
from facealign.io import atomic_write_bytes
from facealign.runner import CropRunner

CARD_KEY = "facealign.card"
IO_KEY = "facealign.io"
VERSION_KEY = "facealign.version"
INPUT_NAME = "images"
OUTPUT_NAME = "coords"
DEFAULT_TOLERANCE = 1e-3  # max |onnx - torch| in normalised crop units accepted by `facealign export`


class OnnxExportError(ValueError):
    """An ONNX file that cannot be written, read or trusted; the message names the file."""


def _require(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise OnnxExportError(f"{module} is not installed; install facealign with the dev extras "
                              f"(pip install -e '.[dev]') or `pip install {module}`") from None


# ---------------------------------------------------------------- export
def _coords_only(model):
    import torch

    class CoordsOnly(torch.nn.Module):
        """model(images)["coords"]: the ONNX graph carries coordinates only."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, images):
            return self.net(images)["coords"]

    return CoordsOnly(model)


def _resolve_model(model_spec_or_module, card: dict | None):
    """(model, card) from a model spec (see `load_model`) or an nn.Module (+ optional card)."""
    import torch
    if isinstance(model_spec_or_module, torch.nn.Module):
        return model_spec_or_module, dict(card or {})
    from facealign.models.packaged import load_model
    model, loaded = load_model(model_spec_or_module)
    return model, dict(card if card is not None else loaded)


def export_onnx(model_spec_or_module, path: str | os.PathLike, card: dict | None = None, opset: int = 17,
                input_size: int | None = None) -> Path:
    """Export a model to a single ONNX file at `path` (written atomically) and return the path.

    `model_spec_or_module`: "default", a .safetensors file (card beside it), a training checkpoint
    (.pt), or an nn.Module whose forward returns a dict with "coords". `card` overrides/gives the
    model card stored in the metadata (required for a module unless `input_size` is given).
    The graph is validated with `onnx.checker.check_model` before it is written.
    """
    import torch
    onnx = _require("onnx")
    path = Path(path)
    if path.exists() and path.is_dir():
        raise OnnxExportError(f"{path} is a folder; give the path of the .onnx file to write")
    if path.parent.exists() and not path.parent.is_dir():
        raise OnnxExportError(f"cannot write {path}: {path.parent} is not a folder")
    try:  # fail before the (slow) export, not after it
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OnnxExportError(f"cannot write {path}: cannot create folder {path.parent} ({e.strerror or e})") from None
    model, card = _resolve_model(model_spec_or_module, card)
    size = int(input_size or card.get("input_size") or 0)
    if size <= 0:
        raise ValueError("export_onnx needs the input size: pass input_size= or a card with 'input_size'")
    card["input_size"] = size
    card.setdefault("name", "model")

    was_training = model.training
    wrapper = _coords_only(model).eval()  # eval explicitly: export restores the wrapper's own mode afterwards
    dummy = torch.zeros(1, 3, size, size, dtype=torch.float32)
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # legacy-exporter deprecation and tracer warnings
            torch.onnx.export(wrapper, (dummy,), buf, dynamo=False, opset_version=opset, do_constant_folding=True,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    finally:
        model.train(was_training)
    proto = onnx.load_from_string(buf.getvalue())
    from facealign import __version__
    meta = {
        CARD_KEY: json.dumps(card, sort_keys=True, default=str),
        IO_KEY: json.dumps({"input": INPUT_NAME, "input_shape": ["batch", 3, size, size], "input_dtype": "float32",
                            "normalisation": "imagenet mean/std on RGB in [0, 1]",
                            "output": OUTPUT_NAME, "output_shape": ["batch", 68, 2],
                            "output_units": "normalised crop coordinates, u = (x + 0.5) / S"}),
        VERSION_KEY: __version__,
    }
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = f"facealign {card.get('name')}: {size}x{size} face crop -> 68 landmarks"
    onnx.checker.check_model(proto, full_check=True)
    try:
        atomic_write_bytes(path, proto.SerializeToString())
    except OSError as e:
        raise OnnxExportError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def read_metadata(onnx_path: str | os.PathLike) -> dict[str, str]:
    """The metadata_props of an ONNX file as a dict (no graph is loaded into onnxruntime)."""
    onnx = _require("onnx")
    path = _check_file(onnx_path)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf DecodeError and friends
        raise OnnxExportError(f"{path}: not an ONNX model ({e.__class__.__name__})") from None
    return {p.key: p.value for p in proto.metadata_props}


def read_card(onnx_path: str | os.PathLike) -> dict:
    """The facealign model card stored in an exported ONNX file."""
    meta = read_metadata(onnx_path)
    if CARD_KEY not in meta:
        raise OnnxExportError(f"{onnx_path}: ONNX file has no facealign model card (not made by `facealign export`)")
    return json.loads(meta[CARD_KEY])


def _check_file(onnx_path) -> Path:
    path = Path(onnx_path)
    if not path.exists():
        raise FileNotFoundError(f"ONNX model {path} does not exist")
    if not path.is_file():
        raise OnnxExportError(f"ONNX model {path} is not a file")
    return path


# ---------------------------------------------------------------- onnxruntime
class OnnxBackend:
    """backend(batch (B, 3, S, S) float32 ImageNet-normalised) -> (B, 68, 2) normalised coords, via onnxruntime.

    CPUExecutionProvider; `threads` sets intra-op threads (None = onnxruntime's default, one per core).
    `.card` is the model card from the file's metadata ({} for a foreign ONNX file).
    """

    def __init__(self, onnx_path: str | os.PathLike, threads: int | None = None):
        ort = _require("onnxruntime")
        self.path = _check_file(onnx_path)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise OnnxExportError(f"{self.path}: onnxruntime cannot load it ({e.__class__.__name__}: "
                                  f"{str(e).splitlines()[0][:200]})") from None
        self.threads = threads
        meta = self.session.get_modelmeta().custom_metadata_map
        self.card = json.loads(meta[CARD_KEY]) if CARD_KEY in meta else {}
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        return self.session.run([self.output_name], {self.input_name: x})[0]


class OnnxLandmarkRunner(CropRunner):
    """`CropRunner` from an ONNX file alone (card from its metadata), without torch."""

    def __init__(self, onnx_path: str | os.PathLike, threads: int | None = None, flip_tta: bool | None = None,
                 backend=None):
        backend = backend or OnnxBackend(onnx_path, threads)
        card = backend.card or read_card(onnx_path)
        if "input_size" not in card:
            raise OnnxExportError(f"{onnx_path}: model card has no input_size")
        super().__init__(backend, {"name": Path(onnx_path).stem, **card}, flip_tta)


def load_onnx_runner(onnx_path: str | os.PathLike, threads: int | None = None,
                     flip_tta: bool | None = None) -> OnnxLandmarkRunner:
    """A runner (predict(image, boxes) -> image pixels) built from the ONNX file alone."""
    return OnnxLandmarkRunner(onnx_path, threads, flip_tta)


# ---------------------------------------------------------------- checking an export
def random_crops(n: int, size: int, seed: int = 0) -> np.ndarray:
    """(n, 3, size, size) float32: uniform random uint8 images, ImageNet-normalised."""
    rng = np.random.default_rng(seed)
    return np.stack([normalize(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)])


def face_crops(n: int, size: int, context: float = 0.1, data: str | os.PathLike | None = None,
               seed: int = 0) -> tuple[np.ndarray, str]:
    """(crops (n, 3, size, size) float32, source): real faces of `data` (ground-truth boxes, first
    faces of the first non-empty split) when it is a readable data root, else generated faces
    (`facealign.data.synthetic.random_face`)."""
    if data is not None and Path(data).is_dir():
        from facealign.data.boxes import landmark_box
        from facealign.data.layouts import index_dataset
        from facealign.imageio import load_rgb
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                index = index_dataset(data)
            split = next((s for s in ("common", "test", "all", "train") if index.splits.get(s)),
                         next((s for s, r in index.splits.items() if r), None))
        except ValueError:
            split = None
        if split is not None:
            records = index.splits[split][:n]
            crops = [normalize(CropTransform.from_box(landmark_box(r.landmarks), context).warp(load_rgb(r.image), size))
                     for r in records]
            return np.stack(crops), f"{len(crops)} real faces from {Path(data)} split {split!r}"
    from facealign.data.boxes import landmark_box
    from facealign.data.synthetic import random_face
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(n):
        img, pts = random_face(rng, 160)
        crops.append(normalize(CropTransform.from_box(landmark_box(pts), context).warp(img, size)))
    return np.stack(crops), f"{n} generated faces (facealign.data.synthetic)"


def _backends(model_spec, onnx_path, threads):
    import torch
    if isinstance(model_spec, torch.nn.Module):
        model = model_spec
    else:
        from facealign.models.packaged import load_model
        model, _ = load_model(model_spec)
    from facealign.predict import TorchBackend
    return model, TorchBackend(model.eval()), OnnxBackend(onnx_path, threads)


def _max_diff(torch_backend, onnx_backend, batches) -> float:
    if isinstance(batches, np.ndarray):
        batches = [batches]
    return max((float(np.abs(onnx_backend(b) - torch_backend(b)).max()) for b in batches), default=0.0)


def compare_backends(model_spec, onnx_path: str | os.PathLike, batches: np.ndarray | Iterable[np.ndarray],
                     threads: int | None = None) -> float:
    """max |onnx - torch| over `batches` (one (B, 3, S, S) array or several), normalised crop units.

    `model_spec` is anything `export_onnx` accepts (spec string/path or module).
    """
    model, torch_backend, onnx_backend = _backends(model_spec, onnx_path, threads)
    was_training = model.training
    try:
        return _max_diff(torch_backend, onnx_backend, batches)
    finally:
        model.train(was_training)


def check_export(model_spec, onnx_path: str | os.PathLike, data: str | os.PathLike | None = None, n: int = 8,
                 card: dict | None = None) -> dict:
    """Differences between the ONNX file and its torch model on random and on face crops.

    Returns {"random": max diff, "faces": max diff, "faces_source": str, "input_size": S,
    "random_px": diff * S, "faces_px": diff * S} (normalised units, and pixels at the input size).
    Random crops run as batches of 1 and n - 1, so the dynamic batch axis is exercised too.
    """
    card = card or read_card(onnx_path)
    size, context = int(card["input_size"]), float(card.get("context", 0.1))
    rand = random_crops(max(n, 2), size)
    faces, source = face_crops(n, size, context, data)
    model, torch_backend, onnx_backend = _backends(model_spec, onnx_path, None)
    was_training = model.training
    try:
        out = {"input_size": size, "faces_source": source,
               "random": _max_diff(torch_backend, onnx_backend, [rand[:1], rand[1:]]),
               "faces": _max_diff(torch_backend, onnx_backend, faces)}
    finally:
        model.train(was_training)
    out["random_px"], out["faces_px"] = out["random"] * size, out["faces"] * size
    return out


def run_export(model_spec, output: str | os.PathLike, data: str | os.PathLike | None = None, opset: int = 17,
               input_size: int | None = None, tolerance: float = DEFAULT_TOLERANCE, n: int = 8) -> tuple[Path, dict]:
    """`facealign export`: export, check, compare; returns (path, report with 'ok')."""
    path = export_onnx(model_spec, output, opset=opset, input_size=input_size)
    report = check_export(model_spec, path, data, n)
    report["ok"] = max(report["random"], report["faces"]) <= tolerance
    report["tolerance"] = tolerance
    return path, report


def format_export_report(path: Path, report: dict) -> str:
    s = report["input_size"]
    lines = [f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB), onnx.checker: ok",
             f"max |onnx - torch| on random crops: {report['random']:.2e} normalised = {report['random_px']:.2e} px at {s} px",
             f"max |onnx - torch| on {report['faces_source']}: {report['faces']:.2e} normalised = "
             f"{report['faces_px']:.2e} px at {s} px",
             f"tolerance {report['tolerance']:.0e} normalised: {'ok' if report['ok'] else 'EXCEEDED'}"]
    return "\n".join(lines)


__all__: Sequence[str] = ["export_onnx", "read_card", "read_metadata", "OnnxBackend", "OnnxLandmarkRunner",
                          "load_onnx_runner", "compare_backends", "check_export", "run_export", "random_crops",
                          "face_crops", "OnnxExportError"]
