"""Static int8 QDQ quantization: fix_batch folding, fp32 node choice, quantized graph, metadata, accuracy, errors."""
import json

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxruntime.quantization")

from facealign.inference.onnx_runtime import CARD_KEY  # noqa: E402
from facealign.inference.onnx_build import export_onnx  # noqa: E402
from facealign.inference.export import face_crops  # noqa: E402
from facealign.models import build_model  # noqa: E402
from facealign.inference.onnx_runtime import QUANT_KEY  # noqa: E402
from facealign.inference.quantize import fix_batch, fp32_nodes, node_count, quantize_int8  # noqa: E402

SIZE = 64
CARD = {"name": "t", "input_size": SIZE, "context": 0.4}
N_CALIB = 12


def _model(head):
    """Random lite0 model; the fpn logits are scaled so its coordinates vary with the input (a fresh init
    decodes ~0.5 everywhere, which would make any closeness bound trivial)."""
    torch.manual_seed(0)
    model = build_model("tf_efficientnet_lite0", head).eval()
    if head == "fpn":
        with torch.no_grad():
            model.head.out.weight.mul_(20.0)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quant-src")
    torch.set_num_threads(1)  # a background job shares the machine; these models are tiny
    return {head: export_onnx(_model(head), folder / f"{head}.onnx", card=CARD, input_size=SIZE)
            for head in ("fpn", "regression")}


@pytest.fixture(scope="module")
def crops():
    return face_crops(20, SIZE, CARD["context"])[0]  # generated faces: smooth, face-like crops


@pytest.fixture(scope="module", params=["fpn", "regression"])
def quantized(request, exported, crops, tmp_path_factory):
    """(fp32 path, int8 path, fixed-batch fp32 proto) per head, quantized once per module."""
    folder = tmp_path_factory.mktemp(f"quant-{request.param}")
    src = exported[request.param]
    out = quantize_int8(src, folder / "m.int8.onnx", crops[:N_CALIB])
    fixed = onnx.load(str(fix_batch(src, folder / "fixed.onnx", 1)))
    return src, out, fixed


def _session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _run(path, x, batch=1):
    s = _session(path)
    return np.concatenate([s.run(None, {"images": x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def _meta(proto_or_path):
    proto = proto_or_path if hasattr(proto_or_path, "graph") else onnx.load(str(proto_or_path))
    return {p.key: p.value for p in proto.metadata_props}


# ---------------------------------------------------------------- fix_batch
@pytest.mark.parametrize("batch", [1, 3])
def test_fix_batch_folds_shape_arithmetic_and_keeps_outputs(exported, crops, tmp_path, batch):
    src = exported["fpn"]
    out = fix_batch(src, tmp_path / "fixed.onnx", batch)
    before, after = node_count(src), node_count(out)
    assert after < before / 3, (before, after)  # ~700 -> 113 nodes for lite0 + fpn at 64 px
    proto = onnx.load(str(out))
    ops = {n.op_type for n in proto.graph.node}
    assert not ops & {"Shape", "Ceil", "Pad", "Constant", "ConstantOfShape"}, ops  # "same"-padding arithmetic folded
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [batch, 3, SIZE, SIZE]
    assert [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim] == [batch, 68, 2]
    assert _meta(proto) == _meta(src)
    x = crops[:2 * batch]
    np.testing.assert_allclose(_run(out, x, batch), _run(src, x, batch), atol=1e-5, rtol=0)
    with pytest.raises(Exception):  # the batch really is fixed
        _session(out).run(None, {"images": crops[:batch + 1]})


@pytest.mark.parametrize("batch", [0, -1, 1.5])
def test_fix_batch_rejects_bad_batch(exported, tmp_path, batch):
    with pytest.raises(ValueError, match="batch"):
        fix_batch(exported["fpn"], tmp_path / "fixed.onnx", batch)
    assert not (tmp_path / "fixed.onnx").exists()


# ---------------------------------------------------------------- fp32_nodes
def _check_first_and_tail(proto, names):
    """names = first conv (reads the images) + the last conv and every node after it (independent check)."""
    nodes = list(proto.graph.node)
    by_name = {n.name: n for n in nodes}
    first = by_name[names[0]]
    assert first.op_type == "Conv" and first.input[0] == "images"
    last_conv = max(i for i, n in enumerate(nodes) if n.op_type == "Conv")
    assert names[1:] == [n.name for n in nodes[last_conv:]]  # fixed graphs: everything after it is downstream
    tail = [by_name[n] for n in names[1:]]
    assert "coords" in tail[-1].output
    return [n.op_type for n in tail]


def test_fp32_nodes_heatmap_head_keeps_softargmax_tail(exported, tmp_path):
    proto = onnx.load(str(fix_batch(exported["fpn"], tmp_path / "f.onnx", 1)))
    tail_ops = _check_first_and_tail(proto, fp32_nodes(proto))
    assert tail_ops[0] == "Conv" and tail_ops.count("Conv") == 1
    assert {"Softmax", "ReduceSum", "Mul"} <= set(tail_ops) and "Gemm" not in tail_ops


def test_fp32_nodes_regression_head_keeps_gemm_chain(exported, tmp_path):
    proto = onnx.load(str(fix_batch(exported["regression"], tmp_path / "f.onnx", 1)))
    tail_ops = _check_first_and_tail(proto, fp32_nodes(proto))
    assert tail_ops[0] == "Conv" and tail_ops.count("Conv") == 1
    assert tail_ops.count("Gemm") == 2 and "GlobalAveragePool" in tail_ops and "Softmax" not in tail_ops


def test_fp32_nodes_follow_structure_not_names(exported, tmp_path):
    proto = onnx.load(str(fix_batch(exported["fpn"], tmp_path / "f.onnx", 1)))
    expected = fp32_nodes(proto)
    index = {n.name: i for i, n in enumerate(proto.graph.node)}
    for i, node in enumerate(proto.graph.node):
        node.name = f"node{(i * 37) % 1000:03d}"
    renamed = fp32_nodes(proto)
    assert renamed == [proto.graph.node[index[n]].name for n in expected]


def test_fp32_nodes_needs_a_conv():
    h = onnx.helper
    graph = h.make_graph([h.make_node("Relu", ["x"], ["y"], name="r")], "g",
                         [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])])
    with pytest.raises(ValueError, match="no Conv"):
        fp32_nodes(h.make_model(graph))


# ---------------------------------------------------------------- quantize_int8
def test_quantized_graph_is_qdq_with_fp32_first_conv_and_tail(quantized):
    src, out, fixed = quantized
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    assert "ConvInteger" not in ops and "QLinearConv" not in ops  # static QDQ, not dynamic / QOperator
    producer = {o: n for n in proto.graph.node for o in n.output}
    inits = {i.name: i for i in proto.graph.initializer}
    by_name = {n.name: n for n in proto.graph.node}
    fixed_ops = {n.name: n.op_type for n in fixed.graph.node}
    excluded = fp32_nodes(fixed)

    def from_dq(name):
        return name in producer and producer[name].op_type == "DequantizeLinear"

    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    quantized_convs = [n for n in convs if from_dq(n.input[1])]
    assert len(quantized_convs) == len(convs) - 2  # every conv but the first and the last
    for k, name in enumerate(excluded):
        node = by_name[name]  # still there, same name and op
        assert node.op_type == fixed_ops[name]
        if node.op_type in ("Conv", "Gemm", "MatMul"):  # fp32 weights, straight from an initializer
            assert node.input[1] in inits and inits[node.input[1]].data_type == onnx.TensorProto.FLOAT, name
        if k >= 2:  # past the last conv: the soft-argmax / Gemm chain runs on fp32 tensors
            assert not any(from_dq(i) for i in node.input), name
    assert by_name[excluded[0]].input[0] == "images"  # the raw pixels are not quantized
    # Activations uint8 (QuantizeLinear only quantizes activations; weights are stored as int8 initializers).
    q_zero_points = {inits[n.input[2]].data_type for n in proto.graph.node if n.op_type == "QuantizeLinear"}
    assert q_zero_points == {onnx.TensorProto.UINT8}
    assert {inits[producer[n.input[1]].input[0]].data_type for n in quantized_convs} == {onnx.TensorProto.INT8}


def test_quantized_metadata(quantized, crops):
    src, out, fixed = quantized
    meta, source = _meta(out), _meta(src)
    for key in source:  # card, io description and version carried over unchanged
        assert meta[key] == source[key]
    assert json.loads(meta[CARD_KEY]) == CARD
    info = json.loads(meta[QUANT_KEY])
    assert info["scheme"] == "static-int8-qdq" and info["per_channel"] is True
    assert info["excluded_nodes"] == fp32_nodes(fixed)
    assert info["calibration_count"] == N_CALIB and info["batch"] == 1
    assert sorted(p.name for p in out.parent.iterdir()) == ["fixed.onnx", "m.int8.onnx"]  # no temporaries left


def test_quantized_outputs_close_to_fp32(quantized, crops):
    src, out, _ = quantized
    ref, q = _run(src, crops), _run(out, crops)
    err = np.abs(q - ref).mean()
    spread = np.abs(ref - ref.mean(0)).mean()  # what a constant prediction would be off by
    # Measured on these random models: err 0.016 (fpn) / 0.002 (regression), err / spread 0.31 for both.
    assert err < 0.05
    assert err < 0.6 * spread, (err, spread)  # the int8 graph still follows the input


def test_batched_calibration_from_iterable(exported, crops, tmp_path):
    out = quantize_int8(exported["fpn"], tmp_path / "b2.onnx", (c for c in crops[:7]), batch=2, per_channel=False)
    proto = onnx.load(str(out))
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [2, 3, SIZE, SIZE]
    info = json.loads(_meta(proto)[QUANT_KEY])
    assert info["calibration_count"] == 6 and info["batch"] == 2 and info["per_channel"] is False
    assert _run(out, crops[:4], batch=2).shape == (4, 68, 2)


def test_trained_model_on_real_faces(shared_300w, tmp_path):
    """The packaged (trained) model on real 300W crops: int8 moves coordinates by ~0.1% of the crop."""
    from facealign.models.packaged import load_model
    model, card = load_model("default")
    size = 128
    src = export_onnx(model, tmp_path / "d.onnx", card=dict(card, input_size=size), input_size=size)
    faces, source = face_crops(24, size, float(card["context"]), data=shared_300w)
    assert "real faces" in source
    out = quantize_int8(src, tmp_path / "d.int8.onnx", faces[:16])
    ref, q = _run(src, faces[16:]), _run(out, faces[16:])  # held-out crops
    err, spread = np.abs(q - ref).mean(), np.abs(ref - ref.mean(0)).mean()
    assert err < 0.005 and err < 0.1 * spread, (err, spread)  # measured 0.0011 and 0.03 x spread


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("case, match", [
    ("empty array", "empty"), ("empty list", "empty"), ("wrong size", "input size"),
    ("wrong channels", "input size"), ("nan", "NaN"), ("fewer than batch", "batch"),
])
def test_bad_calibration_raises(exported, crops, tmp_path, case, match):
    calib, batch = {
        "empty array": (np.zeros((0, 3, SIZE, SIZE), np.float32), 1),
        "empty list": ([], 1),
        "wrong size": (np.zeros((4, 3, 32, 32), np.float32), 1),
        "wrong channels": (np.zeros((4, 1, SIZE, SIZE), np.float32), 1),
        "nan": (np.full((2, 3, SIZE, SIZE), np.nan, np.float32), 1),
        "fewer than batch": (crops[:3], 4),
    }[case]
    with pytest.raises(ValueError, match=match):
        quantize_int8(exported["fpn"], tmp_path / "q.onnx", calib, batch=batch)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", ["no card", "not onnx"])
def test_not_a_facealign_file_raises(exported, crops, tmp_path, case):
    bad = tmp_path / "bad.onnx"
    if case == "no card":  # a valid ONNX model, but not one `facealign export` made
        proto = onnx.load(str(exported["fpn"]))
        del proto.metadata_props[:]
        onnx.save(proto, str(bad))
    else:
        bad.write_text("this is not a model\n")
    with pytest.raises(ValueError, match="bad.onnx"):
        quantize_int8(bad, tmp_path / "q.onnx", crops[:2])
    with pytest.raises(ValueError, match="bad.onnx"):
        fix_batch(bad, tmp_path / "f.onnx", 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]
