"""Report outputs: PNG validity and tables that parse back."""
import csv
import json

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest

from facealign.evaluation.report import ced_legend_entries, plot_ced, write_per_image_csv, write_table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_plot_ced_writes_valid_png(tmp_path):
    rng = np.random.default_rng(0)
    errors = {"good": rng.uniform(0, 0.04, 50), "bad": rng.uniform(0, 0.2, 50)}
    path = plot_ced(errors, tmp_path / "sub" / "ced.png", title="test")
    assert path.read_bytes()[: len(PNG_MAGIC)] == PNG_MAGIC
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert sorted(p.name for p in path.parent.iterdir()) == ["ced.png"]  # no temp files left
    assert plt.get_fignums() == []  # figure closed


def test_legend_sorted_by_auc_descending():
    errors = {"worst": [0.2, 0.2], "best": [0.0, 0.0], "mid": [0.0, 0.04]}
    labels = [label for label, _ in ced_legend_entries(errors, 0.08)]
    assert labels == [
        "best (AUC@0.08 = 1.0000)",
        "mid (AUC@0.08 = 0.7500)",
        "worst (AUC@0.08 = 0.0000)",
    ]


def test_plot_ced_rejects_empty(tmp_path):
    with pytest.raises(ValueError):
        plot_ced({}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


ROWS = [
    {"method": "ours", "nme": 0.0412345, "auc": np.float32(0.5), "n": 10},
    {"method": "dlib|hog", "nme": 0.06, "n": np.int64(12)},  # no auc; pipe in a name
]


def test_write_table_round_trips(tmp_path):
    paths = write_table(ROWS, tmp_path / "results")
    assert [p.name for p in paths] == ["results.md", "results.csv", "results.json"]

    md = paths[0].read_text().splitlines()
    assert len(md) == 2 + len(ROWS)
    assert md[0] == "| method | nme | auc | n |"
    assert set(md[1]) <= set("|-: ")
    assert md[2] == "| ours | 0.0412 | 0.5000 | 10 |"
    assert md[3] == "| dlib\\|hog | 0.0600 |  | 12 |"

    header, *rows = read_csv(paths[1])
    assert header == ["method", "nme", "auc", "n"]
    assert rows[0][0] == "ours" and float(rows[0][1]) == 0.0412345 and float(rows[0][2]) == 0.5
    assert rows[1] == ["dlib|hog", "0.06", "", "12"]

    data = json.loads(paths[2].read_text())
    assert data == [
        {"method": "ours", "nme": 0.0412345, "auc": 0.5, "n": 10},
        {"method": "dlib|hog", "nme": 0.06, "auc": None, "n": 12},
    ]


def test_write_table_column_subset_and_format(tmp_path):
    md, csv_path, _ = write_table(ROWS, tmp_path / "t", columns=["nme", "method"], float_fmt="{:.2f}")
    assert md.read_text().splitlines()[2] == "| 0.04 | ours |"
    assert read_csv(csv_path)[0] == ["nme", "method"]


def test_write_table_empty_needs_columns(tmp_path):
    with pytest.raises(ValueError, match="columns"):
        write_table([], tmp_path / "t")
    md, csv_path, json_path = write_table([], tmp_path / "t", columns=["a", "b"])
    assert len(md.read_text().splitlines()) == 2
    assert json.loads(json_path.read_text()) == []


def test_write_per_image_csv(tmp_path):
    errors = np.array([0.01, 0.123456789])
    path = write_per_image_csv(tmp_path / "per_image.csv", ["a.png", "b.png"], errors, {"subset": ["common", "challenging"]})
    header, *rows = read_csv(path)
    assert header == ["name", "nme", "subset"]
    assert [r[0] for r in rows] == ["a.png", "b.png"]
    assert [float(r[1]) for r in rows] == errors.tolist()  # full precision
    assert [r[2] for r in rows] == ["common", "challenging"]


def test_write_per_image_csv_length_mismatch(tmp_path):
    with pytest.raises(ValueError, match="length"):
        write_per_image_csv(tmp_path / "x.csv", ["a"], [0.1, 0.2])
    with pytest.raises(ValueError, match="clash"):
        write_per_image_csv(tmp_path / "x.csv", ["a"], [0.1], {"nme": [1]})


def test_ced_legend_is_not_clipped(tmp_path):
    """Long legend labels stay inside the image: its outer pixel columns and rows are background."""
    from PIL import Image
    errs = {("a very long method name " * 4) + str(i): np.random.default_rng(i).uniform(0, 0.1, 50) for i in range(3)}
    img = np.asarray(Image.open(plot_ced(errs, tmp_path / "ced.png", title="CED")).convert("L"))
    for edge in (img[:, :3], img[:, -3:], img[:3], img[-3:]):
        assert edge.min() == 255
