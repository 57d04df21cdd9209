"""The service's settings: the only defaults (the CLI overrides them; docs/serve.md documents them)."""
from __future__ import annotations

import os
from dataclasses import dataclass

from facealign.detection.detectors import DEFAULT_DETECTOR


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"  # loopback: reachable from this machine only
    port: int = 8000
    model: str = "default"
    backend: str | None = None  # None: the model's measured default (facealign.inference.backends.default_backend)
    device: str = "cpu"
    workers: int = 0  # inference threads, each with its own model (0: one per CPU core, at most 4); CPU threads
    # are split between them. Measured (docs/serve.md): on 2 cores, 2 workers served 1.6-1.7x the requests of 1,
    # since dlib's detector is single-threaded.
    queue: int = 32  # admitted requests beyond the running ones; past workers + queue: 503 + Retry-After
    detector: str = DEFAULT_DETECTOR  # a name from facealign.detection.detectors.DETECTORS
    upsample: int = 1
    min_score: float | None = None  # None: the detector's measured default (a request may override it)
    max_upload_mb: float = 20.0  # bodies over this are refused before being read whole
    max_megapixels: float = 40.0  # decoded image size limit, checked from the header (a 12 Mpx photo fits)
    max_boxes: int = 64  # boxes given with one request
    timeout_s: float = 30.0  # time to receive a body, and time its inference may take once started
    cors_origins: tuple[str, ...] = ()  # none: no CORS headers at all

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2 ** 20)

    @property
    def worker_count(self) -> int:
        """`workers`, with 0 resolved to one per CPU core (at most 4)."""
        return self.workers or max(1, min(4, os.cpu_count() or 1))

    def check(self) -> "ServeConfig":
        """Clear errors for impossible settings, before any model loads."""
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")
        if self.workers < 0 or self.queue < 0:
            raise ValueError(f"workers and queue must be >= 0, got {self.workers} and {self.queue}")
        for name in ("max_upload_mb", "max_megapixels", "timeout_s", "max_boxes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        return self
