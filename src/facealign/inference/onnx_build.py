"""Building ONNX files from landmark models (torch, imported lazily) and the cache of packaged models' ONNX files.

`export_onnx` writes one self-describing file (see `facealign.inference.onnx_runtime`). `cached_onnx`
gives the ONNX file of a packaged model or weights file from the user cache, exporting it once; the cache
key is computed without torch (the weights' bytes, the card, the facealign version), so a warm start never
imports torch. With `fixed=True` the fixed-batch variants (batch 1 and 2, optimised offline) are built too.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from pathlib import Path

from facealign.inference.onnx_runtime import (CARD_KEY, FIXED_BATCHES, INPUT_NAME, IO_KEY, OUTPUT_NAME, VERSION_KEY,
                                              OnnxExportError, _require, fixed_batch_path)
from facealign.atomic import atomic_write_bytes, safe_stem

EXPORT_FORMAT = 2  # bump when the exported graph changes, so cached files are rebuilt


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
    from facealign.version import __version__
    points = (card.get("scheme") or {}).get("num_points", 68)  # the card's landmark scheme (none: ibug68)
    meta = {
        CARD_KEY: json.dumps(card, sort_keys=True, default=str),
        IO_KEY: json.dumps({"input": INPUT_NAME, "input_shape": ["batch", 3, size, size], "input_dtype": "float32",
                            "normalisation": "imagenet mean/std on RGB in [0, 1]",
                            "output": OUTPUT_NAME, "output_shape": ["batch", points, 2],
                            "output_units": "normalised crop coordinates, u = (x + 0.5) / S"}),
        VERSION_KEY: __version__,
    }
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = f"facealign {card.get('name')}: {size}x{size} face crop -> {points} landmarks"
    onnx.checker.check_model(proto, full_check=True)
    try:
        atomic_write_bytes(path, proto.SerializeToString())
    except OSError as e:
        raise OnnxExportError(f"cannot write {path}: {e.strerror or e}") from None
    return path


# ---------------------------------------------------------------- the user cache of packaged models' ONNX files
def cache_base() -> Path:
    return Path(os.environ.get("FACEALIGN_CACHE", Path.home() / ".cache" / "facealign"))


def onnx_cache_path(weights: Path, card: dict) -> Path:
    """Where the ONNX export of a weights file is cached: keyed by its bytes, its card, facealign's version and
    the export format (no torch import needed to find it)."""
    from facealign.version import __version__
    h = hashlib.sha256(Path(weights).read_bytes())
    h.update(json.dumps(card, sort_keys=True).encode())
    h.update(f"{__version__}/{EXPORT_FORMAT}".encode())
    return cache_base() / "onnx" / f"{safe_stem(str(card.get('name', 'model')))}-{h.hexdigest()[:16]}.onnx"


def cached_onnx(weights: Path, card: dict, fixed: bool = True) -> Path:
    """The cached ONNX file of `weights` (+ its fixed-batch variants when `fixed`), built on first use."""
    path = onnx_cache_path(weights, card)
    if not path.is_file():
        export_onnx(weights, path)  # imports torch: once per model and version
    if fixed:
        for b in FIXED_BATCHES:
            if not fixed_batch_path(path, b).is_file():
                from facealign.inference.quantize import fix_batch
                fix_batch(path, fixed_batch_path(path, b), b)
    return path
