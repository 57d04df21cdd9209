"""facealign: 68-point facial landmark detection.

`facealign.FaceAligner` and `facealign.Face` are loaded on first use (module `__getattr__`), so
`import facealign` stays light (no torch).
"""
from facealign._lazy import lazy_attributes
from facealign.version import __version__

_LAZY = {"FaceAligner": "facealign.inference.aligner", "Face": "facealign.inference.aligner"}
__all__ = ["FaceAligner", "Face", "__version__"]


__getattr__, __dir__ = lazy_attributes("facealign", _LAZY, globals())
