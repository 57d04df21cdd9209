"""Bad annotations and dataset folders: every problem is reported with a count, `--strict` fails on them."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from facealign.cli import main
from facealign.data.cache import CacheSpec, build_crop_cache
from facealign.data.layouts import (BAD_FOLDER, BAD_IMAGE, BAD_PTS, DUPLICATE, NO_IMAGE, NO_PTS, OUTSIDE, PROFILE,
                                    WRONG_COUNT, far_outside, index_dataset, problem_kind)
from facealign.data.errors import DataError
from facealign.data.pts import PtsError, format_pts, parse_pts, write_pts
from facealign.data.summary import summarize_root
from facealign.data.synthetic import make_300w_fixture, write_faces

GOOD = format_pts(np.arange(136, dtype=np.float32).reshape(68, 2))


@pytest.mark.parametrize("name, text, message", [
    ("wrong count", "version: 1\nn_points: 68\n{\n1 1\n}\n", "n_points=68 but the file has 1"),
    ("nan", GOOD.replace("1 2\n", "nan 2\n", 1), "non-finite"),
    ("inf", GOOD.replace("1 2\n", "1 inf\n", 1), "non-finite"),
    ("-inf", GOOD.replace("1 2\n", "-inf 2\n", 1), "non-finite"),
    ("text", GOOD.replace("1 2\n", "one two\n", 1), "non-numeric"),
    ("no opening brace", GOOD.replace("{\n", ""), "header without an opening"),
    ("no closing brace", GOOD.replace("}\n", ""), "missing closing"),
    ("extra column", GOOD.replace("1 2\n", "1 2 0.5\n", 1), "expected 'x y'"),
    ("one column", GOOD.replace("1 2\n", "1\n", 1), "expected 'x y'"),
    ("bad n_points", GOOD.replace("n_points: 68", "n_points: many"), "bad n_points"),
    ("empty", "", "empty file"),
    ("only whitespace", " \n\t\n", "empty file"),
])
def test_malformed_pts_is_a_clear_error(name, text, message):
    with pytest.raises(PtsError, match=message) as err:
        parse_pts(text, source="face.pts", n_points=68)
    assert str(err.value).startswith("face.pts: ") and "\n" not in str(err.value)


def test_crlf_bom_and_comments_parse_like_plain_text():
    plain = parse_pts(GOOD)
    np.testing.assert_array_equal(parse_pts("\ufeff" + GOOD.replace("\n", "\r\n")), plain)
    np.testing.assert_array_equal(parse_pts(GOOD.replace("\n", "\r")), plain)  # old Mac line ends
    np.testing.assert_array_equal(parse_pts("# exported\n" + GOOD), plain)


def test_non_utf8_pts_file(tmp_path):
    from facealign.data.pts import read_pts
    (tmp_path / "latin.pts").write_bytes(b"\xff\xfe1\x002\x00")
    with pytest.raises(PtsError, match="cannot read"):
        read_pts(tmp_path / "latin.pts")


def _messy_folder(root, rng):
    """A generic dataset with one of each pairing/annotation problem, plus 3 good faces."""
    write_faces(root, 3, rng, size=64, prefix="good")
    img = np.zeros((64, 64, 3), np.uint8)
    Image.fromarray(img).save(root / "no_pts.jpg")                         # image without .pts
    (root / "no_image.pts").write_text(GOOD)                                 # .pts without image
    Image.fromarray(img).save(root / "good000_1.png")                        # duplicate stem, other extension
    (root / "broken.pts").write_text(GOOD.replace("1 2\n", "1 nan\n", 1))   # NaN
    Image.fromarray(img).save(root / "broken.jpg")
    write_pts(root / "few.pts", np.zeros((5, 2), np.float32))               # wrong count
    Image.fromarray(img).save(root / "few.jpg")
    (root / "notimage.pts").write_text(GOOD)                                 # image that is not an image
    (root / "notimage.jpg").write_text("not a jpeg")
    far = rng.uniform(10, 50, (68, 2)).astype(np.float32)
    far[8] = (32, 640)                                                       # chin at y = 640 in a 64 px image
    write_pts(root / "far.pts", far)
    Image.fromarray(img).save(root / "far.jpg")
    near = rng.uniform(10, 50, (68, 2)).astype(np.float32)
    near[8] = (32, 65)                                                       # just past the border: fine
    write_pts(root / "near.pts", near)
    Image.fromarray(img).save(root / "near.jpg")


def test_pairing_and_annotation_problems_are_reported_and_counted(tmp_path, rng):
    root = tmp_path / "messy"
    _messy_folder(root, rng)
    with pytest.warns(UserWarning, match="1 face\\(s\\) have landmarks far outside"):
        idx = index_dataset(root, "generic")
    keys = sorted(r.pts.stem for r in idx.split("all"))
    assert keys == ["far", "good000_1", "good001_1", "good002_1", "near"]  # far-outside faces are kept, but flagged
    skipped = {os.path.basename(p): problem_kind(r) for p, r in idx.skipped}
    assert skipped == {"no_image.pts": NO_IMAGE, "broken.pts": BAD_PTS, "few.pts": WRONG_COUNT,
                       "notimage.jpg": BAD_IMAGE}
    flagged = {os.path.basename(p): problem_kind(r) for p, r in idx.flagged}
    assert flagged == {"no_pts.jpg": NO_PTS, "good000_1.png": DUPLICATE, "far.pts": OUTSIDE}
    assert len(idx.problems()) == 7


def test_far_outside_measure():
    lm = np.array([[10, 10], [30, 30], [20, 50]], np.float32)  # face size 40 px
    assert far_outside(lm, 64, 64) == 0
    assert far_outside(lm, 64, 40) == pytest.approx((50 - 39.5) / 40)
    assert far_outside(lm - 20, 64, 64) == pytest.approx((10 - 0.5) / 40)  # x = -10 vs the edge at -0.5


def test_summary_lists_every_problem_and_strict_fails(tmp_path, rng, capsys):
    root = tmp_path / "messy"
    _messy_folder(root, rng)
    assert main(["data", "summary", str(root)]) == 0
    out = capsys.readouterr().out
    for kind in (NO_IMAGE, BAD_PTS, WRONG_COUNT, BAD_IMAGE, NO_PTS, DUPLICATE, OUTSIDE):
        assert f"1  {kind}" in out, kind
    assert "problems: 7" in out
    assert main(["data", "summary", str(root), "--strict"]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == f"facealign: error: --strict: 7 problem(s) in {root} (listed above)"


def test_strict_passes_on_a_clean_root_and_tolerates_menpo_profiles(tmp_path, fixture_menpo, capsys):
    root = make_300w_fixture(tmp_path / "300W", {k: 1 for k in ("afw", "helen/trainset", "lfpw/trainset",
                                                              "helen/testset", "lfpw/testset", "ibug",
                                                              "300W/01_Indoor", "300W/02_Outdoor")}, size=64)
    assert main(["data", "summary", str(root), "--strict"]) == 0
    assert "problems: 0" in capsys.readouterr().out
    assert main(["data", "summary", str(fixture_menpo), "--strict"]) == 0
    out = capsys.readouterr().out
    assert f"2  {PROFILE}  (expected)" in out


def test_missing_folders_count_as_problems(fixture_300w, capsys):
    assert main(["data", "summary", str(fixture_300w), "--strict"]) == 1
    assert "problems: 5" in capsys.readouterr().out


def test_truncated_pixels_found_by_decoding(tmp_path, rng, capsys):
    root = tmp_path / "g"
    write_faces(root, 3, rng, size=64, prefix="f")
    img = root / "f001_1.jpg"
    data = img.read_bytes()
    img.write_bytes(data[: len(data) // 2])  # header intact, pixel data cut
    assert len(index_dataset(root, "generic").split("all")) == 3  # header-only indexing cannot tell
    idx = summarize_root(root, "generic")
    assert len(idx.split("all")) == 2 and [problem_kind(r) for _, r in idx.skipped] == [BAD_IMAGE]
    assert idx.subset_counts == {"all": 2}
    assert main(["data", "summary", str(root), "--no-decode", "--strict"]) == 0
    assert main(["data", "summary", str(root), "--strict"]) == 1
    capsys.readouterr()
    # training's crop cache skips the face with a warning instead of dying
    records = index_dataset(root, "generic").split("all")
    boxes = np.array([[0, 0, 63, 63]] * 3, np.float32)
    with pytest.warns(UserWarning, match="skipped 1 face\\(s\\) whose image cannot be decoded"):
        cache = build_crop_cache(records, boxes, CacheSpec(size=32), tmp_path / "c", progress=False)
    assert len(cache) == 2 and cache.images.shape[0] == 2 and "all/f001_1" not in cache.keys
    again = build_crop_cache(records, boxes, CacheSpec(size=32), tmp_path / "c", progress=False)
    assert again.keys == cache.keys  # the reduced cache is reused as it is


def test_unreadable_subfolder_is_reported(tmp_path, rng, monkeypatch):
    root = tmp_path / "g"
    write_faces(root / "ok", 2, rng, size=64)
    write_faces(root / "locked", 2, rng, size=64)
    real = os.scandir

    def scandir(path="."):
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)
    monkeypatch.setattr(os, "scandir", scandir)
    idx = index_dataset(root, "generic")
    assert len(idx.split("all")) == 2
    assert [(os.path.basename(p), problem_kind(r)) for p, r in idx.skipped] == [("locked", BAD_FOLDER)]
    assert "Permission denied" in idx.skipped[0][1]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads folders whatever their permission bits")
def test_unreadable_subfolder_with_real_permissions(tmp_path, rng):
    root = tmp_path / "g"
    write_faces(root / "ok", 2, rng, size=64)
    write_faces(root / "locked", 2, rng, size=64)
    (root / "locked").chmod(0)
    try:
        idx = index_dataset(root, "generic")
    finally:
        (root / "locked").chmod(0o755)
    assert len(idx.split("all")) == 2 and problem_kind(idx.skipped[0][1]) == BAD_FOLDER


def test_symlink_loop_does_not_hang(tmp_path, rng):
    root = tmp_path / "g"
    write_faces(root / "a", 2, rng, size=64)
    (root / "a" / "loop").symlink_to(root, target_is_directory=True)
    assert len(index_dataset(root, "generic").split("all")) == 2


def test_empty_split_and_empty_root(tmp_path):
    (tmp_path / "empty").mkdir()
    idx = index_dataset(tmp_path / "empty", "generic")
    with pytest.raises(DataError, match="split 'all' of .* is empty"):
        idx.split("all")
    with pytest.raises(DataError, match="is not a folder"):
        index_dataset(tmp_path / "nope")
    assert main(["data", "summary", str(tmp_path / "nope")]) == 2
