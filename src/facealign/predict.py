"""Landmark prediction on images: crop each face box, run a backend, map back to image pixels."""
from __future__ import annotations

import csv as _csv
import glob
import hashlib
import io
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np
import torch
from PIL import Image

from facealign.data.boxes import DETECTORS, get_detector
from facealign.data.pts import write_pts
from facealign.imageio import ImageLoadError, load_rgb
from facealign.io import atomic_write_bytes, atomic_write_text
from facealign.models.packaged import PACKAGED_MODELS, load_model, packaged_path
from facealign.fpstate import flush_denormals
from facealign.runner import Backend, CropRunner



class TorchBackend:
    def __init__(self, model: torch.nn.Module, device: str = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval().to(memory_format=torch.channels_last)

    @torch.no_grad()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device).contiguous(memory_format=torch.channels_last)
        with flush_denormals():  # denormals slow CPU inference badly; the caller's setting is restored
            return self.model(x)["coords"].float().cpu().numpy()


class LandmarkRunner(CropRunner):
    """`CropRunner` on a torch model loaded from a packaged name, safetensors file or checkpoint."""

    def __init__(self, model: str | Path = "default", device: str = "cpu", backend: Backend | None = None,
                 flip_tta: bool | None = None):
        net, card = load_model(model)
        super().__init__(backend or TorchBackend(net, device), card, flip_tta, model=net)


# ================================================================ the user-facing API
# Everything below is the public predictor (`facealign.FaceAligner`) and the batch job behind
# `facealign predict`; `LandmarkRunner` above stays the low-level crop/network/unmap engine.

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pnm")
CHUNK = 32  # face crops per network call
DEFAULT_MIN_SCORE = 0.2  # dlib HOG score below which a detection is dropped (see docs/predict.md)


def _f32(v: float) -> float:
    """The shortest decimal that reads back as the same float32 (compact, exact JSON)."""
    return float(str(np.float32(v)))


@dataclass(frozen=True, eq=False)
class Face:
    """One face: `box` (4,) float32 (x0, y0, x1, y1), detector `score` (NaN when the box was given),
    `landmarks` (68, 2) float32 (x, y) in original image pixels (0-based pixel centres)."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    def __post_init__(self):
        box = np.array(self.box, dtype=np.float32).reshape(4)
        landmarks = np.array(self.landmarks, dtype=np.float32).reshape(-1, 2)
        box.setflags(write=False)
        landmarks.setflags(write=False)
        object.__setattr__(self, "box", box)
        object.__setattr__(self, "landmarks", landmarks)
        object.__setattr__(self, "score", float(self.score))

    def __repr__(self) -> str:
        return (f"Face(box={[round(float(v), 1) for v in self.box]}, score={self.score:.3f}, "
                f"landmarks=<{len(self.landmarks)}x2>)")

    def to_dict(self) -> dict:
        """JSON-ready: lists of floats (exact float32 values); a NaN score becomes None (null)."""
        return {"box": [_f32(v) for v in self.box],
                "score": None if np.isnan(self.score) else _f32(self.score),
                "landmarks": [[_f32(x), _f32(y)] for x, y in self.landmarks]}


ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]


def as_rgb(image: ImageLike, bgr: bool = False) -> np.ndarray:
    """Any supported image -> (H, W, 3) uint8 RGB, C-contiguous.

    Paths and PIL images go through `load_rgb` (EXIF orientation applied). Arrays: (H, W) grayscale,
    (H, W, 1), (H, W, 3) RGB, or (H, W, 4) RGBA (alpha composited on white, as for files); with
    `bgr=True` the colour channels are BGR/BGRA (OpenCV order). uint8, bool, uint16 (scaled by 1/257)
    and float arrays (taken as [0, 1]) are accepted. `bgr` is ignored for paths and PIL images.
    """
    if isinstance(image, (str, os.PathLike, Image.Image)):
        return load_rgb(image)
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        pass
    elif arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint16:
        arr = ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError("image array contains NaN or infinite values")
        arr = np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
    else:
        raise ValueError(f"unsupported image dtype {arr.dtype}; use uint8, uint16, bool or float in [0, 1]")
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or 0 in arr.shape:
        raise ValueError(f"image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {arr.shape}")
    if arr.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(arr, 3, axis=2))
    colour, alpha = arr[..., :3], (arr[..., 3:] if arr.shape[2] == 4 else None)
    if bgr:
        colour = colour[..., ::-1]
    if alpha is not None:  # composite on white, like load_rgb does for RGBA files
        a = alpha.astype(np.float32) / 255.0
        colour = np.rint(colour * a + 255.0 * (1.0 - a)).astype(np.uint8)
    return np.ascontiguousarray(colour)


def _check_boxes(boxes) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float32)
    if b.size == 0:
        return np.zeros((0, 4), np.float32)
    if b.ndim == 1 and b.shape[0] == 4:
        b = b[None]
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4) (x0, y0, x1, y1); got shape {b.shape}")
    if not np.isfinite(b).all() or ((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])).any():
        raise ValueError("boxes must be finite with x1 > x0 and y1 > y0")
    return b


# ---------------------------------------------------------------- backends
def _cache_base() -> Path:
    return Path(os.environ.get("FACEALIGN_CACHE", Path.home() / ".cache" / "facealign"))


def _model_file(model: str | Path) -> Path:
    return packaged_path(model) if isinstance(model, str) and model in PACKAGED_MODELS else Path(model)


def onnx_cache_path(model: str | Path, card: dict) -> Path:
    """Where the ONNX export of `model` is cached: keyed by the weights' bytes, the card and torch's version."""
    h = hashlib.sha256(_model_file(model).read_bytes())
    h.update(json.dumps(card, sort_keys=True).encode())
    h.update(torch.__version__.encode())
    return _cache_base() / "onnx" / f"{safe_stem(str(card.get('name', 'model')))}-{h.hexdigest()[:16]}.onnx"


def _torch_runner(model: str | Path, device: str, flip_tta: bool | None) -> LandmarkRunner:
    return LandmarkRunner(model, device, flip_tta=flip_tta)


def _onnx_runner(model: str | Path, device: str, flip_tta: bool | None):
    """ONNX Runtime backend (CPU). An .onnx file made by `facealign export` is used as it is (its model card
    is in its metadata); any other model (packaged name, .safetensors, .pt) is exported once to a cached
    ONNX file (see `onnx_cache_path`)."""
    if device != "cpu":
        raise ValueError(f"backend 'onnx' runs on the CPU only (got device {device!r}); use --backend torch")
    try:
        from facealign.export import export_onnx, load_onnx_runner
    except ImportError as e:
        raise ValueError(f"backend 'onnx' is unavailable ({e}); use --backend torch") from None
    path = _model_file(model)
    if path.suffix == ".onnx":
        return load_onnx_runner(path, flip_tta=flip_tta)
    net, card = load_model(model)
    onnx_path = onnx_cache_path(model, card)
    if not onnx_path.is_file():
        export_onnx(net, onnx_path, card=card)  # written atomically by export_onnx
    return load_onnx_runner(onnx_path, flip_tta=flip_tta)


# name -> factory(model, device, flip_tta) -> a runner (LandmarkRunner's crops/predict_crops/name/card)
BACKENDS: dict[str, Callable] = {
    "torch": _torch_runner,
    "onnx": _onnx_runner,
}


# ---------------------------------------------------------------- FaceAligner
class FaceAligner:
    """Detect faces and predict 68 landmarks on images.

    >>> fa = FaceAligner()                      # the packaged default model, dlib HOG detector, CPU
    >>> faces = fa.predict("photo.jpg")         # list[Face]; landmarks in original image pixels

    Args:
        model: a packaged model name ("default", or "default160": the previous default, 160 px, about
            1.8x faster, 4% higher NME), a .safetensors file (model card beside it), a
            training checkpoint (.pt), or, with backend "onnx", an .onnx file (card beside it).
        detector: a name from `facealign.data.boxes.DETECTORS` ("dlib") or a callable
            `(image_rgb_uint8, upsample) -> list[(box (4,), score)]`.
        device: torch device for the torch backend ("cpu", "cuda", ...).
        backend: "torch" or "onnx" (a key of `BACKENDS`).
        upsample: detector upsampling steps (dlib: 1 finds faces down to about 40 px).
        min_score: detections scoring below this are dropped (dlib's own threshold is 0; at 0 it finds
            e.g. the mission patch on skimage's astronaut as a face).
        flip_tta: override the model card's flip test-time augmentation.
    """

    def __init__(self, model: str | Path = "default", detector: str | Callable = "dlib", device: str = "cpu",
                 backend: str = "torch", upsample: int = 1, min_score: float = DEFAULT_MIN_SCORE,
                 flip_tta: bool | None = None):
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
        if isinstance(detector, str):
            self.detector_name = detector
            self._detector = get_detector(detector)  # ValueError listing valid names
        elif callable(detector):
            self.detector_name = getattr(detector, "__name__", "custom")
            self._detector = detector
        else:
            raise ValueError(f"detector must be a name ({', '.join(DETECTORS)}) or a callable")
        if int(upsample) != upsample or upsample < 0:
            raise ValueError(f"upsample must be a whole number >= 0, got {upsample}")
        self.upsample = int(upsample)
        self.min_score = float(min_score)
        self.backend_name = backend
        self.runner = BACKENDS[backend](model, device, flip_tta)

    @property
    def name(self) -> str:
        return self.runner.name

    @property
    def card(self) -> dict:
        return self.runner.card

    def __repr__(self) -> str:
        return (f"FaceAligner(model={self.name!r}, detector={self.detector_name!r}, backend={self.backend_name!r}, "
                f"upsample={self.upsample}, min_score={self.min_score})")

    def detect(self, image: ImageLike, bgr: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Face boxes (N, 4) float32 and scores (N,) float32, best score first, below min_score dropped."""
        rgb = as_rgb(image, bgr)
        dets = [(b, s) for b, s in self._detector(rgb, self.upsample) if s >= self.min_score]
        dets.sort(key=lambda d: -d[1])
        if not dets:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        return (np.stack([np.asarray(b, np.float32) for b, _ in dets]),
                np.array([s for _, s in dets], np.float32))

    def predict(self, image: ImageLike, boxes: np.ndarray | None = None, bgr: bool = False) -> list[Face]:
        """Faces in one image (path, PIL image or array; see `as_rgb`).

        With `boxes` (N, 4) (x0, y0, x1, y1 in pixels, same protocol as the detector's boxes) the
        detector is skipped and every score is NaN.
        """
        return self.predict_batch([image], None if boxes is None else [boxes], bgr)[0]

    def predict_batch(self, images: Sequence[ImageLike], boxes: Sequence[np.ndarray | None] | None = None,
                      bgr: bool = False) -> list[list[Face]]:
        """One list of faces per image; all face crops of all images go through the network together
        (chunks of 32). `boxes`, if given, has one entry per image: (N, 4) boxes or None (detect)."""
        arrays = [as_rgb(im, bgr) for im in images]
        if boxes is None:
            boxes = [None] * len(arrays)
        if len(boxes) != len(arrays):
            raise ValueError(f"{len(boxes)} box sets for {len(arrays)} images")
        dets = []
        for rgb, b in zip(arrays, boxes):
            if b is None:
                dets.append(self.detect(rgb))
            else:
                b = _check_boxes(b)
                dets.append((b, np.full(len(b), np.nan, np.float32)))
        return self.align(arrays, dets)

    def align(self, arrays: Sequence[np.ndarray], detections: Sequence[tuple[np.ndarray, np.ndarray]]
              ) -> list[list[Face]]:
        """Landmarks for given (boxes, scores) per RGB uint8 array; crops are built chunk by chunk, so
        memory stays bounded however many faces there are."""
        jobs = [(i, box) for i, (b, _) in enumerate(detections) for box in b]
        points: list[np.ndarray] = []
        for start in range(0, len(jobs), CHUNK):
            chunk = jobs[start:start + CHUNK]
            crops, transforms = zip(*(self.runner.crops(arrays[i], box[None]) for i, box in chunk))
            coords = self.runner.predict_crops(np.concatenate(crops))
            points += [t[0].to_image(c) for t, c in zip(transforms, coords)]
        out, k = [], 0
        for b, s in detections:
            out.append([Face(box, score, points[k + j]) for j, (box, score) in enumerate(zip(b, s))])
            k += len(b)
        return out


# ---------------------------------------------------------------- batch job (`facealign predict`)
def safe_stem(name: str, limit: int = 100) -> str:
    """A single, harmless file-name component: word characters, '.', '-' only; no leading dots."""
    s = re.sub(r"[^\w.\-]+", "_", name, flags=re.UNICODE).lstrip(".")[:limit].rstrip(".")
    return s or "input"


class OutputNames:
    """Unique, sanitised output stems inside one output folder (case-insensitive dedupe: a, a-2, a-3)."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir).resolve()
        self.used: set[str] = set()

    def stem(self, source: Path) -> str:
        base = safe_stem(Path(source).stem)
        name, k = base, 2
        while name.casefold() in self.used:
            name, k = f"{base}-{k}", k + 1
        self.used.add(name.casefold())
        return name

    def path(self, *parts: str) -> Path:
        p = self.out_dir.joinpath(*parts).resolve()
        if not p.is_relative_to(self.out_dir):  # cannot happen with safe stems; defence in depth
            raise ValueError(f"refusing to write outside {self.out_dir}: {p}")
        return p


def _is_media(path: Path) -> bool:
    from facealign.video import VIDEO_EXTENSIONS
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
                failures.append((str(a), "no images found in folder"))
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


CSV_HEADER = (["source", "frame", "face", "track", "score", "box_x0", "box_y0", "box_x1", "box_y1"]
              + [f"{axis}{i}" for i in range(68) for axis in ("x", "y")])


def csv_row(source: str, frame: int | None, index: int, face: Face, track: int | None = None) -> list:
    score = "" if np.isnan(face.score) else _f32(face.score)
    return ([source, "" if frame is None else frame, index, "" if track is None else track, score]
            + [_f32(v) for v in face.box] + [_f32(v) for v in face.landmarks.reshape(-1)])


def annotate(image: np.ndarray, faces: Sequence[Face]) -> Image.Image:
    """RGB image with each face's box and landmarks drawn."""
    from facealign.data.show import draw_landmarks
    from PIL import ImageDraw
    out = Image.fromarray(image)
    for face in faces:
        side = float(max(face.box[2] - face.box[0], face.box[3] - face.box[1]))
        width = max(1, round(side / 150))
        ImageDraw.Draw(out).rectangle([float(v) for v in face.box], outline=(255, 64, 64), width=width)
        out = draw_landmarks(out, face.landmarks, radius=max(1.5, side / 100))
    return out


def image_json(source: str, rgb: np.ndarray, faces: Sequence[Face], aligner: FaceAligner) -> dict:
    return {"source": source, "image": {"width": int(rgb.shape[1]), "height": int(rgb.shape[0])},
            "model": aligner.name, "backend": aligner.backend_name, "detector": aligner.detector_name,
            "coordinates": "image pixels (x, y), 0-based pixel centres: the top-left pixel's centre is (0, 0)",
            "faces": [f.to_dict() for f in faces]}


def write_json(path: Path, obj) -> None:
    """Indented JSON with each innermost list of numbers on one line ([x, y] per landmark); atomic."""
    text = json.dumps(obj, indent=2)
    text = re.sub(r"\[[^\[\]{}\"]*\]", lambda m: re.sub(r"\s+", " ", m.group(0)).replace("[ ", "[").replace(" ]", "]"),
                  text)
    atomic_write_text(path, text + "\n")


def _save_image(path: Path, image: Image.Image) -> None:
    buf = io.BytesIO()
    if path.suffix == ".jpg":
        image.save(buf, format="JPEG", quality=95)
    else:
        image.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


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
                smooth_beta: float | None = None, progress: bool = True, images_per_batch: int = 8) -> PredictReport:
    """The `facealign predict` job. Unreadable inputs are reported on stderr (one line each) and skipped."""
    from tqdm import tqdm

    from facealign.video import DEFAULT_BETA, VIDEO_EXTENSIONS, process_video
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = OutputNames(out_dir)
    report = PredictReport()

    def fail(source: str, reason: str) -> None:
        report.failures.append((source, reason))
        tqdm.write(f"facealign: skipped {source}: {reason}", file=sys.stderr)

    files, bad = collect_inputs(inputs, exclude=names.out_dir)
    for source, reason in bad:
        fail(source, reason)
    videos = [f for f in files if f.suffix.lower() in VIDEO_EXTENSIONS]
    images = [f for f in files if f.suffix.lower() not in VIDEO_EXTENSIONS]
    rows: list[list] = []

    bar = tqdm(total=len(images), desc="predict", unit="img", disable=not progress or not images, file=sys.stderr)
    t0 = time.perf_counter()
    for start in range(0, len(images), images_per_batch):
        loaded = []
        for path in images[start:start + images_per_batch]:
            try:
                rgb = load_rgb(path)
                loaded.append((path, rgb, aligner.detect(rgb)))
            except Exception as e:  # one bad file is reported, never fatal
                msg = str(e) if isinstance(e, ImageLoadError) else f"{e.__class__.__name__}: {e}"
                fail(str(path), msg.removeprefix(f"{path}: "))
        loaded, results = _align_each(aligner, loaded, fail)
        for (path, rgb, _), faces in zip(loaded, results):
            stem = names.stem(path)
            json_path = names.path(f"{stem}.json")
            write_json(json_path, image_json(str(path), rgb, faces, aligner))
            report.outputs[str(path)] = json_path
            if pts:
                for i, face in enumerate(faces):
                    write_pts(names.path(f"{stem}_{i}.pts"), face.landmarks)
            if draw:
                ext = ".jpg" if path.suffix.lower() in (".jpg", ".jpeg") else ".png"
                drawn = names.path(f"{stem}_annotated{ext}")
                _save_image(drawn, annotate(rgb, faces))
                report.annotated[str(path)] = drawn
            rows += [csv_row(str(path), None, i, f) for i, f in enumerate(faces)]
            report.images += 1
            report.faces += len(faces)
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
        writer.writerow(CSV_HEADER)
        writer.writerows(rows)
        atomic_write_text(names.path("landmarks.csv"), buf.getvalue())
    return report
