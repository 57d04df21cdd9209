"""Checkpoint and model-file integrity: truncation, bit flips, malicious pickles, NaN losses, bad resumes."""
import hashlib
import json

import numpy as np
import pytest
import torch

from facealign.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, state_digest
from facealign.cli import main
from facealign.data.synthetic import make_300w_fixture
from facealign.models import build_model
from facealign.models.packaged import load_model, save_packaged
from facealign.training.loop import NonFiniteLossError, train
from helpers import tiny_config

CARD = {"name": "t", "backbone": "efficientnet_b0", "head": "regression", "feature_index": -1, "head_kwargs": {},
        "input_size": 64, "context": 0.1, "box_protocol": "detector", "detector": "dlib", "flip_tta": False}


def _state():
    torch.manual_seed(0)
    return {"model": {"w": torch.randn(64, 64), "b": torch.zeros(64)}, "epoch": 3, "history": [{"val_nme": 0.1}],
            "config": {"size": 32}}


def test_round_trip_and_digest(tmp_path):
    path = tmp_path / "c.pt"
    state = _state()
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    assert loaded["integrity"]["sha256"] == state_digest(state)
    torch.testing.assert_close(loaded["model"]["w"], state["model"]["w"])
    assert loaded["epoch"] == 3 and list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    # the file stays an ordinary torch checkpoint
    assert torch.load(path, weights_only=True)["epoch"] == 3


@pytest.mark.parametrize("keep", [0, 10, 0.5, 0.9, -1])
def test_truncated_checkpoint_is_detected(tmp_path, keep):
    path = tmp_path / "c.pt"
    save_checkpoint(path, _state())
    data = path.read_bytes()
    n = keep if isinstance(keep, int) and keep >= 0 else (len(data) + keep if isinstance(keep, int) else int(len(data) * keep))
    path.write_bytes(data[:n])
    with pytest.raises(CheckpointError, match="c.pt: unreadable checkpoint"):
        load_checkpoint(path)


def test_flipped_tensor_byte_is_detected(tmp_path):
    path = tmp_path / "c.pt"
    state = _state()
    save_checkpoint(path, state)
    data = bytearray(path.read_bytes())
    raw = state["model"]["w"].numpy().tobytes()
    at = data.find(raw[:64])  # the tensor is stored uncompressed inside the zip
    assert at > 0
    data[at + 1000] ^= 0x10
    path.write_bytes(bytes(data))
    # torch itself loads the damaged file without complaint; only the digest notices
    assert torch.load(path, weights_only=True)["epoch"] == 3
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(path)


class _Evil:
    marker = None

    def __reduce__(self):
        import os
        return (os.system, (f"touch {_Evil.marker}",))


def test_malicious_torch_checkpoint_runs_no_code(tmp_path):
    _Evil.marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"config": {}, "model": _Evil()}, path)  # a real torch zip file with a code-running pickle
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
        load_checkpoint(path)
    with pytest.raises(ValueError):
        load_model(path)
    assert not _Evil.marker.exists()
    torch.load(path, weights_only=False)  # the unsafe way runs it: the test can fail
    assert _Evil.marker.exists()


def test_corrupt_safetensors_is_detected(tmp_path):
    weights, card_path = save_packaged(build_model("efficientnet_b0", "regression"), CARD, tmp_path / "m")
    good = weights.read_bytes()
    damaged = bytearray(good)
    damaged[len(good) // 2] ^= 0xFF
    weights.write_bytes(bytes(damaged))
    with pytest.raises(CheckpointError, match="weights_sha256"):
        load_model(weights)
    # without a digest in the card, a truncated file still fails cleanly
    card = json.loads(card_path.read_text())
    del card["weights_sha256"]
    card_path.write_text(json.dumps(card))
    weights.write_bytes(good[: len(good) // 3])
    with pytest.raises(CheckpointError, match="unreadable safetensors"):
        load_model(weights)
    card_path.write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable model card"):
        load_model(weights)


def test_shipped_default_matches_its_digest():
    from facealign.models.weights import packaged_path
    path = packaged_path("default")
    card = json.loads(path.with_suffix(".json").read_text())
    assert hashlib.sha256(path.read_bytes()).hexdigest() == card["weights_sha256"]


# ---------------------------------------------------------------- training
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("d") / "300W"
    return make_300w_fixture(root, {"afw": 4, "helen/trainset": 8, "helen/testset": 2}, size=96)


_cfg = tiny_config


def _nan_at(monkeypatch, call: int):
    """Make the training loss NaN on the `call`-th step (1-based)."""
    import facealign.training.loop as tr
    real, calls = tr.compute_loss, {"n": 0}

    def patched(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == call else loss
    monkeypatch.setattr(tr, "compute_loss", patched)


def test_nan_loss_stops_training_and_keeps_checkpoint(data, tmp_path, monkeypatch):
    cfg = _cfg(data, tmp_path, max_steps=2)
    _nan_at(monkeypatch, 4)  # epoch 2, step 2
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at epoch 2, step 2 \(global step 4\); "
                                                 r"last good checkpoint: .*checkpoint_last.pt"):
        train(cfg, progress=False)
    ckpt = load_checkpoint(cfg.run_dir / "checkpoint_last.pt")  # verified digest: intact
    assert ckpt["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert not (cfg.run_dir / "final.json").exists()


def test_nan_loss_cli_message(data, tmp_path, monkeypatch, capsys):
    _nan_at(monkeypatch, 1)
    rc = main(["train", "--data", str(data), "--input-size", "32", "--batch-size", "4", "--epochs", "1", "--workers", "0",
               "--train-box", "gt", "--val-box", "gt", "--out", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert err[-1].split("\r")[-1].lstrip().startswith("facealign: training stopped: non-finite loss (nan) at epoch 1, step 1")
    assert "no checkpoint was written yet" in err[-1] and "Traceback" not in "\n".join(err)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_resume_refuses_a_damaged_checkpoint(data, tmp_path, damage, capsys):
    cfg = _cfg(data, tmp_path, epochs=1, max_steps=1)
    train(cfg, progress=False)
    last = cfg.run_dir / "checkpoint_last.pt"
    raw = bytearray(last.read_bytes())
    if damage == "truncate":
        last.write_bytes(bytes(raw[: len(raw) // 2]))
    else:
        w = next(v for v in load_checkpoint(last)["model"].values() if v.numel() > 1000)
        at = raw.find(w.numpy().tobytes()[:64])
        raw[at + 100] ^= 0x01
        last.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"cannot resume: .*checkpoint_last.pt: (unreadable|corrupt) checkpoint"):
        train(cfg, resume=True, progress=False)
    rc = main(["evaluate", "--model", str(last), "--data", str(data), "--box", "gt", "-o", str(tmp_path / "e")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "checkpoint_last.pt" in err


def test_metrics_jsonl_is_rewritten_whole(data, tmp_path):
    from facealign.fpstate import flushing_denormals
    cfg = _cfg(data, tmp_path, max_steps=1)
    train(cfg, progress=False)
    assert not flushing_denormals()  # training restores the process's floating-point setting
    lines = (cfg.run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert not [p for p in cfg.run_dir.iterdir() if p.name.startswith(".")]  # no temporary files left
    np.testing.assert_equal(json.loads((cfg.run_dir / "final.json").read_text())["history"][-1]["epoch"], 2)


def test_resume_deletes_temporaries_of_a_killed_write(data, tmp_path):
    cfg = _cfg(data, tmp_path, epochs=1, max_steps=1)
    train(cfg, progress=False)
    stale = cfg.run_dir / ".checkpoint_last.pt.k3j2.tmp"
    stale.write_bytes(b"half a checkpoint")
    cfg2 = _cfg(data, tmp_path, epochs=1, max_steps=1)
    train(cfg2, resume=True, progress=False)
    assert not stale.exists() and load_checkpoint(cfg.run_dir / "checkpoint_last.pt")["epoch"] == 0
