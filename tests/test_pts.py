import numpy as np
import pytest

from facealign.data.pts import PtsError, format_pts, parse_pts, read_pts, write_pts


@pytest.mark.parametrize("header", [True, False])
def test_round_trip_is_exact(tmp_path, rng, header):
    pts = (rng.uniform(0, 500, (68, 2))).astype(np.float32)
    path = tmp_path / "a.pts"
    write_pts(path, pts, header=header)
    back = read_pts(path)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, pts)
    # write(read(file)) reproduces the file byte for byte
    write_pts(tmp_path / "b.pts", back, header=header)
    assert (tmp_path / "b.pts").read_text() == path.read_text()


def test_file_is_one_based():
    text = "version: 1\nn_points: 2\n{\n1 1\n10.5 20\n}\n"
    np.testing.assert_array_equal(parse_pts(text), [[0, 0], [9.5, 19]])
    assert format_pts(np.array([[0.0, 0.0]], np.float32), header=False) == "1 1\n"


def test_headerless_crlf_and_bom_parse():
    text = "\ufeff1 2\r\n3 4\r\n"
    np.testing.assert_array_equal(parse_pts(text), [[0, 1], [2, 3]])


@pytest.mark.parametrize("text,msg", [
    ("", "empty file"),
    ("version: 1\nn_points: 3\n{\n1 1\n2 2\n}\n", "n_points=3"),
    ("version: 1\nn_points: 2\n{\n1 1\n2 2\n", "missing closing"),
    ("1 1\nx 2\n", "non-numeric"),
    ("1 1 1\n", "expected 'x y'"),
    ("1 nan\n", "non-finite"),
])
def test_bad_files_raise_clear_errors(text, msg):
    with pytest.raises(PtsError, match=msg):
        parse_pts(text, source="bad.pts")


def test_required_count_and_missing_file(tmp_path):
    (tmp_path / "p.pts").write_text("1 1\n2 2\n")
    with pytest.raises(PtsError, match="expected 68 points, found 2"):
        read_pts(tmp_path / "p.pts", n_points=68)
    with pytest.raises(PtsError, match="cannot read"):
        read_pts(tmp_path / "missing.pts")
