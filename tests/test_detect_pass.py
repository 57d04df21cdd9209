"""Issue 24 item 1: the first `train` / `evaluate` on a new root detects its photos in one visible, parallel pass
(the path of `facealign boxes`), instead of one silent photo at a time."""
import warnings

import numpy as np
import pytest

import facealign.detection.boxes as boxes_mod
from facealign.detection.boxes import BoxCache, detect_missing
from facealign.data.synthetic import make_300w_fixture


@pytest.fixture()
def root(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_300w_fixture(tmp_path / "300W", {"afw": 3, "helen/trainset": 3, "helen/testset": 2}, size=64)


@pytest.fixture()
def passes(monkeypatch):
    """Record each pre-pass: the photos asked for and how many were not yet in the cache."""
    calls, real = [], boxes_mod.precompute_boxes

    def spy(images, cache, workers=2, progress=True, save_every=100):
        images = sorted({str(p) for p in images})
        calls.append({"images": images, "todo": sum(cache.get(p) is None for p in images), "progress": progress,
                      "workers": workers})
        return real(images, cache, workers=1, progress=progress, save_every=save_every)  # 1: no spawn in tests
    monkeypatch.setattr(boxes_mod, "precompute_boxes", spy)
    return calls


def test_detect_missing_detects_only_for_detector_protocols(root, passes, tmp_path):
    from facealign.data.layouts import index_dataset
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records = index_dataset(root).records("train")
    cache = BoxCache(root, tmp_path / "cache")
    assert detect_missing(records, ("gt",), cache)["total"] == 0 and passes == []  # gt boxes need no detector
    stats = detect_missing(records, ("gt", "detector"), cache, progress=False)
    assert stats["total"] == stats["detected"] == len({r.image for r in records}) == 6
    assert passes[0]["workers"] == min(2, __import__("os").cpu_count() or 1)
    assert all(cache.get(r.image) is not None for r in records)
    assert detect_missing(records, ("seed",), cache)["hits"] == 6  # second time: all from the cache


def test_training_data_detects_every_photo_in_one_pass_with_a_bar(root, passes, tmp_path, capsys):
    from facealign.training.config import make_config
    from facealign.training.prepare import prepare_data
    cfg = make_config("cpu", data=str(root), input_size=32, train_box="gt", val_box="detector", drop_undetected=False,
                      cache_dir=str(tmp_path / "cache"))
    prepare_data(cfg, progress=True)
    assert len(passes) == 1 and passes[0]["todo"] == 6 and passes[0]["progress"] is True
    assert "detecting" in capsys.readouterr().err  # the progress bar (tqdm writes to stderr)


def test_evaluation_detects_the_split_in_one_pass(root, passes, tmp_path):
    from facealign.evaluation.evaluate import evaluate_split

    class Zeros:  # a predictor that needs no model
        name, flip_tta = "zeros", False

        def predict(self, image, boxes):
            return np.zeros((len(boxes), 68, 2), np.float32)
    evaluate_split(Zeros(), root, "common", protocol="detector", miss="gt-box",
                   cache=BoxCache(root, tmp_path / "cache"), progress=False)
    assert len(passes) == 1 and passes[0]["todo"] == len(passes[0]["images"]) == 2
