"""Output writers shared by `facealign predict`, video and the service: JSON, .pts, CSV and drawings.

Every file is written atomically (`facealign.atomic`).
"""
from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from facealign.inference.aligner import Face, FaceAligner, _f32
from facealign.atomic import atomic_write_bytes, atomic_write_text, safe_stem


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


def csv_header(num_points: int = 68) -> list[str]:
    """The landmarks CSV's header: source, frame, face, track, score, box, then x0, y0 ... for K points."""
    return (["source", "frame", "face", "track", "score", "box_x0", "box_y0", "box_x1", "box_y1"]
            + [f"{axis}{i}" for i in range(num_points) for axis in ("x", "y")])


CSV_HEADER = csv_header(68)


def csv_row(source: str, frame: int | None, index: int, face: Face, track: int | None = None) -> list:
    """One CSV row; `index` is the face's 1-based number, the one in its `<stem>_<index>.pts` name."""
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


SCHEMA_VERSION = 1  # bump on any incompatible change of the image document
SCHEMA_FILE = "predict.schema.json"  # facealign/schema/: the JSON Schema of the image document
LANDMARK_SCHEME = "ibug-68"  # the document's name of the default scheme (ibug68); other schemes by their name


def landmark_scheme(card: dict) -> str:
    """The document's `landmark_scheme` for a model card: "ibug-68" for ibug68 (and cards without a scheme),
    else the scheme's name (wflw98, cofw29, a user scheme's)."""
    name = (card.get("scheme") or {}).get("name", "ibug68")
    return LANDMARK_SCHEME if name == "ibug68" else name
BOX_FORMAT = "xyxy"  # (x0, y0, x1, y1), image pixels
COORDINATES = "image pixels (x, y), 0-based pixel centres: the top-left pixel's centre is (0, 0)"


def schema_path() -> Path:
    """The JSON Schema (draft 2020-12) of the document `image_json` returns."""
    from importlib import resources
    return Path(str(resources.files("facealign") / "schema" / SCHEMA_FILE))


def image_json(source: str, rgb: np.ndarray, faces: Sequence[Face], aligner: FaceAligner) -> dict:
    """The JSON document of one image's faces: what `facealign predict` writes (and the service returns).

    Validates against `schema_path()`; `schema_version` changes on any incompatible change."""
    from facealign.version import __version__
    return {"schema_version": SCHEMA_VERSION, "facealign_version": __version__, "source": source,
            "image": {"width": int(rgb.shape[1]), "height": int(rgb.shape[0])},
            "model": aligner.name, "model_version": str(aligner.card.get("weights_sha256", ""))[:12],
            "backend": aligner.backend_name, "detector": aligner.detector_name,
            "landmark_scheme": landmark_scheme(aligner.card), "box_format": BOX_FORMAT, "coordinates": COORDINATES,
            "faces": [f.to_dict() for f in faces]}


def write_json(path: Path, obj) -> None:
    """Indented JSON with each innermost list of numbers on one line ([x, y] per landmark); atomic."""
    text = json.dumps(obj, indent=2)
    text = re.sub(r"\[[^\[\]{}\"]*\]", lambda m: re.sub(r"\s+", " ", m.group(0)).replace("[ ", "[").replace(" ]", "]"),
                  text)
    atomic_write_text(path, text + "\n")


def save_image(path: Path, image: Image.Image) -> None:
    buf = io.BytesIO()
    if path.suffix == ".jpg":
        image.save(buf, format="JPEG", quality=95)
    else:
        image.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
