"""The metrics demo (`run_demo`, what `make demo` falls back to without the default model) on a tiny tree whose
numbers are worked out by hand.

Every face is one fixed shape, moved and scaled, so the mean training shape in box-normalised coordinates is
that shape and the baseline predicts each test face's own shape. Test face A is the shape itself: NME 0.
Test face B has its nose tip (point 30) moved 17 px to the right, inside the landmark box, so the box and
every other prediction stay exact: its NME is one point's error over 68 points and the inter-ocular distance,
17 / 68 / 62.5 = 0.004 (outer eye corners 36 and 45 at x = 28.75 and 91.25 px, same y).
So over the two test faces: NME (0 + 0.004) / 2 = 0.002, AUC@0.08 (1 + (1 - 0.004 / 0.08)) / 2 = 0.975, FR 0.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from facealign.data.pts import write_pts
from facealign.data.synthetic import template_shape
from facealign.commands.demo import mean_shape_baseline, run_demo

SIDE = 120
# quarter pixels: exact in binary and in the .pts text, so the file holds exactly these numbers
SHAPE = np.round(template_shape().astype(np.float64) * SIDE * 4) / 4
NOSE_SHIFT = 17.0  # px; face B's nose tip


def _face(folder, name, landmarks, size=(260, 260)):
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 90, 90)).save(folder / f"{name}.jpg")
    write_pts(folder / f"{name}.pts", landmarks)
    return landmarks


@pytest.fixture
def demo_tree(tmp_path):
    root = tmp_path / "300W"
    # training faces: the shape at other places and sizes (x2 keeps quarter pixels exact)
    _face(root / "afw", "afw_001_1", SHAPE + [10, 20])
    _face(root / "helen" / "trainset", "helen_002_1", SHAPE * 2 + [4, 6], size=(300, 300))
    a = _face(root / "helen" / "testset", "helen_003_1", SHAPE + [30, 40])
    b = SHAPE + [50, 10]
    b[30, 0] += NOSE_SHIFT
    _face(root / "helen" / "testset", "helen_004_1", b)
    return root, a, b


def test_the_shape_facts_the_docstring_uses():
    assert SHAPE[36].tolist() == [28.75, 50.5] and SHAPE[45].tolist() == [91.25, 50.5]  # inter-ocular 62.5 px
    assert (SHAPE[:, 0].min(), SHAPE[:, 0].max(), SHAPE[30, 0]) == (0, 120, 60)  # the nose moves to 77: in the box


def test_mean_shape_baseline_predicts_the_shared_shape(demo_tree):
    from facealign.data.layouts import index_dataset
    root, a, b = demo_tree
    index = index_dataset(root)
    pred = mean_shape_baseline(index.split("train"), index.split("common"))
    np.testing.assert_allclose(pred[0], a, atol=1e-3)
    unmoved = SHAPE + [50, 10]  # face B without its nose shift
    np.testing.assert_allclose(pred[1], unmoved, atol=1e-3)


def test_run_demo_prints_and_plots_the_hand_worked_metrics(demo_tree, tmp_path, capsys):
    root, _, _ = demo_tree
    out = tmp_path / "demo"
    assert run_demo(root, out) == 0
    text = capsys.readouterr().out
    # the data summary: 2 training faces (afw + helen/trainset), 2 test faces in `common`
    m = re.search(r"mean-shape baseline on 'common' \((\d+) faces, gt boxes\): NME (\S+)  AUC@0.08 (\S+)  "
                  r"FR@0.08 (\S+)", text)
    assert m, text
    n, nme, auc, fr = m.groups()
    assert int(n) == 2
    # the docstring's numbers, as printed (4 places)
    assert (nme, auc, fr) == ("0.0020", "0.9750", "0.0000")
    png = out / "ced_mean_shape.png"
    assert f"CED plot: {png}" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
