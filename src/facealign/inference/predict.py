"""The `facealign predict` batch job: files, folders and globs in; JSON, .pts, CSV and drawings out.

The predictor itself is `facealign.inference.FaceAligner`; the writers are in `facealign.inference.outputs`.
"""
from __future__ import annotations

import csv as _csv
import glob
import io
import json
import re
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from facealign.data.pts import write_pts
from facealign.data.images import ImageLoadError, load_rgb
from facealign.inference.aligner import FaceAligner
from facealign.atomic import atomic_write_text
from facealign.inference.outputs import OutputNames, annotate, csv_header, csv_row, image_json, save_image, write_json
from facealign.inference.rotations import detect_turned, turn_faces
from facealign.inference.tracking import DEFAULT_BETA
from facealign.inference.video import VIDEO_EXTENSIONS, process_video

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pnm")


def _is_media(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS


def _scan_folder(folder: Path, exclude: Path | None) -> list[Path]:
    """Images under `folder`, recursively, sorted; hidden files/folders and `exclude` (the output) skipped."""
    found = []
    for f in folder.rglob("*"):
        rel = f.relative_to(folder).parts
        if any(part.startswith(".") for part in rel) or not f.is_file():
            continue
        if f.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if exclude is not None and f.resolve().is_relative_to(exclude):
            continue
        found.append(f)
    return sorted(found)


def collect_inputs(args: Sequence[str | Path], exclude: Path | None = None) -> tuple[list[Path], list[tuple[str, str]]]:
    """Expand files, folders (recursive, image extensions) and globs; returns (files, [(arg, reason)])."""
    files, failures = [], []
    for a in args:
        p = Path(a)
        if p.is_dir():
            found = _scan_folder(p, exclude)
            files += found
            if not found:
                inside = exclude is not None and exclude.is_relative_to(p.resolve())
                failures.append((str(a), "no images found in folder" + (
                    f" (its images are all inside the output folder {exclude}, which is skipped)"
                    if inside and _scan_folder(p, None) else "")))
        elif p.is_file():
            files.append(p)
        elif re.search(r"[*?[]", str(a)):
            matches = sorted(Path(m) for m in glob.glob(str(a), recursive=True))
            found = [m for m in matches if m.is_file() and _is_media(m)]
            for m in matches:
                if m.is_dir():
                    found += _scan_folder(m, exclude)
            files += found
            if not found:
                failures.append((str(a), "no image or video matches this pattern"))
        else:
            failures.append((str(a), "no such file or folder"))
    seen, unique = set(), []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, failures


def _align_each(aligner: FaceAligner, loaded: list, fail: Callable[[str, str], None]) -> tuple[list, list]:
    """Align a batch in one network call; if that fails, image by image, reporting the ones that fail."""
    if not loaded:
        return [], []
    try:
        return loaded, aligner.align([rgb for _, rgb, _ in loaded], [d for _, _, d in loaded])
    except Exception:  # one pathological image must not sink the whole batch
        kept, results = [], []
        for item in loaded:
            try:
                results += aligner.align([item[1]], [item[2]])
                kept.append(item)
            except Exception as e:
                fail(str(item[0]), f"cannot predict landmarks ({e.__class__.__name__}: {str(e).strip()[:200]})")
        return kept, results


@dataclass
class PredictReport:
    images: int = 0
    videos: int = 0
    frames: int = 0
    faces: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    outputs: dict[str, Path] = field(default_factory=dict)  # input path -> its JSON (or video folder)
    annotated: dict[str, Path] = field(default_factory=dict)  # input path -> annotated image/video


def run_predict(inputs: Sequence[str | Path], out_dir: str | Path, aligner: FaceAligner, pts: bool = False,
                csv: bool = False, draw: bool = False, smooth: float | None = None,
                smooth_beta: float | None = None, progress: bool = True, images_per_batch: int = 8,
                rotations: bool = False) -> PredictReport:
    """The `facealign predict` job. Unreadable inputs are reported on stderr (one line each) and skipped.

    out_dir "-": each image's JSON document goes to stdout, one line per image (JSON Lines); nothing is
    written to disk, so --pts, --csv, --draw and videos are refused.
    rotations: an image without an upright face is retried turned by 90, 180 and 270 degrees
    (`facealign.inference.rotations`); its JSON then says by how much (`rotation`), coordinates stay the file's.
    """
    from tqdm import tqdm

    to_stdout = str(out_dir) == "-"
    if to_stdout and (pts or csv or draw):
        raise ValueError("-o - writes JSON to stdout only; --pts, --csv and --draw need an output folder")
    out_dir = Path(tempfile.gettempdir() if to_stdout else out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"-o {out_dir}: is a file; give a folder to write into (or - for JSON on stdout)")
    if not to_stdout:
        out_dir.mkdir(parents=True, exist_ok=True)
    names = OutputNames(out_dir)
    report = PredictReport()

    def fail(source: str, reason: str) -> None:
        report.failures.append((source, reason))
        tqdm.write(f"facealign: skipped {source}: {reason}", file=sys.stderr)

    files, bad = collect_inputs(inputs, exclude=None if to_stdout else names.out_dir)
    for source, reason in bad:
        fail(source, reason)
    videos = [f for f in files if f.suffix.lower() in VIDEO_EXTENSIONS]
    images = [f for f in files if f.suffix.lower() not in VIDEO_EXTENSIONS]
    if to_stdout:
        for path in videos:
            fail(str(path), "a video needs an output folder (-o DIR), not -o -")
        videos = []
    if smooth is not None and not videos:
        warnings.warn("--smooth applies to videos only; no video among the inputs, so it changes nothing")
    rows: list[list] = []
    turned: dict[Path, tuple] = {}  # --rotations: path -> (the file's image, quarter turns used)

    bar = tqdm(total=len(images), desc="predict", unit="img", disable=not progress or not images, file=sys.stderr)
    t0 = time.perf_counter()
    for start in range(0, len(images), images_per_batch):
        loaded = []
        for path in images[start:start + images_per_batch]:
            try:
                rgb = load_rgb(path)
                if rotations:  # aligned on the turned image, mapped back below
                    used, dets, k = detect_turned(aligner, rgb)
                    turned[path] = (rgb, k)
                    loaded.append((path, used, dets))
                else:
                    loaded.append((path, rgb, aligner.detect(rgb)))
            except Exception as e:  # one bad file is reported, never fatal
                msg = str(e) if isinstance(e, ImageLoadError) else f"{e.__class__.__name__}: {e}"
                fail(str(path), msg.removeprefix(f"{path}: "))
        loaded, results = _align_each(aligner, loaded, fail)
        for (path, rgb, _), faces in zip(loaded, results):
            if path in turned:
                rgb, k = turned.pop(path)
                faces = turn_faces(faces, k, rgb.shape[1], rgb.shape[0])
                doc = {**image_json(str(path), rgb, faces, aligner), "rotation": 90 * k}
            else:
                doc = image_json(str(path), rgb, faces, aligner)
            report.images += 1
            report.faces += len(faces)
            if to_stdout:
                print(json.dumps(doc), flush=True)
                continue
            stem = names.stem(path)
            json_path = names.path(f"{stem}.json")
            write_json(json_path, doc)
            report.outputs[str(path)] = json_path
            if pts:
                for i, face in enumerate(faces, 1):  # 1-based, as annotations name a photo's faces
                    write_pts(names.path(f"{stem}_{i}.pts"), face.landmarks)
            if draw:
                ext = ".jpg" if path.suffix.lower() in (".jpg", ".jpeg") else ".png"
                drawn = names.path(f"{stem}_annotated{ext}")
                save_image(drawn, annotate(rgb, faces))
                report.annotated[str(path)] = drawn
            rows += [csv_row(str(path), None, i, f) for i, f in enumerate(faces, 1)]
        bar.update(len(images[start:start + images_per_batch]))
        bar.set_postfix_str(f"{report.faces / max(time.perf_counter() - t0, 1e-9):.1f} faces/s")
    bar.close()

    for path in videos:
        stem = names.stem(path)
        try:
            summary = process_video(aligner, path, names, stem, pts=pts, draw=draw, smooth=smooth,
                                    beta=DEFAULT_BETA if smooth_beta is None else smooth_beta,
                                    rows=rows, progress=progress)
        except Exception as e:  # one bad video is reported, never fatal
            msg = str(e) if isinstance(e, (ImageLoadError, ValueError, OSError)) else f"{e.__class__.__name__}: {e}"
            fail(str(path), msg.strip().removeprefix(f"{path}: "))
            continue
        report.videos += 1
        report.frames += summary["frames"]
        report.faces += summary["faces"]
        report.outputs[str(path)] = names.path(stem)
        if draw:
            report.annotated[str(path)] = names.path(stem, "annotated.mp4")
        print(f"{path}: {summary['frames']} frames, {summary['faces']} faces -> {names.path(stem)}")
    if csv:
        buf = io.StringIO()
        writer = _csv.writer(buf, lineterminator="\n")
        writer.writerow(csv_header(aligner.runner.scheme.num_points))
        writer.writerows(rows)
        atomic_write_text(names.path("landmarks.csv"), buf.getvalue())
    return report
