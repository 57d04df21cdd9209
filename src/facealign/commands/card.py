"""`facealign card`: re-measure a packaged model's card (metrics on data, or latency from a bench run)."""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path

HELP = "re-measure a packaged model's card metrics; the weights are not touched"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="packaged name ('default', 'default160', 'fast') or a .safetensors stem, e.g. src/facealign/weights/default")
    p.add_argument("--data", type=Path, default=None, help="evaluate on this data root")
    p.add_argument("--split", default="common", help="split to evaluate on (default common)")
    p.add_argument("--cache-dir", type=Path, default=None, help="box cache folder (as for `facealign boxes`)")
    p.add_argument("--latency-from", type=Path, default=None, metavar="BENCH_JSON",
                   help="instead: copy this model's and dlib's per-face latency from a `facealign bench` .json")


def run(args) -> int:
    from facealign.evaluation.evaluate import format_summary_line
    from facealign.inference.release import card_latency, remeasure_packaged
    if args.latency_from is not None:
        card = card_latency(args.model, args.latency_from)
        print(f"latency in the card of {args.model}: {card['latency']['ms_per_face']} ms per face, dlib "
              f"{card['latency']['dlib_ms_per_face']} ms (weights untouched)")
        return 0
    if args.data is None:
        raise ValueError("--data is required (or --latency-from BENCH_JSON)")
    parts = ["facealign", "card", str(args.model), "--data", str(args.data), "--split", args.split]
    command = shlex.join(parts + (["--cache-dir", str(args.cache_dir)] if args.cache_dir else []))
    card = remeasure_packaged(args.model, args.data, args.split, args.cache_dir, command)
    for m in card["metrics"].values():
        print(format_summary_line(m))
    print(f"rewrote the card of {args.model} (weights untouched, sha256 {card['weights_sha256'][:12]}...)")
    return 0
