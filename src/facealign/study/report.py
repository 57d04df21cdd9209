"""The study grid's report, rebuilt from run folders alone.

Reads, per run folder: config.json (resolved config + environment), final.json (per-epoch history),
eval/{split}_{protocol}_{miss}.json (summary + per-face errors) and eval/speed.json. Writes into DEST:
  results.md / .csv / .json   the table: `seed`-preset rows first (issue 22), each group best headline NME first;
  ced_all.png                 every model's CED, headline protocol; ced_all_{miss}.png for the others;
  ced_{name}.png              one model, one curve per detector-miss handling;
  curves.png                  validation NME and training loss per epoch, per backbone;
  README.md                   the study's conclusions checked against these numbers (`study_checks`);
  runs/{name}/...             copies of the files above, the source of `--report-only`.
Nothing here depends on the date, the machine or a model file, so a rebuild is byte-identical.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facealign.atomic import atomic_write_bytes, atomic_write_text
from facealign.evaluation.metrics import DEFAULT_THRESHOLD, auc
from facealign.evaluation.report import plot_ced, pyplot, write_table
from facealign.study.checks import CHECKS, auc_threshold_for, render_readme

RECORD_FILES = ("config.json", "final.json")
# The table's initialisation column: TrainConfig.init -> its kind (issue 22: random / ImageNet / face-pretrained).
INIT_LABELS = {"random": "random", "imagenet": "ImageNet", "mediapipe": "face-pretrained (mediapipe)"}
GRID_FILE = "grid.json"  # how the grid was run: {"command", "preset", "grids", ...}


def eval_path(run_dir: Path, split: str, protocol: str, miss: str) -> Path:
    return Path(run_dir) / "eval" / f"{split.replace('/', '-')}_{protocol}_{miss}.json"


# Rows that are no network of the grid, and what the report says about each.
BASELINE_NOTES = {
    "dlib": "`dlib`: the shape predictor dlib ships (`shape_predictor_68_face_landmarks.dat`), trained on the full "
            "300-W training set: afw 337 + helen 2,000 + lfpw 811 = 3,148 faces, about 2.6x the 1,207 of "
            "afw + helen/trainset available here.",
    "dlib-ert": "`dlib-ert`: dlib's method (`dlib.train_shape_predictor`, its default options) trained by us on the "
                "same faces as our models (`facealign baseline dlib-ert`: the `train` split's 80% by photo, HOG "
                "detector boxes, faces the detector misses dropped) and their mirror images: the equal-data "
                "comparison. `train min` is its one training call. Its `CPU ms/face` was timed while other jobs "
                "loaded the 2 cores, unlike dlib's row: docs/training.md has both timed side by side. Trained by `facealign baseline dlib-ert --data "
                "DATA --out RUNS` and added to the report by `facealign experiments --data DATA -o OUT --add-run "
                "RUNS/dlib-ert`.",
}


@dataclass
class RunRecord:
    """One experiment's files. config/history are None for baselines (dlib; a trained `dlib-ert`, whose
    training time is `train_seconds`)."""

    name: str
    config: dict | None
    history: list[dict] | None
    evals: dict[str, dict]  # miss -> {"summary", "faces", "errors"}
    speed: dict | None
    train_seconds: float | None = None

    @property
    def init(self) -> str:
        if self.config is None:
            return "-"
        return self.config["config"].get("init") or "random"

    @property
    def device(self) -> str:
        """Where it was trained: the GPU an imported device-grid run names (`experiments --import`), else CPU."""
        return (self.config or {}).get("device") or "CPU"

    @property
    def preset(self) -> str:
        """The `facealign.training.config.PRESETS` entry whose every value the config has ('-': baselines, 'custom')."""
        if self.config is None:
            return "-"
        from facealign.training.config import PRESETS, upgrade_run_config
        cfg = upgrade_run_config(self.config["config"])  # records before the size -> input_size rename
        return next((n for n, p in PRESETS.items() if all(cfg.get(k) == v for k, v in p.items())), "custom")

    def errors(self, miss: str) -> np.ndarray:
        return np.asarray(self.evals[miss]["errors"], np.float64)


def load_runs(runs: Path, split: str, protocol: str, misses, order: list[str]) -> tuple[list[RunRecord], list[str]]:
    """Finished run folders (final.json, or dlib) with every requested evaluation; and the names left out."""
    found, missing = [], []
    folders = {p.name: p for p in sorted(Path(runs).glob("*")) if p.is_dir()} if Path(runs).is_dir() else {}
    names = [n for n in order if n in folders] + sorted(set(folders) - set(order))
    for name in order:
        if name not in folders:
            missing.append(name)
    for name in names:
        d = folders[name]
        evals = {m: eval_path(d, split, protocol, m) for m in misses}
        trained = (d / "final.json").is_file()
        if (name != "dlib" and not trained) or not all(p.is_file() for p in evals.values()):
            missing.append(name)
            continue
        config = json.loads((d / "config.json").read_text()) if trained else None
        final = json.loads((d / "final.json").read_text()) if trained else None
        network = config is not None and "backbone" in config.get("config", {})  # else a trained baseline
        speed = json.loads((d / "eval" / "speed.json").read_text()) if (d / "eval" / "speed.json").is_file() else None
        found.append(RunRecord(name, config if network else None, final["history"] if network else None,
                               {m: json.loads(p.read_text()) for m, p in evals.items()}, speed,
                               None if network or final is None else final.get("train_seconds")))
    return found, [n for n in order if n in missing]


def _last_change(history: list[dict], k: int = 3) -> float | None:
    """Relative change of validation NME over the last k epochs (negative: still falling), as a fraction."""
    vals = [h["val_nme"] for h in history if h.get("val_nme") is not None]
    if len(vals) <= k:
        return None
    return vals[-1] / vals[-1 - k] - 1.0


def table_rows(records: list[RunRecord], misses) -> list[dict]:
    """One row per record: rows trained at the `seed` preset (the study's settings) first, then the rest; each
    group best headline NME first."""
    rows = []
    for r in records:
        row = {"experiment": r.name, "backbone init": INIT_LABELS.get(r.init, r.init), "preset": r.preset,
               "device": r.device}
        for i, m in enumerate(misses):
            s = r.evals[m]["summary"]
            tag = f"{m}" + (", study" if m == "whole-image" else "")
            row[f"NME ({tag})"] = s["nme"]
            row[f"AUC@0.08 ({tag})"] = s["auc"]
            if i == 0:
                row[f"FR@0.08 ({tag})"] = s["fr"]
        s0 = r.evals[misses[0]]["summary"]
        row["n"] = s0["n"]
        row["detector misses"] = s0["detector_misses"]
        if r.history:
            vals = [h["val_nme"] for h in r.history]
            best = int(np.argmin(vals))
            row["best val NME"] = vals[best]
            planned = r.config["config"].get("epochs", len(vals))
            row["best epoch"] = f"{best + 1}/{len(vals)}" + (f" (stopped; {planned} planned)" if len(vals) < planned else "")
            change = _last_change(r.history)
            row["val NME change, last 3 epochs"] = None if change is None else f"{change * 100:+.1f}%"
            row["train min"] = round(sum(h["epoch_s"] for h in r.history) / 60, 1)
        else:
            row.update({"best val NME": None, "best epoch": None, "val NME change, last 3 epochs": None,
                        "train min": None if r.train_seconds is None else round(r.train_seconds / 60, 1)})
        row["CPU ms/face"] = None if r.speed is None else round(r.speed["cpu_ms_per_face"], 2)
        rows.append(row)
    rows.sort(key=lambda row: (row["preset"] != "seed", row[f"NME ({misses[0]})"]))
    return rows


def plot_curves(records: list[RunRecord], path: Path) -> Path:
    """Validation NME (top) and training loss / first-epoch loss (bottom) per epoch, one column per backbone+init."""
    trained = [r for r in records if r.history]
    groups: dict[str, list[RunRecord]] = {}
    for r in trained:
        groups.setdefault(f"{r.config['config']['backbone']} ({r.init} init)", []).append(r)
    cols = max(1, len(groups))
    plt = pyplot()
    fig, axes = plt.subplots(2, cols, figsize=(4.2 * cols, 6.4), squeeze=False)
    try:
        for c, (title, runs) in enumerate(groups.items()):
            for r in runs:
                ep = [h["epoch"] for h in r.history]
                label = r.name.split("-", 1)[1]
                axes[0, c].plot(ep, [h["val_nme"] for h in r.history], label=label)
                axes[1, c].plot(ep, [h["train_loss"] / r.history[0]["train_loss"] for h in r.history], label=label)
            axes[0, c].set_title(title, fontsize=9)
            axes[0, c].set_yscale("log")
            axes[0, c].set_ylabel("validation NME (log)")
            axes[1, c].set_ylabel("train loss / epoch-1 loss")
            axes[1, c].set_xlabel("epoch")
            for ax in axes[:, c]:
                ax.grid(True, alpha=0.3)
                ax.legend(fontsize=7)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _copy_records(records: list[RunRecord], runs: Path, dest_runs: Path, split: str, protocol: str, misses) -> None:
    """Copy each record's small files into dest_runs (skipped when they are the same folder)."""
    if Path(runs).resolve() == Path(dest_runs).resolve():
        return
    for r in records:
        src, dst = Path(runs) / r.name, Path(dest_runs) / r.name
        files = [f for f in RECORD_FILES if (src / f).is_file()]
        files += [str(eval_path(Path("."), split, protocol, m)) for m in misses]
        files += ["eval/speed.json"] if (src / "eval" / "speed.json").is_file() else []
        for f in files:
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(dst / f, (src / f).read_bytes())


# Reports of the same grid at other presets, in sub-folders of a report (results/study/seed: the study's own
# settings, trained on a GPU by benchmarks/device_grid.sh). The main report leads with their rows and checks each
# conclusion at every preset.
PRESET_REPORTS = {"seed": "the study's settings (`seed` preset: 224 px, batch 64, 40 epochs) on a GPU"}


def preset_reports(dest: Path, split: str, protocol: str) -> list[dict]:
    """For each PRESET_REPORTS sub-folder of `dest` holding run copies: its label, table rows and verdicts."""
    out = []
    for folder, label in PRESET_REPORTS.items():
        runs = dest / folder / "runs"
        if not (runs / GRID_FILE).is_file():
            continue
        grid = json.loads((runs / GRID_FILE).read_text())
        misses = grid.get("misses", ["gt-box"])
        records, _ = load_runs(runs, split, protocol, misses, [])
        if records:
            out.append({"folder": folder, "label": label, "misses": misses, "rows": table_rows(records, misses),
                        "verdicts": {t: check(records, misses)[0] for t, check in CHECKS.items()}})
    return out


def write_report(runs: Path, dest: Path, split: str = "common", protocol: str = "detector",
                 misses=("gt-box", "whole-image"), order: list[str] | None = None,
                 threshold: float = DEFAULT_THRESHOLD) -> list[dict]:
    """Build every report file in `dest` from the run folders in `runs`; return the table rows."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    records, missing = load_runs(Path(runs), split, protocol, misses, order or [])
    _copy_records(records, Path(runs), dest / "runs", split, protocol, misses)
    grid_file = Path(runs) / GRID_FILE
    grid = json.loads(grid_file.read_text()) if grid_file.is_file() else {}
    if grid and grid_file.resolve() != (dest / "runs" / GRID_FILE).resolve():
        atomic_write_bytes(dest / "runs" / GRID_FILE, grid_file.read_bytes())
    for stale in dest.glob("ced_*.png"):  # a rebuild holds exactly the current models' plots
        stale.unlink()
    if not records:
        atomic_write_text(dest / "README.md", "# Study grid results\n\nNo finished experiment yet.\n")
        return []
    rows = table_rows(records, misses)
    write_table(rows, dest / "results")
    for i, m in enumerate(misses):
        name = "ced_all.png" if i == 0 else f"ced_all_{m}.png"
        plot_ced({r.name: r.errors(m) for r in records}, dest / name, threshold,
                 title=f"{split}: {protocol} boxes, detector misses -> {m}")
    for r in records:
        plot_ced({f"misses -> {m}": r.errors(m) for m in misses}, dest / f"ced_{r.name}.png", threshold,
                 title=f"{r.name} on {split} ({protocol} boxes)")
    if any(r.history for r in records):
        plot_curves(records, dest / "curves.png")
    facts = {"grid": grid, "split": split, "protocol": protocol, "misses": list(misses), "threshold": threshold,
             "missing": missing, "rows": rows, "notes": [BASELINE_NOTES[r.name] for r in records
                                                         if r.name in BASELINE_NOTES],
             "auc_t95": {r.name: auc_threshold_for(r.errors(misses[0]), 0.95) for r in records},
             "auc": {r.name: auc(r.errors(misses[0]), threshold) for r in records},
             "presets": preset_reports(dest, split, protocol)}
    atomic_write_text(dest / "README.md", render_readme(records, facts, CHECKS))
    return rows

