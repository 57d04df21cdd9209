"""The training loop: checkpoints, validation and exact resume (the config and presets: `facealign.training.config`;
the data: `facealign.training.prepare` and `facealign.training.loaders`).

Determinism: shuffling (DistributedSampler seeded with `seed`, reshuffled per
epoch), augmentation (a function of seed, epoch, index) and torch's RNG (reseeded
at every epoch start) depend only on the config and the epoch number, so a run
resumed from its last epoch checkpoint ends with the same metrics as an
uninterrupted one.
"""
from __future__ import annotations

import json
import math
import os
import platform
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from facealign.atomic import atomic_write_json, atomic_write_text, remove_stale_temporaries
from facealign.data.counts import format_counts
from facealign.data.dataset import CachedFaces
from facealign.data.schemes import get_scheme
from facealign.evaluation.metrics import per_image_nme
from facealign.fpstate import flush_denormals
from facealign.hardware import cpu_has_fast_bf16, cpu_summary
from facealign.models import HEADS, build_model
from facealign.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from facealign.models.transfer import init_source, load_backbone_weights, load_full_model
from facealign.training.config import RESUME_FREE, TrainConfig, config_dict, upgrade_run_config
from facealign.training.distill import Teachers, distill_source
from facealign.training.linear_probe import fit_linear_probe, supports_linear_probe
from facealign.training.loaders import build_batches
from facealign.training.losses import build_loss, compute_loss
from facealign.training.prepare import check_scheme, prepare_data


class NonFiniteLossError(FloatingPointError):
    """Training stopped because the loss became NaN or infinite; the message names the step."""


def head_kind(head: str) -> str:
    """The loss family of a head name ('fpn' is a heatmap head)."""
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; valid: {', '.join(HEADS)}")
    return HEADS[head].kind


def environment() -> dict:
    import timm
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"git_commit": commit, "torch": torch.__version__, "timm": timm.__version__,
            "python": platform.python_version(), "cuda": torch.cuda.is_available(),
            "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor(),
            "threads": torch.get_num_threads(), "cpu": cpu_summary()}


# Autocast dtype per mode. `auto` is fp16 on CUDA and fp32 on the CPU: on a Xeon with AMX, bf16 autocast
# made the convolutions' forward 2.8x faster but their backward 1.95x slower, so the
# default recipe trained at 0.82x the fp32 speed (docs/benchmarks-training.md). Without AMX or
# AVX512-BF16, bf16 is emulated and far slower still, so `bf16` on such a CPU is refused.
AMP_MODES = {
    "off": lambda device: None,
    "bf16": lambda device: torch.bfloat16,
    "fp16": lambda device: torch.float16,
    "auto": lambda device: torch.float16 if device.type == "cuda" else None,
}


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `mode` on `device` (None: full fp32)."""
    if mode not in AMP_MODES:
        raise ValueError(f"unknown amp mode {mode!r}; valid: {', '.join(AMP_MODES)}")
    dtype = AMP_MODES[mode](device)
    if dtype == torch.bfloat16 and device.type == "cpu" and not cpu_has_fast_bf16():
        raise ValueError("amp=bf16 on a CPU without AMX or AVX512-BF16 would be emulated (many times slower); "
                         "use amp=off")
    if dtype == torch.float16 and device.type == "cpu":
        raise ValueError("amp=fp16 is for CUDA; on the CPU use amp=off (or bf16 where the CPU has AMX)")
    return dtype


# ---------------------------------------------------------------- loop
def _device(cfg: TrainConfig) -> torch.device:
    if cfg.device != "auto":
        return torch.device(cfg.device)
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() else torch.device("cpu")


def param_groups(model, cfg: TrainConfig) -> list[dict]:
    """AdamW parameter groups: one for the whole network, or, with `backbone_lr`, the pretrained part at
    backbone_lr / lr of every step's rate (`lr_scale`) and the new part at the full rate. The pretrained part
    is the backbone plus any head layers the head reports as pretrained (`MeshHead`'s original mesh branch).
    Parameters a head lists in `no_decay_parameters()` (`MeshHead`'s map) get their own group without
    weight decay."""
    if cfg.backbone_lr is None:
        groups = [{"params": list(model.parameters())}]
    else:
        reused = getattr(model.head, "pretrained_parameters", list)()
        ids = {id(p) for p in reused}
        groups = [{"params": list(model.backbone.parameters()) + reused, "lr_scale": cfg.backbone_lr / cfg.lr},
                  {"params": [p for p in model.head.parameters() if id(p) not in ids], "lr_scale": 1.0}]
    # Decay pulls a landmark map towards 0, i.e. every landmark towards the bias: a systematic error, not a prior.
    free = {id(p) for p in getattr(model.head, "no_decay_parameters", list)()}
    if not free:
        return groups
    split = []
    for g in groups:
        split.append({**g, "params": [p for p in g["params"] if id(p) not in free]})
        split.append({**g, "params": [p for p in g["params"] if id(p) in free], "weight_decay": 0.0})
    return [g for g in split if g["params"]]


def training_sampler(train_cache, cfg: TrainConfig, world: int, rank: int):
    """The epoch order: every face once, shuffled per epoch (DistributedSampler), or with `pose_balance`,
    faces drawn with replacement, rare poses more often (`facealign.data.sampling`)."""
    if cfg.pose_balance > 0:
        from facealign.data.sampling import BalancedSampler, pose_weights
        return BalancedSampler(pose_weights(train_cache.landmarks, cfg.pose_balance), world, rank, cfg.seed)
    return DistributedSampler(range(len(train_cache)), num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed,
                              drop_last=True)


def lr_at(cfg: TrainConfig, step: int, total: int) -> float:
    """Cosine decay from cfg.lr to 0 over `total` steps (per-step schedule)."""
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


@torch.no_grad()
def predict_normalised(model, images: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """(N, 3, S, S) normalised images -> (N, K, 2) normalised crop coords."""
    model.eval()
    out = [model(images[i:i + batch_size])["coords"].float().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy()


def validate(model, val_ds: CachedFaces, val_records, device, memory_format=torch.channels_last,
             scheme=None) -> float:
    """Mean NME (the scheme's standard normaliser; ibug68: inter-ocular) on the validation faces, in original image
    pixels (fp32, no autocast)."""
    batch = torch.stack([val_ds[i]["image"] for i in range(len(val_ds))]).to(device)
    batch = batch.contiguous(memory_format=memory_format)
    coords = predict_normalised(model, batch)
    pred = np.stack([val_ds.cache.crop_transform(i).to_image(c) for i, c in enumerate(coords)])
    gt = np.stack([r.landmarks for r in val_records])
    return float(per_image_nme(pred, gt, None, scheme).mean())


def check_resume_compatible(saved: dict, cfg: TrainConfig) -> None:
    saved = upgrade_run_config(saved)
    now = config_dict(cfg)
    defaults = config_dict(TrainConfig())  # fields added after the checkpoint was written
    diff = sorted(k for k in now if k not in RESUME_FREE and saved.get(k, defaults[k]) != now[k])
    if diff:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in diff)
        raise ValueError(f"cannot resume: config differs from the checkpoint's in {detail}")


def resume_message(last_path: Path, start_epoch: int, epochs: int, found: bool) -> str:
    """What `--resume` does: the epoch it continues from (1-based), or that it starts or has finished."""
    if not found:
        return f"--resume: no {last_path.name} in {last_path.parent}; starting at epoch 1 of {epochs}"
    if start_epoch >= epochs:
        return f"--resume: {last_path} holds all {epochs} epochs; nothing left to train"
    return f"resuming from epoch {start_epoch + 1} of {epochs} ({last_path}: {start_epoch} finished)"


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, command: str | None = None) -> dict:
    """Train one model; returns the final summary (also written to run_dir/final.json).

    command: the command line that started the run, recorded in run_dir/config.json (and from there in a
    packaged model's card)."""
    # Denormal floats (tiny gradients late in training) make x86 CPU math up to 30x slower.
    with flush_denormals():
        return _train(cfg, resume, progress, command)


def _train(cfg: TrainConfig, resume: bool, progress: bool, command: str | None = None) -> dict:
    from tqdm import tqdm
    distributed = int(os.environ.get("WORLD_SIZE", 1)) > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    main_proc = rank == 0
    device = _device(cfg)
    run_dir = cfg.run_dir
    loss_spec = build_loss(head_kind(cfg.head), cfg.loss)  # rejects a mismatched pair before any work
    scheme = get_scheme(cfg.scheme)  # an unknown scheme or a malformed scheme file fails before any work

    data_counts: dict = {}  # faces found, used and dropped by reason: printed always, kept in config.json
    if main_proc:
        train_cache, val_cache, val_records = prepare_data(cfg, progress, data_counts)
        print(format_counts(data_counts), flush=True)
        if "training_crops" in data_counts:
            print("training crops per detector: " + ", ".join(f"{d} {n}" for d, n in
                                                            data_counts["training_crops"].items()), flush=True)
    if distributed:
        dist.barrier()  # rank 0 built the caches; the others now find them
    if not main_proc:
        train_cache, val_cache, val_records = prepare_data(cfg, progress=False)
    check_scheme(train_cache, scheme, cfg.data)
    if cfg.threads and device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    val_ds = CachedFaces(val_cache) if val_cache is not None else None  # None: val_fraction 0, a final fit
    sampler = training_sampler(train_cache, cfg, world, rank)
    per_rank_batch = cfg.batch_size // world
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    autocast_dtype = amp_dtype(cfg.amp, device)
    teachers = Teachers(cfg.distill_teachers, cfg.distill_weight, cfg.context, scheme, device, memory_format,
                        cfg.distill_flip, autocast_dtype) if cfg.distill_teachers else None
    teacher_cache = None
    if teachers is not None and teachers.input_size > cfg.input_size:
        # the teachers see the same augmented crops rendered from a cache at their own size, not the student's
        # small crop scaled up (measured: `default` scores 0.0377 on its own 224-px crops of the `fast` recipe's
        # validation faces, 0.0394 on their 96-px crops scaled up; benchmarks/teacher_resolution.py)
        teacher_cfg = replace(cfg, input_size=teachers.input_size)
        if main_proc:
            teacher_cache = prepare_data(teacher_cfg, progress)[0]
        if distributed:
            dist.barrier()  # as above: rank 0 built the cache
        if not main_proc:
            teacher_cache = prepare_data(teacher_cfg, progress=False)[0]
    batches = build_batches(train_cache, cfg, sampler, per_rank_batch, device, scheme.mirror_permutation,
                            teacher_cache)
    if len(batches) == 0:  # full batches only (drop_last): an epoch would train nothing and say nothing
        raise ValueError(f"{len(train_cache)} training faces make no full batch of {cfg.batch_size}"
                         + (f" over {world} processes" if world > 1 else "")
                         + f"; use --batch-size {max(1, len(train_cache) // world) * world} or less")
    steps_per_epoch = len(batches) if cfg.max_steps is None else min(cfg.max_steps, len(batches))
    total_steps = steps_per_epoch * cfg.epochs

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.backbone, cfg.head, init=None if cfg.init_model or cfg.init_backbone else cfg.init,
                        feature_index=cfg.feature_index, num_landmarks=scheme.num_points)
    if cfg.init_model:
        load_full_model(model, cfg.init_model)
    if cfg.init_backbone:
        load_backbone_weights(model, cfg.init_backbone)
    if cfg.linear_probe and not supports_linear_probe(model.head):
        raise ValueError(f"linear_probe needs a head with a linear output map (mesh), not {cfg.head!r}")
    model = model.to(device).to(memory_format=memory_format)
    optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # fp16 needs loss scaling against gradient underflow; bf16 has fp32's exponent range and does not.
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)
    distilled = distill_source(cfg)  # the exact weights of the teachers, as init_source names the start's

    start_epoch, best, history = 0, float("inf"), []
    last_path, best_path = run_dir / "checkpoint_last.pt", run_dir / "checkpoint_best.pt"
    if not resume and last_path.is_file():
        raise ValueError(f"{run_dir} already holds a run; pass --resume to continue it or choose another "
                         "--out or --name")
    if resume and last_path.is_file():
        try:
            ckpt = load_checkpoint(last_path)
        except CheckpointError as e:
            raise CheckpointError(f"cannot resume: {e}; delete {run_dir} to start the run over") from None
        check_resume_compatible(ckpt["config"], cfg)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, best, history = ckpt["epoch"] + 1, ckpt["best_val_nme"], ckpt["history"]
    if resume and main_proc:
        print(resume_message(last_path, start_epoch, cfg.epochs, last_path.is_file()), flush=True)
    probe = None
    if cfg.linear_probe and start_epoch == 0:  # a resumed run has the fitted map in its checkpoint
        probe = fit_linear_probe(model, train_cache, device, scheme.mirror_permutation)
        if main_proc:
            print(f"linear probe: head map fitted on {probe['samples']} crops (unaugmented + mirrored), "
                  f"ridge {probe['ridge']:g}, RMS residual {probe['rms_residual']:.4f} crop units", flush=True)
    net = torch.nn.parallel.DistributedDataParallel(model) if distributed else model

    if main_proc:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(run_dir)  # left by a run killed mid-write; the real files are intact
        if resume and (run_dir / "config.json").is_file():  # the command that started the run, not `--resume`'s
            command = json.loads((run_dir / "config.json").read_text()).get("command") or command
        atomic_write_json(run_dir / "config.json", {"config": config_dict(cfg), "environment": environment(),
                                                    "world_size": world, "command": command,
                                                    "data_counts": data_counts, **init_source(cfg),
                                                    **distilled, **({"linear_probe": probe} if probe else {})})
        # metrics.jsonl mirrors the checkpoint's history, so a resumed run never repeats lines
        atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
    writer = _tensorboard(run_dir) if main_proc else None

    # Test hook: FACEALIGN_KILL_AT="epoch:step" SIGKILLs this process there (kill/resume tests).
    kill_at = tuple(int(v) for v in os.environ["FACEALIGN_KILL_AT"].split(":")) if "FACEALIGN_KILL_AT" in os.environ else None
    for epoch in range(start_epoch, cfg.epochs):
        torch.manual_seed(cfg.seed * 100_003 + epoch)  # dropout etc. independent of resume point
        sampler.set_epoch(epoch)
        net.train()
        t0, seen, loss_sum = time.time(), 0, 0.0
        bar = tqdm(total=steps_per_epoch, desc=f"{cfg.name} {epoch + 1}/{cfg.epochs}", unit="batch",
                   disable=not (progress and main_proc), leave=False)
        for step, (images, coords, *teacher_images) in enumerate(batches.epoch(epoch)):
            if step >= steps_per_epoch:
                break
            global_step = epoch * steps_per_epoch + step
            for g in optimizer.param_groups:
                g["lr"] = lr_at(cfg, global_step, total_steps) * g.get("lr_scale", 1.0)
            images = images.contiguous(memory_format=memory_format)
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                outputs = net(images)
            loss = compute_loss(loss_spec, {k: v.float() for k, v in outputs.items()}, coords, cfg.sigma)
            if teachers is not None:
                loss = loss + teachers.loss(teacher_images[0] if teacher_images else images, outputs["coords"])
            if not torch.isfinite(loss):
                # Stop before backward(): the weights in memory and every checkpoint on disk stay finite.
                where = f"non-finite loss ({loss.item()}) at epoch {epoch + 1}, step {step + 1} (global step {global_step + 1})"
                kept = f"last good checkpoint: {last_path}" if last_path.is_file() else "no checkpoint was written yet"
                bar.close()
                raise NonFiniteLossError(f"{where}; {kept}. Try a lower --lr.")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if kill_at == (epoch + 1, step + 1):
                os.kill(os.getpid(), signal.SIGKILL)
            seen += len(images) * world
            loss_sum += loss.item()
            bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{seen / (time.time() - t0):.1f}")
            bar.update()
        bar.close()
        if distributed:
            dist.barrier()
        if main_proc:
            val_nme = validate(model, val_ds, val_records, device, memory_format, scheme) if val_ds is not None else None
            record = {"epoch": epoch + 1, "train_loss": loss_sum / max(steps_per_epoch, 1), "val_nme": val_nme,
                      "lr": optimizer.param_groups[-1]["lr"], "img_per_s": seen / (time.time() - t0),
                      "epoch_s": time.time() - t0}
            history.append(record)
            # Without validation (a final fit) the latest epoch is also the "best" checkpoint.
            improved = val_nme is None or val_nme < best
            best = best if val_nme is None else min(best, val_nme)
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                     "best_val_nme": best, "history": history, "config": config_dict(cfg),
                     "scheme": scheme.to_dict()}
            if improved:
                save_checkpoint(best_path, state)
            save_checkpoint(last_path, state)
            atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
            if writer is not None:
                for k in ("train_loss", "val_nme", "lr", "img_per_s"):
                    if record[k] is not None:
                        writer.add_scalar(k, record[k], epoch + 1)
            if progress:
                print(f"{cfg.name} epoch {epoch + 1}/{cfg.epochs}: loss {record['train_loss']:.4f} "
                      f"val NME {'-' if val_nme is None else f'{val_nme:.4f}'} ({record['img_per_s']:.1f} img/s)",
                      flush=True)
        if distributed:
            dist.barrier()
    summary = {"name": cfg.name, "best_val_nme": None if math.isinf(best) else best, "epochs": cfg.epochs,
               "history": history, **distilled}
    if main_proc:
        atomic_write_json(run_dir / "final.json", summary)
    if writer is not None:
        writer.close()
    if distributed:
        dist.destroy_process_group()
    return summary


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(run_dir / "tb"))
