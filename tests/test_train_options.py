"""Training options for squeezing the data: a separate backbone learning rate and pose balancing."""
import numpy as np
import pytest
import torch

from facealign.data.synthetic import make_300w_fixture
from helpers import tiny_config


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("d") / "300W"
    return make_300w_fixture(root, {"afw": 8, "helen/trainset": 12, "helen/testset": 4}, size=96)


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_backbone_groups_cover_every_parameter_once():
    from facealign.models import build_model
    from facealign.training.config import make_config
    from facealign.training.loop import param_groups
    model = build_model("efficientnet_b0", "heatmap")
    one = param_groups(model, make_config(lr=1e-3))
    assert len(one) == 1 and len(one[0]["params"]) == len(list(model.parameters()))
    two = param_groups(model, make_config(lr=1e-3, backbone_lr=2.5e-4))
    assert [g["lr_scale"] for g in two] == [0.25, 1.0]
    ids = [id(p) for g in two for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert {id(p) for p in model.backbone.parameters()} == {id(p) for p in two[0]["params"]}


def test_a_run_with_both_options_trains_the_backbone_at_its_own_rate(data, tmp_path):
    from facealign.models.checkpoint import load_checkpoint
    from facealign.training.loop import lr_at, train
    cfg = tiny_config(data, tmp_path, threads=1, epochs=2, max_steps=2, lr=1e-3, backbone_lr=1e-4, pose_balance=1.0)
    summary = train(cfg, progress=False)
    assert len(summary["history"]) == 2
    groups = load_checkpoint(cfg.run_dir / "checkpoint_last.pt")["optimizer"]["param_groups"]
    # the last step (global step 3 of 4): the head at the cosine rate, the backbone at a tenth of it
    expected = lr_at(cfg, 3, 4)
    assert groups[1]["lr"] == pytest.approx(expected) and groups[0]["lr"] == pytest.approx(expected / 10)
    assert summary["history"][-1]["lr"] == pytest.approx(expected)
    import json
    saved = json.loads((cfg.run_dir / "config.json").read_text())["config"]
    assert saved["backbone_lr"] == 1e-4 and saved["pose_balance"] == 1.0


def test_pose_balance_draws_the_training_faces_by_their_weights(data, tmp_path):
    from facealign.data.sampling import BalancedSampler, pose_weights
    from facealign.training.loop import training_sampler
    from facealign.training.prepare import prepare_data
    cfg = tiny_config(data, tmp_path, pose_balance=1.0)
    cache, _, _ = prepare_data(cfg, progress=False)
    sampler = training_sampler(cache, cfg, 1, 0)
    assert isinstance(sampler, BalancedSampler)
    assert np.allclose(sampler.weights, pose_weights(cache.landmarks, 1.0))
    sampler.set_epoch(4)
    drawn = list(sampler)
    assert len(drawn) == len(cache) and set(drawn) <= set(range(len(cache)))
    plain = training_sampler(cache, tiny_config(data, tmp_path), 1, 0)
    assert not isinstance(plain, BalancedSampler)


@pytest.mark.parametrize("field,value,message", [("pose_balance", -0.5, "pose_balance must be 0"),
                                                 ("backbone_lr", 0.0, "backbone_lr must be more than 0")])
def test_bad_values_are_refused(field, value, message):
    from facealign.training.config import make_config
    with pytest.raises(ValueError, match=message):
        make_config(**{field: value})
