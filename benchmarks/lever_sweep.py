"""Recipe levers of the default model, trained side by side under one deadline (made for a lent GPU).

Each lever is a set of TrainConfig overrides on `--preset default`; all selected levers train at once as
separate `facealign train` processes (one GPU holds several of these small models; the tensor loader
keeps the data on the device). At the deadline the unfinished runs are stopped: their checkpoints and
metrics stay valid (`--resume` continues them). Then every run's best checkpoint is shipped as fp16
safetensors + card (`facealign package`) and the metrics are tabulated into OUT/levers.md and
OUT/levers.json; `--return-dir DIR` writes what a device call can bring back (at most 8 flat files, each
under 16 MiB): levers.json (every lever's row, config and per-epoch history), levers.md and the 2 best
levers' weights as best{1,2}.safetensors + .json (the shell wrapper adds its log: 7 files).

    # on the CPU, a smoke test of the whole flow (seconds per lever):
    python benchmarks/lever_sweep.py --data train.fapack --out /tmp/sweep --levers e300,fpn4 --tiny
    # on a GPU (see docs/training.md for the carried files and the exact device command):
    PYTHONPATH=src python benchmarks/lever_sweep.py --data train.fapack --out $OUT/sweep --deadline-min 8 --return-dir $OUT
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from facealign.atomic import atomic_write_bytes, atomic_write_text

# name -> TrainConfig overrides on the `default` preset (160 px, fpn, integral_bce, 90 epochs)
LEVERS: dict[str, dict] = {
    "e90": {},
    "e300": {"epochs": 300},
    "s192-e300": {"input_size": 192, "epochs": 300},
    "s224-e300": {"input_size": 224, "epochs": 300},
    "s256-e300": {"input_size": 256, "epochs": 300},
    "fpn4-e300": {"head": "fpn4", "epochs": 300},
    "fpn4-s256-e300": {"head": "fpn4", "input_size": 256, "epochs": 300},
    "all-e300": {"epochs": 300, "val_fraction": 0.0},  # final fit on every training face (no validation)
}
TINY = {"epochs": 2, "max_steps": 2, "batch_size": 4}


def train_command(data: str, out: Path, name: str, overrides: dict) -> list[str]:
    cmd = [sys.executable, "-m", "facealign.cli", "train", "--data", data, "--preset", "default",
           "--out", str(out / name), "--cache-dir", str(out / "cache" / name)]
    for k, v in overrides.items():
        cmd += ["--set", f"{k}={json.dumps(v)}"]
    return cmd


def run_levers(data: str, out: Path, names: list[str], deadline_s: float, extra: dict, resume: bool) -> dict:
    """Start every lever, wait until all end or the deadline passes; returns {name: exit status or 'stopped'}."""
    out.mkdir(parents=True, exist_ok=True)
    procs = {}
    for name in names:
        cmd = train_command(data, out, name, {**LEVERS[name], **extra}) + (["--resume"] if resume else [])
        log = open(out / f"{name}.log", "w")
        procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        print(f"started {name}: {' '.join(cmd)}", flush=True)
    end = time.time() + deadline_s
    while time.time() < end and any(p.poll() is None for p in procs.values()):
        time.sleep(5)
    status = {}
    for name, p in procs.items():
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)  # between atomic checkpoint writes nothing is half-written
            p.wait()
            status[name] = "stopped at deadline"
        else:
            status[name] = f"exit {p.returncode}"
    return status


def summarise(out: Path, names: list[str], status: dict) -> list[dict]:
    rows = []
    for name in names:
        run = next((p.parent for p in (out / name).glob("*/metrics.jsonl")), None)
        history = [json.loads(x) for x in run.joinpath("metrics.jsonl").read_text().splitlines()] if run else []
        config = json.loads(run.joinpath("config.json").read_text())["config"] if run else {}
        vals = [h["val_nme"] for h in history if h.get("val_nme") is not None]
        rows.append({"lever": name, "overrides": LEVERS[name], "status": status.get(name), "run": str(run),
                     "epochs_done": len(history), "epochs": config.get("epochs"),
                     "best_val_nme": min(vals) if vals else None,
                     "best_epoch": history[[h.get("val_nme") for h in history].index(min(vals))]["epoch"] if vals else None,
                     "last_val_nme": vals[-1] if vals else None,
                     "epoch_s_sum": sum(h["epoch_s"] for h in history),
                     "img_per_s_median": sorted(h["img_per_s"] for h in history)[len(history) // 2] if history else None})
    return rows


def package_runs(rows: list[dict], out: Path, n_best: int | None = None) -> list[str]:
    """fp16 safetensors + card per lever with a best checkpoint (the n_best best by validation NME, if given)."""
    ok = [r for r in rows if r["run"] != "None" and (Path(r["run"]) / "checkpoint_best.pt").is_file()]
    if n_best is not None:
        ok = sorted(ok, key=lambda r: r["best_val_nme"] if r["best_val_nme"] is not None else float("inf"))[:n_best]
    for r in ok:
        subprocess.run([sys.executable, "-m", "facealign.cli", "package", r["run"], "-o", str(out / "weights" / r["lever"])],
                       check=False)
    return [r["lever"] for r in ok]


RETURN_FILES, RETURN_BYTES = 8, 16 * 2**20  # what one device call brings back from $OUT (flat files)


def write_return(rows: list[dict], out: Path, dest: Path, best: list[str], text: str) -> list[Path]:
    """The returned files: levers.json (rows + each lever's config and history), levers.md, best{i}.* weights.

    Raises ValueError if they would break the device's limits (then nothing comes back at all)."""
    dest.mkdir(parents=True, exist_ok=True)
    full = []
    for r in rows:
        run = Path(r["run"]) if r["run"] != "None" else None
        history = ([json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]
                   if run and (run / "metrics.jsonl").is_file() else [])
        config = json.loads((run / "config.json").read_text()) if run and (run / "config.json").is_file() else None
        full.append({**r, "history": history, "config": config})
    written = [dest / "levers.json", dest / "levers.md"]
    atomic_write_text(written[0], json.dumps({"best": best, "levers": full}, indent=1))
    atomic_write_text(written[1], text)
    for i, lever in enumerate(best, 1):
        for ext in (".safetensors", ".json"):
            written.append(dest / f"best{i}{ext}")
            atomic_write_bytes(written[-1], (out / "weights" / f"{lever}{ext}").read_bytes())
    big = [p.name for p in written if p.stat().st_size > RETURN_BYTES]
    if len(written) >= RETURN_FILES or big:  # the wrapper's log is the last allowed file
        raise ValueError(f"return folder breaks the device limits: {len(written)} files, over 16 MiB: {big}")
    return written


def table(rows: list[dict]) -> str:
    lines = ["| lever | overrides | epochs done / planned | best val NME (epoch) | last val NME | epoch time sum s | img/s | status |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        best = f"{r['best_val_nme']:.4f} ({r['best_epoch']})" if r["best_val_nme"] is not None else "–"
        last = f"{r['last_val_nme']:.4f}" if r["last_val_nme"] is not None else "–"
        ips = f"{r['img_per_s_median']:.1f}" if r["img_per_s_median"] else "–"
        lines.append(f"| {r['lever']} | `{json.dumps(r['overrides'])}` | {r['epochs_done']} / {r['epochs']} | {best} | "
                     f"{last} | {r['epoch_s_sum']:.0f} | {ips} | {r['status']} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a `facealign data pack` file or a data root")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--levers", default="e300,s256-e300,fpn4-e300,all-e300", help=f"comma-separated; valid: {', '.join(LEVERS)}")
    p.add_argument("--deadline-min", type=float, default=8.0)
    p.add_argument("--tiny", action="store_true", help="2 epochs of 2 steps each: a smoke test of the flow")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--return-dir", type=Path, default=None, help="write levers.json, levers.md and the 2 best "
                   "levers' best{1,2}.safetensors + .json there (flat, under the device's 8-file / 16 MiB limits)")
    args = p.parse_args()
    names = args.levers.split(",")
    unknown = [n for n in names if n not in LEVERS]
    if unknown:
        p.error(f"unknown lever(s) {', '.join(unknown)}; valid: {', '.join(LEVERS)}")
    t0 = time.time()
    status = run_levers(args.data, args.out, names, args.deadline_min * 60, TINY if args.tiny else {}, args.resume)
    rows = summarise(args.out, names, status)
    best = package_runs(rows, args.out, 2 if args.return_dir else None)
    text = (f"Command: `{' '.join(sys.argv)}`\nWall time: {time.time() - t0:.0f} s for {len(names)} levers in parallel\n\n"
            + table(rows) + "\n")
    print(text)
    (args.out / "levers.md").write_text(text)
    (args.out / "levers.json").write_text(json.dumps(rows, indent=1))
    if args.return_dir:
        write_return(rows, args.out, args.return_dir, best, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
