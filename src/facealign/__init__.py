"""facealign: 68-point facial landmark detection.

`facealign.FaceAligner` and `facealign.Face` are loaded on first use (module `__getattr__`), so
`import facealign` stays light (no torch).
"""
from facealign.version import __version__

_LAZY = {"FaceAligner": "facealign.inference.aligner", "Face": "facealign.inference.aligner"}
__all__ = ["FaceAligner", "Face", "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'facealign' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
