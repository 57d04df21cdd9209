"""Image loading: EXIF orientation applied, any mode converted to RGB uint8."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps


class ImageLoadError(ValueError):
    """An image that cannot be decoded; the message names the file."""


def load_rgb(source: str | os.PathLike | Image.Image) -> np.ndarray:
    """Decode an image to (H, W, 3) uint8 RGB in its displayed (EXIF-corrected) orientation."""
    try:
        if isinstance(source, Image.Image):
            img = source
            img = ImageOps.exif_transpose(img)
        else:
            with Image.open(source) as im:
                im.seek(0)  # first frame of animations
                img = ImageOps.exif_transpose(im)
                img.load()
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(img, dtype=np.float64)
            arr = (arr / max(arr.max(), 1) * 255).astype(np.uint8)
            img = Image.fromarray(arr)
        if img.mode in ("RGBA", "LA", "P", "PA"):
            img = img.convert("RGBA")
            bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(bg, img)
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        name = getattr(source, "filename", None) or str(source) if not isinstance(source, Image.Image) else "<image>"
        raise ImageLoadError(f"{name}: cannot decode image ({e.__class__.__name__}: {e})") from None
