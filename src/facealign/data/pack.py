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
"""
from __future__ import annotations

import hashlib
import io
import json
import time
import warnings
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from facealign.data.cache import CacheSpec, CropCache, decode_photos, write_crop_cache, zoom_out
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


# ---------------------------------------------------------------- writing
def _check_options(box: str, size: int, context: float, margin: float, quality: int) -> None:
    from facealign.detection.boxes import BOX_PROTOCOLS
    if box not in BOX_PROTOCOLS:
        raise ValueError(f"unknown box protocol {box!r}; valid: {', '.join(BOX_PROTOCOLS)}")
    if not 8 <= size <= 4096:
        raise ValueError(f"--size must be between 8 and 4096 pixels, got {size}")
    if not 0 <= context <= 10:
        raise ValueError(f"--context must be between 0 and 10, got {context:g}")
    if not 1 <= margin <= 4:
        raise ValueError(f"--margin must be between 1 and 4, got {margin:g}")
    if not 1 <= quality <= 100:
        raise ValueError(f"--quality must be between 1 and 100, got {quality}")


def encode_jpeg(crop: np.ndarray, quality: int) -> bytes:
    """Baseline JPEG, 4:2:0 chroma, optimised Huffman tables (lossless, a few % smaller)."""
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, "JPEG", quality=quality, subsampling="4:2:0", optimize=True)
    return buf.getvalue()


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def _face_boxes(records, box: str, root: Path, cache_dir, progress: bool):
    """Per face: (box in image pixels, detected 1/0/-1) under protocol `box`; the detector fallback is the
    ground-truth landmark box. Detections come from the box cache, else are run (and cached); `gt` uses
    cached detections only to fill the flag."""
    from tqdm import tqdm

    from facealign.detection.boxes import BoxCache, DetectorConfig, best_detection, get_box_protocol, landmark_box
    from facealign.detection.detectors import get_detector
    from facealign.data.images import ImageLoadError, load_rgb
    cache = BoxCache(root, cache_dir, DetectorConfig())
    detector = get_detector(cache.detector.name)
    fn = get_box_protocol(box)
    todo = [r for r in records if box != "gt" and cache.get(r.image) is None]
    for image in tqdm(sorted({r.image for r in todo}), desc="detecting (not in the box cache)", unit="img",
                      disable=not (progress and todo)):
        try:
            cache.put(image, detector(load_rgb(image), cache.detector.upsample))
        except ImageLoadError:
            pass  # the face is skipped when its crop cannot be decoded
    if todo:
        cache.save()
    boxes, flags = [], []
    for r in records:
        try:
            dets = cache.get(r.image)
        except ValueError:  # the box cache keys resolved paths; a symlink out of the root has no entry
            if box != "gt":
                raise
            dets = None
        if dets is None:  # gt without cached detections, or an undecodable image
            boxes.append(landmark_box(r.landmarks))
            flags.append(-1)
            continue
        found = best_detection(dets, r.landmarks)
        flags.append(int(found is not None))
        if box == "detector" and found is None:
            boxes.append(landmark_box(r.landmarks))  # fallback: the face is still packed, and flagged
        else:
            boxes.append(np.asarray(fn(r.landmarks, dets, r.width, r.height), np.float32))
    cache.stale.clear()
    return np.stack(boxes).astype(np.float32), np.array(flags, np.int8), cache.detector


def write_pack(root, output, splits=("train",), box: str = "detector", size: int = DEFAULT_SIZE,
               context: float = DEFAULT_CONTEXT, margin: float = DEFAULT_MARGIN, quality: int = DEFAULT_QUALITY,
               layout: str = "auto", cache_dir=None, progress: bool = True, split_file=None, num_points: int = 68) -> dict:
    """Pack `splits` of a data root (`num_points`-point faces) into one file (written atomically): a summary dict."""
    from tqdm import tqdm

    from facealign.version import __version__
    from facealign.data.layouts import index_dataset
    from facealign.data.images import ImageLoadError
    from facealign.atomic import atomic_path
    t_start = time.time()
    _check_options(box, size, context, margin, quality)
    root, output = Path(root), Path(output)
    if output.is_dir():
        raise ValueError(f"output {output} is a folder; give a file name such as {output / 'train.fapack'}")
    splits = list(dict.fromkeys([splits] if isinstance(splits, str) else splits))
    if not splits:
        raise ValueError("no split to pack")
    index = index_dataset(root, layout, split_file, num_points=num_points)
    records, member = [], {}
    for s in splits:
        for r in index.split(s):
            if r.key not in member:
                member[r.key] = []
                records.append(r)
            member[r.key].append(s)
    boxes, flags, detector = _face_boxes(records, box, root, cache_dir, progress)
    spec = CacheSpec(size=size, margin=margin, context=context)
    res = spec.cache_size
    kept, failed, rows = [], [], {k: [] for k in ARRAYS}
    with atomic_path(output) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            faces = list(zip(records, boxes, flags))
            for (r, b, flag), last_image in tqdm(zip(faces, decode_photos(f[0] for f in faces)), total=len(faces),
                                                 desc=f"packing crops ({res}px, q{quality})", unit="face",
                                                 disable=not progress):
                if isinstance(last_image, ImageLoadError):
                    failed.append(str(last_image))
                    continue
                t = CropTransform.from_box(b, context).then(zoom_out(spec.true_margin))
                pm = t.pixel_matrix(res)
                crop = t.warp(last_image, res)
                zf.writestr(f"crops/{len(kept):06d}.jpg", encode_jpeg(crop, quality))
                lm = np.asarray(r.landmarks, np.float64)
                corners = b.reshape(2, 2).astype(np.float64) @ pm[:, :2].T + pm[:, 2]
                rows["landmarks"].append((lm @ pm[:, :2].T + pm[:, 2]).astype(np.float32))
                rows["image_landmarks"].append(np.asarray(r.landmarks, np.float32))
                rows["transforms"].append(pm)
                rows["boxes"].append(corners.reshape(4).astype(np.float32))
                rows["image_boxes"].append(b)
                rows["detected"].append(flag)
                kept.append((r, flag))
            if not kept:
                raise DataError("no face could be packed: every image failed to decode")
            for name, (dtype, _) in ARRAYS.items():
                zf.writestr(f"{name}.npy", _npy(np.asarray(np.stack(rows[name]) if name != "detected"
                                                           else np.array(rows[name]), dtype)))
            undetected = int(sum(int(f) == 0 for _, f in kept))
            meta = {
                "format": FORMAT, "format_version": FORMAT_VERSION, "facealign_version": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "source_root": str(root.resolve()), "layout": index.layout, "splits": splits,
                "box_protocol": box,
                "detector": {"name": detector.name, "upsample": detector.upsample},
                "detector_fallback": ("ground-truth landmark box, flagged detected=0" if box == "detector" else
                                      "whole image (seed protocol)" if box == "seed" else None),
                "crop": {"size": size, "margin": margin, "context": context, "resolution": res,
                         "true_margin": spec.true_margin,
                         "definition": "CropTransform.from_box(box, context).then(zoom-out by true_margin), "
                                       "resolution x resolution pixels"},
                "jpeg": {"quality": quality, "subsampling": "4:2:0", "optimize": True},
                "arrays": {
                    "landmarks": f"(N, {num_points}, 2) float32, packed-crop pixels (0-based pixel centres)",
                    "image_landmarks": f"(N, {num_points}, 2) float32, original image pixels (0-based pixel centres)",
                    "transforms": "(N, 2, 3) float64, original image pixels -> packed-crop pixels",
                    "boxes": "(N, 4) float32 x0 y0 x1 y1, the protocol's box in packed-crop pixels",
                    "image_boxes": "(N, 4) float32, the same box in original image pixels",
                    "detected": "(N,) int8: 1 detector found the face, 0 it did not, -1 unknown",
                },
                "counts": {"faces": len(kept), "undetected": undetected, "undecodable": len(failed),
                           **{s: int(sum(s in member[r.key] for r, _ in kept)) for s in splits}},
                "faces": [{"key": r.key, "subset": r.subset, "group": r.group, "splits": member[r.key],
                           "image": _relative(r.image, root), "width": r.width, "height": r.height,
                           "detected": None if int(f) < 0 else bool(f)} for r, f in kept],
            }
            zf.writestr("meta.json", json.dumps(meta, indent=1))
    if failed:
        warnings.warn(f"skipped {len(failed)} face(s) whose image cannot be decoded, e.g. {failed[0]}; "
                      f"`facealign data summary --strict` lists them", stacklevel=2)
    return {"path": str(output), "faces": len(kept), "bytes": output.stat().st_size, "resolution": res,
            "quality": quality, "box_protocol": box, "undetected": undetected, "undecodable": len(failed),
            "splits": splits, "seconds": time.time() - t_start}


def _relative(path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)
