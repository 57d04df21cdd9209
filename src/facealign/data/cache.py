"""Decoded face crops cached once on disk, so training never decodes full photos.

Each face is stored as a (C, C, 3) uint8 crop covering its face crop enlarged by
`margin` (room for rotation/scale/shift augmentation), in one memory-mapped
file. C = S + an even number of pixels, so the un-augmented S-pixel crop is an
exact pixel-aligned centre window of the cached one.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from facealign.data.crop import DEFAULT_CONTEXT, CropTransform
from facealign.atomic import atomic_path, atomic_write_json

CACHE_VERSION = 1


@dataclass(frozen=True)
class CacheSpec:
    """size: network input S (pixels); margin: cached side / crop side; context: box enlargement."""

    size: int = 224
    margin: float = 1.5
    context: float = DEFAULT_CONTEXT

    @property
    def cache_size(self) -> int:
        return self.size + 2 * round(self.size * (self.margin - 1) / 2)

    @property
    def true_margin(self) -> float:
        return self.cache_size / self.size


def zoom_out(m: float) -> np.ndarray:
    """(2, 3) normalised map: crop coords u -> coords of a crop `m` times larger around the same centre.

    For `CropTransform.then`: `CropTransform.from_box(box, spec.context).then(zoom_out(spec.true_margin))` is
    the cached crop of a face (`CacheSpec`), `spec.margin` times the model's crop."""
    return np.array([[1 / m, 0, 0.5 - 0.5 / m], [0, 1 / m, 0.5 - 0.5 / m]])


def cache_key(records, boxes: np.ndarray, spec: CacheSpec, frames: np.ndarray | None = None) -> str:
    h = hashlib.sha1(json.dumps([CACHE_VERSION, asdict(spec)]).encode())
    for r in records:
        st = Path(r.image).stat()
        h.update(f"{Path(r.image).resolve()}|{st.st_size}|{st.st_mtime_ns}|".encode())
        h.update(np.ascontiguousarray(r.landmarks, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(boxes, dtype=np.float32).tobytes())
    if frames is not None:  # crops placed by matrices, not boxes: a cache of its own
        h.update(b"frames" + np.ascontiguousarray(frames, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


class CropCache:
    """A built cache: `images` (N, C, C, 3) uint8 memmap, `landmarks` (N, 68, 2) in cached-crop
    normalised coords, `transforms` (N, 2, 3) image pixels -> cached-crop normalised coords."""

    def __init__(self, folder: Path, key: str):
        meta = json.loads((folder / f"crops-{key}.json").read_text())
        self.spec = CacheSpec(**meta["spec"])
        self.keys: list[str] = meta["keys"]
        n, c = len(self.keys), self.spec.cache_size
        path = folder / f"crops-{key}.u8"
        if path.stat().st_size != n * c * c * 3:
            raise ValueError(f"crop cache {path} has the wrong size (truncated?); delete it to rebuild")
        self.images = np.memmap(path, dtype=np.uint8, mode="r", shape=(n, c, c, 3))
        arrays = np.load(folder / f"crops-{key}.npz")
        self.landmarks = arrays["landmarks"]
        self.transforms = arrays["transforms"]

    def __len__(self) -> int:
        return len(self.keys)

    def pixel_to_crop(self, augment: np.ndarray | None = None) -> CropTransform:
        """Map from cached-image pixels to the network crop's normalised coords, then `augment`
        (an optional (2, 3) map in crop coords)."""
        c, m = self.spec.cache_size, self.spec.true_margin
        # cached pixel centre j <-> u_cache = (j + 0.5) / C; crop u = (u_cache - 0.5) * m + 0.5
        t = CropTransform(np.array([[m / c, 0, 0.5 * m / c - 0.5 * m + 0.5], [0, m / c, 0.5 * m / c - 0.5 * m + 0.5]]))
        return t if augment is None else t.then(augment)

    def crop_transform(self, i: int) -> CropTransform:
        """Original image pixels -> the network crop's normalised coords (no augmentation)."""
        return CropTransform(self.transforms[i]).then(np.linalg.inv(np.vstack([zoom_out(self.spec.true_margin),
                                                                                 [0, 0, 1]]))[:2])


def _existing_cache(folder: Path, key: str) -> CropCache | None:
    """The cache `key` in `folder` if it was built and is intact (a damaged one is rebuilt by the caller)."""
    if (folder / f"crops-{key}.json").is_file():
        try:
            return CropCache(folder, key)
        except (ValueError, OSError, KeyError):
            return None
    return None


def decode_photos(records):
    """Yield each record's decoded RGB photo, or the ImageLoadError it raised; consecutive faces of one
    photo (AFW stores one file per face) decode it once."""
    from facealign.data.images import ImageLoadError, load_rgb
    last_path, last_image = None, None
    for r in records:
        if r.image != last_path:
            last_path = r.image
            try:
                last_image = load_rgb(r.image)
            except ImageLoadError as e:
                last_image = e
        yield last_image


def build_crop_cache(records, boxes: np.ndarray, spec: CacheSpec, folder: Path, progress: bool = True,
                     frames: np.ndarray | None = None) -> CropCache:
    """Crop every face once (or reuse an identical earlier cache) and return the cache.

    boxes: (N, 4) image pixels, each cropped by `CropTransform.from_box(box, spec.context)`; frames: (N, 2, 3)
    `CropTransform` matrices (image pixels -> normalised crop coords) that place the crops instead (e.g. the
    similarity-aligned crops of `facealign.data.aligned`; `spec.context` is then already in them)."""
    from tqdm import tqdm

    from facealign.data.errors import DataError
    from facealign.data.images import ImageLoadError
    folder = Path(folder)
    key = cache_key(records, boxes, spec, frames)
    existing = _existing_cache(folder, key)
    if existing is not None:
        return existing
    folder.mkdir(parents=True, exist_ok=True)
    n, c = len(records), spec.cache_size
    landmarks = np.zeros((n, len(records[0].landmarks), 2), np.float32)
    transforms = np.zeros((n, 2, 3), np.float64)
    kept, failed = [], []
    with atomic_path(folder / f"crops-{key}.u8") as tmp:
        mm = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=(n, c, c, 3))
        faces = list(zip(records, boxes, [None] * len(records) if frames is None else frames))
        for (r, box, frame), last_image in tqdm(zip(faces, decode_photos(r for r, _, _ in faces)), total=len(faces),
                                         desc=f"caching crops ({c}px)", unit="face", disable=not progress):
            if isinstance(last_image, ImageLoadError):  # indexing reads headers only; pixel data can be damaged
                failed.append(str(last_image))
                continue
            i = len(kept)
            t = (CropTransform.from_box(box, spec.context) if frame is None else
                 CropTransform(np.asarray(frame, np.float64))).then(zoom_out(spec.true_margin))
            mm[i] = t.warp(last_image, c)
            landmarks[i] = t.to_crop(r.landmarks)
            transforms[i] = t.matrix
            kept.append(r.key)
        mm.flush()
        del mm
        if failed:
            os.truncate(tmp, len(kept) * c * c * 3)
    if failed:
        warnings.warn(f"skipped {len(failed)} face(s) whose image cannot be decoded, e.g. {failed[0]}; "
                      f"`facealign data summary --strict` lists them", stacklevel=2)
    if not kept:
        raise DataError("no face could be cached: every image failed to decode")
    return _finish_cache(folder, key, spec, kept, landmarks[:len(kept)], transforms[:len(kept)])


def write_crop_cache(folder: Path, key: str, spec: CacheSpec, keys: list[str], crops, landmarks: np.ndarray,
                     transforms: np.ndarray, progress: bool = False, desc: str = "caching crops") -> CropCache:
    """A cache from crops computed elsewhere (e.g. decoded from a training pack), or an identical earlier one.

    crops: iterable of (C, C, 3) uint8 arrays in `keys` order (C = spec.cache_size); landmarks (N, K, 2) in
    cached-crop normalised coords; transforms (N, 2, 3) image pixels -> cached-crop normalised coords.
    `key` names the cache files, so it must change whenever the inputs do.
    """
    from tqdm import tqdm
    folder = Path(folder)
    existing = _existing_cache(folder, key)
    if existing is not None:
        return existing
    folder.mkdir(parents=True, exist_ok=True)
    n, c = len(keys), spec.cache_size
    with atomic_path(folder / f"crops-{key}.u8") as tmp:
        mm = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=(n, c, c, 3))
        count = 0
        for i, crop in enumerate(tqdm(crops, total=n, desc=f"{desc} ({c}px)", unit="face", disable=not progress)):
            if i >= n or crop.shape != (c, c, 3):
                raise ValueError(f"crop {i} has shape {crop.shape}, expected {(c, c, 3)} (and {n} crops)")
            mm[i] = crop
            count += 1
        if count != n:
            raise ValueError(f"got {count} crops for {n} keys")
        mm.flush()
        del mm
    return _finish_cache(folder, key, spec, list(keys), landmarks, transforms)


def _finish_cache(folder: Path, key: str, spec: CacheSpec, keys: list[str], landmarks: np.ndarray,
                  transforms: np.ndarray) -> CropCache:
    """Write the arrays and the index (last: its presence marks a complete cache) beside the pixels."""
    with atomic_path(folder / f"crops-{key}.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, landmarks=np.asarray(landmarks, np.float32), transforms=np.asarray(transforms, np.float64))
    atomic_write_json(folder / f"crops-{key}.json", {"spec": asdict(spec), "keys": keys})
    return CropCache(folder, key)
