"""Training throughput (images/s) of one recipe under loader / precision / layout / thread / batch variants.

All variants run in ONE invocation on the same machine, each in a fresh child process (so thread pools,
oneDNN kernel caches and worker processes do not leak between rows), in an interleaved order repeated
`--rounds` times; the table reports the median per variant. A step is the full training step of
`facealign.training.loop` (batch from the loader, forward under autocast, loss, backward, AdamW step).

Rows:
- `before`: the landed loader (numpy per-sample augmentation in 1 DataLoader worker restarted every
  epoch, i.e. the first batches of each epoch wait for the worker to start), fp32, channels_last;
- `workers`: the same numpy path with a persistent worker;
- `tensor`: batched augmentation as tensor ops in the training process (`facealign.data.tensor_augment`);
- each with amp off/bf16 (bf16 only where the CPU has AMX or AVX512-BF16, unless --force-bf16),
  channels_last on/off, 1/2 threads, batch 32/64.

    python benchmarks/train_throughput.py --data ../shared/data/300W --preset default -o results/benchmarks/benchmarks-training-table.md
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULT = "THROUGHPUT_RESULT "


def child(spec: dict) -> dict:
    import torch
    from torch.utils.data import DataLoader, DistributedSampler

    from facealign.data.dataset import CachedFaces
    from facealign.training.losses import build_loss, compute_loss
    from facealign.models import build_model
    from facealign.training.loaders import build_batches
    from facealign.training.loop import amp_dtype, head_kind
    from facealign.training.prepare import prepare_data
    from facealign.training.config import make_config

    torch.set_num_threads(spec["threads"])
    cfg = make_config(spec["preset"], data=spec["data"], batch_size=spec["batch"], loader=spec["loader"],
                      amp=spec["amp"], channels_last=spec["channels_last"], workers=1, init=None)
    train_cache, _, _ = prepare_data(cfg, progress=False)
    device = torch.device("cpu")
    sampler = DistributedSampler(range(len(train_cache)), num_replicas=1, rank=0, shuffle=True, seed=0, drop_last=True)
    if spec["variant"] == "before":  # the landed code: a worker that restarts every epoch
        ds = CachedFaces(train_cache, augment=cfg.augment, seed=cfg.seed)

        def epoch_batches(epoch):
            ds.set_epoch(epoch)
            for b in DataLoader(ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=1, drop_last=True):
                yield b["image"], b["coords"]
    else:
        batches = build_batches(train_cache, cfg, sampler, cfg.batch_size, device)
        epoch_batches = batches.epoch
    model = build_model(cfg.backbone, cfg.head, feature_index=cfg.feature_index)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_spec = build_loss(head_kind(cfg.head), cfg.loss)
    dtype = amp_dtype(cfg.amp, device)

    def steps(n, epoch):
        """Run n steps, crossing epoch boundaries like training does (`before` pays a worker start each)."""
        done = 0
        while done < n:
            sampler.set_epoch(epoch)
            for images, coords in epoch_batches(epoch):
                with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                    out = model(images.contiguous(memory_format=fmt))
                loss = compute_loss(loss_spec, {k: v.float() for k, v in out.items()}, coords, cfg.sigma)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                done += 1
                if done >= n or (spec["epoch_steps"] and done % spec["epoch_steps"] == 0):
                    break
            epoch += 1
        return epoch

    epoch = steps(spec["warmup"], 0)
    t = time.perf_counter()
    steps(spec["steps"], epoch)
    elapsed = time.perf_counter() - t
    # loader alone: time to produce the same number of batches without the model
    t = time.perf_counter()
    n = 0
    for _ in epoch_batches(epoch + 1):
        n += 1
        if n >= min(spec["steps"], 10):
            break
    loader_s = (time.perf_counter() - t) / n
    return {"img_per_s": spec["steps"] * cfg.batch_size / elapsed, "loader_img_per_s": cfg.batch_size / loader_s}


VARIANTS = [
    # name, loader, amp, channels_last, threads, batch
    ("before", "workers", "off", True, 2, 32),
    ("workers", "workers", "off", True, 2, 32),
    ("tensor", "tensor", "off", True, 2, 32),
    ("tensor bf16", "tensor", "bf16", True, 2, 32),
    ("tensor bf16 contiguous", "tensor", "bf16", False, 2, 32),
    ("tensor fp32 contiguous", "tensor", "off", False, 2, 32),
    ("tensor 1 thread", "tensor", "off", True, 1, 32),
    ("tensor bf16 1 thread", "tensor", "bf16", True, 1, 32),
    ("tensor bf16 batch 64", "tensor", "bf16", True, 2, 64),
    ("tensor fp32 batch 64", "tensor", "off", True, 2, 64),
]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--preset", default="default")
    p.add_argument("--steps", type=int, default=12, help="timed training steps per variant and round")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--epoch-steps", type=int, default=6,
                   help="steps per simulated epoch (a `before` worker restarts at each; 0 = real epochs)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--only", default=None, help="comma-separated variant names")
    p.add_argument("--force-bf16", action="store_true", help="measure bf16 rows even without native bf16")
    p.add_argument("-o", "--output", type=Path, default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(RESULT + json.dumps(child(json.loads(args.child))), flush=True)
        return 0

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from facealign.hardware import cpu_has_fast_bf16, cpu_summary
    variants = [v for v in VARIANTS if args.only is None or v[0] in args.only.split(",")]
    if not (cpu_has_fast_bf16() or args.force_bf16):
        variants = [v for v in variants if v[2] != "bf16"]
    cpu = cpu_summary()
    load0 = os.getloadavg()
    results: dict[str, list[dict]] = {v[0]: [] for v in variants}
    for r in range(args.rounds):
        for name, loader, amp, cl, threads, batch in (variants if r % 2 == 0 else variants[::-1]):
            spec = {"variant": name, "data": args.data, "preset": args.preset, "loader": loader, "amp": amp,
                    "channels_last": cl, "threads": threads, "batch": batch, "steps": args.steps,
                    "warmup": args.warmup, "epoch_steps": args.epoch_steps}
            env = dict(os.environ, OMP_NUM_THREADS=str(threads))
            proc = subprocess.run([sys.executable, __file__, "--data", args.data, "--child", json.dumps(spec)],
                                  capture_output=True, text=True, env=env)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
            if proc.returncode != 0 or not line:
                raise SystemExit(f"variant {name} failed:\n{proc.stderr[-3000:]}")
            results[name].append(json.loads(line[-1][len(RESULT):]))
            print(f"round {r + 1} {name}: {results[name][-1]}", flush=True)
    base = statistics.median(x["img_per_s"] for x in results["before"]) if results.get("before") else None
    rows = ["| variant | loader | amp | channels_last | threads | batch | train img/s (median) | all rounds | "
            "loader alone img/s | ÷ before |", "|---|---|---|---|---:|---:|---:|---|---:|---:|"]
    for name, loader, amp, cl, threads, batch in variants:
        vals = [x["img_per_s"] for x in results[name]]
        med = statistics.median(vals)
        lmed = statistics.median(x["loader_img_per_s"] for x in results[name])
        rows.append(f"| {name} | {loader} | {amp} | {'yes' if cl else 'no'} | {threads} | {batch} | {med:.1f} | "
                    f"{', '.join(f'{v:.1f}' for v in vals)} | {lmed:.0f} | {f'{med / base:.2f}×' if base else 'n/a'} |")
    import shlex
    command = "python benchmarks/train_throughput.py " + shlex.join(argv or sys.argv[1:])
    header = [f"Date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
              f"Command: `{command}`",
              f"Machine: {cpu['cpu']}, {cpu['available_cores']} cores available, features {', '.join(cpu['features'])}; "
              f"load average {' '.join(f'{x:.2f}' for x in load0)} at start, "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at end",
              f"Recipe: preset `{args.preset}` (random init); {args.steps} timed steps after {args.warmup} warm-up "
              f"steps per variant and round, {args.rounds} rounds in alternating order; an epoch every "
              f"{args.epoch_steps or 'real'} steps."]
    text = "\n".join(header) + "\n\n" + "\n".join(rows) + "\n"
    print(text)
    if args.output:
        from facealign.atomic import atomic_write_text
        atomic_write_text(args.output, text)
        atomic_write_text(args.output.with_suffix(".json"), json.dumps({"header": header, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
