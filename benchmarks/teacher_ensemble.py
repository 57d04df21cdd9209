"""Candidate distillation teachers and their ensembles, scored before any training (issue 20).

Each member predicts every face once; an ensemble's prediction is the mean of its members' landmarks in image
pixels (the crops of one face cover the same region at every input size). Two sets of faces:
- validation: the `default` recipe's held-out 20% of the training pool (231 faces, detector boxes, seed 0), from
  the trainer's own validation crops at each member's input size, scored as the trainer scores (`val_nme` in
  metrics.jsonl);
- test: helen/testset (`--split common`) with dlib HOG boxes, misses on their ground-truth box (`gt-box`), as
  `facealign evaluate` scores it.
Both with and without flip test-time augmentation (the trainer validates without; `facealign evaluate` flips).

    python benchmarks/teacher_ensemble.py --data ../shared/data/300W \
        --models default,default160,RUN1,RUN2 --threads 1
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch


def member_name(spec: str) -> str:
    return Path(spec).name if ("/" in spec or Path(spec).exists()) else spec


def flip_average(model, batch: torch.Tensor, mirror: np.ndarray) -> torch.Tensor:
    from facealign.training.loop import predict_normalised
    plain = torch.from_numpy(predict_normalised(model, batch))
    mirrored = torch.from_numpy(predict_normalised(model, batch.flip(-1)))[:, torch.as_tensor(mirror.copy())]
    mirrored[..., 0] = 1.0 - mirrored[..., 0]
    return (plain + mirrored) / 2


def validation_predictions(data: str, specs: list[str]) -> tuple[dict, np.ndarray]:
    """{(member, flip): (N, 68, 2) image pixels} on the default recipe's validation faces, and their landmarks."""
    from facealign.data.dataset import CachedFaces
    from facealign.data.schemes import get_scheme
    from facealign.models.packaged import load_model
    from facealign.training.config import make_config
    from facealign.training.loop import predict_normalised
    from facealign.training.prepare import prepare_data
    mirror = get_scheme().mirror_permutation
    models = {s: load_model(s) for s in specs}
    out, gt, keys = {}, None, None
    for size in sorted({int(card["input_size"]) for _, card in models.values()}):
        _, val_cache, val_records = prepare_data(make_config("default", data=data, input_size=size), progress=False)
        these = [r.key for r in val_records]
        if keys is not None and these != keys:
            sys.exit(f"validation faces at {size} px differ from those at another size")
        keys, gt = these, np.stack([r.landmarks for r in val_records])
        ds = CachedFaces(val_cache)
        batch = torch.stack([ds[i]["image"] for i in range(len(ds))])
        for spec, (model, card) in models.items():
            if int(card["input_size"]) != size:
                continue
            for flip in (False, True):
                coords = flip_average(model, batch, mirror).numpy() if flip else predict_normalised(model, batch)
                out[(spec, flip)] = np.stack([val_cache.crop_transform(i).to_image(c) for i, c in enumerate(coords)])
    return out, gt


def test_predictions(data: str, specs: list[str]) -> tuple[dict, np.ndarray]:
    """{(member, flip): (N, 68, 2)} on helen/testset with HOG boxes, misses on their gt box; and the landmarks."""
    import warnings

    from facealign.data.layouts import index_dataset
    from facealign.detection.boxes import FAIR_MISS, BoxCache, face_boxes
    from facealign.evaluation.evaluate import TorchPredictor, predict_records
    cache = BoxCache(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing 300W subset folders
        records = index_dataset(data, "auto", None).split("common")
    fb = face_boxes(records, "detector", FAIR_MISS, cache=cache, detect=True)
    assert fb.kept.all()
    out = {}
    for spec, flip in itertools.product(specs, (False, True)):
        out[(spec, flip)] = predict_records(TorchPredictor(spec, "cpu", flip), records, fb.boxes).astype(np.float64)
    return out, np.stack([r.landmarks for r in records])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--models", required=True, help="comma-separated model specs (packaged names, run folders)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None, help="also write every row here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from facealign.evaluation.metrics import per_image_nme
    specs = a.models.split(",")
    val, val_gt = validation_predictions(a.data, specs)
    test, test_gt = test_predictions(a.data, specs)
    rows = []
    for k in range(1, len(specs) + 1):
        for members in itertools.combinations(specs, k):
            row = {"members": [member_name(m) for m in members]}
            for label, preds, gt in (("val", val, val_gt), ("test", test, test_gt)):
                for flip in (False, True):
                    mean = np.mean([preds[(m, flip)] for m in members], axis=0)
                    row[f"{label}{'_flip' if flip else ''}"] = float(per_image_nme(mean, gt).mean())
            rows.append(row)
    print(f"{len(val_gt)} validation faces, {len(test_gt)} test faces (helen/testset, HOG boxes, gt-box misses)\n")
    print("| members | val NME | val NME, flip | test NME | test NME, flip |\n|---|---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: (len(r["members"]) > 1, r["val"])):
        print(f"| {' + '.join(r['members'])} | {r['val']:.4f} | {r['val_flip']:.4f} | {r['test']:.4f} | "
              f"{r['test_flip']:.4f} |")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
