"""Floating-point state: flush denormals inside our own compute, restore the caller's setting after.

Denormal floats (tiny activations and gradients) make x86 CPU math many times slower, so training
and inference run with flush-to-zero. The flag is process-global; a library must not leave it
changed behind the caller's back, so it is set per call and restored.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

_FLOAT32_DENORMAL = 1e-39  # below float32's smallest normal number (1.18e-38)


def flushing_denormals() -> bool:
    """True if denormal float32 results are currently flushed to zero in this thread."""
    return bool((torch.tensor([_FLOAT32_DENORMAL], dtype=torch.float32) * 1.0).item() == 0.0)


@contextmanager
def flush_denormals() -> Iterator[None]:
    """Flush denormals to zero inside the block; the previous setting is restored on exit."""
    was = flushing_denormals()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(was)
