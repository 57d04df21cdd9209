"""Does dlib's HOG detector survive a sequence of extreme image sizes in one process?

Each row runs, in a fresh subprocess, random-noise images of the listed shapes through the
detector (upsample 1) one after the other, then three 3000 x 4000 photos-sized images, and
reports whether the process finished or died (dlib's heap corruption shows up as an abort in
a *later* call). `--raw` calls dlib directly; the default goes through
`facealign.detection.detectors.dlib_hog_detect`, which shrinks images beyond its size budgets.

    python benchmarks/dlib_extreme_sizes.py          # facealign's detector wrapper
    python benchmarks/dlib_extreme_sizes.py --raw    # dlib as is
"""
from __future__ import annotations

import argparse
import subprocess
import sys

SEQUENCES = [
    [(4000, 4000), (400, 63243)],
    [(5500, 5500), (400, 63243)],
    [(7681, 7502), (400, 63243)],
    [(512, 53610), (33383, 267), (400, 63243)],
]

CHILD = """
import sys, numpy as np
raw = sys.argv[1] == "raw"
shapes = [tuple(map(int, s.split("x"))) for s in sys.argv[2:]] + [(3000, 4000)] * 3
if raw:
    import dlib
    det = dlib.get_frontal_face_detector()
    run = lambda img: det.run(img, 1, 0.0)
else:
    from facealign.detection.detectors import dlib_hog_detect
    run = lambda img: dlib_hog_detect(img, 1)
rng = np.random.default_rng(0)
for shape in shapes:
    run(rng.integers(0, 255, (*shape, 3), dtype=np.uint8))
print("finished")
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", action="store_true", help="call dlib directly, without facealign's size budgets")
    args = ap.parse_args()
    mode = "raw" if args.raw else "facealign"
    print(f"| images in one process ({mode}) | outcome |\n|---|---|")
    failures = 0
    for seq in SEQUENCES:
        cmd = [sys.executable, "-c", CHILD, "raw" if args.raw else "wrapped"] + [f"{h}x{w}" for h, w in seq]
        done = subprocess.run(cmd, capture_output=True, text=True)
        ok = done.returncode == 0 and "finished" in done.stdout
        failures += not ok
        why = "finished" if ok else f"died (exit {done.returncode}): {done.stderr.strip().splitlines()[-1][:60] if done.stderr.strip() else ''}"
        print(f"| {' → '.join(f'{h}×{w}' for h, w in seq)} → 3 × 3000×4000 | {why} |", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
