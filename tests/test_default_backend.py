"""The backend used when none is named: each packaged model's fastest measured backend within 0.5% NME."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from facealign.evaluation.bench import choose_default_backends
from facealign.inference.backends import DEFAULT_BACKENDS, MAX_DEFAULT_NME_CHANGE, default_backend

BENCH_JSON = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.json"


def _row(model, method, nme, ms):
    return {"model": model, "method": method, "nme": nme, "ms_batch1": ms}


def test_fastest_backend_within_the_nme_limit_wins():
    rows = [_row("a", "torch", 0.0400, 50.0), _row("a", "onnx", 0.0400, 26.0), _row("a", "onnx-int8", 0.0401, 20.0),
            _row("b", "torch", 0.0400, 9.0), _row("b", "onnx", 0.0400, 3.2), _row("b", "onnx-int8", 0.0403, 2.0),
            {"model": None, "method": "dlib", "nme": 0.028, "ms_batch1": 1.5}]
    # a: int8 is fastest and 0.25% worse (within 0.5%); b: int8 is fastest but 0.75% worse, so onnx
    assert choose_default_backends(rows, 0.005) == {"a": "onnx-int8", "b": "onnx"}
    assert choose_default_backends(rows, 0.01) == {"a": "onnx-int8", "b": "onnx-int8"}
    assert choose_default_backends(rows, 0.0) == {"a": "onnx", "b": "onnx"}


def test_shipped_defaults_follow_the_recorded_bench_run():
    """DEFAULT_BACKENDS is what docs/benchmarks.json (one `facealign bench` run) says; rerunning the bench and
    regenerating that file without updating the table fails here."""
    rows = json.loads(BENCH_JSON.read_text())["rows"]
    assert choose_default_backends(rows, MAX_DEFAULT_NME_CHANGE) == DEFAULT_BACKENDS


def test_default_backend_by_model_spec(model_path, tmp_path):
    assert default_backend("default") == "onnx-int8" and default_backend("fast") == "onnx"
    assert default_backend(str(tmp_path / "m.ONNX")) == "onnx"
    assert default_backend(model_path) == "torch" and default_backend(tmp_path / "run.pt") == "torch"


def test_face_aligner_and_runner_use_it(model_path):
    from facealign.inference import FaceAligner, load_runner
    assert FaceAligner().backend_name == "onnx-int8"
    assert load_runner().backend.quantization["scheme"] == "static-int8-qdq"
    assert FaceAligner(model_path).backend_name == "torch"
    with pytest.raises(ValueError, match="unknown backend 'tf'; valid: torch, onnx, onnx-int8"):
        FaceAligner(model_path, backend="tf")
