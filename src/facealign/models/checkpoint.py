"""Training checkpoints: atomic save, integrity hash, safe load.

A checkpoint is a plain `torch.save` dict (loadable with `torch.load(weights_only=True)`)
plus an `integrity` entry: the SHA-256 of every key, value and tensor byte in it.
Truncated files fail to unpickle; flipped bytes inside tensor data change the
hash. Either way `load_checkpoint` raises `CheckpointError` instead of handing
back damaged weights. Loading never executes code (`weights_only=True`).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from facealign.atomic import atomic_path

INTEGRITY_KEY = "integrity"


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, corrupt or not a facealign checkpoint."""


def _update(h, obj) -> None:
    """Feed a nested dict/list/tensor/scalar structure into hash `h`, order-sensitively."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(b"D%d" % len(obj))
        for k, v in obj.items():
            h.update(repr(k).encode())
            _update(h, v)
    elif isinstance(obj, (list, tuple)):
        h.update(b"L%d" % len(obj))
        for v in obj:
            _update(h, v)
    else:
        h.update(repr(obj).encode())


def state_digest(state: dict) -> str:
    """SHA-256 (hex) of a checkpoint dict, ignoring its own integrity entry."""
    h = hashlib.sha256()
    _update(h, {k: v for k, v in state.items() if k != INTEGRITY_KEY})
    return h.hexdigest()


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write `state` plus its digest to `path` atomically (temporary file, then rename)."""
    state = {**state, INTEGRITY_KEY: {"sha256": state_digest(state)}}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
        with open(tmp, "rb") as f:  # on disk before the rename, so a crash never leaves a renamed empty file
            os.fsync(f.fileno())


def load_checkpoint(path: str | Path, verify: bool = True) -> dict:
    """Load a checkpoint dict on the CPU; CheckpointError if unreadable or its digest does not match.

    Checkpoints written before digests existed (no `integrity` entry) load unverified.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, damaged pickle, or a pickle that wants to run code
        raise CheckpointError(f"{path}: unreadable checkpoint, truncated or corrupt "
                              f"({e.__class__.__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a facealign checkpoint (a {type(state).__name__}, not a dict)")
    stored = state.get(INTEGRITY_KEY)
    if verify and stored is not None:
        if not isinstance(stored, dict) or stored.get("sha256") != state_digest(state):
            raise CheckpointError(f"{path}: corrupt checkpoint (SHA-256 of its contents does not match the "
                                  f"digest saved with it)")
    return state
