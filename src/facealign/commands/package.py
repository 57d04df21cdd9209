"""`facealign package`: a training run's best checkpoint as fp16 safetensors + a model card that says what the
model was trained on (data root, layout, splits, counts, licence) and how (the run's training command)."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

HELP = "ship a run's best checkpoint as fp16 safetensors + model card"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="run folder (holds checkpoint_best.pt, config.json, metrics.jsonl)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output stem, e.g. src/facealign/weights/default")
    p.add_argument("--data", type=Path, default=None, help="evaluate the shipped weights on this data root")
    p.add_argument("--split", default="common", help="split the card's metrics are measured on (default common)")
    p.add_argument("--no-flip", action="store_true", help="ship without flip test-time augmentation")
    p.add_argument("--data-licence", default=None, metavar="TEXT",
                   help="the training data's licence, recorded in the card (default: the 300-W licence for the "
                        "300w layout, else \"unknown\")")
    p.add_argument("--data-description", default=None, metavar="TEXT",
                   help="what the training data is, recorded in the card (default: generated from the layout)")
    p.add_argument("--command-text", default=None,
                   help="training command to record in the card (default: the one in the run's config.json)")


def run(args) -> int:
    from facealign.evaluation.evaluate import format_summary_line
    from facealign.inference.release import package_run
    command = "facealign " + shlex.join(getattr(args, "argv", None) or sys.argv[1:])
    card = package_run(args.run, args.output, str(args.data) if args.data else None, args.split,
                       not args.no_flip, command, data_licence=args.data_licence,
                       data_description=args.data_description, training_command=args.command_text)
    for m in card.get("metrics", {}).values():
        print(format_summary_line(m))
    data = card["training"]["data"]
    print(f"data: {data['description']} ({data['root']}, layout {data['layout']}); licence: {card['licence']}")
    print(f"wrote {args.output}.safetensors and {args.output}.json")
    return 0
