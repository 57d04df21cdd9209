"""`facealign train`: one model from a preset, or a run's config.json, plus overrides; resumable.

The training flags and `--set` override `facealign.training.config.TrainConfig` fields; their help texts and
defaults come from that dataclass (the epilog of `--help` lists every field).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys

HELP = "train one model (resumable; --config RUN/config.json re-runs a run)"
INTERRUPT_HINT = "continue from the last finished epoch with the same command plus --resume"

# TrainConfig fields with a flag of their own (--set reaches every field).
TRAIN_FLAGS = ("backbone", "head", "loss", "epochs", "batch_size", "input_size", "lr", "init", "workers", "out", "seed",
               "max_steps", "device", "train_box", "val_box", "cache_dir", "context", "init_model", "init_backbone",
               "loader", "amp", "threads", "layout", "splits", "train_split", "backbone_lr", "pose_balance",
               "distill_teachers", "distill_weight", "first_stage")
FLAG_NAMES = {"distill_teachers": "distill"}  # flags not named after their field
FLAG_METAVARS = {"distill_teachers": "NAME[,NAME...]"}
# a flag's type, from its field's annotation (a tuple's flag takes its items comma-separated)
FLAG_TYPES = {"int": int, "float": float, "str": str, "tuple[str, ...]": str}
GRID_SET_BY_THE_GRID = ("backbone", "head", "loss", "out")  # `experiments` names these itself


def _field(name: str) -> dataclasses.Field:
    from facealign.training.config import TrainConfig
    return next(f for f in dataclasses.fields(TrainConfig) if f.name == name)


def field_help(name: str) -> str:
    return _field(name).metadata.get("help")


def field_type(name: str):
    """int, float or str from the field's annotation ('int | None' -> int)."""
    annotation = str(_field(name).type).removesuffix(" | None")
    if annotation not in FLAG_TYPES:
        raise TypeError(f"TrainConfig.{name} ({annotation}) has no flag type; set it with --set")
    return FLAG_TYPES[annotation]


def add_train_flags(p: argparse.ArgumentParser, grid: bool = False) -> None:
    """The TrainConfig flags (`TRAIN_FLAGS`) with TrainConfig's help texts, and `--set KEY=VALUE`."""
    for name in TRAIN_FLAGS:
        if grid and name in GRID_SET_BY_THE_GRID:
            continue
        p.add_argument(f"--{FLAG_NAMES.get(name, name).replace('_', '-')}", dest=name, type=field_type(name),
                       metavar=FLAG_METAVARS.get(name), help=field_help(name))
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any TrainConfig field (listed below for `facealign train --help`); the value is "
                        "JSON when it parses, else a string")


def set_pairs(items: list[str] | None) -> dict:
    """`--set key=value` pairs as a dict (values parsed as JSON when possible, else kept as strings)."""
    values = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {item!r}")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return values


def overrides(args) -> dict:
    """Explicit flags plus `--set key=value` pairs (values parsed as JSON when possible)."""
    values = {k: getattr(args, k) for k in TRAIN_FLAGS if getattr(args, k, None) is not None}
    return {**values, **set_pairs(args.set)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from facealign.training.config import PRESETS, fields_help
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = ("config fields, set by a flag above or --set KEY=VALUE. Later ones win: TrainConfig's defaults,\n"
                "then --preset or --config, then the flags, then --set.\n" + fields_help())
    p.add_argument("--data", type=str, default=None,
                   help="data root, or a pack file from `facealign data pack` (required unless --config gives it)")
    p.add_argument("--preset", default=None,
                   help=f"one of {', '.join(PRESETS)} (facealign.training.config.PRESETS): seed is the study's "
                        "settings, cpu sized for a small CPU, default and fast the shipped models' recipes")
    p.add_argument("--config", type=str, default=None, metavar="RUN/config.json",
                   help="re-run a run: start from the config in its config.json (or its run folder) instead of a "
                        "preset; flags and --set still override. Give --name or --out for a new run folder, or "
                        "--resume to continue that run")
    p.add_argument("--name", dest="run_name", default=None, metavar="NAME", help=field_help("run_name"))
    p.add_argument("--resume", action="store_true", help="continue from run_dir/checkpoint_last.pt")
    add_train_flags(p)


def make_train_config(args):
    """The TrainConfig of a `facealign train` command line."""
    from facealign.training.config import make_config, read_run_config
    base = read_run_config(args.config) if args.config is not None else None
    if args.data is None and base is None:
        raise ValueError("--data is required (or --config RUN/config.json, which names the run's data)")
    # --set wins over --data/--name as over every flag (and may name the same field without a clash)
    return make_config(args.preset, base=base, **{"data": args.data, "run_name": args.run_name,
                                                  **overrides(args)})


def run(args) -> int:
    from facealign.training.loop import train
    cfg = make_train_config(args)
    command = "facealign " + shlex.join(getattr(args, "argv", None) or sys.argv[1:])
    summary = train(cfg, resume=args.resume, command=command)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun every rank returns here; rank 0 alone reports
        return 0
    best = summary["best_val_nme"]
    print(f"{cfg.name}: best validation NME {'- (no validation)' if best is None else f'{best:.4f}'} -> {cfg.run_dir}")
    return 0
