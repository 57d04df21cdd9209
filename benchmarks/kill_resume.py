"""SIGKILL `facealign train` at random moments, resume, and check nothing was lost.

For each trial: start a fresh tiny run on generated data, SIGKILL it at a random moment
(1 to --max-kills times, each followed by `--resume`), then let the last resume finish.
After every kill the script checks that `checkpoint_last.pt` (if any) loads and matches
its SHA-256 digest; at the end, the per-epoch validation NME and training loss must be
bit-identical to an uninterrupted reference run. Prints a table; exit status 1 on any
mismatch or damaged checkpoint.

    python benchmarks/kill_resume.py --trials 20
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ARGS = ["--input-size", "32", "--batch-size", "4", "--epochs", "5", "--workers", "0", "--train-box", "gt",
        "--val-box", "gt", "--head", "heatmap", "--loss", "mse"]
RUN = "efficientnet_b0-heatmap-mse"


def train_cmd(data: Path, out: Path, cache: Path, resume: bool) -> list[str]:
    return ([sys.executable, "-m", "facealign.cli", "train", "--data", str(data), "--out", str(out),
             "--cache-dir", str(cache)] + ARGS + (["--resume"] if resume else []))


def run_to_end(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"training failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - t0


def checkpoint_state(run: Path) -> str:
    """'none', 'ok (epoch N)' or 'DAMAGED: ...' for checkpoint_last.pt."""
    from facealign.models.checkpoint import CheckpointError, load_checkpoint
    path = run / "checkpoint_last.pt"
    if not path.exists():
        return "none"
    try:
        return f"ok (epoch {load_checkpoint(path)['epoch'] + 1})"
    except CheckpointError as e:
        return f"DAMAGED: {e}"


def history(run: Path) -> list[tuple[float, float]]:
    final = json.loads((run / "final.json").read_text())
    return [(h["val_nme"], h["train_loss"]) for h in final["history"]]


def killed_run(cmd: list[str], run: Path, delay: float) -> bool:
    """Start `cmd`, SIGKILL it `delay` s after training starts (config.json written); True if it was killed."""
    stamp = (run / "config.json").stat().st_mtime_ns if (run / "config.json").exists() else None
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # wait for this process to (re)write config.json: start-up (imports, caches) is over
    while proc.poll() is None:
        if (run / "config.json").exists() and (run / "config.json").stat().st_mtime_ns != stamp:
            break
        time.sleep(0.01)
    deadline = time.perf_counter() + delay
    while proc.poll() is None and time.perf_counter() < deadline:
        time.sleep(0.005)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--max-kills", type=int, default=3, help="kills per trial (1..N, random)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from facealign.data.synthetic import make_300w_fixture
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_300w_fixture(tmp / "300W", {"afw": 8, "helen/trainset": 40, "helen/testset": 2}, size=96)
        cache = tmp / "cache"
        ref_out = tmp / "ref"
        ref_wall = run_to_end(train_cmd(data, ref_out, cache, False))
        ref = history(ref_out / RUN)
        cfg_t = (ref_out / RUN / "config.json").stat().st_mtime
        train_s = (ref_out / RUN / "final.json").stat().st_mtime - cfg_t
        print(f"reference: {len(ref)} epochs, {ref_wall:.1f} s wall, {train_s:.1f} s after start-up")
        rows, failures, kills, temps = [], 0, 0, 0
        for trial in range(args.trials):
            out = tmp / f"t{trial}"
            run = out / RUN
            n_kills = rng.randint(1, args.max_kills)
            states, resumed = [], False
            for _ in range(n_kills):
                delay = rng.uniform(0, train_s)
                if not killed_run(train_cmd(data, out, cache, resumed), run, delay):
                    break  # finished before the kill landed
                kills += 1
                temps += any(run.glob(".*.tmp"))  # a write was in progress: its temporary file is left
                states.append(checkpoint_state(run))
                resumed = True
            if not (run / "final.json").exists():
                run_to_end(train_cmd(data, out, cache, resumed))
            same = history(run) == ref
            damaged = [s for s in states if s.startswith("DAMAGED")]
            failures += (not same) + len(damaged)
            rows.append((trial + 1, len(states), ", ".join(states) or "-", "yes" if same else "NO"))
            print(f"trial {trial + 1:>2}: {len(states)} kill(s), checkpoint after each: {rows[-1][2]}; "
                  f"final metrics identical: {rows[-1][3]}", flush=True)
    print()
    print("| trial | kills | checkpoint_last.pt after each kill | final metrics bit-identical |")
    print("|---:|---:|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} |")
    print(f"\n{args.trials} trials, {kills} SIGKILLs ({temps} left a half-written temporary file behind), "
          f"{failures} failures (damaged checkpoints or metric mismatches)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
