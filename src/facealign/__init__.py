"""facealign: 68-point facial landmark detection.

`facealign.FaceAligner` and `facealign.Face` are loaded on first use (module `__getattr__`), so
`import facealign` stays light (no torch).
"""
__version__ = "0.1.0"

_LAZY = {"FaceAligner": "facealign.predict", "Face": "facealign.predict"}
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
