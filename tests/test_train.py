"""Tiny end-to-end runs on generated data: train, evaluate, kill/resume, DDP (gloo)."""
import json
import os
import subprocess
import sys

import pytest

from facealign.data.synthetic import make_300w_fixture
from facealign.evaluation.evaluate import TorchPredictor, evaluate
from facealign.training.loop import train
from helpers import tiny_config

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("d") / "300W"
    return make_300w_fixture(root, {"afw": 8, "helen/trainset": 12, "helen/testset": 4}, size=96)


def _cfg(data, tmp_path, **overrides):
    """tiny_config on one intra-op thread: on a busy 2-core machine these 32 px runs take a fifth of the time
    they take with torch's default (a thread per core, fighting the other processes)."""
    return tiny_config(data, tmp_path, **{"threads": 1, **overrides})


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """train() sets torch's thread count for the whole process; give later tests theirs back."""
    import torch
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_train_then_evaluate(data, tmp_path):
    cfg = _cfg(data, tmp_path)
    summary = train(cfg, progress=False)
    run = cfg.run_dir
    assert [h["epoch"] for h in summary["history"]] == [1, 2]
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]
    meta = json.loads((run / "config.json").read_text())
    assert meta["config"]["backbone"] == "efficientnet_b0" and "torch" in meta["environment"]
    assert (run / "checkpoint_best.pt").is_file() and (run / "checkpoint_last.pt").is_file()
    predictor = TorchPredictor(run / "checkpoint_best.pt")
    results = evaluate(predictor, data, ["common"], "gt", out_dir=tmp_path / "eval", progress=False)
    s = results["common"]
    assert s["n"] == 4 and s["box_protocol"] == "gt" and 0 <= s["auc"] <= 1 and s["nme"] > 0
    names = sorted(p.name for p in (tmp_path / "eval").iterdir())
    # file names carry the box protocol and the detector-miss handling
    assert {"efficientnet_b0-heatmap-mse_common_gt_gt-box.csv", "efficientnet_b0-heatmap-mse_common_gt_gt-box.png"} <= set(names)
    # a second plain run into the same folder is refused rather than overwriting it
    with pytest.raises(ValueError, match="--resume"):
        train(cfg, progress=False)


def test_resume_after_sigkill_matches_uninterrupted(data, tmp_path):
    # Small on purpose (2 steps per epoch, 3 epochs, one thread): exactness needs no more. One intra-op thread
    # also keeps the float sums in one order in every process, and a 2-core CI machine from oversubscribing.
    args = ["--data", str(data), "--input-size", "32", "--batch-size", "4", "--epochs", "3", "--max-steps", "2",
            "--workers", "0", "--threads", "1", "--train-box", "gt", "--val-box", "gt", "--head", "regression",
            "--loss", "wing"]
    cmd = [sys.executable, "-m", "facealign.cli", "train"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # The uninterrupted run and the one to be killed are independent: they run side by side (one core each),
    # each with its own crop cache so neither reads the other's half-written one.
    a_args = args + ["--out", str(tmp_path / "a"), "--cache-dir", str(tmp_path / "cache_a")]
    b_args = args + ["--out", str(tmp_path / "b"), "--cache-dir", str(tmp_path / "cache_b")]
    full = subprocess.Popen(cmd + a_args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    killed = subprocess.Popen(cmd + b_args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**env, "FACEALIGN_KILL_AT": "2:1"})
    try:
        full_err, killed_err = full.communicate(timeout=300)[1], killed.communicate(timeout=300)[1]
    finally:
        for p in (full, killed):
            p.kill()
            p.wait()
    assert full.returncode == 0, full_err[-2000:]
    assert killed.returncode == -9, killed_err[-2000:]  # SIGKILL after the first of epoch 2's two steps
    run_b = tmp_path / "b" / "efficientnet_b0-regression-wing"
    assert not (run_b / "final.json").exists()
    assert len((run_b / "metrics.jsonl").read_text().splitlines()) == 1  # epoch 1 was saved, epoch 2 was not
    resumed = subprocess.run(cmd + b_args + ["--resume"], capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming from epoch 2 of 3 ({run_b / 'checkpoint_last.pt'}: 1 finished)" in resumed.stdout
    a = json.loads((tmp_path / "a" / "efficientnet_b0-regression-wing" / "final.json").read_text())
    b = json.loads((run_b / "final.json").read_text())
    # bit-identical, not close: the resumed run replays epoch 2 from epoch 1's checkpoint with the same samples
    assert [h["val_nme"] for h in a["history"]] == [h["val_nme"] for h in b["history"]]
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    assert len(a["history"]) == 3 and len((run_b / "metrics.jsonl").read_text().splitlines()) == 3


def test_resume_with_different_config_is_refused(data, tmp_path):
    cfg = _cfg(data, tmp_path, epochs=1)
    train(cfg, progress=False)
    changed = _cfg(data, tmp_path, epochs=1, lr=0.5, sigma=2.0)
    with pytest.raises(ValueError, match="lr: 0.003 -> 0.5, sigma: 1.0 -> 2.0"):
        train(changed, resume=True, progress=False)


def test_mismatched_head_and_loss_is_rejected(data, tmp_path):
    with pytest.raises(ValueError, match="valid losses for heatmap: bce, focal, integral, integral_bce, mse"):
        train(_cfg(data, tmp_path, loss="wing"), progress=False)


def test_ddp_gloo_two_processes(data, tmp_path):
    # --standalone: a local rendezvous on a free port the OS picks, so parallel CI jobs never collide on one
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "facealign.cli", "train", "--data", str(data), "--input-size", "32", "--batch-size", "4", "--epochs", "2",
           "--max-steps", "2",  # per epoch: two all-reduced steps show the ranks in step, more add only time
           "--workers", "0", "--train-box", "gt", "--val-box", "gt", "--out", str(tmp_path / "ddp"),
           "--cache-dir", str(tmp_path / "cache")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "ddp" / "efficientnet_b0-heatmap-mse"
    meta = json.loads((run / "config.json").read_text())
    assert meta["world_size"] == 2
    # rank 0 alone writes: one line per epoch, not one per process
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    assert proc.stdout.count("best validation NME") == 1  # both ranks return; rank 0 alone saves and reports


def test_init_model_starts_from_a_trained_network(data, tmp_path):
    import torch

    from facealign.models.packaged import load_model
    from facealign.models.transfer import load_full_model
    from facealign.models import build_model
    cfg = _cfg(data, tmp_path, epochs=1)
    train(cfg, progress=False)
    ckpt = cfg.run_dir / "checkpoint_best.pt"
    fresh = build_model(cfg.backbone, cfg.head)
    load_full_model(fresh, str(ckpt))
    trained, _ = load_model(ckpt)
    for (k, a), b in zip(fresh.state_dict().items(), trained.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="does not match"):
        load_full_model(build_model(cfg.backbone, "regression"), str(ckpt))
    # a fine-tuning run from it trains and records where it started
    tuned = train(_cfg(data, tmp_path / "ft", epochs=1, init_model=str(ckpt)), progress=False)
    assert tuned["history"][0]["epoch"] == 1


def test_init_backbone_transfers_the_backbone_only(data, tmp_path):
    """A pruned fpn16 model takes the trained full backbone's weights; its head stays as built."""
    import torch

    from facealign.models.packaged import load_model
    from facealign.models.transfer import load_backbone_weights
    from facealign.models import build_model
    from facealign.training.config import make_config
    cfg = _cfg(data, tmp_path, epochs=1)
    train(cfg, progress=False)
    ckpt = str(cfg.run_dir / "checkpoint_best.pt")
    trained, _ = load_model(ckpt)
    torch.manual_seed(1)
    target = build_model(cfg.backbone, "fpn16")  # Lite/B0 pruned after stride 16: a subset of the tensors
    torch.manual_seed(1)
    untouched = build_model(cfg.backbone, "fpn16")
    load_backbone_weights(target, ckpt)
    have = trained.backbone.state_dict()
    want = target.backbone.state_dict()
    assert len(want) < len(have)  # the pruned stages are not asked for
    for k, v in want.items():
        assert torch.equal(v, have[k]), k
    for (k, a), b in zip(target.head.state_dict().items(), untouched.head.state_dict().values()):
        assert torch.equal(a, b), k
    # a different backbone cannot take them (Lite0 could: it has B0's conv and BN shapes, without the SE)
    with pytest.raises(ValueError, match="backbone tensors"):
        load_backbone_weights(build_model("mobilenetv3_small_050", "heatmap"), ckpt)
    with pytest.raises(ValueError, match="exclude each other"):
        make_config(init_model=ckpt, init_backbone=ckpt)
    # the training run records the transfer and trains
    cfg = _cfg(data, tmp_path / "tb", epochs=1, head="regression", loss="wing", init_backbone=ckpt)
    run = train(cfg, progress=False)
    assert run["history"][0]["epoch"] == 1
    # config.json names the exact donor weights, since a packaged name can change meaning
    import hashlib
    meta = json.loads((cfg.run_dir / "config.json").read_text())
    assert meta["init_source"] == {"field": "init_backbone", "spec": ckpt,
                                   "sha256": hashlib.sha256(open(ckpt, "rb").read()).hexdigest()}
    # packaging carries it into the card, with metrics measured on the shipped weights
    from facealign.inference.release import package_run
    card = package_run(cfg.run_dir, tmp_path / "shipped", data=str(data), flip_tta=False, command="facealign package")
    assert card["training"]["init_source"] == meta["init_source"]
    assert card["flip_tta"] is False and card["training"]["package_command"] == "facealign package"
    headline = card["metrics"][card["evaluation"]["headline"]]
    assert headline["n"] == 4 and headline["nme"] > 0
    shipped, shipped_card = load_model(tmp_path / "shipped.safetensors")
    assert shipped_card["training"]["init_source"]["sha256"] == meta["init_source"]["sha256"]


def test_loaders_give_the_same_landmarks(data, tmp_path):
    """The `workers` (numpy per sample) and `tensor` (batched on the device) loaders serve the same
    faces in the same order with the same augmented landmarks; pixels agree to interpolation rounding."""
    import numpy as np
    import torch
    from torch.utils.data import DistributedSampler

    from facealign.training.loaders import build_batches
    from facealign.training.prepare import prepare_data
    cfg = _cfg(data, tmp_path, workers=0)
    train_cache, _, _ = prepare_data(cfg, progress=False)
    out = {}
    for loader in ("workers", "tensor"):
        c = _cfg(data, tmp_path, workers=0, loader=loader)
        sampler = DistributedSampler(range(len(train_cache)), num_replicas=1, rank=0, shuffle=True, seed=0,
                                     drop_last=True)
        sampler.set_epoch(1)
        out[loader] = list(build_batches(train_cache, c, sampler, 4, torch.device("cpu")).epoch(1))
    assert len(out["workers"]) == len(out["tensor"]) > 0
    for (xa, ca), (xb, cb) in zip(out["workers"], out["tensor"]):
        assert np.abs(ca.numpy() - cb.numpy()).max() < 1e-4
        assert (xa - xb).abs().mean() < 0.05  # ImageNet-normalised units (~4.4 per unit of [0, 1])


def test_amp_modes_are_checked():
    import torch

    from facealign.training.loop import amp_dtype
    cpu = torch.device("cpu")
    assert amp_dtype("off", cpu) is None and amp_dtype("auto", cpu) is None
    assert amp_dtype("auto", torch.device("cuda")) == torch.float16
    with pytest.raises(ValueError, match="valid: off, bf16, fp16, auto"):
        amp_dtype("int8", cpu)
    with pytest.raises(ValueError, match="fp16 is for CUDA"):
        amp_dtype("fp16", cpu)


def test_final_fit_without_validation(data, tmp_path):
    """val_fraction 0: every training face is used, no validation; the last epoch is the shipped one."""
    cfg = _cfg(data, tmp_path, epochs=2, val_fraction=0.0)
    train_cache, val_cache, val_records = __import__("facealign.training.prepare", fromlist=["x"]).prepare_data(cfg, progress=False)
    assert val_cache is None and val_records == [] and len(train_cache) == 20  # afw 8 + helen/trainset 12
    summary = train(cfg, progress=False)
    assert summary["best_val_nme"] is None and [h["val_nme"] for h in summary["history"]] == [None, None]
    import torch
    best = torch.load(cfg.run_dir / "checkpoint_best.pt", weights_only=True)
    assert best["epoch"] == 1  # 0-based: the second (last) epoch
