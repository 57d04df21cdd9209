"""`facealign data summary`: what a data root holds and what is wrong with it."""
from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

from facealign.data.layouts import (BAD_IMAGE, EXPECTED_SKIPS, WRONG_COUNT, DatasetIndex, index_dataset, problem,
                                    problem_kind)
from facealign.data.schemes import SCHEMES, get_scheme

SHOW_PATHS = 5  # example paths listed per problem kind


def summarize_root(root: Path, layout: str = "auto", decode: bool = True, progress: bool = False,
                   split_file: Path | None = None, scheme: str | None = None) -> DatasetIndex:
    """Index `root` for a landmark scheme (None: ibug68); with `decode`, fully decode every paired image and move
    failures to `skipped`.

    Indexing reads only image headers, so truncated or damaged pixel data is found only by decoding.
    Images in two splits are listed (`overlaps`), not raised.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the summary lists missing folders and flagged faces itself
        scheme = get_scheme(scheme)
        index = index_dataset(root, layout, split_file, check_overlap=False, num_points=scheme.num_points)
    index.scheme = scheme
    if decode:
        _decode_all(index, progress)
    return index


def _decode_all(index: DatasetIndex, progress: bool) -> None:
    from tqdm import tqdm

    from facealign.data.images import ImageLoadError, load_rgb
    images = sorted({r.image for recs in index.splits.values() for r in recs})
    bad = set()
    for path in tqdm(images, desc="decoding images", unit="img", disable=not progress, leave=False):
        try:
            load_rgb(path)
        except ImageLoadError as e:
            bad.add(path)
            index.skipped.append((str(path), problem(BAD_IMAGE, str(e).removeprefix(f"{path}: "))))
    if bad:
        dropped = {r.key: r.subset for recs in index.splits.values() for r in recs if r.image in bad}
        lost = Counter(dropped.values())
        index.subset_counts = {k: n - lost[k] for k, n in index.subset_counts.items()}
        index.splits = {name: [r for r in recs if r.image not in bad] for name, recs in index.splits.items()}


def _empty_note(index: DatasetIndex, subset: str) -> str:
    missing = subset in index.missing or any(m == subset or m.endswith("/" + subset) for m in index.missing)
    return "  (missing)" if missing else "  (none usable)"


def _section(title: str, items: list[tuple[str, str]], expected: tuple[str, ...] = ()) -> list[str]:
    if not items:
        return [f"{title}: none"]
    lines = [f"{title}: {len(items)}"]
    by_kind: dict[str, list[tuple[str, str]]] = {}
    for path, reason in items:
        by_kind.setdefault(problem_kind(reason), []).append((path, reason))
    for kind, entries in sorted(by_kind.items(), key=lambda kv: -len(kv[1])):
        note = "  (expected)" if kind in expected else ""
        lines.append(f"  {len(entries):>6}  {kind}{note}")
        for path, reason in entries[:SHOW_PATHS]:
            detail = reason[len(kind) + 2:]
            lines.append(f"            {path}" + (f"  ({detail})" if detail else ""))
        if len(entries) > SHOW_PATHS:
            lines.append(f"            ... and {len(entries) - SHOW_PATHS} more")
    return lines


def summary_error(index: DatasetIndex) -> str | None:
    """Why `index` is unusable (one line): no usable face, or images in two splits; None when it is usable."""
    if index.overlaps:
        return f"{len(index.overlaps)} image(s) in two splits (train/test overlap, listed above)"
    if any(index.splits.values()):
        return None
    if not index.skipped:
        return f"no annotated faces (image + .pts) found under {index.root}"
    kinds = Counter(problem_kind(r) for _, r in index.skipped)
    example = {}
    for _, reason in index.skipped:
        example.setdefault(problem_kind(reason), reason[len(problem_kind(reason)) + 2:])
    why = ", ".join(f"{n} {kind}" + (f" (e.g. {example[kind]})" if example[kind] else "")
                    for kind, n in kinds.most_common())
    hint = (f"; another landmark scheme? --scheme {' / '.join(SCHEMES)} or a scheme .json (docs/data.md)"
            if WRONG_COUNT in kinds else "")
    return (f"no usable faces under {index.root}: all {len(index.skipped)} annotation(s) found were skipped: "
            f"{why}{hint}")


def format_summary(index: DatasetIndex) -> str:
    scheme = getattr(index, "scheme", None)
    lines = [f"root: {index.root}", f"layout: {index.layout}"]
    lines += [f"scheme: {scheme.name} ({scheme.num_points} points)"] if scheme else []
    lines.append("subsets:")
    lines += [f"  {name:<16} {n:>6} faces" + (_empty_note(index, name) if n == 0 else "")
              for name, n in index.subset_counts.items()]
    lines.append("splits" + (f" ({index.split_source})" if index.split_source else "") + ":")
    for name, records in index.splits.items():
        photos = len({r.group for r in records})
        lines.append(f"  {name:<16} {len(records):>6} faces from {photos} photos" + ("  (empty)" if not records else ""))
    lines.append("missing folders: " + (", ".join(index.missing) if index.missing else "none"))
    lines += _section("skipped faces", index.skipped, EXPECTED_SKIPS)
    lines += _section("flagged (kept or ignored)", index.flagged)
    if index.overlaps:
        lines += _section("in two splits (an error)", index.overlaps)
    lines.append(f"problems: {len(index.problems())}")
    return "\n".join(lines)
