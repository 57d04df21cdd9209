"""Splits of the `generic` layout: split folders, split files, and the train/test overlap check.

A generic root gets its splits from, in this order:

1. a split file (`--splits FILE`): JSON `{"train": ["a.jpg", "b/c.pts", ...], "test": [...]}` or a CSV of
   `path,split` rows (an optional header `path,split`). Paths are relative to the root, '/'-separated; an
   image path takes every face of that photo (`photo.jpg` -> `photo.pts` or `photo_1.pts`, `photo_2.pts`),
   a .pts path one face; the extension may be left out (`b/c`);
2. split folders: when a top-level subfolder has a standard split name (`STANDARD_SPLIT_NAMES`: train,
   val, valid, test, ...), every top-level subfolder is a split named after it (`train/`, `test/`,
   `test_hard/` ...);
3. otherwise one split, `all`.

The same image (path or content) in two splits is an error wherever a split is used (`overlaps`).
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import re
from collections import defaultdict
from pathlib import Path

from facealign.data.errors import DataError

FACE_NUMBER = re.compile(r"_\d+$")  # `photo_2.pts`: face 2 of photo.jpg (or of 300W's copy photo_2.jpg)
# Problem kinds (`facealign.data.layouts.problem`) of split folders and files.
OVERLAP = "image in two splits"
NOT_LISTED = "not in the split file (unused)"
UNMATCHED = "split file entry matches no face"
OUTSIDE_SPLITS = "outside the split folders (unused)"
STANDARD_SPLIT_NAMES = ("train", "training", "trainset", "val", "valid", "validation", "test", "testing", "testset")
SPLIT_FILE_KINDS = ("JSON {split: [paths]}", "CSV path,split")


def split_folders(root: Path) -> list[str] | None:
    """Every top-level subfolder (sorted, hidden ones left out) when one of them has a standard split name."""
    try:
        names = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return None
    return names if any(n.lower() in STANDARD_SPLIT_NAMES for n in names) else None


def _normal(entry: str) -> str:
    return Path(str(entry).strip().replace("\\", "/")).as_posix().removeprefix("./")


def read_split_file(path: str | Path) -> dict[str, str]:
    """Entry (relative path as written, normalised) -> split name. One DataError line for any problem."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"split file {path} not found")
    text = path.read_text(encoding="utf-8-sig")
    pairs = _json_pairs(path, text) if path.suffix.lower() == ".json" else _csv_pairs(path, text)
    mapping: dict[str, str] = {}
    for entry, split in pairs:
        entry, split = _normal(entry), str(split).strip()
        if not entry or not split:
            raise DataError(f"split file {path}: an empty path or split name")
        if mapping.get(entry, split) != split:
            raise DataError(f"train/test overlap in split file {path}: {entry} is in split {mapping[entry]!r} and "
                            f"{split!r}")
        mapping[entry] = split
    if not mapping:
        raise DataError(f"split file {path} lists no paths")
    return mapping


def _json_pairs(path: Path, text: str) -> list[tuple[str, str]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"split file {path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(doc, dict) or not all(isinstance(v, list) for v in doc.values()):
        raise DataError(f"split file {path}: expected a JSON object of split name -> list of paths, e.g. "
                        '{"train": ["a.jpg"], "test": ["b.jpg"]}')
    return [(entry, split) for split, entries in doc.items() for entry in entries]


def _csv_pairs(path: Path, text: str) -> list[tuple[str, str]]:
    rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
    if rows and [c.strip().lower() for c in rows[0]] == ["path", "split"]:
        rows = rows[1:]
    bad = next((i for i, r in enumerate(rows) if len(r) != 2), None)
    if bad is not None:
        raise DataError(f"split file {path}: row {bad + 1} has {len(rows[bad])} column(s); expected path,split "
                        f"(a split file is {' or '.join(SPLIT_FILE_KINDS)})")
    return [(r[0], r[1]) for r in rows]


def lookup_keys(path: Path, root: Path) -> list[str]:
    """The split-file entries that may name `path` (a .pts or image under root): the relative path, without its
    extension, and for a face file `photo_2.pts` its photo `photo`."""
    rel = Path(os.path.relpath(path, root)).as_posix()
    stem = rel[: -len(path.suffix)] if path.suffix else rel
    keys = [rel, stem]
    if FACE_NUMBER.search(stem):
        keys.append(FACE_NUMBER.sub("", stem))
    return keys


def split_of(keys: list[str], mapping: dict[str, str], stems: dict[str, str]) -> str | None:
    """The split of the first key found in the mapping (entries as written, or without their extension)."""
    for k in keys:
        if k in mapping:
            return mapping[k]
        if k in stems:
            return stems[k]
    return None


def entry_stems(mapping: dict[str, str]) -> dict[str, str]:
    """Entries with their extension removed (`a/photo.jpg` -> `a/photo`), to match a face file's photo."""
    out = {}
    for entry, split in mapping.items():
        suffix = Path(entry).suffix
        out.setdefault(entry[: -len(suffix)] if suffix else entry, split)
    return out


def _digest(path: Path) -> str | None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def overlaps(images: dict[str, set[Path]]) -> list[tuple[Path, Path, str]]:
    """Images shared by two splits: (image, its copy in another split, "same file/content as ... (splits a, b)").

    images: split name -> the images its faces use. Only files whose size occurs in two splits are hashed.
    """
    where: dict[Path, str] = {}
    found = []
    for split, paths in images.items():
        for p in sorted(paths):
            real = Path(os.path.realpath(p))
            if real in where and where[real] != split:
                found.append((p, real, f"same file as {real} (splits {where[real]!r} and {split!r})"))
            where.setdefault(real, split)
    by_size: dict[int, list[Path]] = defaultdict(list)
    for real in where:
        try:
            by_size[real.stat().st_size].append(real)
        except OSError:
            continue
    for same in by_size.values():
        if len({where[p] for p in same}) < 2:
            continue
        first: dict[str, Path] = {}
        for p in same:
            d = _digest(p)
            if d is None:
                continue
            other = first.setdefault(d, p)
            if other != p and where[other] != where[p]:
                found.append((p, other, f"same content as {other} (splits {where[other]!r} and {where[p]!r})"))
    return found


def apply_split_file(root: Path, split_file, records: list, skipped: list, flagged: list):
    """(split -> records, split -> skipped files) by a split file; unlisted faces and unmatched entries are flagged."""
    mapping = read_split_file(split_file)
    stems = entry_stems(mapping)
    found: dict[str, list] = {s: [] for s in dict.fromkeys(mapping.values())}
    split_skipped: dict[str, list] = {s: [] for s in found}
    matched: set[str] = set()
    for r in records:
        keys = lookup_keys(r.pts, root) + lookup_keys(r.image, root)
        split = split_of(keys, mapping, stems)
        if split is None:
            flagged.append((str(r.pts), NOT_LISTED))
            continue
        matched.update(keys)
        found[split].append(dataclasses.replace(r, subset=split))
    for path, reason in skipped:
        keys = lookup_keys(Path(path), root)
        split = split_of(keys, mapping, stems)
        if split is not None:
            matched.update(keys)
            split_skipped[split].append((path, reason))
    flagged += [(str(root / e), f"{UNMATCHED}: split {s!r}") for e, s in mapping.items()
                if e not in matched and str(Path(e).with_suffix("").as_posix()) not in matched]
    return found, split_skipped
