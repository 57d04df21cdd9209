"""`facealign data show`: a grid of face crops with their landmarks, to eyeball a dataset."""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from facealign.detection.boxes import BoxCache, boxes_for
from facealign.data.crop import crop_face
from facealign.data.layouts import index_dataset
from facealign.data.schemes import get_scheme
from facealign.data.images import load_rgb
from facealign.atomic import atomic_write_bytes

REGION_COLOURS = {"jaw": (255, 255, 0), "right_eyebrow": (255, 128, 0), "left_eyebrow": (255, 128, 0),
                  "nose_bridge": (0, 255, 255), "nose_lower": (0, 255, 255), "right_eye": (0, 255, 0),
                  "left_eye": (0, 255, 0), "outer_lips": (255, 0, 255), "inner_lips": (255, 0, 255)}
OTHER = (255, 255, 0)  # points of a scheme other than ibug68


def draw_landmarks(image: Image.Image, points: np.ndarray, radius: float = 1.5) -> Image.Image:
    """Draw (K, 2) pixel-centre landmarks on a copy of `image`: 68 points coloured by face region, any other
    scheme's in one colour."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    regions = get_scheme().regions if len(points) == 68 else {"": tuple(range(len(points)))}
    for region, idx in regions.items():
        for x, y in points[list(idx)]:
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=REGION_COLOURS.get(region, OTHER))
    return out


def save_grid(root: Path, split: str, n: int, output: Path, layout: str = "auto", protocol: str = "gt",
              size: int = 224, seed: int = 0, cache_dir: Path | None = None, split_file: Path | None = None,
              scheme: str | None = None) -> Path:
    """Crop `n` random faces of a split (of a landmark scheme, None: ibug68) with a box protocol and save them
    as one PNG grid."""
    index = index_dataset(root, layout, split_file, num_points=get_scheme(scheme).num_points)
    records = index.split(split)
    pick = np.random.default_rng(seed).choice(len(records), size=min(n, len(records)), replace=False)
    records = [records[i] for i in sorted(pick)]
    cache = None if protocol == "gt" else BoxCache(root, cache_dir)
    boxes, _ = boxes_for(records, protocol, cache=cache)
    cols = math.ceil(math.sqrt(len(records)))
    rows = math.ceil(len(records) / cols)
    grid = Image.new("RGB", (cols * size, rows * size))
    for k, (r, box) in enumerate(zip(records, boxes)):
        crop, coords, _ = crop_face(load_rgb(r.image), box, r.landmarks, size)
        tile = draw_landmarks(Image.fromarray(crop), coords * size - 0.5, radius=max(1.0, size / 112))
        ImageDraw.Draw(tile).text((3, 2), r.key[-28:], fill=(255, 255, 255))
        grid.paste(tile, ((k % cols) * size, (k // cols) * size))
    buf = io.BytesIO()
    grid.save(buf, format="PNG")
    atomic_write_bytes(output, buf.getvalue())
    return Path(output)
