"""Image loading: EXIF orientation applied, any mode converted to RGB uint8."""
from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageOps


class ImageLoadError(ValueError):
    """An image that cannot be decoded; the message names the file."""


def _to_8bit(img: Image.Image) -> Image.Image:
    # 16-bit greyscale (I;16*) and 32-bit integer (I) images: map the 16-bit range onto 0..255.
    arr = np.asarray(img, dtype=np.float64)
    scale = 257.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 1.0
    return Image.fromarray(np.clip(arr / scale, 0, 255).round().astype(np.uint8))


def load_rgb(source: str | os.PathLike | Image.Image) -> np.ndarray:
    """Decode an image to (H, W, 3) uint8 RGB in its displayed (EXIF-corrected) orientation.

    Animated images give their first frame; transparency is composited onto white; images
    above Pillow's decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`) are refused before decoding.
    A file of 0 bytes is an `ImageLoadError` saying so (Pillow's "cannot identify image file" hides why).
    """
    if not isinstance(source, Image.Image) and os.path.isfile(source) and os.path.getsize(source) == 0:
        raise ImageLoadError(f"{source}: empty file (0 bytes), not an image")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x MAX_IMAGE_PIXELS; refuse those too rather than risk memory.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if isinstance(source, Image.Image):
                img = ImageOps.exif_transpose(source)
            else:
                with Image.open(source) as im:
                    im.seek(0)  # first frame of animations
                    img = ImageOps.exif_transpose(im)
                    img.load()
        if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
            img = _to_8bit(img)
        if img.mode in ("RGBA", "LA", "P", "PA", "RGBa", "La"):
            img = img.convert("RGBA")
            bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(bg, img)
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as e:
        name = "<image>" if isinstance(source, Image.Image) else str(source)
        raise ImageLoadError(f"{name}: cannot decode image ({e.__class__.__name__}: {e})") from None
