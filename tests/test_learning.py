"""Training learns: a small network fits 8 generated faces in 40 steps, by loss and by landmark error.

The other training tests check files, resumption and bookkeeping; a loop that never updated the weights
passed all of them. This one fails for a loop without an optimizer step, a loss that does not reach the
weights, or labels that do not match the pixels.

Measured for this configuration (seeds 0, 1, 2; 8 faces, batch 8, 40 steps, 64 px, gt boxes, no
augmentation): the mean training loss of the last epoch is 3.4-4.1x below the first epoch's, and the NME on
the same faces is 0.042-0.064, against 0.025 for the mean training shape placed in each box (the best a
constant prediction can do) and 0.55 for all points at the box centre. The bounds below leave room for other
CPUs' float rounding.
"""
from __future__ import annotations

import pytest

from facealign.data.synthetic import make_300w_fixture
from helpers import tiny_config

LOSS_DROP = 2.5  # first-epoch mean loss / last-epoch mean loss must exceed this
NME_BOUND = 0.10  # inter-ocular NME on the training faces after training
STILL = {"rotation_deg": 0.0, "scale": 0.0, "shift": 0.0, "flip_prob": 0.0, "brightness": 0.0, "contrast": 0.0}


@pytest.fixture(scope="module")
def eight_faces(tmp_path_factory):
    # the training pool is afw + helen/trainset; one helen/testset face keeps the layout's test split non-empty
    return make_300w_fixture(tmp_path_factory.mktemp("learn") / "300W", {"afw": 8, "helen/testset": 1}, size=96)


def _nme_on_training_faces(predictor, data) -> float:
    from facealign.evaluation.evaluate import evaluate_split
    summary, _, _ = evaluate_split(predictor, data, "train", "gt")
    assert summary["n"] == 8
    return summary["nme"]


def test_a_small_network_fits_eight_faces(eight_faces, tmp_path):
    import torch
    cfg = tiny_config(eight_faces, tmp_path, backbone="mobilenetv3_small_050", head="regression", loss="wing",
                      input_size=64, batch_size=8, epochs=40, lr=1e-2, val_fraction=0.0, augment=STILL)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a network this small trains fastest on one thread, and a busy CPU cannot thrash it
    try:
        _fit_and_check(cfg)
    finally:
        torch.set_num_threads(threads)


def _fit_and_check(cfg) -> None:
    import torch

    from facealign.evaluation.evaluate import TorchPredictor
    from facealign.inference.backends import TorchBackend
    from facealign.inference.runner import CropRunner
    from facealign.models import build_model
    from facealign.models.packaged import card_from_config
    from facealign.training.config import config_dict
    from facealign.training.loop import train
    eight_faces = cfg.data
    torch.manual_seed(cfg.seed)
    untrained = CropRunner(TorchBackend(build_model(cfg.backbone, cfg.head)), card_from_config(config_dict(cfg)))
    summary = train(cfg, progress=False)
    losses = [h["train_loss"] for h in summary["history"]]
    assert len(losses) == 40  # 8 faces / batch 8: one step per epoch
    assert losses[0] / losses[-1] > LOSS_DROP, f"loss {losses[0]:.3f} -> {losses[-1]:.3f}"
    before = _nme_on_training_faces(untrained, eight_faces)
    after = _nme_on_training_faces(TorchPredictor(cfg.run_dir / "checkpoint_last.pt"), eight_faces)
    assert after < NME_BOUND and after < before / 3, f"NME {before:.3f} untrained -> {after:.3f} trained"
