"""Landmark schemes: how many points a face has, which swap under a horizontal flip, and which normalise NME.

`get_scheme(name)` resolves a registry name (`SCHEMES`: ibug68, the default; wflw98; cofw29) or the path of a
small JSON file describing a user scheme (docs/data.md, "Landmark schemes"):

    {"name": "five", "num_points": 5, "mirror_pairs": [[0, 1], [3, 4]], "norm_points": [0, 1],
     "norm": "inter_ocular", "regions": {"eyes": [0, 1], "nose": [2], "mouth": [3, 4]}}

`norm` (default inter_ocular) says which normaliser `norm_points` are for: inter_ocular (the distance between
two points, e.g. the outer eye corners) or inter_pupil (two pupils). Indices are 0-based; every index not in a
mirror pair maps to itself under a flip. `facealign.data.scheme` keeps the 68-point constants; `ibug68()` is built
from them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facealign.data import scheme as ibug

DEFAULT_SCHEME = "ibug68"
NORMS = ("inter_ocular", "inter_pupil")  # the normalisers a scheme's norm_points can serve


class SchemeError(ValueError):
    """An unknown scheme name or a malformed scheme file (a user error: one line, no traceback)."""


@dataclass(frozen=True)
class LandmarkScheme:
    """A landmark markup. Left/right are the subject's sides.

    eye_corners: the outer eye corners (the `inter_ocular` normaliser), or None.
    pupils: two groups of points whose centroids are the pupils (`inter_pupil`), or None.
    norm: the scheme's standard NME normaliser (`facealign.evaluation.metrics.NORMALIZERS`).
    """

    name: str
    num_points: int
    mirror_pairs: tuple[tuple[int, int], ...]
    norm: str = "inter_ocular"
    eye_corners: tuple[int, int] | None = None
    pupils: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    regions: dict[str, tuple[int, ...]] = field(default_factory=dict, compare=False)
    description: str = ""

    def __post_init__(self):
        _check(self)

    @property
    def mirror_permutation(self) -> np.ndarray:
        """After flipping x, point i of the flipped face is point perm[i] of the original."""
        perm = np.arange(self.num_points)
        for a, b in self.mirror_pairs:
            perm[a], perm[b] = b, a
        perm.setflags(write=False)
        return perm

    @property
    def norm_points(self) -> tuple[int, ...]:
        """The points of the standard normaliser (for the card and `data summary`)."""
        if self.norm == "inter_pupil":
            return tuple(i for group in self.pupils for i in group)
        return tuple(self.eye_corners or ())

    def flip(self, points: np.ndarray, width: float) -> np.ndarray:
        """Mirror (..., K, 2) pixel-centre landmarks inside an image `width` pixels wide (x -> width - 1 - x),
        relabelled so point i is again the scheme's i-th point."""
        out = np.array(points, dtype=np.float32, copy=True)
        out[..., 0] = (width - 1) - out[..., 0]
        return out[..., self.mirror_permutation, :]

    def to_dict(self) -> dict:
        """JSON form (model cards, `from_dict`)."""
        return {"name": self.name, "num_points": self.num_points, "mirror_pairs": [list(p) for p in self.mirror_pairs],
                "norm": self.norm, "norm_points": list(self.norm_points),
                "eye_corners": None if self.eye_corners is None else list(self.eye_corners),
                "pupils": None if self.pupils is None else [list(g) for g in self.pupils],
                "regions": {k: list(v) for k, v in self.regions.items()}, "description": self.description}


def _check(s: LandmarkScheme) -> None:
    k = s.num_points
    if not isinstance(k, int) or k < 1:
        raise SchemeError(f"scheme {s.name!r}: num_points must be a positive integer, got {k!r}")
    seen: set[int] = set()
    for pair in s.mirror_pairs:
        if len(pair) != 2 or pair[0] == pair[1] or seen & set(pair):
            raise SchemeError(f"scheme {s.name!r}: mirror pair {list(pair)} is not two distinct, unpaired points")
        seen |= set(pair)
    if s.norm not in NORMS:
        raise SchemeError(f"scheme {s.name!r}: unknown norm {s.norm!r}; valid: {', '.join(NORMS)}")
    if (s.norm == "inter_ocular" and s.eye_corners is None) or (s.norm == "inter_pupil" and s.pupils is None):
        raise SchemeError(f"scheme {s.name!r}: norm {s.norm} needs its norm_points")
    used = [*seen, *(s.eye_corners or ()), *(i for g in (s.pupils or ()) for i in g),
            *(i for r in s.regions.values() for i in r)]
    bad = sorted({i for i in used if not (isinstance(i, int) and 0 <= i < k)}, key=str)
    if bad:
        raise SchemeError(f"scheme {s.name!r}: point indices {bad} outside 0..{k - 1}")


def _ranges(regions: dict[str, range]) -> dict[str, tuple[int, ...]]:
    return {name: tuple(r) for name, r in regions.items()}


def _mirrored(n: int, first: int = 0) -> tuple[tuple[int, int], ...]:
    """Pairs of a left-to-right contour of n points starting at `first`: (first, last), (first+1, last-1), ..."""
    return tuple((first + i, first + n - 1 - i) for i in range(n // 2))


def ibug68() -> LandmarkScheme:
    """The iBUG 300-W 68-point markup (`facealign.data.scheme`); NME by the outer eye corners 36, 45."""
    return LandmarkScheme("ibug68", ibug.NUM_LANDMARKS, ibug._MIRROR_PAIRS, "inter_ocular",
                          (ibug.RIGHT_EYE_OUTER, ibug.LEFT_EYE_OUTER), (tuple(ibug.RIGHT_EYE), tuple(ibug.LEFT_EYE)),
                          _ranges(ibug.REGIONS), "iBUG 300-W 68-point markup")


# WFLW (Wu et al. 2018, 98 points). Flip pairs as in HRNet-Facial-Landmark-Detection lib/utils/transforms.py
# MATCHED_PARTS["WFLW"] (0-based) and mmpose configs/_base_/datasets/wflw.py; NME normaliser: the outer eye
# corners 60 and 72, as HRNet lib/core/evaluation.py compute_nme (L == 98) and mmpose's NME metric ('wflw':
# [60, 72]). Points 96 and 97 are the pupils.
WFLW_PAIRS = (
    *_mirrored(33, 0),  # contour 0-32, chin 16
    (33, 46), (34, 45), (35, 44), (36, 43), (37, 42),  # eyebrows, upper edge
    (38, 50), (39, 49), (40, 48), (41, 47),  # eyebrows, lower edge
    (55, 59), (56, 58),  # nose bottom (51-54 bridge and 57 on the midline)
    (60, 72), (61, 71), (62, 70), (63, 69), (64, 68), (65, 75), (66, 74), (67, 73),  # eyes
    (76, 82), (77, 81), (78, 80), (87, 83), (86, 84),  # outer lips
    (88, 92), (89, 91), (95, 93),  # inner lips
    (96, 97),  # pupils
)


def wflw98() -> LandmarkScheme:
    regions = {"contour": range(0, 33), "right_eyebrow": range(33, 42), "left_eyebrow": range(42, 51),
               "nose": range(51, 60), "right_eye": range(60, 68), "left_eye": range(68, 76),
               "outer_lips": range(76, 88), "inner_lips": range(88, 96), "pupils": range(96, 98)}
    return LandmarkScheme("wflw98", 98, WFLW_PAIRS, "inter_ocular", (60, 72), ((96,), (97,)), _ranges(regions),
                          "WFLW 98-point markup (Wu et al. 2018)")


# COFW (Burgos-Artizzu et al. 2013, 29 points). Flip pairs as in HRNet lib/utils/transforms.py MATCHED_PARTS["COFW"]
# (1-based there) and mmpose configs/_base_/datasets/cofw.py (swap): eyebrow corners 0-3, eyebrow top/bottom 4-7,
# outer eye corners 8, 9, inner corners 10, 11, lids 12-15, pupils 16, 17, nose 18-21, mouth 22-27, chin 28.
# The pupils 16, 17 are the one swapped pair between the lids (12-15) and the nose sides (18, 19) in both tables.
# COFW's standard normaliser is the inter-pupil distance (the evaluation of Burgos-Artizzu et al. 2013, RCPR; that
# code was not re-read here); HRNet lib/core/evaluation.py (L == 29), mmpose's NME metric ('cofw': [8, 9]) and
# PIPNet normalise by the outer eye corners 8, 9 instead: `facealign.evaluation.metrics`' inter_ocular for this scheme.
COFW_PAIRS = ((0, 1), (2, 3), (4, 6), (5, 7), (8, 9), (10, 11), (12, 14), (13, 15), (16, 17), (18, 19), (22, 23))


def cofw29() -> LandmarkScheme:
    regions = {"eyebrows": tuple(range(0, 8)), "right_eye": (8, 10, 12, 13, 16), "left_eye": (9, 11, 14, 15, 17),
               "nose": tuple(range(18, 22)), "mouth": tuple(range(22, 28)), "chin": (28,)}
    return LandmarkScheme("cofw29", 29, COFW_PAIRS, "inter_pupil", (8, 9), ((16,), (17,)), regions,
                          "COFW 29-point markup (Burgos-Artizzu et al. 2013)")


SCHEMES = {"ibug68": ibug68, "wflw98": wflw98, "cofw29": cofw29}


def from_dict(d: dict, source: str = "scheme") -> LandmarkScheme:
    """A scheme from its JSON form: a user file (num_points, mirror_pairs, norm_points, optional norm, name,
    regions) or a model card's `scheme` (`LandmarkScheme.to_dict`)."""
    if not isinstance(d, dict):
        raise SchemeError(f"{source}: a scheme is a JSON object")
    unknown = set(d) - {"name", "num_points", "mirror_pairs", "norm", "norm_points", "eye_corners", "pupils",
                        "regions", "description"}
    if unknown:
        raise SchemeError(f"{source}: unknown scheme fields {', '.join(sorted(unknown))}")
    if "num_points" not in d or "norm_points" not in d:
        raise SchemeError(f"{source}: a scheme needs num_points and norm_points")
    norm, points = d.get("norm", "inter_ocular"), d["norm_points"]
    if not (isinstance(points, list) and len(points) == 2):
        raise SchemeError(f"{source}: norm_points must be two point indices, got {points!r}")
    eyes = d.get("eye_corners", points if norm == "inter_ocular" else None)
    pupils = d.get("pupils", [[points[0]], [points[1]]] if norm == "inter_pupil" else None)
    try:
        return LandmarkScheme(
            str(d.get("name", Path(source).stem)), d["num_points"],
            tuple(tuple(p) for p in d.get("mirror_pairs", [])), norm, None if eyes is None else tuple(eyes),
            None if pupils is None else tuple(tuple(g) for g in pupils),
            {k: tuple(v) for k, v in d.get("regions", {}).items()}, str(d.get("description", "")))
    except TypeError as e:
        raise SchemeError(f"{source}: malformed scheme ({e})") from None


def get_scheme(spec: str | dict | LandmarkScheme | None = None) -> LandmarkScheme:
    """A scheme from a registry name, a JSON file's path, a card's dict, or a scheme (None: the default)."""
    if isinstance(spec, LandmarkScheme):
        return spec
    if isinstance(spec, dict):
        return from_dict(spec, spec.get("name", "scheme"))
    spec = DEFAULT_SCHEME if spec is None else str(spec)
    if spec in SCHEMES:
        return SCHEMES[spec]()
    if spec.endswith(".json"):
        path = Path(spec)
        if not path.is_file():
            raise SchemeError(f"scheme file {path} not found")
        try:
            return from_dict(json.loads(path.read_text()), str(path))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SchemeError(f"{path}: not a JSON scheme ({e.__class__.__name__})") from None
    raise SchemeError(f"unknown landmark scheme {spec!r}; valid: {', '.join(SCHEMES)}, or a scheme .json file")
