"""Does each detector find a face rotated by 90, 180 or 270 degrees? (issue 24, item 7: a documented limit)

Runs dlib HOG and MTCNN on scikit-image's astronaut photo turned by np.rot90(img, k) (k quarter turns
counter-clockwise) and prints every raw detection with its score and the detector's default min_score
(detections below it are dropped by FaceAligner and `facealign predict`); then what
`facealign predict --rotations` costs on a photo without any face (scikit-image's coffee, 600 x 400): one
detector pass upright plus 3 turned ones, median of 5 runs each, one thread.

    .venv/bin/python benchmarks/rotated_faces.py
"""
import time

import numpy as np
from skimage import data

from facealign.detection.detectors import DEFAULT_MIN_SCORES, DETECTORS

img = data.astronaut()
for name in ("dlib", "mtcnn"):
    det = DETECTORS[name]
    for k in range(4):
        found = det(np.ascontiguousarray(np.rot90(img, k)), 1)
        kept = sum(s >= DEFAULT_MIN_SCORES[name] for _, s in found)
        print(f"{name:6s} {k * 90:3d} deg counter-clockwise: {kept} kept (min_score {DEFAULT_MIN_SCORES[name]}), raw:",
              [(b.round().tolist(), round(float(s), 3)) for b, s in found])


coffee = data.coffee()
for name in ("dlib", "mtcnn"):
    det = DETECTORS[name]
    det(coffee, 1)  # load the model first
    times = []
    for k in range(4):
        turned = np.ascontiguousarray(np.rot90(coffee, k))
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            det(turned, 1)
            runs.append(time.perf_counter() - t0)
        times.append(1e3 * float(np.median(runs)))
    print(f"{name:6s} no-face photo: upright {times[0]:.0f} ms, --rotations adds {sum(times[1:]):.0f} ms "
          f"({sum(times) / times[0]:.1f}x)")
