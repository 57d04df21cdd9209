"""Self-ensembles scored from a device grid's stored predictions (`device_grid.py --levers`, issue 20).

Each run's `eval.predictions` (faces x 68 x 2, image pixels) are averaged over the named member sets and scored
against the test pack's landmarks with the same NME as every table (facealign.evaluation.metrics). The grid's evaluation
used the pack's stored detector boxes with flip TTA as the grid says; averaging adds no new input.

    python benchmarks/ensemble_from_grid.py results/runs/device-levers/grid.json --test .device/levers-common.fapack
    # the shipped models as further members (evaluated here, on the CPU, from the same pack):
    python benchmarks/ensemble_from_grid.py results/runs/device-levers/grid.json --test .device/levers-common.fapack \
        --models default,default160
    # the returned grid.json (predictions inline) -> a committed copy without them + predictions.npz:
    python benchmarks/ensemble_from_grid.py OUT/grid.json --test PACK --split-out results/runs/device-levers

`--test` is the pack the grid evaluated on (`make device-levers-prep` rebuilds it byte for byte from the same
photos and box cache); the script checks the face keys match.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from facealign.data.pack import read_pack
from facealign.atomic import atomic_write_json
from facealign.evaluation.metrics import evaluate_landmarks

# Member sets: the seeds alone (same recipe), then with the other 60-epoch levers added.
ENSEMBLES = {
    "4 seeds (e60, seed1-3)": ["e60", "e60-seed1", "e60-seed2", "e60-seed3"],
    "4 seeds + aug30 + s224": ["e60", "e60-seed1", "e60-seed2", "e60-seed3", "e60-aug30", "e60-s224"],
    "all 7 levers": ["e60", "e60-seed1", "e60-seed2", "e60-seed3", "e60-aug30", "e60-s224", "e60-fpn4"],
    # with the shipped models (`--models default,default160`): does averaging add anything to `default`?
    "default + default160": ["default", "default160"],
    "default + e60-s224": ["default", "e60-s224"],
    "default + default160 + e60-s224": ["default", "default160", "e60-s224"],
    "default + the 4 seeds + aug30 + s224": ["default", "e60", "e60-seed1", "e60-seed2", "e60-seed3", "e60-aug30",
                                              "e60-s224"],
}


def load(grid_path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    grid = json.loads(grid_path.read_text())
    npz = grid_path.with_name("predictions.npz")
    if npz.is_file():
        with np.load(npz) as z:
            return grid, {k: z[k] for k in z.files}
    return grid, {r["name"]: np.asarray(r["eval"]["predictions"], np.float64) for r in grid["runs"]
                  if r.get("eval") and "predictions" in r["eval"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("grid", type=Path)
    p.add_argument("--test", required=True, help="the test pack the grid evaluated on")
    p.add_argument("--models", default="", help="packaged models to add as members, comma-separated (e.g. "
                   "default,default160): evaluated here on the test pack, torch on the CPU, flip TTA as the grid's")
    p.add_argument("--split-out", type=Path, default=None,
                   help="write DIR/grid.json without predictions and DIR/predictions.npz (float32)")
    a = p.parse_args(argv)
    grid, preds = load(a.grid)
    split = grid["split"]
    with read_pack(a.test) as pack:
        faces = pack.records(split)
        gt = np.stack([f.landmarks for f in faces]).astype(np.float64)
        keys = [f.key for f in faces]
    for r in grid["runs"]:
        if r.get("eval") and r["eval"]["faces"] != keys:
            sys.exit(f"{a.test}: faces differ from those {r['name']} was evaluated on")
    stored = dict(preds)
    for model in filter(None, a.models.split(",")):
        from device_grid import evaluate_pack  # the grid's own evaluation: same crops, boxes, mapping back
        from facealign.evaluation.evaluate import TorchPredictor
        preds[model] = np.asarray(evaluate_pack(TorchPredictor(model, "cpu", grid.get("flip_tta")), a.test, split,
                                                keep_predictions=True)["predictions"], np.float64)
    print(f"{a.grid}: {len(keys)} faces of {split!r}, flip TTA {grid.get('flip_tta')}, device {grid['device']}\n")
    print("| members | NME | mean member NME | change |\n|---|---:|---:|---:|")
    for name, p_ in preds.items():
        print(f"| {name} | {evaluate_landmarks(p_, gt)[1]['nme']:.4f} | | |")
    for label, members in ENSEMBLES.items():
        if not all(m in preds for m in members):
            continue
        nme = evaluate_landmarks(np.mean([preds[m] for m in members], axis=0), gt)[1]["nme"]
        single = float(np.mean([evaluate_landmarks(preds[m], gt)[1]["nme"] for m in members]))
        print(f"| {label} | {nme:.4f} | {single:.4f} | {100 * (nme / single - 1):+.1f}% |")
    if a.split_out:
        a.split_out.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(a.split_out / "predictions.npz", **{k: v.astype(np.float32) for k, v in stored.items()})
        for r in grid["runs"]:
            if r.get("eval"):
                r["eval"].pop("predictions", None)
        atomic_write_json(a.split_out / "grid.json", grid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
