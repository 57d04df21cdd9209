"""Print `make bench`'s summary from a `facealign bench` .json: ours ÷ dlib per-face time and NME, and how those
ratios moved against a recorded run (default docs/benchmarks.json), so a slowdown of ours is plain to see.

Usage, from the repository root:
    .venv/bin/python benchmarks/bench_ratios.py results/bench/benchmarks.json [--recorded docs/benchmarks.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from facealign.evaluation.bench import format_ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", type=Path, help="the .json that `facealign bench -o X.md` wrote beside X.md")
    parser.add_argument("--recorded", type=Path, default=Path("docs/benchmarks.json"),
                        help="an earlier run's .json to compare the ratios with (default docs/benchmarks.json)")
    args = parser.parse_args(argv)
    try:
        now = json.loads(args.result.read_text())
        before = json.loads(args.recorded.read_text()) if args.recorded.is_file() else None
        recorded = before["rows"] if before else None
        table = format_ratios(now["rows"], recorded)
    except (OSError, ValueError, KeyError) as e:
        print(f"bench_ratios: error: {e}", file=sys.stderr)
        return 2
    print(f"ratios to dlib, {now['date']} ({now['machine']['cpu']}, threads {now['machine']['threads']}); "
          f"'now ÷ recorded' against {args.recorded if recorded else 'nothing (no recorded run)'}:")
    print(table)
    if before and (before.get("data"), before.get("split")) != (now.get("data"), now.get("split")):
        print(f"note: the recorded run measured {before.get('data')} split {before.get('split')!r}, this one "
              f"{now.get('data')} split {now.get('split')!r}: the NME columns compare different faces")
    return 0


if __name__ == "__main__":
    sys.exit(main())
