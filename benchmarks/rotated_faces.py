"""Does each detector find a face rotated by 90, 180 or 270 degrees? (issue 24, item 7: a documented limit)

Runs dlib HOG and MTCNN on scikit-image's astronaut photo turned by np.rot90(img, k) (k quarter turns
counter-clockwise) and prints every raw detection with its score and the detector's default min_score
(detections below it are dropped by FaceAligner and `facealign predict`).

    .venv/bin/python benchmarks/rotated_faces.py
"""
import numpy as np
from skimage import data

from facealign.data.detectors import DEFAULT_MIN_SCORES, DETECTORS

img = data.astronaut()
for name in ("dlib", "mtcnn"):
    det = DETECTORS[name]
    for k in range(4):
        found = det(np.ascontiguousarray(np.rot90(img, k)), 1)
        kept = sum(s >= DEFAULT_MIN_SCORES[name] for _, s in found)
        print(f"{name:6s} {k * 90:3d} deg counter-clockwise: {kept} kept (min_score {DEFAULT_MIN_SCORES[name]}), raw:",
              [(b.round().tolist(), round(float(s), 3)) for b, s in found])
