"""ONNX export: checker, dynamic batch, ORT vs torch, metadata card, runners, errors, CLI."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from facealign.cli import main  # noqa: E402
from facealign.detection.boxes import landmark_box  # noqa: E402
from facealign.data.synthetic import random_face  # noqa: E402
from facealign.inference.export import check_export, compare_backends, face_crops, random_crops, read_card  # noqa: E402
from facealign.inference.backends import LandmarkRunner  # noqa: E402
from facealign.inference.onnx_build import export_onnx  # noqa: E402
from facealign.inference.onnx_runtime import CARD_KEY, OnnxBackend, OnnxExportError, load_onnx_runner  # noqa: E402
from facealign.models import build_model  # noqa: E402
from facealign.models.packaged import load_model, save_packaged  # noqa: E402

SIZE = 64
MODELS = {"b0-heatmap": ("efficientnet_b0", "heatmap"), "lite0-fpn": ("tf_efficientnet_lite0", "fpn")}


def _card(backbone, head):
    return {"name": f"test-{backbone}-{head}", "backbone": backbone, "head": head, "feature_index": -1,
            "head_kwargs": {}, "input_size": SIZE, "context": 0.1, "box_protocol": "detector", "detector": "dlib",
            "flip_tta": False}


def _perturbed(backbone, head, seed=0):
    """A random model whose coordinates actually vary with the input (a fresh init decodes ~0.5 everywhere)."""
    torch.manual_seed(seed)
    model = build_model(backbone, head).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=g))
        model.head.out.weight.mul_(20.0)
    return model


@pytest.fixture(scope="module", params=list(MODELS))
def exported(request, tmp_path_factory):
    """(safetensors path, onnx path, card) for each test architecture, exported once per module."""
    backbone, head = MODELS[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    st, card_path = save_packaged(_perturbed(backbone, head), _card(backbone, head), folder / "m")
    path = export_onnx(st, folder / "m.onnx")
    return st, path, json.loads(card_path.read_text())  # the card as saved (with weights_sha256)


def test_checker_metadata_and_no_temp_files(exported):
    st, path, card = exported
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["images"]
    assert [o.name for o in proto.graph.output] == ["coords"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, SIZE, SIZE]
    assert read_card(path) == card  # the card round-trips through metadata_props
    assert json.loads({p.key: p.value for p in proto.metadata_props}[CARD_KEY]) == card
    assert OnnxBackend(path).card == card
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.json", "m.onnx", "m.safetensors"]


def test_dynamic_batch_and_matches_torch(exported):
    st, path, _ = exported
    backend = OnnxBackend(path, threads=1)
    crops = random_crops(4, SIZE, seed=3)
    one, three = backend(crops[:1]), backend(crops[1:])
    assert one.shape == (1, 68, 2) and three.shape == (3, 68, 2) and one.dtype == np.float32
    faces, source = face_crops(4, SIZE)  # data=None -> generated faces
    assert "generated" in source
    model, _ = load_model(st)  # loaded once; both helpers also accept the spec itself
    assert compare_backends(model, path, [crops[:1], crops[1:], faces]) < 1e-4
    # the perturbed model is not trivially constant, so the comparison means something
    assert backend(faces)[..., 0].std() > 1e-3
    report = check_export(model, path)
    assert report["random"] < 1e-4 and report["faces"] < 1e-4
    assert report["faces_px"] == pytest.approx(report["faces"] * SIZE)


def test_onnx_runners_match_torch_runner(exported):
    st, path, _ = exported
    image, pts = random_face(np.random.default_rng(5), 160)
    boxes = np.stack([landmark_box(pts), landmark_box(pts) + [-4, -3, 5, 2]])
    ref_runner = LandmarkRunner(st)
    via_backend = LandmarkRunner(st, backend=OnnxBackend(path))
    standalone = load_onnx_runner(path)
    assert standalone.input_size == SIZE and standalone.model is None and standalone.flip_tta is False
    for flip in (False, True):
        ref_runner.flip_tta = via_backend.flip_tta = standalone.flip_tta = flip
        ref = ref_runner.predict(image, boxes)
        out = standalone.predict(image, boxes)
        assert out.shape == (2, 68, 2) and out.dtype == np.float32
        assert np.abs(via_backend.predict(image, boxes) - ref).max() < 1e-2  # image pixels
        assert np.abs(out - ref).max() < 1e-2
    assert standalone.predict(image, np.zeros((0, 4))).shape == (0, 68, 2)
    assert load_onnx_runner(path, flip_tta=True).flip_tta is True


def test_onnx_runner_does_not_import_torch(exported):
    _, path, _ = exported
    code = ("import sys, numpy as np; from facealign.inference.export import load_onnx_runner; "
            f"r = load_onnx_runner({str(path)!r}); "
            "print(r.predict(np.zeros((80, 80, 3), np.uint8), np.array([[10, 10, 60, 60]])).shape, "
            "'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["(1,", "68,", "2)", "False"]


def test_export_module_with_explicit_size(tmp_path):
    model = build_model("tf_efficientnet_lite0", "fpn")
    model.train()
    with pytest.raises(ValueError, match="input size"):
        export_onnx(model, tmp_path / "x.onnx")
    path = export_onnx(model, tmp_path / "x.onnx", input_size=32)
    assert model.training  # the caller's mode is restored
    assert read_card(path) == {"input_size": 32, "name": "model"}
    assert OnnxBackend(path)(random_crops(2, 32)).shape == (2, 68, 2)


def test_bad_paths_give_clear_errors(tmp_path, exported):
    st, path, _ = exported
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        OnnxBackend(tmp_path / "nope.onnx")
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        load_onnx_runner(tmp_path / "nope.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"definitely not protobuf")
    with pytest.raises(OnnxExportError, match="garbage.onnx"):
        OnnxBackend(garbage)
    with pytest.raises(OnnxExportError, match="not a folder"):
        export_onnx(st, garbage / "sub.onnx")
    with pytest.raises(OnnxExportError, match="cannot create folder"):
        export_onnx(st, tmp_path / "missing-dir" / ".." / "garbage.onnx" / "x.onnx")
    with pytest.raises(OnnxExportError, match="is a folder"):
        export_onnx(st, tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        export_onnx(tmp_path / "missing.pt", tmp_path / "y.onnx")
    assert not (tmp_path / "y.onnx").exists()


def test_cli_export(tmp_path, capsys):
    st, _ = save_packaged(_perturbed("tf_efficientnet_lite0", "fpn"), _card("tf_efficientnet_lite0", "fpn"), tmp_path / "m")
    out = tmp_path / "cli.onnx"
    # a tolerance nothing can meet -> non-zero exit (the file is still written and checked)
    assert main(["export", str(st), "-o", str(out), "--data", str(tmp_path / "no-data"), "--tolerance", "-1"]) == 1
    assert "EXCEEDED" in capsys.readouterr().out
    assert main(["export", str(st), "-o", str(out), "--data", str(tmp_path / "no-data")]) == 0
    text = capsys.readouterr().out
    assert "onnx.checker: ok" in text and "random crops" in text and "generated faces" in text and " px at 64 px" in text
    assert "tolerance 1e-03 normalised: ok" in text
    assert read_card(out)["input_size"] == SIZE
    assert main(["export", str(tmp_path / "missing.pt"), "-o", str(out)]) == 2
