"""Counts, always (issue 25, item 3): training and evaluation say how many faces were found, used and dropped,
by reason, and training records them in run_dir/config.json under `data_counts`."""
import json

import numpy as np
import pytest
from PIL import Image

from facealign.cli import main
from facealign.data.counts import face_counts, format_counts
from facealign.data.pts import write_pts
from facealign.data.synthetic import random_face, write_faces


@pytest.fixture
def messy_root(tmp_path, rng):
    """train/: 6 good faces, an unreadable .pts, a 98-point .pts, a .pts without image; test/: 2 good, 1 unreadable."""
    root = tmp_path / "mine"
    write_faces(root / "train", 6, rng, size=96, prefix="tr")
    write_faces(root / "test", 2, rng, size=96, prefix="te")
    img, pts = random_face(rng, 96)
    for folder in ("train", "test"):
        Image.fromarray(img).save(root / folder / "bad.jpg")
        (root / folder / "bad.pts").write_text("version: 1\nn_points: 68\n{\n1 2\n")  # truncated
    Image.fromarray(img).save(root / "train" / "w98.jpg")
    write_pts(root / "train" / "w98.pts", np.concatenate([pts, pts[:30]]))
    write_pts(root / "train" / "lonely.pts", pts)
    return root


def test_training_prints_and_records_the_counts(messy_root, tmp_path, capsys):
    from facealign.training.loop import train
    from helpers import tiny_config
    cfg = tiny_config(messy_root, tmp_path, epochs=1, max_steps=1, threads=1)
    train(cfg, progress=False)
    # 6 faces, one photo each; val_fraction 0.2 holds out photos until >= 1.2 faces: 2
    expected = {"split": "train", "found": 9, "used": 6, "parts": {"training": 4, "validation": 2},
                "dropped": {"unreadable .pts": 1, "no image for .pts": 1, "wrong point count": 1}}
    assert json.loads((cfg.run_dir / "config.json").read_text())["data_counts"] == expected
    assert ("faces of 'train': 9 found, 6 used (training 4, validation 2), 3 dropped (1 unreadable .pts, 1 no image "
            "for .pts, 1 wrong point count)") in capsys.readouterr().out


def test_detector_misses_are_counted_as_dropped(messy_root, tmp_path, monkeypatch):
    import facealign.training.prepare as t
    from helpers import tiny_config
    real_boxes_for = t.boxes_for
    monkeypatch.setattr(t, "_detected", lambda r, cache: r.pts.stem not in ("tr000_1", "tr001_1"))
    monkeypatch.setattr(t, "boxes_for", lambda records, protocol, **kw: real_boxes_for(records, "gt", **kw))
    counts = {}
    cfg = tiny_config(messy_root, tmp_path, train_box="detector", val_box="detector", val_fraction=0.0)
    t.prepare_data(cfg, progress=False, counts=counts)
    assert counts["used"] == 4 and counts["parts"] == {"training": 4}
    assert counts["dropped"]["detector miss"] == 2 and sum(counts["dropped"].values()) == 9 - 4


def test_evaluation_prints_and_keeps_the_counts(messy_root, model_path, tmp_path, capsys):
    out = tmp_path / "ev"
    assert main(["evaluate", "--model", str(model_path), "--data", str(messy_root), "--split", "test", "--box", "gt",
                 "-o", str(out)]) == 0
    assert ("  faces of 'test': 3 found, 2 used (evaluated 2), 1 dropped (1 unreadable .pts)"
            in capsys.readouterr().out.splitlines())
    summary = json.loads(next(out.glob("*.json")).read_text())
    assert summary["counts"]["dropped"] == {"unreadable .pts": 1} and summary["counts"]["found"] == 3


def test_counts_always_add_up():
    c = face_counts("all", 5, [("a.pts", "wrong point count: 98 points")], {"evaluated": 3})
    # 2 of the 5 usable faces are neither used nor given a reason: they are still shown, as "other"
    assert c["dropped"] == {"wrong point count": 1, "other": 2} and c["found"] == 6
    assert format_counts(c) == "faces of 'all': 6 found, 3 used (evaluated 3), 3 dropped (1 wrong point count, 2 other)"


def test_training_from_a_pack_counts_its_faces(messy_root, tmp_path):
    from facealign.data.pack_writer import write_pack
    from facealign.training.prepare import prepare_data
    from helpers import tiny_config
    pack = tmp_path / "train.fapack"
    write_pack(messy_root, pack, ["train"], box="gt", size=32, progress=False, cache_dir=tmp_path / "b")
    counts = {}
    prepare_data(tiny_config(pack, tmp_path, context=0.4), progress=False, counts=counts)
    # the pack holds the 6 usable faces (defective files never reach a pack); 0.2 of 6 photos -> 2 held out
    assert counts == {"split": "train", "found": 6, "used": 6, "parts": {"training": 4, "validation": 2},
                      "dropped": {}}
