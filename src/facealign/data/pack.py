"""Training packs: a data root's face crops, landmarks, boxes and metadata in one portable file.

A pack is what `facealign train --data PACK` needs on a machine without the raw photos, dlib or the
box cache. It is an uncompressed zip (ZIP_STORED, readable by any zip tool) holding:

- `meta.json`: format, source root, layout, splits, box protocol, detector, crop spec, JPEG settings,
  facealign version, and per face its key, subset, group (photo), splits, image path, size and
  whether the detector found it;
- `crops/000000.jpg` ...: one JPEG per face, the square region
  `CropTransform.from_box(box, context).then(zoom-out by margin)` (exactly what `build_crop_cache` caches
  for `CacheSpec(size, margin, context)`) at `CacheSpec.cache_size` pixels (256 px x 1.5 = 384 px);
- `landmarks.npy` (N, 68, 2) float32 in the packed crop's 0-based pixel-centre frame;
  `image_landmarks.npy` (N, 68, 2) float32, the .pts landmarks in original image pixels (exact);
  `transforms.npy` (N, 2, 3) float64, original image pixels -> packed-crop pixels (invert it to map
  predictions back); `boxes.npy` / `image_boxes.npy` (N, 4) float32, the protocol's box in the packed
  frame / in image pixels; `detected.npy` (N,) int8: 1 the detector found the face, 0 it did not,
  -1 unknown (a `gt` pack made without cached detections).

With `--box detector`, a face the detector misses is packed around its ground-truth landmark box
(not the whole image) and flagged `detected = 0`, so training's `drop_undetected` can still drop it.

This module holds the format, reading a pack and serving it as crop caches; `facealign.data.pack_writer` writes one.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from facealign.data.cache import CacheSpec, CropCache, write_crop_cache
from facealign.data.crop import CropTransform, _to3
from facealign.data.errors import DataError
from facealign.data.layouts import split_train_val

FORMAT = "facealign-pack"
FORMAT_VERSION = 1
DEFAULT_SIZE = 256  # network size the pack serves at full resolution (crops are size x margin pixels)
DEFAULT_CONTEXT = 0.4  # the `default` preset's box enlargement
DEFAULT_MARGIN = 1.5
DEFAULT_QUALITY = 90  # JPEG quality; chosen by measurement on 300W train (docs/training.md)
ARRAYS = {  # name -> (dtype, shape after N)
    "landmarks": (np.float32, (None, 2)),
    "image_landmarks": (np.float32, (None, 2)),
    "transforms": (np.float64, (2, 3)),
    "boxes": (np.float32, (4,)),
    "image_boxes": (np.float32, (4,)),
    "detected": (np.int8, ()),
}


class PackError(DataError):
    """A file that is not a usable pack, or a pack that cannot serve the requested crops (one line)."""


@dataclass(frozen=True)
class PackedFace:
    """One packed face; quacks like `FaceRecord` where training needs it (`key`, `group`, `landmarks`)."""

    index: int  # row in the pack's arrays and crop number
    key: str
    subset: str
    group: str
    splits: tuple[str, ...]
    image: str  # relative to the source root
    width: int
    height: int
    detected: bool | None
    landmarks: np.ndarray = field(repr=False, compare=False)  # (68, 2) original image pixels


def is_pack(path) -> bool:
    """True when `path` is a file: data roots are folders, so a file given as data is read as a pack
    (`read_pack` then says clearly if it is not one)."""
    try:
        return Path(path).is_file()
    except (OSError, TypeError, ValueError):
        return False


# ---------------------------------------------------------------- reading
class Pack:
    """An open pack: metadata and arrays in memory, crops decoded on demand (`crop(i)`)."""

    def __init__(self, path: Path, zf: zipfile.ZipFile, meta: dict, arrays: dict[str, np.ndarray]):
        self.path, self._zip, self.meta = path, zf, meta
        self.landmarks = arrays["landmarks"]
        self.image_landmarks = arrays["image_landmarks"]
        self.transforms = arrays["transforms"]
        self.boxes = arrays["boxes"]
        self.image_boxes = arrays["image_boxes"]
        self.detected = arrays["detected"]
        crop = meta["crop"]
        self.spec = CacheSpec(size=int(crop["size"]), margin=float(crop["margin"]), context=float(crop["context"]))
        self.resolution = self.spec.cache_size
        self.box_protocol: str = meta["box_protocol"]
        self.splits: list[str] = list(meta["splits"])
        self.faces = [PackedFace(index=i, key=f["key"], subset=f["subset"], group=f["group"],
                                 splits=tuple(f["splits"]), image=f["image"], width=int(f["width"]),
                                 height=int(f["height"]),
                                 detected=None if self.detected[i] < 0 else bool(self.detected[i]),
                                 landmarks=self.image_landmarks[i])
                      for i, f in enumerate(meta["faces"])]

    def __len__(self) -> int:
        return len(self.faces)

    def __enter__(self) -> "Pack":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._zip.close()

    def crop(self, i: int) -> np.ndarray:
        """(R, R, 3) uint8 RGB crop of face i, R = `resolution`."""
        from PIL import Image
        name = f"crops/{i:06d}.jpg"
        try:
            with Image.open(io.BytesIO(self._zip.read(name))) as im:
                arr = np.asarray(im.convert("RGB"))
        except Exception as e:  # a damaged member: name it in one line
            raise PackError(f"pack {self.path}: cannot decode {name} ({e.__class__.__name__}: {e})") from None
        if arr.shape != (self.resolution, self.resolution, 3):
            raise PackError(f"pack {self.path}: {name} is {arr.shape[1]}x{arr.shape[0]}, expected "
                            f"{self.resolution}x{self.resolution}")
        return arr

    def crop_transform(self, i: int) -> CropTransform:
        """Original image pixels -> the packed crop's normalised coords (u = (j + 0.5) / R)."""
        r = self.resolution
        to_norm = np.array([[1 / r, 0, 0.5 / r], [0, 1 / r, 0.5 / r]])
        return CropTransform((_to3(to_norm) @ _to3(self.transforms[i]))[:2])

    def records(self, split: str | list[str]) -> list[PackedFace]:
        """Faces of one split, a list of splits or a '+'-joined string, in the source's order
        (like `DatasetIndex.records`)."""
        names = split.split("+") if isinstance(split, str) else list(split)
        out = []
        for name in names:
            if name not in self.splits:
                raise PackError(f"pack {self.path} holds split(s) {', '.join(self.splits)}, not {name!r} "
                                f"(pack again with --split {name})")
            out += [f for f in self.faces if name in f.splits]
        return out


def read_pack(path) -> Pack:
    """Open and validate a pack; any problem is one PackError line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise PackError(f"pack {path} not found" if not path.exists() else f"{path} is not a pack file")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise PackError(f"{path} is not a facealign pack (not a zip archive: {e}); "
                        f"make one with `facealign data pack ROOT -o {path.name}`") from None
    try:
        names = set(zf.namelist())
        if "meta.json" not in names:
            raise PackError(f"{path} is not a facealign pack (no meta.json)")
        try:
            meta = json.loads(zf.read("meta.json"))
        except (ValueError, zipfile.BadZipFile, OSError) as e:
            raise PackError(f"pack {path}: unreadable meta.json ({e.__class__.__name__})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise PackError(f"{path} is not a facealign pack (meta.json format is not {FORMAT!r})")
        version = meta.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise PackError(f"pack {path} has format version {version!r}; this facealign reads up to "
                            f"{FORMAT_VERSION} (upgrade facealign)")
        for k in ("faces", "splits", "crop", "box_protocol"):
            if k not in meta:
                raise PackError(f"pack {path}: meta.json lacks {k!r}")
        n = len(meta["faces"])
        arrays = {}
        for name, (dtype, tail) in ARRAYS.items():
            member = f"{name}.npy"
            if member not in names:
                raise PackError(f"pack {path}: {member} is missing")
            try:
                a = np.load(io.BytesIO(zf.read(member)), allow_pickle=False)
            except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
                raise PackError(f"pack {path}: unreadable {member} ({e.__class__.__name__})") from None
            want = (n, *[a.shape[i + 1] if s is None else s for i, s in enumerate(tail)])
            if a.shape != want or a.dtype != dtype:
                raise PackError(f"pack {path}: {member} is {a.dtype}{list(a.shape)}, expected "
                                f"{np.dtype(dtype)}{list(want)}")
            arrays[name] = a
        missing = [f"crops/{i:06d}.jpg" for i in range(n) if f"crops/{i:06d}.jpg" not in names]
        if missing:
            raise PackError(f"pack {path}: {len(missing)} crop(s) missing, e.g. {missing[0]}")
        try:
            return Pack(path, zf, meta, arrays)
        except (KeyError, TypeError, ValueError) as e:
            raise PackError(f"pack {path}: malformed meta.json ({e.__class__.__name__}: {e})") from None
    except BaseException:
        zf.close()
        raise


# ---------------------------------------------------------------- training caches
def check_servable(pack: Pack, spec: CacheSpec, protocols) -> None:
    """Raise PackError unless `pack` can produce `spec` crops for every box protocol in `protocols`."""
    for p in dict.fromkeys(protocols):
        if p != pack.box_protocol:
            raise PackError(f"pack {pack.path} holds {pack.box_protocol!r} boxes; {p!r} boxes were asked for "
                            f"(pack again with --box {p}, or train with train_box/val_box {pack.box_protocol})")
    if abs(spec.context - pack.spec.context) > 1e-9:
        raise PackError(f"pack {pack.path} was cropped with context {pack.spec.context:g}; context "
                        f"{spec.context:g} was asked for (pack again with --context {spec.context:g}, or "
                        f"train with --context {pack.spec.context:g})")
    if spec.true_margin > pack.spec.true_margin + 1e-9:
        raise PackError(f"pack {pack.path} holds a {pack.spec.true_margin:g}x augmentation margin; "
                        f"{spec.true_margin:g}x was asked for (pack again with --margin {spec.margin:g})")
    if spec.size > pack.spec.size:
        raise PackError(f"pack {pack.path} serves network sizes up to {pack.spec.size} px "
                        f"({pack.resolution} px crops with margin {pack.spec.true_margin:g}); size {spec.size} "
                        f"was asked for (pack again with --max-size {spec.size})")


def _pack_to_cache(pack: Pack, spec: CacheSpec) -> np.ndarray:
    """(2, 3) map from packed-crop pixels to `spec`'s cached-crop normalised coords."""
    r, p = pack.spec.true_margin / spec.true_margin, pack.resolution
    # u_pack = (x + 0.5) / P; crop coords v = (u_pack - 0.5) m_pack + 0.5; u_cache = (v - 0.5) / m_cache + 0.5
    off = r * 0.5 / p - 0.5 * r + 0.5
    return np.array([[r / p, 0, off], [0, r / p, off]])


def cache_from_pack(pack: Pack, faces: list[PackedFace], spec: CacheSpec, folder, progress: bool = True
                    ) -> CropCache:
    """A CropCache of `faces` at `spec`, with the same meaning as `build_crop_cache` on the raw images: its
    transforms map *original image* pixels to cached-crop coords, so predictions map back to the photo."""
    if not faces:
        raise PackError(f"pack {pack.path}: no faces to cache")
    check_servable(pack, spec, [pack.box_protocol])
    st = pack.path.stat()
    h = hashlib.sha1(json.dumps(["pack", FORMAT_VERSION, str(pack.path.resolve()), st.st_size, st.st_mtime_ns,
                                 asdict(spec)]).encode())
    h.update(np.array([f.index for f in faces], np.int64).tobytes())
    key = "pack-" + h.hexdigest()[:16]
    c = spec.cache_size
    m = _pack_to_cache(pack, spec)
    identity = c == pack.resolution and np.allclose(m, _pack_to_cache(pack, pack.spec), atol=1e-12)
    warp = CropTransform(m)
    transforms = np.stack([(_to3(m) @ _to3(pack.transforms[f.index]))[:2] for f in faces])
    landmarks = np.stack([CropTransform(t).to_crop(f.landmarks) for t, f in zip(transforms, faces)])

    def crops():
        for f in faces:
            img = pack.crop(f.index)
            yield img if identity else warp.warp(img, c)

    return write_crop_cache(folder, key, spec, [f.key for f in faces], crops(), landmarks, transforms,
                            progress=progress, desc="caching crops from pack")


def default_pack_cache_dir(path) -> Path:
    from facealign.detection.boxes import default_cache_dir
    return default_cache_dir(Path(path))


def pack_caches(pack, train_split: str, val_fraction: float, seed: int, spec: CacheSpec, train_box: str,
                val_box: str, drop_undetected: bool, folder=None, progress: bool = True
                ) -> tuple[CropCache, CropCache, list[PackedFace]]:
    """Training and validation crop caches from a pack; same meaning as `train.prepare_data`'s return value.

    The training pool is split by photo group with `split_train_val` exactly as for the raw data (same
    faces, same order, same seed -> same sides). `val_records` carry `.key` and `.landmarks` in original
    image pixels, the frame `val_cache.crop_transform(i).to_image()` maps to.
    """
    pack = pack if isinstance(pack, Pack) else read_pack(pack)
    check_servable(pack, spec, [train_box, val_box])
    folder = Path(folder) if folder else default_pack_cache_dir(pack.path)
    train, val = split_train_val(pack.records(train_split), val_fraction, seed)
    if drop_undetected:
        # as prepare_data: a face the detector missed is left out wherever detector boxes are used
        train = [f for f in train if f.detected] if train_box == "detector" else train
        val = [f for f in val if f.detected] if val_box == "detector" else val
    for part, faces in (("training", train), ("validation", val)):
        if not faces and part == "validation" and val_fraction == 0:
            return cache_from_pack(pack, train, spec, folder, progress), None, []  # a final fit: no validation
        if not faces:
            raise PackError(f"pack {pack.path}: no {part} faces in split {train_split!r} (val_fraction "
                            f"{val_fraction:g}, drop_undetected {drop_undetected})")
    return (cache_from_pack(pack, train, spec, folder, progress), cache_from_pack(pack, val, spec, folder, progress),
            val)
