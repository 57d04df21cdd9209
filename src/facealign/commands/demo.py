"""`facealign demo` (`make demo`): the main job on an embedded default.

With the packaged default model installed, the demo runs `facealign predict` on scikit-image's
public-domain `astronaut.png` and writes the JSON and an annotated image into `results/demo/`.

Until the trained default ships (or without scikit-image), it falls back to the metrics demo: it
summarises the data and evaluates a real (if weak) baseline, the training set's mean shape placed in
each test face's box, printing NME/AUC/FR and writing a CED plot.
"""
from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np

from facealign.detection.boxes import boxes_for
from facealign.data.crop import CropTransform
from facealign.data.layouts import index_dataset
from facealign.data.summary import format_summary
from facealign.data.synthetic import make_300w_fixture
from facealign.evaluation.metrics import evaluate_landmarks
from facealign.evaluation.report import plot_ced

HELP = "landmarks on a sample photo with the packaged default model (results/demo)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, default=None,
                   help="a 300W data root for the metrics demo run while no default model is installed (default: "
                        "a generated 300W-style fixture)")


def run(args) -> int:
    return demo(args.data)


def mean_shape_baseline(train, test, protocol: str = "gt") -> np.ndarray:
    """Predict every test face as the mean training shape (in normalised crop coords) in its box.

    Returns (N, 68, 2) predictions in image pixels.
    """
    train_boxes, _ = boxes_for(train, protocol)
    mean = np.mean([CropTransform.from_box(b).to_crop(r.landmarks) for r, b in zip(train, train_boxes)], axis=0)
    test_boxes, _ = boxes_for(test, protocol)
    return np.stack([CropTransform.from_box(b).to_image(mean) for b in test_boxes])


def run_demo(data: Path | None, out_dir: Path = Path("results/demo")) -> int:
    """The mean-shape metrics demo on the 300W root `data` (None or a missing folder: a generated fixture)."""
    if data is None or not Path(data).is_dir():
        tmp = Path(tempfile.mkdtemp(prefix="facealign-demo-"))
        why = "no --data given" if data is None else f"data root {data} not found"
        print(f"{why}; using a generated 300W-style fixture in {tmp}")
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


def astronaut_path(tmp_dir: Path | None = None) -> Path:
    """scikit-image's public-domain astronaut photo as a file (saved from `skimage.data.astronaut()`
    into `tmp_dir` if the installed scikit-image keeps it elsewhere). ImportError without scikit-image."""
    import skimage.data
    path = Path(skimage.data.__file__).parent / "astronaut.png"
    if path.is_file():
        return path
    from PIL import Image
    tmp = Path(tmp_dir or tempfile.mkdtemp(prefix="facealign-demo-")) / "astronaut.png"
    Image.fromarray(skimage.data.astronaut()).save(tmp)
    return tmp


def run_prediction_demo(out_dir: Path = Path("results/demo"), model: str | Path = "default") -> int:
    """`facealign predict astronaut.png -o out_dir --draw` through the same code path as the CLI."""
    from facealign.inference.aligner import FaceAligner
    from facealign.inference.predict import run_predict
    image = astronaut_path()
    aligner = FaceAligner(model)
    report = run_predict([image], out_dir, aligner, draw=True, progress=False)
    if report.failures:
        return 1
    json_path, drawn = report.outputs[str(image)], report.annotated[str(image)]
    print(f"model {aligner.name}: {report.faces} face(s) on {image.name}")
    print(f"landmarks: {json_path}")
    print(f"annotated image: {drawn}")
    return 0


def default_model_available() -> bool:
    from facealign.models.weights import packaged_path
    try:
        packaged_path("default")
        return True
    except FileNotFoundError:
        return False


def demo(data: Path | None = None, out_dir: Path = Path("results/demo")) -> int:
    """Prediction with the shipped default; the mean-shape metrics demo when it is missing."""
    if not default_model_available():
        print("the default model weights (facealign/weights/default.safetensors) are not installed yet; "
              "running the mean-shape metrics demo instead\n")
        return run_demo(data, out_dir)
    try:
        import skimage.data  # noqa: F401
    except ImportError:
        print("scikit-image (the demo photo) is not installed; running the mean-shape metrics demo instead\n")
        return run_demo(data, out_dir)
    return run_prediction_demo(out_dir)
