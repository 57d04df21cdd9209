"""Second-stage models: similarity-aligned crops (`facealign.data.aligned`), the `StagedRunner` that chains two
models, and training a second stage (`first_stage`) on a tiny generated set."""
import json

import numpy as np
import pytest
import torch

from facealign.data.aligned import aligned_transform, frame_error, roll
from facealign.data.synthetic import make_300w_fixture, template_shape
from facealign.inference.runner import CropRunner
from facealign.inference.staged import StagedRunner
from helpers import CARD, tiny_config


def _rotate(points, degrees, about):
    a = np.deg2rad(degrees)
    r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return (points - about) @ r.T + about


def _upright():
    """A 68-point face with level eyes (the generator's template), in pixels."""
    lm = template_shape().astype(np.float64) * 100 + [50, 40]
    right, left = lm[36:42].mean(0), lm[42:48].mean(0)
    assert right[1] == pytest.approx(left[1]) and right[0] < left[0]
    return lm


def test_upright_face_is_cropped_around_its_landmark_box():
    lm = _upright()
    lo, hi = lm.min(0), lm.max(0)
    side = (hi - lo).max() * 1.25
    centre = (lo + hi) / 2
    t = aligned_transform(lm, context=0.25)
    # hand-computed: no rotation, u = (x - centre) / side + 0.5
    expected = np.array([[1 / side, 0, 0.5 - centre[0] / side], [0, 1 / side, 0.5 - centre[1] / side]])
    np.testing.assert_allclose(t.matrix, expected, atol=1e-12)
    u = t.to_crop(lm)
    assert u.min() == pytest.approx(0.1, abs=1e-6) or u.max() == pytest.approx(0.9, abs=1e-6)


def test_the_aligned_crop_undoes_rotation_scale_and_shift():
    lm = _upright()
    base = aligned_transform(lm, 0.3).to_crop(lm)
    for degrees in (-40, 12.5, 75):
        moved = _rotate(lm, degrees, about=np.array([10.0, -30.0])) * 1.7 + [200, 90]
        assert np.rad2deg(roll(moved)) == pytest.approx(degrees)  # y down: positive is clockwise
        np.testing.assert_allclose(aligned_transform(moved, 0.3).to_crop(moved), base, atol=1e-5)


def test_frame_error_measures_a_shifted_prediction():
    lm = _upright()
    side = (lm.max(0) - lm.min(0)).max() * 1.25
    err = frame_error(lm[None] + [[6.0, 0.0]], lm[None], 0.25)
    np.testing.assert_allclose(err, [[0, 0, 6 / side, 0]], atol=1e-6)
    rotated = _rotate(lm, 5, lm.mean(0))
    assert frame_error(rotated[None], lm[None], 0.25)[0, 0] == pytest.approx(5)


def test_bad_landmarks_and_eyeless_schemes_are_errors():
    with pytest.raises(ValueError, match="finite"):
        aligned_transform(np.full((68, 2), np.nan), 0.2)
    with pytest.raises(ValueError, match="degenerate"):
        aligned_transform(np.zeros((68, 2)), 0.2)


def test_degenerate_first_stage_falls_back_to_the_box():
    from facealign.data.aligned import aligned_or_box
    from facealign.data.crop import CropTransform
    box = np.array([10, 20, 50, 80], np.float32)
    for lm in (np.zeros((68, 2)), np.full((68, 2), np.nan)):
        np.testing.assert_array_equal(aligned_or_box(lm, box, 0.3).matrix, CropTransform.from_box(box, 0.3).matrix)
    lm = _upright()
    np.testing.assert_array_equal(aligned_or_box(lm, box, 0.3).matrix, aligned_transform(lm, 0.3).matrix)


class _Fixed:
    """A first stage that 'predicts' given landmarks whatever the crop."""

    def __init__(self, landmarks):
        self.landmarks = landmarks
        self.scheme = CropRunner(lambda b: b, {**CARD}).scheme
        self.name = "fixed"

    def predict(self, image, boxes):
        return np.repeat(self.landmarks[None], len(boxes), 0).astype(np.float32)


def test_staged_runner_reads_the_second_stage_in_the_first_stages_aligned_frame():
    lm = _rotate(_upright(), 20, np.array([100.0, 100.0]))
    coords = np.random.default_rng(0).uniform(0.2, 0.8, (68, 2)).astype(np.float32)
    seen = []

    def backend(batch):
        seen.append(batch.shape)
        return np.repeat(coords[None], len(batch), 0)

    second = CropRunner(backend, {**CARD, "input_size": 40, "context": 0.3})
    staged = StagedRunner(_Fixed(lm), second)
    image = np.random.default_rng(1).integers(0, 255, (240, 260, 3), np.uint8)
    out = staged.predict(image, np.array([[0, 0, 50, 50], [10, 10, 90, 90]], np.float32))
    expected = aligned_transform(lm, 0.3).to_image(coords)
    assert out.shape == (2, 68, 2) and seen == [(2, 3, 40, 40)]
    np.testing.assert_allclose(out[0], expected, atol=1e-4)
    np.testing.assert_allclose(out[1], expected, atol=1e-4)
    # a second stage whose crop holds the first stage's landmarks where the aligned frame puts them returns them
    staged = StagedRunner(_Fixed(lm), CropRunner(lambda b: np.repeat(aligned_transform(lm, 0.3).to_crop(lm)[None],
                                                                     len(b), 0), {**CARD, "context": 0.3}))
    np.testing.assert_allclose(staged.predict(image, np.zeros((1, 4), np.float32))[0], lm, atol=1e-3)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("d") / "300W"
    return make_300w_fixture(root, {"afw": 6, "helen/trainset": 6, "helen/testset": 2}, size=96)


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_a_second_stage_trains_on_aligned_crops_and_evaluates_with_its_first_stage(data, tmp_path):
    from facealign.data.images import load_rgb
    from facealign.data.layouts import index_dataset
    from facealign.inference.backends import load_runner
    from facealign.training.loop import train
    from facealign.training.prepare import prepare_data
    # a regression head: two steps already predict distinct points (a heatmap head's collapse to one point
    # would be cropped by the box instead: test_degenerate_first_stage_falls_back_to_the_box)
    first_cfg = tiny_config(data, tmp_path, threads=1, epochs=1, max_steps=2, run_name="first", head="regression",
                            loss="wing")
    train(first_cfg, progress=False)
    cfg = tiny_config(data, tmp_path, threads=1, epochs=1, max_steps=2, run_name="second", context=0.3,
                      first_stage=str(first_cfg.run_dir))
    train_cache, val_cache, val_records = prepare_data(cfg, progress=False)
    # training crops: aligned from the ground truth, so the eye line is level in every cached crop
    eyes = train_cache.landmarks[:, 36:42].mean(1), train_cache.landmarks[:, 42:48].mean(1)
    np.testing.assert_allclose(eyes[0][:, 1], eyes[1][:, 1], atol=1e-5)
    assert (eyes[0][:, 0] < eyes[1][:, 0]).all()
    # validation crops: placed by the first stage's prediction, exactly as the staged runner places them
    first = load_runner(str(first_cfg.run_dir), "torch")
    r = val_records[0]
    box = np.concatenate([r.landmarks.min(0), r.landmarks.max(0)])  # the `gt` box protocol
    expected = aligned_transform(first.predict(load_rgb(r.image), box[None])[0], 0.3)
    np.testing.assert_allclose(val_cache.crop_transform(0).matrix, expected.matrix, atol=1e-6)
    assert not np.allclose(val_cache.crop_transform(0).matrix, aligned_transform(r.landmarks, 0.3).matrix,
                           atol=1e-3)
    out = train(cfg, progress=False)
    assert np.isfinite(out["history"][0]["val_nme"])
    assert json.loads((cfg.run_dir / "config.json").read_text())["config"]["first_stage"] == str(first_cfg.run_dir)
    staged = load_runner(str(cfg.run_dir), "torch")
    assert isinstance(staged, StagedRunner) and staged.first.name == first.name
    test = index_dataset(data).split("common")[0]
    pred = staged.predict(load_rgb(test.image), np.array([[10, 10, 80, 80]], np.float32))
    assert pred.shape == (1, 68, 2) and np.isfinite(pred).all()


def test_first_stage_must_exist_and_needs_photos(data, tmp_path):
    from facealign.data.errors import DataError
    from facealign.training.prepare import prepare_data
    with pytest.raises(ValueError, match="first_stage: model '/nope' is neither"):
        tiny_config(data, tmp_path, first_stage="/nope")
    pack = tmp_path / "p.fapack"
    from facealign.data.pack_writer import write_pack
    write_pack(data, pack, box="gt", size=32, progress=False, cache_dir=tmp_path / "b")
    with pytest.raises(DataError, match="first_stage: a second stage crops from the photos"):
        prepare_data(tiny_config(pack, tmp_path, first_stage="default160"), progress=False)


def test_cli_first_stage_flag_and_its_error(data, tmp_path):
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "facealign.cli", "train", "--data", str(data), "--first-stage",
                           str(tmp_path / "nope"), "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"facealign: error: first_stage: model '{tmp_path / 'nope'}' is "
                                                f"neither a file nor one of: default, default160, fast (nor a "
                                                f"training run folder with checkpoint_best.pt)"]
