"""`make demo`: the main job on an embedded default.

Until a trained predictor ships, the demo summarises the data and evaluates a
real (if weak) baseline: the training set's mean shape placed in each test
face's box. It prints NME/AUC/FR and writes a CED plot.
"""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np

from facealign.data.boxes import boxes_for
from facealign.data.crop import CropTransform
from facealign.data.layouts import index_dataset
from facealign.data.summary import format_summary
from facealign.data.synthetic import make_300w_fixture
from facealign.metrics import evaluate_landmarks
from facealign.report import plot_ced


def mean_shape_baseline(train, test, protocol: str = "gt") -> np.ndarray:
    """Predict every test face as the mean training shape (in normalised crop coords) in its box.

    Returns (N, 68, 2) predictions in image pixels.
    """
    train_boxes, _ = boxes_for(train, protocol)
    mean = np.mean([CropTransform.from_box(b).to_crop(r.landmarks) for r, b in zip(train, train_boxes)], axis=0)
    test_boxes, _ = boxes_for(test, protocol)
    return np.stack([CropTransform.from_box(b).to_image(mean) for b in test_boxes])


def run_demo(data: Path, out_dir: Path = Path("results/demo")) -> int:
    if not Path(data).is_dir():
        tmp = Path(tempfile.mkdtemp(prefix="facealign-demo-"))
        print(f"data root {data} not found; using a generated 300W-style fixture in {tmp}")
        data = make_300w_fixture(tmp / "300W", {"afw": 20, "helen/trainset": 20, "helen/testset": 10})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = index_dataset(data)
    print(format_summary(index))
    train, test = index.split("train"), index.split("common")
    pred = mean_shape_baseline(train, test)
    gt = np.stack([r.landmarks for r in test])
    errors, summary = evaluate_landmarks(pred, gt)
    print(f"\nmean-shape baseline on 'common' ({summary['n']} faces, gt boxes): "
          f"NME {summary['nme']:.4f}  AUC@0.08 {summary['auc']:.4f}  FR@0.08 {summary['fr']:.4f} "
          f"(inter-ocular)")
    png = plot_ced({"mean shape (gt box)": errors}, Path(out_dir) / "ced_mean_shape.png",
                   title="CED: mean-shape baseline on 300W common")
    print(f"CED plot: {png}")
    return 0
