"""facealign: 68-point facial landmark detection."""
__version__ = "0.1.0"
