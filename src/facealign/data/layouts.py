"""Dataset layouts (300W, Menpo 2D, generic) and their standard splits.

A layout turns a data root into named splits of `FaceRecord`s. Missing subset
folders produce one warning each, never a crash; asking for a split that ended
up empty is an error.
"""
from __future__ import annotations

import os
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from facealign.data.errors import DataError
from facealign.data.pts import PtsError, read_pts
from facealign.data.scheme import NUM_LANDMARKS
from facealign.data.splits import FACE_NUMBER, OUTSIDE_SPLITS, OVERLAP, apply_split_file, overlaps, split_folders

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")  # preference order for duplicate stems
PROFILE_POINTS = 39  # Menpo's profile markup


@dataclass(frozen=True)
class FaceRecord:
    """One annotated face.

    landmarks: (K, 2) float32 (K from the landmark scheme, 68 by default), 0-based pixel centres (pixels) in the image.
    group: faces with the same group come from the same photo and must stay on
    one side of a train/validation split (AFW stores one file per face).
    """

    image: Path
    pts: Path
    landmarks: np.ndarray = field(repr=False, compare=False)
    width: int
    height: int
    subset: str
    group: str

    @property
    def key(self) -> str:
        return f"{self.subset}/{self.pts.stem}"


# Problem kinds. A `skipped` face is left out; a `flagged` item is kept (or is not a face) but reported.
# `data summary --strict` fails on any of them except EXPECTED_SKIPS.
NO_IMAGE = "no image for .pts"
BAD_PTS = "unreadable .pts"
WRONG_COUNT = "wrong point count"
PROFILE = "39-point profile face"  # Menpo's profile markup: expected, not an error
BAD_IMAGE = "unreadable image"
BAD_FOLDER = "unreadable folder"
NO_PTS = "image without .pts"
DUPLICATE = "duplicate stem"
OUTSIDE = "landmarks far outside image"
EXPECTED_SKIPS = (PROFILE,)
# A landmark counts as far outside when it lies beyond the image border by more than this
# fraction of the face size (the larger side of the landmark box). Faces cut by the border
# (chins, ears) stay well under it; typos in hand-edited files (300 -> 3000) do not.
OUTSIDE_TOLERANCE = 0.1


def problem(kind: str, detail: str = "") -> str:
    """A reason string 'kind: detail'; `problem_kind` recovers the kind."""
    return f"{kind}: {detail}" if detail else kind


def problem_kind(reason: str) -> str:
    return reason.split(": ", 1)[0]


@dataclass
class DatasetIndex:
    """What a layout found under a root."""

    root: Path
    layout: str
    splits: dict[str, list[FaceRecord]]
    subset_counts: dict[str, int]
    missing: list[str]
    skipped: list[tuple[str, str]]  # (path, reason): left out
    flagged: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): kept or ignored, reported
    split_missing: dict[str, list[str]] = field(default_factory=dict)  # split -> its own missing folders
    split_skipped: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # split -> its skipped files
    overlaps: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): an image in two splits
    hint: str = ""  # how this layout names splits, for the unknown-split error
    split_source: str = ""  # where the splits came from (generic: split file, split folders or one split)

    def split(self, name: str) -> list[FaceRecord]:
        if name not in self.splits:
            raise DataError(f"unknown split {name!r} for layout {self.layout}; valid: {', '.join(self.splits)}"
                            + (f" ({self.hint})" if self.hint else ""))
        records = self.splits[name]
        if not records:
            missing = self.split_missing.get(name, self.missing)
            skipped = self.split_skipped.get(name, [])
            why = f"; {len(skipped)} annotation(s) skipped, `facealign data summary` says why" if skipped else ""
            raise DataError(f"split {name!r} of {self.root} is empty (missing: {', '.join(missing) or 'none'}{why})")
        return records

    def check_disjoint(self) -> None:
        """Raise DataError when an image (same path or same content) belongs to two splits."""
        if self.overlaps:
            path, reason = self.overlaps[0]
            raise DataError(f"train/test overlap in {self.root}: {len(self.overlaps)} image(s) in two splits, e.g. "
                            f"{path} ({reason.removeprefix(OVERLAP + ': ')}); `facealign data summary` lists them")

    def records(self, names: str | list[str]) -> list[FaceRecord]:
        """Concatenate splits given as a list or a '+'-joined string ('train+common')."""
        names = names.split("+") if isinstance(names, str) else names
        return [r for n in names for r in self.split(n)]

    def problems(self) -> list[tuple[str, str]]:
        """Everything `--strict` fails on: missing folders, unexpected skips, flagged items."""
        missing = [(str(self.root / m), problem("missing folder")) for m in self.missing]
        skipped = [(p, r) for p, r in self.skipped if problem_kind(r) not in EXPECTED_SKIPS]
        return missing + skipped + self.flagged + self.overlaps


def _group_of(stem: str) -> str:
    # 300W names faces of one photo '<photo>_<n>'; strip the face number.
    return FACE_NUMBER.sub("", stem)


def _images_named(stem: Path) -> list[Path]:
    found = [stem.with_name(stem.name + ext) for ext in IMAGE_EXTENSIONS]
    found += [stem.with_name(stem.name + ext.upper()) for ext in IMAGE_EXTENSIONS]
    return [p for p in dict.fromkeys(found) if p.is_file()]


def find_image(pts_path: Path) -> tuple[Path | None, list[Path]]:
    """The image of a .pts file, and any other candidates ignored.

    The image has the .pts file's stem (`photo.pts`, or 300W's per-face copies `photo_1.jpg` + `photo_1.pts`);
    failing that, a face file `photo_<n>.pts` belongs to `photo.jpg` (several faces in one photo).
    """
    stem = pts_path.with_suffix("")
    found = _images_named(stem)
    if not found and FACE_NUMBER.search(stem.name):
        found = _images_named(stem.with_name(FACE_NUMBER.sub("", stem.name)))
    return (found[0] if found else None), found[1:]


def _walk(folder: Path, problems: list) -> tuple[list[Path], list[Path]]:
    """(.pts files, image files) under `folder`, sorted; unreadable sub-folders are reported, not fatal."""
    pts, images = [], []

    def onerror(e: OSError) -> None:
        problems.append((str(e.filename or folder), problem(BAD_FOLDER, e.strerror or e.__class__.__name__)))

    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, onerror=onerror, followlinks=True):
        seen.add(os.path.realpath(dirpath))
        # follow symlinked folders (common in dataset copies) but never round a link loop
        dirnames[:] = sorted(d for d in dirnames if os.path.realpath(os.path.join(dirpath, d)) not in seen)
        for name in filenames:
            suffix = os.path.splitext(name)[1]
            if suffix == ".pts":
                pts.append(Path(dirpath) / name)
            elif suffix.lower() in IMAGE_EXTENSIONS:
                images.append(Path(dirpath) / name)
    return sorted(pts), sorted(images)


def far_outside(landmarks: np.ndarray, width: int, height: int) -> float:
    """How far the worst landmark lies outside the image, as a fraction of the face size (0 if inside).

    landmarks: (K, 2) 0-based pixel centres; the image spans [-0.5, width - 0.5] x [-0.5, height - 0.5].
    """
    lo = np.array([-0.5, -0.5])
    hi = np.array([width - 0.5, height - 0.5])
    beyond = np.maximum(np.maximum(lo - landmarks, landmarks - hi), 0).max()
    face = float((landmarks.max(0) - landmarks.min(0)).max())
    return float(beyond) / max(face, 1.0)


def scan_folder(folder: Path, subset: str, skipped: list, group_prefix: str = "",
                flagged: list | None = None, num_points: int = NUM_LANDMARKS) -> list[FaceRecord]:
    """Every image + `num_points`-point .pts pair under `folder` (recursively), sorted by path.

    Unusable faces are appended to `skipped` as (path, reason) and left out; images without
    .pts, ignored duplicate images and faces with landmarks far outside their image go to
    `flagged` (the faces are kept).
    """
    flagged = [] if flagged is None else flagged
    records = []
    pts_files, image_files = _walk(folder, skipped)
    paired: set[Path] = set()
    for pts in pts_files:
        image, extra = find_image(pts)
        if image is None:
            skipped.append((str(pts), problem(NO_IMAGE)))
            continue
        paired.update([image, *extra])
        for other in extra:
            flagged.append((str(other), problem(DUPLICATE, f"using {image.name}")))
        try:
            landmarks = read_pts(pts)
        except PtsError as e:
            skipped.append((str(pts), problem(BAD_PTS, str(e).removeprefix(f"{pts}: "))))
            continue
        if len(landmarks) != num_points:
            reason = (problem(PROFILE) if len(landmarks) == PROFILE_POINTS and num_points == NUM_LANDMARKS else
                      problem(WRONG_COUNT, f"{len(landmarks)} points, the scheme has {num_points}"))
            skipped.append((str(pts), reason))
            continue
        try:
            with Image.open(image) as im:
                width, height = im.size
        except Exception as e:  # any decoder failure means the pair is unusable
            skipped.append((str(image), problem(BAD_IMAGE, e.__class__.__name__)))
            continue
        outside = far_outside(landmarks, width, height)
        if outside > OUTSIDE_TOLERANCE:
            flagged.append((str(pts), problem(OUTSIDE, f"{outside:.0%} of the face size beyond the border")))
        rel = pts.relative_to(folder).with_suffix("")
        records.append(FaceRecord(image=image, pts=pts, landmarks=landmarks, width=width, height=height,
                                  subset=subset, group=f"{group_prefix}{subset}/{_group_of(str(rel))}"))
    flagged += [(str(p), problem(NO_PTS)) for p in image_files if p not in paired]
    return records


def _index_subsets(root: Path, layout: str, subsets: dict[str, tuple[str, ...]],
                   splits: dict[str, tuple[str, ...]], num_points: int = NUM_LANDMARKS) -> DatasetIndex:
    """Index named subset folders and assemble splits from them.

    subsets: subset name -> candidate relative folders (first existing one wins).
    splits: split name -> subset names.
    """
    found: dict[str, list[FaceRecord]] = {}
    missing, skipped, flagged = [], [], []
    missing_of: dict[str, str] = {}  # subset -> its expected folder, when absent
    skipped_of: dict[str, list] = {}  # subset -> its skipped files
    for name, candidates in subsets.items():
        folder = next((root / c for c in candidates if (root / c).is_dir()), None)
        if folder is None:
            missing.append(candidates[0])
            missing_of[name] = candidates[0]
            warnings.warn(f"{layout}: folder '{candidates[0]}' not found under {root}; subset '{name}' is empty",
                          stacklevel=3)
            found[name] = []
            continue
        before = len(skipped)
        found[name] = scan_folder(folder, name, skipped, flagged=flagged, num_points=num_points)
        skipped_of[name] = skipped[before:]
    split_records = {s: [r for sub in subs for r in found[sub]] for s, subs in splits.items()}
    split_missing = {s: [missing_of[sub] for sub in subs if sub in missing_of] for s, subs in splits.items()}
    split_skipped = {s: [x for sub in subs for x in skipped_of.get(sub, [])] for s, subs in splits.items()}
    _warn_outside(flagged, layout)
    return DatasetIndex(root, layout, split_records, {k: len(v) for k, v in found.items()}, missing, skipped, flagged,
                        split_missing, split_skipped)


def _warn_outside(flagged: list, layout: str) -> None:
    n = sum(problem_kind(r) == OUTSIDE for _, r in flagged)
    if n:
        warnings.warn(f"{layout}: {n} face(s) have landmarks far outside their image; "
                      f"`facealign data summary` lists them", stacklevel=4)


# 300W (Sagonas et al.): subset -> folder, and the standard splits.
W300_SUBSETS = {
    "afw": ("afw",),
    "helen/trainset": ("helen/trainset",),
    "lfpw/trainset": ("lfpw/trainset",),
    "helen/testset": ("helen/testset",),
    "lfpw/testset": ("lfpw/testset",),
    "ibug": ("ibug",),
    "01_Indoor": ("300W/01_Indoor", "01_Indoor"),
    "02_Outdoor": ("300W/02_Outdoor", "02_Outdoor"),
}
W300_SPLITS = {
    "train": ("afw", "helen/trainset", "lfpw/trainset"),
    "common": ("helen/testset", "lfpw/testset"),
    "challenging": ("ibug",),
    "full": ("helen/testset", "lfpw/testset", "ibug"),
    "private": ("01_Indoor", "02_Outdoor"),
}
MENPO_SUBSETS = {"trainset": ("trainset",), "testset": ("testset",)}
MENPO_SPLITS = {"train": ("trainset",), "test": ("testset",)}


def index_300w(root: Path, num_points: int = NUM_LANDMARKS) -> DatasetIndex:
    return _index_subsets(root, "300w", W300_SUBSETS, W300_SPLITS, num_points)


def index_menpo(root: Path, num_points: int = NUM_LANDMARKS) -> DatasetIndex:
    return _index_subsets(root, "menpo", MENPO_SUBSETS, MENPO_SPLITS, num_points)


GENERIC_HINT = ("a generic root has the splits of its top-level folders when one is named train, val or test, or "
                "of a split file (--splits FILE); see docs/data.md")


def index_generic(root: Path, split_file: str | Path | None = None, num_points: int = NUM_LANDMARKS) -> DatasetIndex:
    """A folder of images and .pts files (`facealign.data.splits`): splits from a split file, else from split
    folders, else one split `all`."""
    skipped: list = []
    flagged: list = []
    folders = None if split_file is not None else split_folders(root)
    if folders:
        found, split_skipped = {}, {}
        for name in folders:
            before = len(skipped)
            found[name] = scan_folder(root / name, name, skipped, flagged=flagged, num_points=num_points)
            split_skipped[name] = skipped[before:]
        flagged += [(str(p), problem(OUTSIDE_SPLITS)) for p in sorted(root.glob("*.pts"))]
    else:
        records = scan_folder(root, "all", skipped, flagged=flagged, num_points=num_points)
        found, split_skipped = {"all": records}, {"all": list(skipped)}
        if split_file is not None:
            found, split_skipped = apply_split_file(root, split_file, records, skipped, flagged)
    _warn_outside(flagged, "generic")
    images = {s: {r.image for r in recs} for s, recs in found.items()}
    shared = [(str(p), problem(OVERLAP, how)) for p, _, how in overlaps(images)]
    source = (f"from the split file {split_file}" if split_file is not None else
              "from the top-level split folders" if folders else "one split: no split folders or split file")
    return DatasetIndex(root, "generic", found, {k: len(v) for k, v in found.items()}, [], skipped, flagged,
                        split_skipped=split_skipped, overlaps=shared, hint=GENERIC_HINT, split_source=source)



LAYOUTS: dict[str, Callable[..., DatasetIndex]] = {  # (root, num_points) -> index
    "300w": index_300w,
    "menpo": index_menpo,
    "generic": index_generic,
}


def detect_layout(root: Path) -> str:
    """Guess the layout from the folders present."""
    if any((root / c[0]).is_dir() for c in W300_SUBSETS.values()):
        return "300w"
    if any((root / c[0]).is_dir() for c in MENPO_SUBSETS.values()):
        return "menpo"
    return "generic"


def index_dataset(root: str | Path, layout: str = "auto", split_file: str | Path | None = None,
                  check_overlap: bool = True, num_points: int = NUM_LANDMARKS) -> DatasetIndex:
    """Index a data root with a named layout ('auto' guesses it).

    num_points: the landmark scheme's point count (`facealign.data.schemes`); other .pts files are skipped
    (`wrong point count`).
    split_file: the generic layout's split file (`facealign.data.splits`); it implies `generic`.
    check_overlap: raise DataError when an image lies in two splits (`data summary` lists them instead).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data root {root} is not a folder")
    layout = layout.lower()
    if split_file is not None and layout not in ("auto", "generic"):
        raise DataError(f"a split file (--splits) is for the generic layout, not {layout!r}")
    if layout == "auto":
        layout = "generic" if split_file is not None else detect_layout(root)
    if layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}; valid: auto, {', '.join(LAYOUTS)}")
    index = (index_generic(root, split_file, num_points) if split_file is not None
             else LAYOUTS[layout](root, num_points=num_points))
    if check_overlap:
        index.check_disjoint()
    return index


def split_train_val(records: list[FaceRecord], val_fraction: float = 0.2, seed: int = 0
                    ) -> tuple[list[FaceRecord], list[FaceRecord]]:
    """Hold out about `val_fraction` of the faces by *photo group*, deterministically.

    Faces from one photo (same `group`) never straddle the two sides.
    """
    groups = sorted({r.group for r in records})
    random.Random(seed).shuffle(groups)
    target = val_fraction * len(records)
    val_groups, count = set(), 0
    sizes = {g: 0 for g in groups}
    for r in records:
        sizes[r.group] += 1
    for g in groups:
        if count >= target:
            break
        val_groups.add(g)
        count += sizes[g]
    train = [r for r in records if r.group not in val_groups]
    val = [r for r in records if r.group in val_groups]
    return train, val
