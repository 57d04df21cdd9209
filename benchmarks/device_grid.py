"""The study's grid on a lent GPU in one call: train from packs under a deadline, evaluate, return <= 8 files.

Trains every experiment of the named grids (`facealign.study.experiments.GRIDS`) at `--preset` (default `seed`:
224 px, batch 64, 40 epochs) as separate `facealign train` processes, `--parallel` at a time, from a train
pack. At the training deadline the running ones are stopped (SIGTERM between atomic checkpoint writes:
`--resume` continues them) and the ones not started are recorded as such. Each run's best checkpoint is then
evaluated on the test pack's split with the pack's stored detector boxes (faces the detector missed were
packed around their ground-truth landmark box: the `gt-box` handling, the shipped models' headline), so the
device needs no dlib and no photos. Written to OUT (flat, at most 8 files, each far under 16 MiB):

  grid.json       every run: experiment, config, environment, status, epochs done / planned, history,
                  per-face NME array and summary, timings; the device name, the command, the estimates
  grid.log        this script's log (launches, CPU-measured img/s and extrapolated times, stops, results)
  best1.safetensors + best1.json, best2.safetensors + best2.json   the 2 best runs (fp16, `facealign package`)

`facealign experiments --import OUT/grid.json -o FOLDER` turns grid.json into run folders and a report.
benchmarks/device_grid.sh wraps this (and makes the tiny packs for `--tiny`); docs/training.md has the
device command.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT = "facealign-device-grid"
SPLIT, PROTOCOL, MISS = "common", "detector", "gt-box"
# Issue 22's probe: the seed recipe (B0 + heatmap + MSE, 224 px, batch 64, 40 epochs) trained in about
# 2 min on an H200 with the tensor loader: 734 training faces x 40 epochs / 120 s.
GPU_PROBE_IMG_S = 734 * 40 / 120
# A pack holds one box protocol: the grid trains and validates on the packed detector boxes (the seed
# preset's `seed` training boxes would need a second pack), recorded in every run's config.
DEVICE = {"train_box": "detector", "val_box": "detector"}
TINY = {"input_size": 32, "context": 0.1, "batch_size": 4, "epochs": 1, "max_steps": 1, "train_box": "gt", "val_box": "gt",
        "drop_undetected": False}


# `--levers`: the default recipe's levers (issue 20) on one GPU call, each a set of TrainConfig overrides on
# `--preset default`; the name is the run's folder. 60 epochs (not 90) so that 7 runs at once finish inside one
# call; the e60 run is their baseline, and the seeds (each also a different train/validation split) are the
# members of a self-ensemble, scored afterwards from the stored predictions.
LEVERS: dict[str, dict] = {
    "e60": {"epochs": 60},
    "e60-seed1": {"epochs": 60, "seed": 1},
    "e60-seed2": {"epochs": 60, "seed": 2},
    "e60-seed3": {"epochs": 60, "seed": 3},
    "e60-aug30": {"epochs": 60, "augment": {"rotation_deg": 30.0, "scale": 0.2}},
    "e60-s224": {"epochs": 60, "input_size": 224},
    "e60-fpn4": {"epochs": 60, "head": "fpn4"},
    # queued for the next lent GPU (not run yet). Lite1/Lite2 are not here: their weights (about 11 MB each
    # in fp16) do not fit beside the levers' packs in one device call's 64 MiB.
    "e60-occ50": {"epochs": 60, "augment": {"occlusion": 0.5, "occlusion_size": 0.4}},
    "e150-s224": {"epochs": 150, "input_size": 224},
    "e60-pose05": {"epochs": 60, "pose_balance": 0.5},
    "e60-pose1": {"epochs": 60, "pose_balance": 1.0},
    # the face-mesh trunk (issue 21): a `fast` candidate at 128 px and the 192 px run to convergence, its
    # pretrained trunk at a tenth of the head's rate
    "mesh128-fpn16-blr": {"epochs": 90, "backbone": "mediapipe_facemesh", "init": "mediapipe", "head": "fpn16",
                          "input_size": 128, "backbone_lr": 1e-4},
    "mesh192-fpn-blr": {"epochs": 90, "backbone": "mediapipe_facemesh", "init": "mediapipe", "head": "fpn",
                        "input_size": 192, "backbone_lr": 1e-4},
    # the mesh head with linear probing (docs/facemesh.md): 90 epochs at 192 px, and at 160 px (cheaper per face)
    "mesh192-head-e90": {"epochs": 90, "backbone": "mediapipe_facemesh", "init": "mediapipe", "head": "mesh",
                         "loss": "wing", "input_size": 192, "backbone_lr": 3e-4, "linear_probe": True},
    "mesh160-head-e90": {"epochs": 90, "backbone": "mediapipe_facemesh", "init": "mediapipe", "head": "mesh",
                         "loss": "wing", "input_size": 160, "backbone_lr": 3e-4, "linear_probe": True},
}


@dataclass(frozen=True)
class Job:
    """One training process: an experiment of the grids, or a lever (`folder` = its name, `overrides` its own)."""
    name: str
    backbone: str
    head: str
    loss: str
    init: str | None = None
    folder: str = ""
    overrides: dict = field(default_factory=dict, hash=False)

    def run_dir(self, runs: Path) -> Path:
        return runs / self.folder / f"{self.backbone}-{self.head}-{self.loss}"


def lever_jobs(names: list[str], preset: str) -> list[Job]:
    from facealign.training.config import make_config
    unknown = [n for n in names if n not in LEVERS]
    if unknown:
        raise ValueError(f"unknown lever(s) {', '.join(unknown)}; valid: {', '.join(LEVERS)}")
    jobs = []
    for n in names:
        cfg = make_config(preset, **LEVERS[n])
        jobs.append(Job(n, cfg.backbone, cfg.head, cfg.loss, cfg.init, folder=n, overrides=LEVERS[n]))
    return jobs


def log(msg: str, fh=None) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    if fh is not None:
        fh.write(line + "\n")
        fh.flush()


def experiments(grids: list[str], extra: list[str], only: str | None):
    """The grids' experiments plus `--extra BACKBONE:INIT` (its 6 head/loss runs), filtered by `only`."""
    from facealign.study.experiments import HEAD_LOSSES, Experiment, select
    runs = select(only, False, tuple(grids))
    for spec in extra:
        backbone, _, init = spec.partition(":")
        runs += [Experiment(backbone, h, l, init or None) for h, losses in HEAD_LOSSES.items() for l in losses]
    return [Job(e.name, e.backbone, e.head, e.loss, e.init) for e in runs]


def face_pretrained() -> list[str]:
    """['mediapipe_facemesh:mediapipe'] when the face-mesh weights can be loaded here (on the device: when
    .device/ carried them), else []: the face-pretrained backbone joins the grid only if it can train."""
    try:
        from facealign.models.facemesh_tflite import facemesh_tflite_path
        facemesh_tflite_path()
        import tflite  # noqa: F401  (the flatbuffer reader)
    except (LookupError, OSError, ImportError):
        return []
    return ["mediapipe_facemesh:mediapipe"]


def train_command(exp: Job, pack: str, runs: Path, preset: str, overrides: dict) -> list[str]:
    cmd = [sys.executable, "-m", "facealign.cli", "train", "--data", pack, "--preset", preset,
           "--backbone", exp.backbone, "--head", exp.head, "--loss", exp.loss, "--out", str(runs / exp.folder),
           "--cache-dir", str(runs / "cache" / exp.name), "--resume"]  # a second call continues stopped runs
    tiny = overrides is TINY
    # A tiny smoke keeps a lever's own input size: some heads need it (the mesh head's branch reads a 6x6 map).
    own = {k: v for k, v in exp.overrides.items() if k == "input_size"} if tiny else {}
    for k, v in {**({"init": exp.init} if exp.init else {}), **exp.overrides, **overrides, **own}.items():
        cmd += ["--set", f"{k}={json.dumps(v)}"]
    return cmd


def run_pool(commands: dict[str, list[str]], parallel: int, deadline: float, logs: Path, fh=None,
             env: dict | None = None) -> dict:
    """Run the commands, `parallel` at a time, until all end or time.time() passes `deadline`.

    Returns {name: {"status", "train_s"}}: status 'exit N', 'stopped at deadline' or 'not started'."""
    logs.mkdir(parents=True, exist_ok=True)
    pending, running, done = list(commands), {}, {}
    while pending or running:
        while pending and len(running) < parallel and time.time() < deadline:
            name = pending.pop(0)
            out = open(logs / f"{name}.log", "w")
            running[name] = (subprocess.Popen(commands[name], stdout=out, stderr=subprocess.STDOUT,
                                              start_new_session=True, env=env), time.time(), out)
            log(f"started {name}: {shlex.join(commands[name])}", fh)
        for name, (p, t0, out) in list(running.items()):
            if p.poll() is not None:
                out.close()
                done[name] = {"status": f"exit {p.returncode}", "train_s": time.time() - t0}
                log(f"{name}: exit {p.returncode} after {time.time() - t0:.0f} s", fh)
                del running[name]
        if time.time() >= deadline:
            for name, (p, t0, out) in running.items():
                os.killpg(p.pid, signal.SIGTERM)  # checkpoints are written atomically: none is half-written
                p.wait()
                out.close()
                done[name] = {"status": "stopped at deadline", "train_s": time.time() - t0}
                log(f"{name}: stopped at the deadline after {time.time() - t0:.0f} s", fh)
            running = {}
            for name in pending:
                done[name] = {"status": "not started", "train_s": 0.0}
                log(f"{name}: not started (deadline)", fh)
            pending = []
        time.sleep(0.2)
    return {name: done[name] for name in commands}


def evaluate_pack(predictor, pack_path: str, split: str, keep_predictions: bool = False) -> dict:
    """Per-face NME on a pack's split from its stored boxes, predictions mapped back to image pixels
    (returned as `predictions`, (faces, 68, 2) pixels rounded to 0.01, if `keep_predictions`: ensembles)."""
    from facealign.data.pack import read_pack
    from facealign.evaluation.metrics import evaluate_landmarks
    t0 = time.time()
    with read_pack(pack_path) as pack:
        faces = pack.records(split)
        preds = []
        for f in faces:
            p = np.asarray(predictor.predict(pack.crop(f.index), pack.boxes[f.index][None]), np.float64)[0]
            a = pack.transforms[f.index]  # image -> packed crop: x_p = A x + t
            preds.append((p - a[:, 2]) @ np.linalg.inv(a[:, :2]).T)
        gt = np.stack([f.landmarks for f in faces])
        misses = sum(1 for f in faces if f.detected is False)
        errors, summary = evaluate_landmarks(np.stack(preds), gt)
    summary.update(faces=len(faces), detector_misses=misses, skipped=0, miss=MISS, box_protocol=pack.box_protocol,
                   split=split)
    out = {"summary": summary, "faces": [f.key for f in faces], "errors": errors.tolist(), "seconds": time.time() - t0}
    if keep_predictions:
        out["predictions"] = np.round(np.stack(preds), 2).tolist()
    return out


def measure_img_s(exp, size: int, batch: int, seconds: float = 3.0) -> float:
    """Training img/s of one experiment's network on this machine's CPU (forward + backward, random data)."""
    import torch
    from facealign.models import build_model
    torch.manual_seed(0)
    model = build_model(exp.backbone, exp.head)
    opt = torch.optim.AdamW(model.parameters())
    x = torch.randn(batch, 3, size, size)
    n, t0 = 0, None
    while t0 is None or time.time() - t0 < seconds:
        loss = sum(v.float().mean() for v in model(x).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if t0 is None:
            t0 = time.time()  # the first step (allocation) is not timed
        else:
            n += batch
    return n / (time.time() - t0)


def run_record(exp, runs: Path, logs: Path, state: dict) -> dict:
    run = exp.run_dir(runs)
    config = json.loads((run / "config.json").read_text()) if (run / "config.json").is_file() else None
    history = ([json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]
               if (run / "metrics.jsonl").is_file() else [])
    log_file = logs / f"{exp.name}.log"
    # the last 5 lines that are no progress bar (tqdm redraws with \r): epoch summaries, errors
    lines = log_file.read_text(errors="replace").replace("\r", "\n").splitlines() if log_file.is_file() else []
    tail = [x[:300] for x in lines if x.strip() and "%|" not in x][-5:]
    return {"name": exp.name, "backbone": exp.backbone, "head": exp.head, "loss": exp.loss, "init": exp.init,
            "lever": exp.folder or None, "overrides": exp.overrides,
            **state, "epochs_done": len(history), "epochs": config["config"]["epochs"] if config else None,
            "config": config, "history": history, "log_tail": tail, "eval": None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", required=True, help="train pack (`facealign data pack ROOT -o train.fapack`)")
    p.add_argument("--test", required=True, help=f"test pack holding split {SPLIT!r} with detector boxes")
    p.add_argument("--out", type=Path, required=True, help="the returned folder (<= 8 files)")
    p.add_argument("--work", type=Path, default=Path("/tmp/device-grid"), help="run folders, caches, run logs")
    p.add_argument("--grids", nargs="*", default=["study", "imagenet"], help="none: only the --extra runs")
    p.add_argument("--extra", nargs="*", default=None, metavar="BACKBONE:INIT",
                   help="more backbones, 6 head/loss runs each (default: mediapipe_facemesh:mediapipe when its "
                        "weights travel, `make device-grid-prep` copies them into .device/; `--extra` alone: none)")
    p.add_argument("--only", default=None, help="wildcard on {backbone}-{head}-{loss} within --grids")
    p.add_argument("--preset", default=None, help="default: seed (the grids), default (--levers)")
    p.add_argument("--levers", default=None, help=f"comma-separated levers of the default recipe instead of the grids; "
                                                   f"valid: {', '.join(LEVERS)}")
    p.add_argument("--flip-tta", choices=["on", "off", "card"], default="card",
                   help="evaluation flip TTA (card: as the checkpoint's model says; checkpoints: off)")
    p.add_argument("--parallel", type=int, default=None, help="concurrent runs (default: all on a GPU, 2 on a CPU)")
    p.add_argument("--deadline-min", type=float, default=8.0, help="everything ends by then (default 8)")
    p.add_argument("--eval-reserve-min", type=float, default=1.5, help="of the deadline, kept for evaluation")
    p.add_argument("--best", type=int, default=2, help="runs shipped as fp16 safetensors (at most 2)")
    p.add_argument("--tiny", action="store_true", help=f"CPU smoke test: {TINY}")
    a = p.parse_args(argv)
    t_start = time.time()
    import torch
    from facealign.evaluation.evaluate import TorchPredictor
    from facealign.atomic import atomic_write_json
    from facealign.inference.release import package_run
    a.out.mkdir(parents=True, exist_ok=True)
    fh = open(a.out / "grid.log", "a")
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda else "CPU"
    for pack_file in (a.train, a.test):
        if not Path(pack_file).is_file():
            p.error(f"no pack {pack_file} (make device-grid-prep writes them; the device call carries .device)")
    a.preset = a.preset or ("default" if a.levers else "seed")
    a.flip_tta = {"on": True, "off": False, "card": None}[a.flip_tta]
    if a.extra is None:
        a.extra = [] if a.levers else face_pretrained()
    try:
        exps = lever_jobs(a.levers.split(","), a.preset) if a.levers else experiments(a.grids, a.extra, a.only)
    except ValueError as e:
        p.error(str(e))
    if a.tiny and a.levers:
        exps = exps[:2]
    elif a.tiny:  # one heatmap run of the first backbone, one regression run of the last (the --extra one if any)
        mse = [e for e in exps if e.loss == "mse"]
        exps = [mse[0], next(e for e in reversed(mse) if e.head == "regression")]
    from facealign.training.config import make_config
    overrides = TINY if a.tiny else ({} if a.levers else DEVICE)  # the default preset trains on detector boxes
    cfg = make_config(a.preset, **overrides)
    # measured for none of these yet: ~6 GiB per training process is a guess with room (B0, 224 px, batch 64, fp16)
    fits = int(torch.cuda.mem_get_info()[0] // (6 * 2**30)) if cuda else 2
    parallel = max(1, a.parallel or min(len(exps), fits))
    log(f"device {device}; {len(exps)} runs at preset {a.preset} (input_size {cfg.input_size}, batch {cfg.batch_size}, "
        f"{cfg.epochs} epochs), {parallel} at a time; deadline {a.deadline_min} min", fh)

    from facealign.data.pack import read_pack
    with read_pack(a.train) as pack:
        n_train = int(len(pack.records(cfg.train_split)) * (1 - cfg.val_fraction))
    try:
        cpu_img_s = measure_img_s(exps[0], cfg.input_size, min(cfg.batch_size, 16), 1.0 if a.tiny else 3.0)
    except Exception as e:  # noqa: BLE001  (an estimate is not worth the call)
        log(f"CPU img/s not measured: {e.__class__.__name__}: {e}", fh)
        cpu_img_s = float("nan")
    images = n_train * cfg.epochs * len(exps)
    estimate = {"train_faces": n_train, "images_to_train": images, "cpu_img_s": cpu_img_s,
                "cpu_img_s_what": f"{exps[0].name}, {cfg.input_size} px, batch {min(cfg.batch_size, 16)}, forward+backward, "
                                  f"{torch.get_num_threads()} threads",
                "cpu_grid_s": images / cpu_img_s, "gpu_probe_img_s": GPU_PROBE_IMG_S,
                "gpu_grid_serial_s": images / GPU_PROBE_IMG_S}
    log(f"CPU: {cpu_img_s:.1f} img/s ({estimate['cpu_img_s_what']}): the grid ({images} images) would take "
        f"{estimate['cpu_grid_s'] / 3600:.2f} h here; at the H200 probe's {GPU_PROBE_IMG_S:.0f} img/s per run, "
        f"{estimate['gpu_grid_serial_s'] / 60:.1f} min one run at a time", fh)
    train_s = (a.deadline_min - a.eval_reserve_min) * 60 - (time.time() - t_start)
    estimate["needed_img_s"] = images / max(train_s, 1.0)
    log(f"to finish every run in the {train_s:.0f} s left for training: {estimate['needed_img_s']:.0f} img/s in all, "
        f"{estimate['needed_img_s'] / GPU_PROBE_IMG_S:.1f}x the probe's single-run rate; runs the deadline stops "
        f"keep their epochs so far (their cosine schedule unfinished) and continue with a second call", fh)

    deadline = t_start + a.deadline_min * 60
    runs, logs = a.work / "runs", a.work / "logs"
    commands = {e.name: train_command(e, a.train, runs, a.preset, overrides) for e in exps}
    # On a GPU each process only dispatches kernels: one CPU thread each, or ~24 processes x 16 OpenMP threads
    # would fight over the 16 cores.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"} if cuda else None
    states = run_pool(commands, parallel, deadline - a.eval_reserve_min * 60, logs, fh, env)
    records = [run_record(e, runs, logs, states[e.name]) for e in exps]
    by_name = {e.name: e for e in exps}

    grid = {"format": FORMAT, "version": 1, "device": device, "cuda": cuda, "command": shlex.join(sys.argv),
            "preset": a.preset, "grids": [] if a.levers else a.grids, "extra": a.extra, "levers": a.levers,
            "flip_tta": a.flip_tta, "overrides": overrides, "tiny": a.tiny,
            "split": SPLIT, "protocol": PROTOCOL, "misses": [MISS], "parallel": parallel,
            "deadline_s": a.deadline_min * 60, "estimate": estimate, "best": [], "wall_s": None, "runs": records}
    atomic_write_json(a.out / "grid.json", grid)  # rewritten after each step: a killed call still returns it
    for rec in records:
        best = by_name[rec["name"]].run_dir(runs) / "checkpoint_best.pt"
        if not best.is_file():
            log(f"{rec['name']}: no checkpoint ({rec['status']}); not evaluated", fh)
            continue
        if time.time() > deadline:
            log(f"{rec['name']}: not evaluated (deadline)", fh)
            continue
        try:  # one failing run must not lose the others' results
            rec["eval"] = evaluate_pack(TorchPredictor(best, "cuda" if cuda else "cpu", a.flip_tta), a.test, SPLIT,
                                        keep_predictions=bool(a.levers))
        except Exception as e:  # noqa: BLE001
            rec["eval_error"] = f"{e.__class__.__name__}: {e}"
            log(f"{rec['name']}: evaluation failed: {rec['eval_error']}", fh)
            continue
        s = rec["eval"]["summary"]
        log(f"{rec['name']}: {rec['epochs_done']}/{rec['epochs']} epochs ({rec['status']}), {SPLIT} NME {s['nme']:.4f} "
            f"on {s['n']} faces ({s['detector_misses']} detector misses -> {MISS})", fh)
        atomic_write_json(a.out / "grid.json", grid)

    ranked = sorted((r for r in records if r["eval"]), key=lambda r: r["eval"]["summary"]["nme"])[:min(a.best, 2)]
    for i, rec in enumerate(ranked, 1):
        try:
            package_run(by_name[rec["name"]].run_dir(runs), a.out / f"best{i}",
                        training_command=shlex.join(commands[rec["name"]]))
            log(f"best{i}: {rec['name']}", fh)
        except Exception as e:  # noqa: BLE001  (grid.json still comes back)
            log(f"best{i}: packaging {rec['name']} failed: {e.__class__.__name__}: {e}", fh)
    grid.update(best=[r["name"] for r in ranked], wall_s=time.time() - t_start)
    atomic_write_json(a.out / "grid.json", grid)
    log(f"done in {time.time() - t_start:.0f} s: {sum(1 for r in records if r['eval'])}/{len(records)} runs "
        f"evaluated -> {a.out}/grid.json", fh)
    fh.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
