"""dlib's 68-point shape predictor (Kazemi & Sullivan 2014, trained on iBUG 300-W) as a baseline."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from facealign.data.boxes import dlib_shape_model_path


@lru_cache(maxsize=1)
def _shape_predictor():
    import dlib
    return dlib.shape_predictor(str(dlib_shape_model_path()))


def box_to_dlib_rect(box: np.ndarray):
    """Inverse of boxes._dlib_rect_to_box: pixel-edge box -> dlib's inclusive pixel indices."""
    import dlib
    x0, y0, x1, y1 = (float(v) for v in box)
    return dlib.rectangle(round(x0 + 0.5), round(y0 + 0.5), round(x1 - 0.5), round(y1 - 0.5))


class DlibPredictor:
    """predict(image (H, W, 3) uint8 RGB, boxes (N, 4)) -> (N, 68, 2) float32 image pixels.

    dlib's predictor was trained on dlib HOG detector boxes, so compare it on the
    `detector` protocol; other boxes change its input distribution.
    """

    name = "dlib"
    input_size = None

    def predict(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        sp = _shape_predictor()
        img = np.ascontiguousarray(image)
        out = []
        for box in boxes:
            shape = sp(img, box_to_dlib_rect(box))
            # dlib reports integer pixel indices, i.e. pixel centres in our 0-based frame
            out.append([(shape.part(i).x, shape.part(i).y) for i in range(shape.num_parts)])
        return np.asarray(out, dtype=np.float32).reshape(len(boxes), 68, 2)  # 68: also for no boxes
