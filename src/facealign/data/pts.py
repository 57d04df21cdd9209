"""Read and write landmark files in the iBUG `.pts` format.

Files use the 1-based MATLAB convention (the centre of the top-left pixel is
(1, 1)). In code every landmark array is 0-based, float32, pixel centres, shape
(K, 2) as (x, y). The conversion happens only here.
"""
from __future__ import annotations

import itertools
import os
from decimal import Decimal, InvalidOperation, localcontext
from pathlib import Path

import numpy as np

from facealign.atomic import atomic_write_text

PTS_OFFSET = 1.0  # file coordinates minus code coordinates
_OFFSET = Decimal(1)


class PtsError(ValueError):
    """A `.pts` file that cannot be parsed; the message names the file and the problem."""


def parse_pts(text: str, source: str = "<string>", n_points: int | None = None) -> np.ndarray:
    """Parse `.pts` text (with or without the version/n_points/{ } header).

    Returns (K, 2) float32 in 0-based pixel-centre coordinates (pixels).
    `n_points`, if given, is the required count; a header count is always checked.
    """
    text = text.lstrip("\ufeff")
    lines = [ln.strip() for ln in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise PtsError(f"{source}: empty file")
    declared = None
    body = lines
    if lines[0].lower().startswith(("version", "n_points", "{")):
        header, body = [], None
        for i, ln in enumerate(lines):
            if ln == "{":
                body = lines[i + 1:]
                break
            header.append(ln)
        if body is None:
            raise PtsError(f"{source}: header without an opening '{{'")
        if not body or body[-1] != "}":
            raise PtsError(f"{source}: missing closing '}}'")
        body = body[:-1]
        for ln in header:
            key, _, value = ln.partition(":")
            if key.strip().lower() == "n_points":
                try:
                    declared = int(value.strip())
                except ValueError:
                    raise PtsError(f"{source}: bad n_points value {value.strip()!r}") from None
    points = []
    for ln in body:
        parts = ln.split()
        if len(parts) != 2:
            raise PtsError(f"{source}: expected 'x y' per line, got {ln!r}")
        try:
            x, y = Decimal(parts[0]), Decimal(parts[1])
        except InvalidOperation:
            raise PtsError(f"{source}: non-numeric coordinate in {ln!r}") from None
        if not (x.is_finite() and y.is_finite()):
            raise PtsError(f"{source}: non-finite coordinate in {ln!r}")
        points.append((_to_code(x), _to_code(y)))
    if not points:
        raise PtsError(f"{source}: no points")
    if declared is not None and declared != len(points):
        raise PtsError(f"{source}: header says n_points={declared} but the file has {len(points)}")
    if n_points is not None and len(points) != n_points:
        raise PtsError(f"{source}: expected {n_points} points, found {len(points)}")
    out = np.asarray(points, dtype=np.float32)
    if not np.isfinite(out).all():
        raise PtsError(f"{source}: coordinate too large for float32")
    return out


def _to_code(v: Decimal) -> float:
    # Subtract the offset in exact decimal arithmetic: in float64, 1 + 3e-22 - 1 would be 0.
    with localcontext() as ctx:
        ctx.prec = 200
        return float(v - _OFFSET)


def read_pts(path: str | os.PathLike, n_points: int | None = None) -> np.ndarray:
    """Read a `.pts` file; see `parse_pts`. Raises PtsError on any problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PtsError(f"{path}: cannot read ({e.__class__.__name__}: {e})") from None
    return parse_pts(text, source=str(path), n_points=n_points)


def format_pts(points: np.ndarray, header: bool = True) -> str:
    """Format (K, 2) 0-based points as `.pts` text (1-based in the file).

    `repr`-exact float formatting keeps a read -> write -> read round trip exact.
    """
    pts = np.asarray(points, dtype=np.float32)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must have shape (K, 2), got {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("points must be finite")
    rows = [f"{_fmt(x)} {_fmt(y)}" for x, y in pts.astype(np.float64)]
    if header:
        rows = ["version: 1", f"n_points: {len(pts)}", "{", *rows, "}"]
    return "\n".join(rows) + "\n"


def _fmt(code_value: float) -> str:
    """Shortest text for the file value (code value + 1) that parses back to the same float32."""
    target = np.float32(code_value)
    with localcontext() as ctx:
        ctx.prec = 200
        exact = Decimal(float(target)) + _OFFSET  # exact: no float rounding of the offset
        # Usual values: a short float repr works. Values far below 1 pixel need more digits than a float has.
        candidates = itertools.chain((f"{float(exact):.{d}g}" for d in range(6, 18)),
                                     (_strip(f"{exact:.{d}g}") for d in range(18, 60)))
        for s in candidates:  # lazily: the first float candidate almost always fits
            if np.float32(_to_code(Decimal(s))) == target:
                return s
        return str(exact)


def _strip(s: str) -> str:
    """Drop trailing zeros of a plain decimal (Decimal's 'g' keeps them)."""
    return s.rstrip("0").rstrip(".") if "." in s and "e" not in s.lower() else s


def write_pts(path: str | os.PathLike, points: np.ndarray, header: bool = True) -> None:
    """Write (K, 2) 0-based points to a `.pts` file atomically."""
    atomic_write_text(path, format_pts(points, header=header))
