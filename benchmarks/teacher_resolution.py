"""What a distillation teacher loses when it sees the student's small crop scaled up (issue 20).

For each teacher and each student input size, the teacher's NME on the `fast` recipe's validation faces (the
held-out 20% of the training pool, detector boxes, seed 0, `context` 0.4, unaugmented, no flip) from:
- its own crops at its input size (what the training loop now renders for a teacher larger than the student);
- the student's crops at the student's size, scaled up bilinearly to the teacher's size (what it did before).
Also the teacher's forward time per training batch on this CPU (fp32, the given threads), the cost distillation
adds to every step.

    python benchmarks/teacher_resolution.py --data ../shared/data/300W --teachers default,default160 \
        --student-sizes 96,128 --threads 2
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F


def val_crops(data: str, size: int):
    """(images (N, 3, S, S), cache, records) of the `fast` recipe's validation faces at `size` px."""
    from facealign.data.dataset import CachedFaces
    from facealign.training.config import make_config
    from facealign.training.prepare import prepare_data
    _, cache, records = prepare_data(make_config("fast", data=data, input_size=size), progress=False)
    ds = CachedFaces(cache)
    return torch.stack([ds[i]["image"] for i in range(len(ds))]), cache, records


def nme(model, images, cache, records) -> float:
    from facealign.evaluation.metrics import per_image_nme
    from facealign.training.loop import predict_normalised
    with torch.no_grad():
        coords = predict_normalised(model, images.contiguous(memory_format=torch.channels_last))
    pred = np.stack([cache.crop_transform(i).to_image(c) for i, c in enumerate(coords)])
    return float(per_image_nme(pred, np.stack([r.landmarks for r in records])).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--teachers", default="default,default160")
    ap.add_argument("--student-sizes", default="96")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from facealign.models.packaged import load_model
    print(f"Validation faces of the `fast` recipe; NME (inter-ocular) of each teacher, no flip; "
          f"{args.threads} thread(s), batch {args.batch_size}.\n")
    print("| teacher | input px | own crops | student 96→teacher px, scaled up | ms per batch (forward) |")
    rows = []
    for spec in args.teachers.split(","):
        model, card = load_model(spec)
        model = model.eval().to(memory_format=torch.channels_last)
        size = int(card["input_size"])
        own, cache, records = val_crops(args.data, size)
        cells = [f"{nme(model, own, cache, records):.4f}"]
        for s in (int(v) for v in args.student_sizes.split(",")):
            small, small_cache, small_records = val_crops(args.data, s)
            assert [r.key for r in small_records] == [r.key for r in records]
            up = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
            cells.append(f"{s} px: {nme(model, up, cache, records):.4f}")
        x = own[: args.batch_size].contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            model(x)
            t = time.perf_counter()
            for _ in range(3):
                model(x)
        ms = (time.perf_counter() - t) / 3 * 1000
        rows.append(f"| {spec} | {size} | {cells[0]} | {'; '.join(cells[1:])} | {ms:.0f} |")
        print(rows[-1], flush=True)


if __name__ == "__main__":
    main()
