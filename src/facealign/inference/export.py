"""`facealign export`: an ONNX file from a model, checked against torch.

The graph format and the onnxruntime backend live in `facealign.inference` (`onnx_build`, `onnx_runtime`);
this module checks an export (max |onnx - torch| on random and on face crops) and reports it. The names
below that come from `facealign.inference` stay importable from here.

Importing this module does not import torch; only `export_onnx`, `compare_backends` and `check_export` do.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from facealign.data.crop import CropTransform
from facealign.data.transforms import normalize
from facealign.inference.onnx_build import export_onnx
from facealign.inference.onnx_runtime import (CARD_KEY, INPUT_NAME, IO_KEY, OUTPUT_NAME, VERSION_KEY, OnnxBackend,
                                              OnnxExportError, OnnxLandmarkRunner, _require, load_onnx_runner)
from facealign.inference.onnx_runtime import check_file as _check_file

DEFAULT_TOLERANCE = 1e-3  # max |onnx - torch| in normalised crop units accepted by `facealign export`


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
        from facealign.detection.boxes import landmark_box
        from facealign.data.layouts import index_dataset
        from facealign.data.images import load_rgb
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
    from facealign.detection.boxes import landmark_box
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
    from facealign.inference.backends import TorchBackend
    return model, TorchBackend(model.eval(), threads=threads), OnnxBackend(onnx_path, threads)


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


# ---------------------------------------------------------------- int8
MAX_INT8_NME_CHANGE = 0.01  # ship an int8 graph only if it moves NME by at most 1% (issue 11)


def calibration_crops(data, card: dict, n: int = 256, split: str = "train", seed: int = 0) -> tuple[np.ndarray, str]:
    """(crops (n, 3, S, S) float32 ImageNet-normalised, description): `n` faces of the TRAINING split, boxed
    as at inference (the card's box protocol; a detector miss gets its ground-truth box)."""
    from facealign.detection.boxes import BoxCache, face_boxes
    from facealign.data.layouts import index_dataset
    from facealign.data.images import load_rgb
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records = index_dataset(data, num_points=(card.get("scheme") or {}).get("num_points", 68)).split(split)
    if not records:
        raise ValueError(f"{data}: split {split!r} has no faces to calibrate on")
    pick = sorted(np.random.default_rng(seed).choice(len(records), min(n, len(records)), replace=False))
    chosen = [records[i] for i in pick]
    cache = BoxCache(data)
    fb = face_boxes(chosen, card.get("box_protocol", "detector"), "gt-box", cache=cache, detect=True)
    cache.save()
    size, context = int(card["input_size"]), float(card.get("context", 0.1))
    crops = np.stack([normalize(CropTransform.from_box(b, context).warp(load_rgb(r.image), size))
                      for r, b in zip(chosen, fb.boxes)])
    return crops, f"{len(chosen)} faces of {split!r} ({card.get('box_protocol', 'detector')} boxes), seed {seed}"


def run_quantize(model, output, data, n: int = 256, split: str = "train", eval_split: str = "common") -> dict:
    """`facealign quantize`: static int8 QDQ of a model's ONNX graph (batch 1), calibrated on training faces,
    then NME of fp32 and int8 on `eval_split` with identical boxes (detector; misses -> gt-box).

    Returns a report; `ok` says whether the NME change is within MAX_INT8_NME_CHANGE. The report is also
    written beside the output as JSON.
    """
    import hashlib

    from facealign.evaluation.evaluate import evaluate_split
    from facealign.hardware import cpu_summary
    from facealign.inference.backends import read_card_file
    from facealign.inference.onnx_build import cached_onnx
    from facealign.inference.quantize import quantize_int8
    from facealign.atomic import atomic_write_json
    from facealign.models.weights import model_file
    path = model_file(model)
    fp32 = path if path.suffix == ".onnx" else cached_onnx(path, read_card_file(path), fixed=False)
    card = read_card(fp32)
    crops, source = calibration_crops(data, card, n, split)
    out = quantize_int8(fp32, output, crops, batch=1)
    nme = {}
    for name, graph in (("fp32", fp32), ("int8", out)):
        summary, _, _ = evaluate_split(load_onnx_runner(graph, threads=1), data, eval_split, "detector", "gt-box")
        nme[name] = summary["nme"]
    change = nme["int8"] / nme["fp32"] - 1
    report = {"model": str(model), "output": str(out), "calibration": source, "eval_split": eval_split,
              "boxes": "detector, misses -> gt-box", "nme_fp32": nme["fp32"], "nme_int8": nme["int8"],
              "nme_change": change, "max_change": MAX_INT8_NME_CHANGE, "ok": abs(change) <= MAX_INT8_NME_CHANGE,
              # which graph these numbers belong to: a report is only evidence for the file it was measured on
              "output_sha256": hashlib.sha256(Path(out).read_bytes()).hexdigest(),
              "cpu": cpu_summary()}
    atomic_write_json(Path(out).with_suffix(".json"), report)
    return report


__all__: Sequence[str] = ["export_onnx", "read_card", "read_metadata", "OnnxBackend", "OnnxLandmarkRunner",
                          "load_onnx_runner", "compare_backends", "check_export", "run_export", "random_crops",
                          "face_crops", "OnnxExportError", "calibration_crops", "run_quantize", "CARD_KEY", "IO_KEY", "VERSION_KEY", "INPUT_NAME",
                          "OUTPUT_NAME"]
