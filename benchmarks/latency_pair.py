"""Per-face latency of two models, timed alternately in one process (torch, batch 1, the models' flip TTA).

Each call is `LandmarkRunner.predict(face region, box)`: crop + network + inverse, as `facealign bench`
times its batch-1 column, on the same 32 helen/testset faces with their dlib boxes. Alternating the two
models call by call makes the ratio robust to the load on a shared machine.

    python benchmarks/latency_pair.py --data ../shared/data/300W default runs/ft224/tf_efficientnet_lite0-fpn-integral_bce/checkpoint_best.pt
"""
import argparse
import statistics
import time

import torch

from facealign.evaluation.bench_child import latency_faces, records_and_boxes
from facealign.inference import LandmarkRunner


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("models", nargs=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--flip", choices=["card", "on", "off"], default="on", help="flip TTA for both models")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    flip = None if args.flip == "card" else args.flip == "on"
    runners = [LandmarkRunner(m, flip_tta=flip) for m in args.models]
    records, boxes, _ = records_and_boxes(args.data, "common", None, detect=False)
    faces = latency_faces(records, boxes)
    times = [[], []]
    for r in runners:  # warm-up
        for img, box in faces[:3]:
            r.predict(img, box[None])
    for i in range(args.repeats):
        img, box = faces[i % len(faces)]
        for k, r in enumerate(runners):
            t = time.perf_counter()
            r.predict(img, box[None])
            times[k].append(time.perf_counter() - t)
    med = [1000 * statistics.median(t) for t in times]
    for m, r, ms in zip(args.models, runners, med):
        print(f"{m}: {r.input_size} px, flip TTA {r.flip_tta}: median {ms:.2f} ms per face "
              f"({args.repeats} calls, {args.threads} thread(s))")
    print(f"ratio second / first: {med[1] / med[0]:.2f}x")


if __name__ == "__main__":
    main()
