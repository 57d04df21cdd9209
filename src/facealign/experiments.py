"""The study's 12-experiment grid (+ dlib), resumable, with tables and CED plots."""
from __future__ import annotations

import fnmatch
import json
import time
from pathlib import Path

import numpy as np

from facealign.data.boxes import FAIR_MISS
from facealign.evaluate import TorchPredictor, evaluate, load_predictor, output_stem
from facealign.io import atomic_write_json
from facealign.report import plot_ced, write_table
from facealign.train import TrainConfig, make_config, train

BACKBONES = ("efficientnet_b0", "convnextv2_nano")
HEAD_LOSSES = {"heatmap": ("mse", "bce", "focal"), "regression": ("mse", "wing", "awing")}
BEST = "efficientnet_b0-heatmap-mse"


def grid() -> list[tuple[str, str, str]]:
    """(backbone, head, loss) for the 12 experiments, named {backbone}-{head}-{loss}."""
    return [(b, h, l) for b in BACKBONES for h, losses in HEAD_LOSSES.items() for l in losses]


def select(pattern: str | None, best: bool) -> list[tuple[str, str, str]]:
    runs = grid()
    if best:
        pattern = BEST
    if pattern:
        runs = [r for r in runs if fnmatch.fnmatch("-".join(r), pattern)]
        if not runs:
            raise ValueError(f"--only {pattern!r} matches no experiment; names: {', '.join('-'.join(r) for r in grid())}")
    return runs


def cpu_ms_per_face(predictor, size: int | None, repeats: int = 20) -> float:
    """Median landmark time per face at batch 1 on the CPU, detection excluded (ms)."""
    if size is None:  # dlib: time its predictor on a face-sized box
        img = np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)
        box = np.array([[50, 50, 250, 250]], np.float32)
        fn = lambda: predictor.predict(img, box)  # noqa: E731
    else:
        x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
        fn = lambda: predictor.predict_crops(x)  # noqa: E731
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


def run_grid(data: str, out: Path, preset: str = "cpu", only: str | None = None, best: bool = False,
             test_splits=("common",), protocol: str = "detector", with_dlib: bool = True,
             progress: bool = True, report_only: bool = False, miss: str = FAIR_MISS, **overrides) -> list[dict]:
    """Train (or resume, or skip when finished) and evaluate each experiment; write the results folder.

    report_only: leave unfinished experiments out instead of training them.
    miss: detector-miss handling (`facealign.data.boxes.MISS_POLICIES`), named in every table row.
    """
    out = Path(out)
    rows, curves = [], {}
    for backbone, head, loss in select(only, best):
        cfg: TrainConfig = make_config(preset, data=data, backbone=backbone, head=head, loss=loss,
                                       out=str(out / "runs"), **overrides)
        if not (cfg.run_dir / "final.json").is_file():
            if report_only:
                continue  # tabulate finished experiments only
            train(cfg, resume=True, progress=progress)
        predictor = TorchPredictor(cfg.run_dir / "checkpoint_best.pt")
        history = json.loads((cfg.run_dir / "final.json").read_text())["history"]
        train_min = sum(h["epoch_s"] for h in history) / 60
        rows.append(_row(predictor, evaluate(predictor, data, list(test_splits), protocol, out / "per_experiment",
                                             progress=progress, miss=miss), cfg.size, out, curves, train_min))
    if with_dlib:
        dlib = load_predictor("dlib")
        rows.append(_row(dlib, evaluate(dlib, data, list(test_splits), protocol, out / "per_experiment",
                                        progress=progress, miss=miss), None, out, curves, None))
    main_split = test_splits[0]
    rows.sort(key=lambda r: -r[f"{main_split} AUC@0.08"])
    write_table(rows, out / "results")
    plot_ced(curves, out / "ced_all.png", title=f"CED on {main_split} ({protocol} boxes; detector misses: {miss})")
    atomic_write_json(out / "grid.json", {"preset": preset, "protocol": protocol, "miss": miss,
                                           "splits": list(test_splits), "overrides": overrides})
    return rows


def _row(predictor, results: dict, size, out: Path, curves: dict, train_min: float | None) -> dict:
    params = sum(p.numel() for p in predictor.model.parameters()) if hasattr(predictor, "model") else None
    row = {"experiment": predictor.name}
    for split, s in results.items():
        row.update({f"{split} NME": s["nme"], f"{split} AUC@0.08": s["auc"], f"{split} FR@0.08": s["fr"],
                    f"{split} n": s["n"], f"{split} detector misses": s["detector_misses"], f"{split} misses": s["miss"]})
        stem = output_stem(out / "per_experiment", predictor.name, split, s["box_protocol"], s["miss"])
        errors = np.load(stem.with_name(stem.name + "_errors.npy"))
        curves.setdefault(predictor.name, errors)
        plot_ced({predictor.name: errors}, out / f"ced_{predictor.name}.png",
                 title=f"{predictor.name} on {split} ({s['detector_misses']} detector misses: {s['miss']})")
    row.update({"params (M)": None if params is None else params / 1e6,
                "CPU ms/face": cpu_ms_per_face(predictor, size),
                "train min (sum of epochs)": None if train_min is None else round(train_min, 1)})
    return row
