"""`facealign data summary`: what a data root holds and what is wrong with it."""
from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

from facealign.data.layouts import DatasetIndex, index_dataset


def summarize_root(root: Path, layout: str = "auto") -> DatasetIndex:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the summary lists missing folders itself
        return index_dataset(root, layout)


def _reason_kind(reason: str) -> str:
    return reason.split(":")[0] if reason.startswith(("unreadable", "duplicate")) else reason


def format_summary(index: DatasetIndex) -> str:
    lines = [f"root: {index.root}", f"layout: {index.layout}", "subsets:"]
    lines += [f"  {name:<16} {n:>6} faces" + ("  (missing)" if n == 0 else "")
              for name, n in index.subset_counts.items()]
    lines.append("splits:")
    for name, records in index.splits.items():
        photos = len({r.group for r in records})
        lines.append(f"  {name:<16} {len(records):>6} faces from {photos} photos" + ("  (empty)" if not records else ""))
    lines.append("missing folders: " + (", ".join(index.missing) if index.missing else "none"))
    if index.skipped:
        counts = Counter(_reason_kind(reason) for _, reason in index.skipped)
        lines.append(f"skipped: {len(index.skipped)}")
        lines += [f"  {n:>6}  {kind}" for kind, n in counts.most_common()]
    else:
        lines.append("skipped: none")
    return "\n".join(lines)
