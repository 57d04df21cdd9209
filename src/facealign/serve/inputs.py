"""Request parsing for the service, free of any web framework: bounded bodies, images, boxes, options.

Every problem raises `RequestError(status, message)`, which the app turns into a 4xx JSON error.
"""
from __future__ import annotations

import io
import json
import warnings

import numpy as np
from PIL import Image

from facealign.data.images import ImageLoadError, load_rgb

# Formats the service decodes. Pillow can open more (EPS would even run Ghostscript): refuse the rest.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
RAW_TYPES = ("image/", "application/octet-stream")  # Content-Type prefixes accepted for a raw body
MULTIPART = "multipart/form-data"


class RequestError(Exception):
    """A client error: HTTP `status`, a one-line `message`, optional extra response `headers`."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, dict(headers or {})


CLOSE = {"Connection": "close"}  # an unread body: close rather than drain it for keep-alive

ERROR_TYPES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 408: "request_timeout",
               413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid_parameter",
               500: "internal_error", 503: "unavailable"}


def error_body(status: int, message: str) -> dict:
    """The JSON body of every error response."""
    return {"error": {"status": status, "type": ERROR_TYPES.get(status, "error"), "message": message}}


def check_content_length(header: str | None, limit: int) -> None:
    """Refuse an announced body over `limit` bytes before reading any of it."""
    if header is None:
        return
    try:
        n = int(header)
    except ValueError:
        raise RequestError(400, f"Content-Length is not a number: {header[:40]!r}") from None
    if n > limit:
        raise RequestError(413, f"upload of {n} bytes is over the {limit}-byte limit (--max-upload-mb)", CLOSE)


def add_chunk(buf: bytearray, chunk: bytes, limit: int) -> None:
    """Append a body chunk; refuse as soon as the body passes `limit` bytes (chunked uploads too)."""
    buf += chunk
    if len(buf) > limit:
        raise RequestError(413, f"upload is over the {limit}-byte limit (--max-upload-mb)", CLOSE)


def body_kind(content_type: str | None) -> str:
    """'raw' (an image as the whole body) or 'multipart'; anything else is a 415."""
    ct = (content_type or "").split(";")[0].strip().lower()
    if ct == MULTIPART:
        return "multipart"
    if any(ct.startswith(t) for t in RAW_TYPES):
        return "raw"
    shown = ct or "none"
    raise RequestError(415, f"Content-Type {shown} is not accepted: send the image as the body (image/jpeg, "
                            f"image/png, ... or application/octet-stream) or as multipart/form-data field 'image'")


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Bytes of an image file -> (H, W, 3) uint8 RGB, EXIF orientation applied.

    The pixel count is checked from the header, before any pixel is decoded (decompression bombs)."""
    if not data:
        raise RequestError(400, "empty body: send an image (JPEG, PNG, WebP, BMP, GIF or TIFF)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies below
            im = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as e:
        raise RequestError(413, f"image refused as a decompression bomb: {e}") from None
    except Exception:  # Pillow raises UnidentifiedImageError, but also OSError/ValueError on odd headers
        raise RequestError(400, "the body is not an image this service decodes (JPEG, PNG, WebP, BMP, GIF, "
                                "TIFF)") from None
    w, h = im.size
    if w * h > max_pixels:
        raise RequestError(413, f"image is {w}x{h} = {w * h / 1e6:.1f} Mpx, over the {max_pixels / 1e6:g} Mpx "
                                "limit (--max-megapixels)")
    try:
        return load_rgb(im)
    except ImageLoadError:
        raise RequestError(400, f"cannot decode the {im.format} image: truncated or corrupt") from None


def parse_boxes(text: str | None, max_boxes: int) -> np.ndarray | None:
    """JSON `[[x0, y0, x1, y1], ...]` (image pixels) -> (N, 4) float32; None when absent or empty text."""
    if text is None or not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise RequestError(422, "boxes must be JSON: [[x0, y0, x1, y1], ...] in image pixels") from None
    if isinstance(value, list) and len(value) == 4 and all(isinstance(v, (int, float)) for v in value):
        value = [value]  # one box without the outer list
    ok = isinstance(value, list) and all(
        isinstance(b, list) and len(b) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                    for v in b) for b in value)
    if not ok:
        raise RequestError(422, "boxes must be a list of [x0, y0, x1, y1] number lists (image pixels)")
    if len(value) > max_boxes:
        raise RequestError(422, f"{len(value)} boxes is over the limit of {max_boxes} per request")
    boxes = np.asarray(value, np.float32).reshape(-1, 4)
    if not np.isfinite(boxes).all() or ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])).any():
        raise RequestError(422, "boxes must be finite [x0, y0, x1, y1] with x1 > x0 and y1 > y0 (for x, y, w, h "
                                "send x, y, x + w, y + h)")
    return boxes


def parse_min_score(text: str | None) -> float | None:
    """A detector score threshold, or None for the server's default."""
    if text is None or not str(text).strip():
        return None
    try:
        v = float(text)
    except ValueError:
        raise RequestError(422, f"min_score must be a number, got {str(text)[:40]!r}") from None
    if not np.isfinite(v):
        raise RequestError(422, "min_score must be finite")
    return v


TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def parse_flag(name: str, text: str | None) -> bool:
    if text is None:
        return False
    t = str(text).strip().lower()
    if t in TRUE:
        return True
    if t in FALSE:
        return False
    raise RequestError(422, f"{name} must be true or false, got {str(text)[:40]!r}")
