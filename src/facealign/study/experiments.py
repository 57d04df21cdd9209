"""The study's experiment grid (+ dlib): train (resumable), evaluate into each run folder, then report.

A run folder (`OUT/runs/{backbone}-{head}-{loss}/`) holds what training writes (config.json, final.json,
checkpoints) plus `eval/`: one JSON per (split, box protocol, detector-miss handling) with the summary and
the per-face errors, and `speed.json` (CPU ms per face). `facealign.study.report` builds every file of the
report from those small files alone, so `--report-only` needs no model and no data.
"""
from __future__ import annotations

import fnmatch
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facealign.detection.boxes import FAIR_MISS, STUDY_MISS, BoxCache, get_miss_policy
from facealign.evaluation.evaluate import TorchPredictor, evaluate_split, load_predictor
from facealign.hardware import available_cpus, cpu_model
from facealign.atomic import atomic_write_bytes, atomic_write_json
from facealign.study.report import GRID_FILE, eval_path, write_report
from facealign.training.config import make_config
from facealign.training.loop import train

BACKBONES = ("efficientnet_b0", "convnextv2_nano")
HEAD_LOSSES = {"heatmap": ("mse", "bce", "focal"), "regression": ("mse", "wing", "awing")}
BEST = "efficientnet_b0-heatmap-mse"
MISSES = (FAIR_MISS, STUDY_MISS)  # headline, then the study's own protocol


@dataclass(frozen=True)
class Experiment:
    backbone: str
    head: str
    loss: str
    init: str | None = None  # backbone weights (None: random, as the study's grid is run here)

    @property
    def name(self) -> str:
        return f"{self.backbone}-{self.head}-{self.loss}"


def _study() -> list[Experiment]:
    return [Experiment(b, h, l) for b in BACKBONES for h, losses in HEAD_LOSSES.items() for l in losses]


def _imagenet() -> list[Experiment]:
    # The only ImageNet weights obtainable offline: EfficientNet-Lite0 (docs/guide.md), for the 6 EfficientNet runs.
    return [Experiment("tf_efficientnet_lite0", h, l, "imagenet") for h, losses in HEAD_LOSSES.items() for l in losses]


GRIDS = {"study": _study, "imagenet": _imagenet}


def grid(names=("study",)) -> list[Experiment]:
    """The experiments of the named grids, in order."""
    unknown = [n for n in names if n not in GRIDS]
    if unknown:
        raise ValueError(f"unknown grid {unknown[0]!r}; valid: {', '.join(GRIDS)}")
    return [e for n in names for e in GRIDS[n]()]


def select(pattern: str | None, best: bool, grids=("study",)) -> list[Experiment]:
    runs = grid(grids)
    if best:
        pattern = BEST
    if pattern:
        runs = [r for r in runs if fnmatch.fnmatch(r.name, pattern)]
        if not runs:
            raise ValueError(f"--only {pattern!r} matches no experiment; names: {', '.join(r.name for r in grid(grids))}")
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


def evaluate_into(run_dir: Path, predictor, data: str, splits, protocol: str, misses, size: int | None,
                  cache: BoxCache, progress: bool = False, speed: bool = True, layout: str = "auto",
                  split_file: str | None = None) -> None:
    """Write run_dir/eval/{split}_{protocol}_{miss}.json (summary + per-face errors) and, if `speed`,
    eval/speed.json (CPU ms per face; size = the network input in px, None for dlib).

    Files already there are kept: a finished evaluation is never repeated.
    """
    for split in splits:
        for miss in misses:
            path = eval_path(run_dir, split, protocol, miss)
            if path.is_file():
                continue
            summary, errors, keys = evaluate_split(predictor, data, split, protocol, miss, cache, progress,
                                                   layout=layout, split_file=split_file)
            atomic_write_json(path, {"summary": summary, "faces": keys, "errors": errors.tolist()})
    speed_file = run_dir / "eval" / "speed.json"
    if speed and not speed_file.is_file():
        atomic_write_json(speed_file, {"cpu_ms_per_face": cpu_ms_per_face(predictor, size), "batch": 1,
                                  "cpu": cpu_model(), "available_cores": available_cpus(),
                                  "what": "median of 20 calls, one face (one crop; dlib: its predictor), "
                                          "detection excluded"})


def add_run(run: Path, out: Path, data: str, report_dir: Path | None = None, cache_dir: str | None = None,
            splits=("common",), protocol: str = "detector", misses=MISSES, progress: bool = True) -> list[dict]:
    """Put a finished run made elsewhere (e.g. `facealign baseline dlib-ert`) into the report, then rebuild it.

    Copies the run's config.json and final.json to OUT/runs/NAME (NAME: the run's `method`, else its folder
    name), evaluates it there like every grid row (`evaluate_into`; with the splits, protocol and misses of
    OUT/runs/grid.json when the grid wrote one, else the arguments) and rebuilds the report as `--report-only`.
    Returns the table rows.
    """
    run, runs = Path(run), Path(out) / "runs"
    if not (run / "final.json").is_file():
        raise FileNotFoundError(f"{run} holds no finished run (final.json)")
    config = json.loads((run / "config.json").read_text())
    name = config.get("method") or run.name
    if (runs / GRID_FILE).is_file():
        ran = json.loads((runs / GRID_FILE).read_text())
        splits, protocol, misses = ran["splits"], ran["protocol"], ran["misses"]
    dest = runs / name
    for f in ("config.json", "final.json"):
        atomic_write_bytes(dest / f, (run / f).read_bytes())
    predictor = load_predictor(str(run))
    cache = BoxCache(data, cache_dir)
    evaluate_into(dest, predictor, data, splits, protocol, misses, getattr(predictor, "input_size", None), cache,
                  progress)
    cache.save()
    return run_grid(data, out, report_only=True, report_dir=report_dir, test_splits=tuple(splits), protocol=protocol,
                    misses=tuple(misses))


def run_grid(data: str, out: Path, preset: str | None = "cpu", grids=("study",), only: str | None = None,
             best: bool = False, test_splits=("common",), protocol: str = "detector", misses=MISSES,
             with_dlib: bool = True, progress: bool = True, report_only: bool = False,
             report_dir: Path | None = None, command: str | None = None, train_missing: bool = True,
             **overrides) -> list[dict]:
    """Train (or resume, or skip when finished) and evaluate each experiment, then write the report.

    Run folders go to OUT/runs; the report to `report_dir` (default OUT). report_only: train and evaluate
    nothing; rebuild the report from the run folders' files, with the splits, protocol and misses recorded
    in OUT/runs/grid.json. misses: detector-miss handlings evaluated
    (`facealign.detection.boxes.MISS_POLICIES`); the first is the report's headline. command: the command line
    recorded in OUT/runs/grid.json and quoted by the report. train_missing=False: evaluate the finished
    experiments only (e.g. while the rest still trains elsewhere); unfinished ones are listed as missing.
    Returns the table rows.
    """
    out = Path(out)
    runs = out / "runs"
    if with_dlib and overrides.get("scheme") not in (None, "ibug68"):
        raise ValueError(f"the dlib comparison is 68-point only (ibug68), not scheme={overrides['scheme']}; "
                         "pass --no-dlib")
    if not report_only:
        for m in misses:
            get_miss_policy(m)  # fail before hours of training
        runs.mkdir(parents=True, exist_ok=True)
        atomic_write_json(runs / GRID_FILE, {"command": command, "preset": preset, "grids": list(grids),
                                             "only": BEST if best else only, "splits": list(test_splits), "protocol": protocol,
                                             "misses": list(misses), "overrides": overrides})
        cache = BoxCache(data, overrides.get("cache_dir"))
        splits_of = {"layout": overrides.get("layout") or "auto", "split_file": overrides.get("splits")}
        for exp in select(only, best, grids):
            cfg = make_config(preset, data=data, backbone=exp.backbone, head=exp.head, loss=exp.loss,
                              out=str(runs), **{**overrides, **({"init": exp.init} if exp.init else {})})
            if not (cfg.run_dir / "final.json").is_file():
                if not train_missing:
                    continue
                train(cfg, resume=True, progress=progress)
            evaluate_into(cfg.run_dir, TorchPredictor(cfg.run_dir / "checkpoint_best.pt"), data, test_splits,
                          protocol, misses, cfg.input_size, cache, progress, **splits_of)
        if with_dlib:
            evaluate_into(runs / "dlib", load_predictor("dlib"), data, test_splits, protocol, misses, None, cache,
                          progress, **splits_of)
        cache.save()
    elif (runs / GRID_FILE).is_file():  # rebuild with the settings the grid ran with
        ran = json.loads((runs / GRID_FILE).read_text())
        test_splits, protocol, misses = ran["splits"], ran["protocol"], ran["misses"]
        grids, only = ran["grids"], ran["only"]
    return write_report(runs, Path(report_dir or out), split=test_splits[0], protocol=protocol, misses=misses,
                        order=[e.name for e in select(only, best, grids)] + ["dlib"])



DEVICE_GRID = "facealign-device-grid"  # grid.json of benchmarks/device_grid.py


def import_grid(file: Path, out: Path, report_dir: Path | None = None) -> list[dict]:
    """Merge a `benchmarks/device_grid.py` grid.json (runs trained and evaluated on a lent GPU) into OUT/runs
    and rebuild the report; returns the table rows.

    Each evaluated run becomes OUT/runs/NAME (config.json marked with the `device` it ran on, `status` and
    epochs done; final.json with its history; eval/ with its per-face errors), replacing an earlier import
    of the same name. The device evaluates one detector-miss handling (gt-box), so OUT/runs/grid.json must
    name the same split, box protocol and misses (it is written when absent): import into its own folder,
    not into a CPU grid that also evaluated `whole-image`.
    """
    try:
        grid = json.loads(Path(file).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"--import {file}: cannot read it as JSON ({e.__class__.__name__})") from None
    if not isinstance(grid, dict) or grid.get("format") != DEVICE_GRID:
        raise ValueError(f"--import {file}: not a grid.json of benchmarks/device_grid.py (format {DEVICE_GRID!r})")
    runs = Path(out) / "runs"
    setting = {"splits": [grid["split"]], "protocol": grid["protocol"], "misses": list(grid["misses"])}
    if (runs / GRID_FILE).is_file():
        ran = json.loads((runs / GRID_FILE).read_text())
        if any(ran.get(k) != v for k, v in setting.items()):
            raise ValueError(f"{runs / GRID_FILE} evaluates {ran.get('splits')} / {ran.get('protocol')} / "
                             f"{ran.get('misses')}, the device grid {setting['splits']} / {setting['protocol']} / "
                             f"{setting['misses']}: import into another -o folder")
        commands = ran.get("commands") or [ran["command"]]
        if grid["command"] not in commands:  # a second grid into the same folder: the report names both calls
            atomic_write_json(runs / GRID_FILE, {**ran, "commands": commands + [grid["command"]]})
    else:
        atomic_write_json(runs / GRID_FILE, {"command": grid["command"], "preset": grid["preset"],
                                             "grids": grid["grids"], "only": None, **setting,
                                             "overrides": grid.get("overrides", {}), "device": grid["device"]})
    names = []
    for rec in grid["runs"]:
        if not rec.get("eval") or not rec.get("history"):
            continue  # stopped before its first epoch, or not evaluated: nothing to report
        dest = runs / rec["name"]
        marks = {"device": grid["device"], "status": rec["status"], "epochs_done": rec["epochs_done"],
                 "imported_from": str(file)}
        atomic_write_json(dest / "config.json", {**rec["config"], **marks})
        best = min((h["val_nme"] for h in rec["history"] if h.get("val_nme") is not None), default=None)
        atomic_write_json(dest / "final.json", {"name": rec["name"], "best_val_nme": best, "epochs": rec["epochs"],
                                                "history": rec["history"], **marks})
        ev = rec["eval"]
        atomic_write_json(eval_path(dest, grid["split"], grid["protocol"], grid["misses"][0]),
                          {"summary": ev["summary"], "faces": ev["faces"], "errors": ev["errors"]})
        names.append(rec["name"])
    if not names:
        raise ValueError(f"--import {file}: no run finished an epoch and was evaluated; nothing to import")
    return write_report(runs, Path(report_dir or out), split=grid["split"], protocol=grid["protocol"],
                        misses=grid["misses"], order=names)
