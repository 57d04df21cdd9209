import pytest

from facealign.data.errors import DataError
from facealign.data.layouts import index_dataset, split_train_val
from facealign.data.synthetic import write_faces


def test_300w_splits_and_missing_folder_warnings(fixture_300w):
    with pytest.warns(UserWarning) as caught:
        idx = index_dataset(fixture_300w)
    assert idx.layout == "300w"
    counts = {k: len(v) for k, v in idx.splits.items()}
    assert counts == {"train": 7, "common": 2, "challenging": 0, "full": 2, "private": 0}
    assert idx.subset_counts["afw"] == 3 and idx.subset_counts["helen/trainset"] == 4
    assert set(idx.missing) == {"lfpw/trainset", "lfpw/testset", "ibug", "300W/01_Indoor", "300W/02_Outdoor"}
    messages = [str(w.message) for w in caught]
    assert len(messages) == 5 and any("'ibug' not found" in m for m in messages)
    with pytest.raises(DataError, match="'challenging' .* is empty"):
        idx.split("challenging")
    with pytest.raises(DataError, match="valid: train, common"):
        idx.split("nope")
    assert len(idx.records("train+common")) == 9


def test_full_300w_layout(tmp_path, rng):
    root = tmp_path / "300W"
    for folder, n in {"afw": 1, "helen/trainset": 1, "lfpw/trainset": 2, "helen/testset": 1, "lfpw/testset": 2,
                      "ibug": 3, "300W/01_Indoor": 2, "300W/02_Outdoor": 1}.items():
        write_faces(root / folder, n, rng, size=64, prefix=folder.replace("/", "_"))
    idx = index_dataset(root)
    assert {k: len(v) for k, v in idx.splits.items()} == {"train": 4, "common": 3, "challenging": 3, "full": 6,
                                                          "private": 3}
    assert idx.missing == []


def test_menpo_skips_profile_faces(fixture_menpo):
    idx = index_dataset(fixture_menpo)
    assert idx.layout == "menpo"
    assert len(idx.split("train")) == 4 and len(idx.split("test")) == 3
    reasons = [reason for _, reason in idx.skipped]
    assert reasons.count("39-point profile face") == 2


def test_generic_layout_and_unpaired_files(tmp_path, rng):
    write_faces(tmp_path / "a" / "b", 2, rng, size=64)
    (tmp_path / "a" / "orphan.pts").write_text("1 1\n")
    idx = index_dataset(tmp_path / "a", "generic")
    assert len(idx.split("all")) == 2
    assert any("no image" in reason for _, reason in idx.skipped)
    with pytest.raises(DataError, match="unknown layout 'x'; valid: auto, 300w, menpo, generic"):
        index_dataset(tmp_path, "x")


def test_validation_split_keeps_photos_together(fixture_300w, tmp_path, rng):
    # AFW-style names: two faces of one photo
    write_faces(tmp_path / "g", 10, rng, size=64)
    for p in list((tmp_path / "g").glob("face00[0-4]_1.*")):
        p.with_name(p.name.replace("_1.", "_2.")).write_bytes(p.read_bytes())
    recs = index_dataset(tmp_path / "g", "generic").split("all")
    assert len(recs) == 15
    train, val = split_train_val(recs, 0.2, seed=0)
    assert len(train) + len(val) == 15 and val
    assert not ({r.group for r in train} & {r.group for r in val})
    assert split_train_val(recs, 0.2, seed=0) == (train, val)


def test_empty_split_names_only_its_own_missing_folders(fixture_300w):
    """`challenging` needs ibug only: its error must not list lfpw or the private set."""
    import warnings

    from facealign.data.errors import DataError
    from facealign.data.layouts import index_dataset
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = index_dataset(fixture_300w)
    with pytest.raises(DataError, match=r"split 'challenging' of .* is empty \(missing: ibug\)$"):
        index.split("challenging")
    with pytest.raises(DataError, match=r"split 'private' of .* is empty \(missing: 300W/01_Indoor, 300W/02_Outdoor\)$"):
        index.split("private")
