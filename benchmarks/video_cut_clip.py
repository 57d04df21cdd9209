"""Issue 24's cut clip through the packaged default model (onnx-int8), with and without cut detection.

Prints the dlib box IoU between the last frame before the cut and the first after it, the track ids per
frame, and how far the first post-cut frame's smoothed landmarks (alpha 0.3) are from the raw ones.

    .venv/bin/python benchmarks/video_cut_clip.py
"""
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import write_cut_clip  # noqa: E402

from facealign import FaceAligner  # noqa: E402
from facealign.detection.boxes import iou  # noqa: E402
from facealign.inference.video import predict_video  # noqa: E402

clip = Path(tempfile.mkdtemp()) / "cut.avi"
write_cut_clip(clip, 20, 10)
fa = FaceAligner("default", backend="onnx-int8")
raw = [f for _, _, f, _ in predict_video(fa, clip)]
old = [(f, i) for _, _, f, i in predict_video(fa, clip, smooth=0.3, cut_correlation=None)]
new = [(f, i) for _, _, f, i in predict_video(fa, clip, smooth=0.3)]
print("box IoU, frame 9 -> 10:", iou(raw[9][0].box, raw[10][0].box))
print("ids without cut detection", [i[0] for _, i in old])
print("ids with cut detection   ", [i[0] for _, i in new])
for label, run in (("without", old), ("with   ", new)):
    gap = np.abs(run[10][0][0].landmarks - raw[10][0].landmarks).max()
    print(f"frame 10, max |smoothed - raw| px, {label} cut detection: {gap:.2f}")
