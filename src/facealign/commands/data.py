"""`facealign data summary|show|pack`: inspect a dataset, draw its faces, pack them into one portable file."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facealign.commands.options import SCHEME_HELP, add_data_args

HELP = "inspect datasets"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_subparsers(dest="data_command", required=True)
    p = data.add_parser("summary", help="layouts, split counts, missing folders, skipped and flagged files")
    add_data_args(p)
    p.add_argument("--strict", action="store_true",
                   help="exit status 1 if any problem was found (missing folders, skipped faces other than Menpo's "
                        "profile faces, images without .pts, duplicate stems, landmarks far outside the image)")
    p.add_argument("--no-decode", action="store_true",
                   help="read image headers only (faster; misses truncated pixel data)")
    p.add_argument("--scheme", default=None, help=SCHEME_HELP)
    p = data.add_parser("show", help="grid of face crops with landmarks drawn")
    add_data_args(p)
    p.add_argument("--split", default="train", help="split to draw from (`facealign data summary` lists them)")
    p.add_argument("-n", type=int, default=16, help="number of faces")
    p.add_argument("-o", "--output", type=Path, default=Path("grid.png"), help="PNG to write (default grid.png)")
    p.add_argument("--box", default="gt", help="box protocol: detector, gt or seed (detector/seed need `facealign boxes`)")
    p.add_argument("--size", type=int, default=224, help="side of each drawn crop, pixels (default 224)")
    p.add_argument("--seed", type=int, default=0, help="which faces are drawn (random sample seed, default 0)")
    p.add_argument("--cache-dir", type=Path, default=None, help="box cache folder (as for `facealign boxes`)")
    p.add_argument("--scheme", default=None, help=SCHEME_HELP)
    p = data.add_parser("pack", help="one portable file of JPEG face crops, landmarks, boxes and metadata for "
                                     "`facealign train --data PACK`")
    add_data_args(p)
    p.add_argument("-o", "--output", type=Path, required=True, help="pack file to write (e.g. train.fapack)")
    p.add_argument("--split", nargs="+", default=["train"], help="split(s) to pack (default: train)")
    p.add_argument("--box", default="detector", help="box protocol: detector (default; faces the detector misses are "
                                                      "packed with the gt box and flagged), seed or gt")
    p.add_argument("--max-size", dest="size", type=int, default=256,
                   help="largest network input size served at full resolution (default 256; crops are max-size x "
                        "margin pixels)")
    p.add_argument("--context", type=float, default=0.4, help="box enlargement (default 0.4, the `default` preset's)")
    p.add_argument("--margin", type=float, default=1.5, help="augmentation margin (default 1.5)")
    p.add_argument("--quality", type=int, default=None, help="JPEG quality (default 90)")
    p.add_argument("--cache-dir", type=Path, default=None, help="box cache folder (as for `facealign boxes`)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--scheme", default=None, help=SCHEME_HELP)


def run(args) -> int:
    return {"summary": run_summary, "show": run_show, "pack": run_pack}[args.data_command](args)


def run_summary(args) -> int:
    from facealign.data.summary import format_summary, summarize_root, summary_error
    summary = summarize_root(args.root, args.layout, decode=not args.no_decode, progress=sys.stderr.isatty(),
                             split_file=args.splits, scheme=args.scheme)
    print(format_summary(summary))
    why = summary_error(summary)
    if why is not None:
        print(f"facealign: error: {why}", file=sys.stderr)
        return 1
    problems = summary.problems()
    if args.strict and problems:
        print(f"facealign: error: --strict: {len(problems)} problem(s) in {args.root} (listed above)", file=sys.stderr)
        return 1
    return 0


def run_show(args) -> int:
    from facealign.data.show import save_grid
    path = save_grid(args.root, args.split, args.n, args.output, layout=args.layout, protocol=args.box,
                     size=args.size, seed=args.seed, cache_dir=args.cache_dir, split_file=args.splits,
                     scheme=args.scheme)
    print(f"wrote {path}")
    return 0


def run_pack(args) -> int:
    from facealign.data.pack_writer import write_pack
    from facealign.data.schemes import get_scheme
    s = write_pack(args.root, args.output, args.split, box=args.box, size=args.size, context=args.context,
                   margin=args.margin, layout=args.layout, cache_dir=args.cache_dir, progress=not args.quiet,
                   split_file=args.splits, num_points=get_scheme(args.scheme).num_points,
                   **({} if args.quality is None else {"quality": args.quality}))
    flagged = f", {s['undetected']} missed by the detector (packed with the gt box, flagged)" \
        if s["box_protocol"] == "detector" else ""
    print(f"pack: {s['faces']} faces ({'+'.join(s['splits'])}; {s['box_protocol']} boxes{flagged}), "
          f"{s['resolution']} px JPEG q{s['quality']}: {s['bytes'] / 1e6:.1f} MB in {s['seconds']:.0f} s -> {s['path']}")
    return 0
