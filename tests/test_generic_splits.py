"""A researcher's own folder (issue 25, items 1 and 2): split folders, split files, train/test overlap, several
faces in one photo."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from facealign.cli import main
from facealign.data.errors import DataError
from facealign.data.layouts import index_dataset, problem_kind
from facealign.data.pts import write_pts
from facealign.data.splits import NOT_LISTED, OUTSIDE_SPLITS, UNMATCHED
from facealign.data.synthetic import random_face, write_faces


@pytest.fixture
def split_root(tmp_path, rng):
    """train/ (4 faces), test/ (2), holdout/ (1) and a stray .pts at the top level."""
    root = tmp_path / "mydata"
    write_faces(root / "train", 4, rng, size=96, prefix="tr")
    write_faces(root / "test", 2, rng, size=96, prefix="te")
    write_faces(root / "holdout", 1, rng, size=96, prefix="ho")
    write_pts(root / "stray.pts", random_face(rng, 96)[1])
    return root


def _multi_face_photo(folder, rng, name="photo", faces=2):
    """One image with `faces` annotation files name_1.pts, name_2.pts beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    img, _ = random_face(rng, 96)
    Image.fromarray(img).save(folder / f"{name}.jpg")
    for k in range(1, faces + 1):
        write_pts(folder / f"{name}_{k}.pts", random_face(rng, 96)[1] * 0.5 + 10 * k)


def test_top_level_folders_are_splits_when_one_is_named_train_or_test(split_root):
    idx = index_dataset(split_root)  # auto: no 300W or Menpo folder -> generic
    assert idx.layout == "generic"
    assert {k: len(v) for k, v in idx.splits.items()} == {"holdout": 1, "test": 2, "train": 4}
    assert {r.subset for r in idx.split("train")} == {"train"}
    assert idx.flagged == [(str(split_root / "stray.pts"), OUTSIDE_SPLITS)]
    with pytest.raises(DataError, match=r"unknown split 'all' for layout generic; valid: holdout, test, train \("
                                        r"a generic root has the splits of its top-level folders"):
        idx.split("all")


def test_a_folder_without_split_folders_has_one_split_all(tmp_path, rng):
    write_faces(tmp_path / "people" / "a", 2, rng, size=96)
    write_faces(tmp_path / "people" / "b", 1, rng, size=96)
    idx = index_dataset(tmp_path / "people")
    assert list(idx.splits) == ["all"] and len(idx.split("all")) == 3
    with pytest.raises(DataError, match="valid: all .*--splits FILE"):
        idx.split("train")


@pytest.mark.parametrize("kind", ["json", "csv"])
def test_a_split_file_assigns_photos_and_faces(tmp_path, rng, kind):
    root = tmp_path / "flat"
    write_faces(root, 4, rng, size=96, prefix="f")  # f000_1 ... f003_1
    _multi_face_photo(root / "group", rng)  # group/photo.jpg with photo_1.pts, photo_2.pts
    entries = {"train": ["f000_1.jpg", "f001_1.pts", "group/photo.jpg"], "test": ["f002_1", "nothere.jpg"]}
    path = tmp_path / f"splits.{kind}"
    if kind == "json":
        path.write_text(json.dumps(entries))
    else:
        path.write_text("path,split\n" + "".join(f"{e},{s}\n" for s, es in entries.items() for e in es))
    idx = index_dataset(root, split_file=path)
    assert idx.layout == "generic"
    assert {s: sorted(r.pts.name for r in recs) for s, recs in idx.splits.items()} == {
        "train": ["f000_1.pts", "f001_1.pts", "photo_1.pts", "photo_2.pts"], "test": ["f002_1.pts"]}
    assert sorted((p.removeprefix(str(root) + "/"), problem_kind(r)) for p, r in idx.flagged) == [
        ("f003_1.pts", problem_kind(NOT_LISTED)), ("nothere.jpg", UNMATCHED)]
    assert {r.key for r in idx.split("test")} == {"test/f002_1"}


def test_a_path_in_two_splits_of_a_split_file_is_an_error(tmp_path, rng):
    write_faces(tmp_path / "flat", 2, rng, size=96, prefix="f")
    (tmp_path / "s.csv").write_text("f000_1.jpg,train\nf001_1.jpg,train\nf000_1.jpg,test\n")
    with pytest.raises(DataError, match="train/test overlap in split file .*: f000_1.jpg is in split 'train' and "
                                        "'test'"):
        index_dataset(tmp_path / "flat", split_file=tmp_path / "s.csv")
    (tmp_path / "bad.csv").write_text("f000_1.jpg,train,extra\n")
    with pytest.raises(DataError, match="row 1 has 3 column"):
        index_dataset(tmp_path / "flat", split_file=tmp_path / "bad.csv")
    with pytest.raises(DataError, match="split file .* is for the generic layout, not '300w'"):
        index_dataset(tmp_path / "flat", "300w", split_file=tmp_path / "s.csv")


def test_a_copy_of_a_training_image_in_test_is_an_error(split_root, capsys):
    copy = split_root / "test" / "copy.jpg"
    shutil.copy(split_root / "train" / "tr000_1.jpg", copy)
    shutil.copy(split_root / "train" / "tr000_1.pts", copy.with_suffix(".pts"))
    with pytest.raises(DataError, match=r"train/test overlap in .*: 1 image\(s\) in two splits, e.g. .*(copy|tr000_1)"
                                        r".jpg \(same content as .*\(splits '(train|test)' and '(test|train)'\)\)"):
        index_dataset(split_root)
    assert main(["data", "summary", str(split_root), "--no-decode"]) == 1
    out, err = capsys.readouterr()
    assert "splits (from the top-level split folders):\n  holdout               1 faces from 1 photos\n" in out
    assert "in two splits (an error): 1" in out and "copy.jpg" in out
    assert err == "facealign: error: 1 image(s) in two splits (train/test overlap, listed above)\n"


def test_several_faces_in_one_photo(tmp_path, rng):
    root = tmp_path / "multi"
    _multi_face_photo(root, rng, faces=3)
    write_faces(root, 1, rng, size=96, prefix="own")  # 300W-style: own000_1.jpg + own000_1.pts
    idx = index_dataset(root, "generic")
    faces = idx.split("all")
    assert sorted(r.pts.name for r in faces) == ["own000_1.pts", "photo_1.pts", "photo_2.pts", "photo_3.pts"]
    assert {r.image.name for r in faces if r.pts.name.startswith("photo")} == {"photo.jpg"}
    assert len({r.group for r in faces if r.pts.name.startswith("photo")}) == 1  # one photo: one side of a split
    assert idx.skipped == [] and idx.flagged == []  # no "no image for .pts", no "image without .pts"


def test_training_on_a_root_with_train_and_test_uses_train_only(split_root, tmp_path):
    from facealign.training.prepare import prepare_data
    from helpers import tiny_config
    (split_root / "stray.pts").unlink()
    train_cache, val_cache, _ = prepare_data(tiny_config(split_root, tmp_path, val_fraction=0.25), progress=False)
    keys = set(train_cache.keys) | set(val_cache.keys)
    assert keys == {f"train/tr00{i}_1" for i in range(4)}  # no test/ or holdout/ face


def test_evaluate_and_pack_take_layout_and_split_file(tmp_path, rng, model_path, capsys):
    from facealign.data.pack import read_pack
    root = tmp_path / "flat"
    write_faces(root, 3, rng, size=96, prefix="f")
    (tmp_path / "s.json").write_text(json.dumps({"mine": ["f000_1.jpg", "f001_1.jpg"], "theirs": ["f002_1.jpg"]}))
    assert main(["evaluate", "--model", str(model_path), "--data", str(root), "--split", "mine", "--box", "gt",
                 "--layout", "generic", "--splits", str(tmp_path / "s.json"), "-o", str(tmp_path / "ev")]) == 0
    assert "on mine: 2 of 2 faces evaluated" in capsys.readouterr().out
    assert main(["data", "pack", str(root), "--splits", str(tmp_path / "s.json"), "--split", "theirs", "--box",
                 "gt", "-o", str(tmp_path / "p.fapack"), "--max-size", "32", "--quiet",
                 "--cache-dir", str(tmp_path / "c")]) == 0
    with read_pack(tmp_path / "p.fapack") as pack:
        assert [f.key for f in pack.faces] == ["theirs/f002_1"] and pack.meta["layout"] == "generic"


def test_experiments_train_and_evaluate_on_split_file_splits(tmp_path, rng):
    root = tmp_path / "flat"
    write_faces(root, 6, rng, size=96, prefix="f")
    (tmp_path / "s.json").write_text(json.dumps({"mine": [f"f00{i}_1.jpg" for i in range(5)], "theirs": ["f005_1"]}))
    out, name = tmp_path / "grid", "efficientnet_b0-regression-mse"
    assert main(["experiments", "--data", str(root), "--layout", "generic", "--splits", str(tmp_path / "s.json"),
                 "--train-split", "mine", "--split", "theirs", "--only", name, "--no-dlib", "--box", "gt", "--miss",
                 "gt-box", "--input-size", "32", "--batch-size", "4", "--epochs", "1", "--max-steps", "1", "--train-box",
                 "gt", "--val-box", "gt", "--workers", "0", "--threads", "1", "--cache-dir", str(tmp_path / "c"),
                 "-o", str(out)]) == 0
    run = out / "runs" / name
    counts = json.loads((run / "config.json").read_text())["data_counts"]
    assert counts["split"] == "mine" and counts["found"] == 5 and counts["used"] == 5
    summary = json.loads((run / "eval" / "theirs_gt_gt-box.json").read_text())["summary"]
    assert summary["n"] == 1 and summary["counts"]["found"] == 1


def test_predicted_pts_read_back_as_a_photos_faces(model_path, tmp_path):
    """predict --pts names a photo's faces photo_1.pts, photo_2.pts: beside the photo they are its annotations."""
    from skimage import data as skimage_data
    face = skimage_data.astronaut()[:300, 80:380]
    Image.fromarray(np.concatenate([face, face], 1)).save(tmp_path / "photo.jpg", quality=95)  # two faces
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "photo.jpg"), "-o", str(out), "--pts", "--model", str(model_path),
                 "--quiet"]) == 0
    assert sorted(p.name for p in out.glob("*.pts")) == ["photo_1.pts", "photo_2.pts"]
    shutil.copy(tmp_path / "photo.jpg", out / "photo.jpg")
    faces = index_dataset(out, "generic").split("all")
    assert [(r.pts.name, r.image.name) for r in faces] == [("photo_1.pts", "photo.jpg"), ("photo_2.pts", "photo.jpg")]
