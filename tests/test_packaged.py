"""Model files: packaged safetensors + card round trip, and no code execution on load."""
import pickle

import numpy as np
import pytest
import torch

from facealign.models import build_model
from facealign.models.packaged import load_model, save_packaged

CARD = {"name": "t", "backbone": "efficientnet_b0", "head": "regression", "feature_index": -1, "head_kwargs": {},
        "input_size": 64, "context": 0.1, "box_protocol": "detector", "detector": "dlib", "flip_tta": False}


def test_safetensors_round_trip_is_fp16_exact(tmp_path):
    model = build_model("efficientnet_b0", "regression").eval()
    weights, card = save_packaged(model, CARD, tmp_path / "m")
    loaded, loaded_card = load_model(weights)
    assert {k: v for k, v in loaded_card.items() if k != "weights_sha256"} == CARD
    assert len(loaded_card["weights_sha256"]) == 64
    x = torch.randn(1, 3, 64, 64)
    # weights were rounded to fp16: outputs agree to fp16 precision, not bit for bit
    np.testing.assert_allclose(loaded(x)["coords"].detach(), model(x)["coords"].detach(), atol=2e-3)
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(loaded.state_dict()[k], v.half().float())


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, (f"touch {_Evil.marker}",))


def test_malicious_checkpoint_runs_no_code(tmp_path):
    _Evil.marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"config": {}, "model": _Evil()}, f)
    with pytest.raises(ValueError, match="unreadable checkpoint"):
        load_model(path)
    assert not _Evil.marker.exists()
    # the same file unpickled the unsafe way would have run the command: the test can fail
    with open(path, "rb") as f:
        pickle.load(f)
    assert _Evil.marker.exists()


def test_missing_card_and_unknown_name(tmp_path):
    model = build_model("efficientnet_b0", "regression")
    weights, card = save_packaged(model, CARD, tmp_path / "m")
    card.unlink()
    with pytest.raises(FileNotFoundError, match="no model card"):
        load_model(weights)
    with pytest.raises(FileNotFoundError, match="neither a file nor one of: default, default160, fast"):
        load_model("nonexistent-model")


def test_packaged_models_load_with_their_cards():
    """`default` (224 px), `default160` (the previous default, 160 px) and `fast` (96 px) ship in the package."""
    import hashlib

    from facealign.models.weights import PACKAGED_MODELS, packaged_path
    assert PACKAGED_MODELS == ("default", "default160", "fast")
    sizes = {}
    for name in PACKAGED_MODELS:
        model, card = load_model(name)
        sizes[name] = card["input_size"]
        digest = hashlib.sha256(packaged_path(name).read_bytes()).hexdigest()
        assert digest == card["weights_sha256"]
        out = model(torch.zeros(1, 3, card["input_size"], card["input_size"]))
        assert out["coords"].shape == (1, 68, 2)
    assert sizes == {"default": 224, "default160": 160, "fast": 96}
    # the two files really differ (the new default is not a renamed copy)
    assert packaged_path("default").read_bytes() != packaged_path("default160").read_bytes()


def test_card_latency_comes_from_one_bench_run(model_path, tmp_path):
    import json
    import shutil

    from facealign.inference.release import card_latency
    stem = tmp_path / "m"
    shutil.copy(model_path, stem.with_suffix(".safetensors"))
    shutil.copy(model_path.with_suffix(".json"), stem.with_suffix(".json"))
    weights_before = stem.with_suffix(".safetensors").read_bytes()
    bench = {"command": "facealign bench --model m", "date": "2026-11-28", "machine": {"threads": 1, "cpu": "x"},
             "rows": [{"method": "onnx", "model": str(stem.with_suffix(".safetensors")), "ms_batch1": 2.0},
                      {"method": "onnx", "model": "other", "ms_batch1": 9.0},
                      {"method": "dlib", "model": None, "ms_batch1": 1.6}]}
    (tmp_path / "b.json").write_text(json.dumps(bench))
    card = card_latency(stem, tmp_path / "b.json")
    assert card["latency"]["ms_per_face"] == {"onnx": 2.0} and card["latency"]["ratio_to_dlib"] == {"onnx": 1.25}
    assert json.loads(stem.with_suffix(".json").read_text())["latency"]["dlib_ms_per_face"] == 1.6
    assert stem.with_suffix(".safetensors").read_bytes() == weights_before
    bench["rows"] = bench["rows"][1:]
    (tmp_path / "b.json").write_text(json.dumps(bench))
    with pytest.raises(ValueError, match="has no rows for m and dlib"):
        card_latency(stem, tmp_path / "b.json")
