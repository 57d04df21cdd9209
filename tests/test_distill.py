"""Ensemble distillation (`distill_teachers`, `facealign.training.distill`) on tiny generated runs.

The hand-checkable case: a student and a teacher whose regression heads output a constant (last layer's weights
zeroed, bias 0.5 and 0.5 + 1/64). At the first step the student predicts 0.5 for every coordinate whatever the
crop, so the distillation term is Wing at an error of one unit (1/64 of the crop): 10 ln(1 + 1/2) per
coordinate, and a one-step run's training loss is the plain run's plus distill_weight x that.
"""
import hashlib
import json
import math

import pytest
import torch

from facealign.data.synthetic import make_300w_fixture
from facealign.models.checkpoint import load_checkpoint, save_checkpoint
from facealign.training.config import config_dict, make_config
from facealign.training.loop import train
from helpers import tiny_config

WING_ONE_UNIT = 10 * math.log(1.5)  # Wing (w 10, eps 2) at |error| x 64 = 1


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("d") / "300W"
    return make_300w_fixture(root, {"afw": 6, "helen/trainset": 6, "helen/testset": 1}, size=96)


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _cfg(data, tmp_path, **overrides):
    return tiny_config(data, tmp_path, **{"threads": 1, "head": "regression", "loss": "wing", **overrides})


@pytest.fixture(scope="module")
def teacher(data, tmp_path_factory):
    """A tiny checkpoint trained for one epoch (the real teacher)."""
    tmp = tmp_path_factory.mktemp("teacher")
    cfg = _cfg(data, tmp, epochs=1, max_steps=2)
    train(cfg, progress=False)
    return cfg.run_dir / "checkpoint_best.pt"


def _variant(src, dst, bias=None, **config):
    """A copy of checkpoint `src` with config fields changed and, with `bias`, a head that outputs `bias`."""
    ckpt = load_checkpoint(src)
    state = dict(ckpt["model"])
    if bias is not None:
        state["head.mlp.4.weight"] = torch.zeros_like(state["head.mlp.4.weight"])
        state["head.mlp.4.bias"] = torch.full_like(state["head.mlp.4.bias"], bias)
    save_checkpoint(dst, {**ckpt, "model": state, "config": {**ckpt["config"], **config}})
    return str(dst)


def _first_step_loss(data, tmp_path, name, **overrides):
    cfg = _cfg(data, tmp_path, epochs=1, max_steps=1, run_name=name, **overrides)
    return train(cfg, progress=False)["history"][0]["train_loss"], cfg


def test_term_is_the_wing_of_student_against_mean_teacher(data, tmp_path, teacher):
    student = _variant(teacher, tmp_path / "student.pt", bias=0.5)
    # a teacher at another input size (its crops resized to 48 px) answers the same constant
    const = _variant(teacher, tmp_path / "const.pt", bias=0.5 + 1 / 64, input_size=48)
    plain, _ = _first_step_loss(data, tmp_path, "plain", init_model=student)
    for weight in (1.0, 0.5):
        got, cfg = _first_step_loss(data, tmp_path, f"w{weight}", init_model=student, distill_teachers=const,
                                    distill_weight=weight)
        assert got - plain == pytest.approx(weight * WING_ONE_UNIT, abs=1e-4)
    # two teachers at 0.5 + 1/64 and 0.5 - 1/64: their mean is the student's 0.5, the term 0
    low = _variant(teacher, tmp_path / "low.pt", bias=0.5 - 1 / 64)
    got, _ = _first_step_loss(data, tmp_path, "pair", init_model=student, distill_teachers=f"{const},{low}")
    assert got == pytest.approx(plain, abs=1e-5)
    # config.json and final.json name each teacher's weights
    meta = json.loads((cfg.run_dir / "config.json").read_text())
    final = json.loads((cfg.run_dir / "final.json").read_text())
    want = [{"spec": const, "sha256": hashlib.sha256(open(const, "rb").read()).hexdigest()}]
    assert meta["distill_sources"] == final["distill_sources"] == want
    assert meta["config"]["distill_teachers"] == [const] and meta["config"]["distill_weight"] == 0.5
    # packaging carries them into the model card
    from facealign.inference.release import package_run
    card = package_run(cfg.run_dir, tmp_path / "shipped", data=str(data), flip_tta=False, command="facealign package")
    assert card["training"]["distill_sources"] == want


def test_teachers_see_the_batch_resized_to_their_input_size(data, tmp_path, teacher):
    from facealign.data.schemes import get_scheme
    from facealign.models.packaged import load_model
    from facealign.training.distill import Teachers
    big = _variant(teacher, tmp_path / "big.pt", input_size=48)
    images = torch.randn(2, 3, 32, 32)
    teachers = Teachers([str(teacher), big], 1.0, 0.1, get_scheme(), torch.device("cpu"))
    model = load_model(teacher)[0]
    with torch.no_grad():
        at32 = model(images)["coords"]
        at48 = model(torch.nn.functional.interpolate(images, size=(48, 48), mode="bilinear"))["coords"]
    assert torch.allclose(teachers.targets(images), (at32 + at48) / 2, atol=1e-6)
    assert not torch.allclose(at32, at48, atol=1e-4)  # the resize mattered
    # with flip: the mirrored crop's prediction, relabelled and u -> 1 - u, averaged with the plain one
    flipped = Teachers([str(teacher)], 1.0, 0.1, get_scheme(), torch.device("cpu"), flip=True)
    with torch.no_grad():
        mirrored = model(images.flip(-1))["coords"][:, get_scheme().mirror_permutation.copy()]
    mirrored[..., 0] = 1 - mirrored[..., 0]
    assert torch.allclose(flipped.targets(images), (at32 + mirrored) / 2, atol=1e-6)


def test_mismatched_teachers_are_one_line_errors(data, tmp_path, teacher):
    with pytest.raises(ValueError, match="distill_teachers: model 'nope' is neither a file nor one of: default, "
                                         "default160, fast") as e:
        make_config(distill_teachers="default,nope")
    assert "\n" not in str(e.value)
    wide = _variant(teacher, tmp_path / "wide.pt", context=0.4)
    with pytest.raises(ValueError, match=r"distill teacher .*wide.pt': context 0.4 differs from this run's 0.1"):
        train(_cfg(data, tmp_path, epochs=1, max_steps=1, distill_teachers=wide), progress=False)
    with pytest.raises(ValueError, match="distill_weight must be 0 or more"):
        make_config(distill_weight=-1)


def test_config_round_trip_and_resume_refusal(data, tmp_path, teacher):
    cfg = make_config(distill_teachers=f"default, {teacher}", distill_weight=0.5)
    assert cfg.distill_teachers == ("default", str(teacher))
    again = make_config(base=json.loads(json.dumps(config_dict(cfg))))  # as `--config RUN/config.json` reads it
    assert again == cfg and make_config().distill_teachers == ()
    run = _cfg(data, tmp_path, epochs=1, max_steps=1, distill_teachers=str(teacher))
    train(run, progress=False)
    train(run, resume=True, progress=False)  # the same teachers resume (nothing left to train)
    with pytest.raises(ValueError, match="distill_weight: 1.0 -> 2.0"):
        train(_cfg(data, tmp_path, epochs=1, max_steps=1, distill_teachers=str(teacher), distill_weight=2.0),
              resume=True, progress=False)


def test_cli_flags_and_set(data, tmp_path, teacher):
    import argparse

    from facealign.commands.train import add_arguments, make_train_config
    p = argparse.ArgumentParser()
    add_arguments(p)
    cfg = make_train_config(p.parse_args(["--data", str(data), "--distill", f"default160,{teacher}",
                                          "--distill-weight", "0.25"]))
    assert cfg.distill_teachers == ("default160", str(teacher)) and cfg.distill_weight == 0.25
    cfg = make_train_config(p.parse_args(["--data", str(data), "--set", 'distill_teachers=["default"]',
                                          "--set", "distill_flip=true"]))
    assert cfg.distill_teachers == ("default",) and cfg.distill_flip is True


def test_larger_teachers_see_the_same_crops_rendered_at_their_size(data, tmp_path):
    """A 48-px teacher of a 32-px student gets the student's augmented batch rendered from a 48-px crop cache:
    the same faces, geometry, flip and photometry, so shrinking it to 32 px gives back the student's crops up to
    resampling, while a batch of other faces does not."""
    from dataclasses import replace

    from facealign.training.loaders import build_batches
    from facealign.training.prepare import prepare_data
    cfg = _cfg(data, tmp_path, batch_size=6)
    small = prepare_data(cfg, progress=False)[0]
    large = prepare_data(replace(cfg, input_size=48), progress=False)[0]
    sampler = list(range(len(small)))
    batches = build_batches(small, cfg, sampler, 6, torch.device("cpu"), teacher_cache=large)
    images, coords, teacher_images = next(batches.epoch(3))
    assert images.shape[-1] == 32 and teacher_images.shape[-2:] == (48, 48)
    shrunk = torch.nn.functional.interpolate(teacher_images, size=(32, 32), mode="bilinear", antialias=True)
    same = (shrunk - images).abs().mean().item()
    other = (shrunk.roll(1, 0) - images).abs().mean().item()
    assert same < 0.25 * other, (same, other)
    # the student's half of the batch is what it gets without teachers
    plain_images, plain_coords = next(build_batches(small, cfg, sampler, 6, torch.device("cpu")).epoch(3))
    assert torch.equal(plain_images, images) and torch.equal(plain_coords, coords)
    with pytest.raises(ValueError, match="need --loader tensor, not 'workers'"):
        build_batches(small, replace(cfg, loader="workers"), sampler, 6, torch.device("cpu"), teacher_cache=large)
    with pytest.raises(ValueError, match="other faces"):
        build_batches(small, cfg, sampler, 6, torch.device("cpu"), teacher_cache=prepare_data(
            replace(cfg, input_size=48, seed=5), progress=False)[0])
