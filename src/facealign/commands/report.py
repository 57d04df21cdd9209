"""`facealign report status`: the status table (each packaged model and backend against dlib and dlib-ert,
accuracy and ms per face) generated from the model cards and the committed bench/results JSON."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "generated reports from committed measurements: `status` (accuracy and speed against dlib)"
DESCRIPTION = """Reports built only from committed files, never from typed numbers.

  facealign report status -o docs/status.md --readme README.md

writes the status page and rewrites README.md's block between its status markers; --check instead exits 1
when either file differs from the generated text (what tests/test_status.py checks)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from facealign.evaluation.status import DEFAULT_BENCH, DEFAULT_RESULTS
    sub = p.add_subparsers(dest="report_command", required=True)
    s = sub.add_parser("status", help="accuracy and ms per face of every packaged model and backend, dlib and "
                                      "dlib-ert, from the model cards and the bench/results JSON")
    s.add_argument("-o", "--output", type=Path, default=None,
                   help="status page to write (e.g. docs/status.md); default: print the table")
    s.add_argument("--readme", type=Path, default=None,
                   help="also replace the block between this file's status markers (e.g. README.md)")
    s.add_argument("--bench", type=Path, default=DEFAULT_BENCH,
                   help=f"`facealign bench` JSON with the ms per face (default {DEFAULT_BENCH})")
    s.add_argument("--results", type=Path, default=DEFAULT_RESULTS,
                   help=f"study results.json with the dlib and dlib-ert rows (default {DEFAULT_RESULTS})")
    s.add_argument("--check", action="store_true",
                   help="write nothing: exit 1 if --output or --readme differs from the generated text")


def run(args) -> int:
    from facealign.atomic import atomic_write_text
    from facealign.evaluation.status import embed, status_block, status_page
    block = status_block(args.bench, args.results)
    wanted = {}
    if args.output is not None:
        wanted[args.output] = status_page(block)
    if args.readme is not None:
        if not args.readme.is_file():
            raise FileNotFoundError(f"--readme {args.readme} not found")
        wanted[args.readme] = embed(args.readme.read_text(encoding="utf-8"), block)
    if not wanted:
        if args.check:
            raise ValueError("--check needs --output and/or --readme (the files to compare)")
        print(block, end="")
        return 0
    stale = [path for path, text in wanted.items()
             if not path.is_file() or path.read_text(encoding="utf-8") != text]
    if args.check:
        for path in stale:
            print(f"facealign: {path} differs from the generated status table; run `facealign report status "
                  f"-o OUTPUT --readme README`", file=sys.stderr)
        if not stale:
            print(f"up to date: {', '.join(str(p) for p in wanted)}")
        return 1 if stale else 0
    for path in stale:
        atomic_write_text(path, wanted[path])
    for path in wanted:
        print(f"{'wrote' if path in stale else 'unchanged'} {path}")
    return 0
