"""The int8 route: `facealign quantize` on a small model, the onnx-int8 backend, fixed-batch files."""
import hashlib
import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from facealign.cli import main  # noqa: E402
from facealign.data.synthetic import make_300w_fixture  # noqa: E402
from facealign.inference.export import random_crops  # noqa: E402
from facealign.inference import FaceAligner, OnnxBackend, load_runner  # noqa: E402
from facealign.inference.onnx_build import export_onnx  # noqa: E402
from facealign.inference.quantize import fix_batch  # noqa: E402


@pytest.fixture(scope="module")
def quantized(model_path, tmp_path_factory):
    """`facealign quantize` of the test model on a generated 300W tree: (data, int8 path, report)."""
    tmp = tmp_path_factory.mktemp("int8")
    mp = pytest.MonkeyPatch()
    mp.setenv("FACEALIGN_CACHE", str(tmp / "cache"))
    data = make_300w_fixture(tmp / "300W", {"afw": 4, "helen/trainset": 4, "helen/testset": 3}, size=96)
    out = tmp / "m.int8.onnx"
    rc = main(["quantize", str(model_path), "-o", str(out), "--data", str(data), "--calibration", "6"])
    yield data, out, json.loads(out.with_suffix(".json").read_text()), rc
    mp.undo()


def test_quantize_command_reports_the_nme_change(quantized):
    import hashlib
    data, out, report, rc = quantized
    assert out.is_file()
    assert report["calibration"].startswith("6 faces of 'train'")  # never the test split
    assert report["nme_change"] == pytest.approx(report["nme_int8"] / report["nme_fp32"] - 1)
    assert report["output_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()  # the report names its graph
    backend = OnnxBackend(out)
    assert backend.static_batch == 1 and backend.quantization["calibration_count"] == 6
    assert backend.quantization["reduce_range"] is True  # 7-bit weights: exact on CPUs without VNNI too


@pytest.mark.parametrize("limit,ok", [(-1.0, False), (10.0, True)])
def test_quantize_exit_code_follows_the_limit(quantized, model_path, tmp_path, monkeypatch, capsys, limit, ok):
    """Every NME change is over a negative limit and within a 1000% one: the verdict and exit code follow."""
    import facealign.inference.export
    data, out, _, _ = quantized
    monkeypatch.setattr(facealign.inference.export, "MAX_INT8_NME_CHANGE", limit)
    # the fixture's cache: its ONNX export and detector boxes are reused, and the user's cache is left alone
    monkeypatch.setenv("FACEALIGN_CACHE", str(out.parent / "cache"))
    rc = main(["quantize", str(model_path), "-o", str(tmp_path / "q.onnx"), "--data", str(data), "--calibration", "2"])
    report = json.loads((tmp_path / "q.json").read_text())
    assert report["ok"] is ok and report["max_change"] == limit and rc == (0 if ok else 1)
    assert ("within the" if ok else "OVER the") in capsys.readouterr().out


def test_int8_file_runs_any_batch_in_fixed_chunks(quantized):
    _, out, _, _ = quantized
    backend = OnnxBackend(out)
    crops = random_crops(3, 64)
    together = backend(crops)  # three batch-1 runs, no padding needed
    one_by_one = np.concatenate([backend(crops[i:i + 1]) for i in range(3)])
    np.testing.assert_array_equal(together, one_by_one)
    assert backend(crops[:0]).shape == (0, 68, 2)


def test_fixed_batch_file_pads_the_last_chunk(model_path, tmp_path):
    from facealign.models.packaged import load_model
    net, card = load_model(model_path)
    dyn = export_onnx(net, tmp_path / "m.onnx", card=card)
    two = fix_batch(dyn, tmp_path / "two.onnx", 2)
    crops = random_crops(3, 64)
    np.testing.assert_allclose(OnnxBackend(two)(crops), OnnxBackend(dyn)(crops), atol=1e-5)  # 2 + (1 padded)


def test_onnx_int8_backend_by_name_and_path(quantized, model_path):
    _, out, _, _ = quantized
    assert load_runner(out, "onnx-int8").backend.quantization["scheme"] == "static-int8-qdq"
    with pytest.raises(ValueError, match="takes a packaged model name or an int8 .onnx file"):
        load_runner(model_path, "onnx-int8")
    with pytest.raises(ValueError, match="unknown backend 'onnx8'; valid: torch, onnx, onnx-int8"):
        FaceAligner(model_path, backend="onnx8")


def test_packaged_default_int8_is_shipped_and_within_one_percent():
    from facealign.models.weights import packaged_int8_path
    for name in ("default", "fast"):
        path = packaged_int8_path(name)
        report = json.loads(path.with_suffix(".json").read_text())
        assert report["ok"] and abs(report["nme_change"]) <= 0.01, name
        # the stored verdict belongs to the shipped graph (tests/test_accuracy_gate.py re-measures it on real faces)
        assert report["output_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest(), name
    runner = load_runner("default", "onnx-int8")
    assert runner.input_size == 224 and runner.flip_tta  # the card travels in the int8 file's metadata
    with pytest.raises(ValueError, match="has no int8 graph; models with one: default, fast"):
        packaged_int8_path("default160")
