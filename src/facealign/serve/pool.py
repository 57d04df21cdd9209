"""A bounded pool of aligners for the service: inference off the event loop, with admission control.

`workers` threads each own one `FaceAligner` (no model is shared between threads). At most `workers + queue`
requests are admitted at once; past that `try_admit` says no and the app answers 503, so memory stays
bounded (at most `capacity` bodies of at most the upload limit) however fast requests arrive.
"""
from __future__ import annotations

import queue as queue_mod
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np

from facealign.inference.aligner import Face, FaceAligner


@dataclass(frozen=True)
class Result:
    """One request's faces and where its time went (milliseconds)."""

    faces: list[Face]
    queue_ms: float
    detect_ms: float
    landmarks_ms: float


class AlignerPool:
    """`workers` aligners behind a thread pool; admission is counted, not queued without bound."""

    def __init__(self, factory: Callable[[], FaceAligner], workers: int = 1, queue: int = 32):
        if workers < 1 or queue < 0:
            raise ValueError(f"need workers >= 1 and queue >= 0, got {workers} and {queue}")
        self.aligners: queue_mod.SimpleQueue[FaceAligner] = queue_mod.SimpleQueue()
        first = factory()
        self.info = first  # name, card, backend, detector for /v1/models
        self.aligners.put(first)
        for _ in range(workers - 1):
            self.aligners.put(factory())
        self.workers, self.capacity = workers, workers + queue
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="facealign-infer")
        self._lock = threading.Lock()
        self.admitted = 0  # requests inside the server (reading, waiting or running)
        self.running = 0
        self.served = 0
        self.refused = 0

    def try_admit(self) -> bool:
        """Take a slot for one request; False when all `capacity` slots are taken (answer 503)."""
        with self._lock:
            if self.admitted >= self.capacity:
                self.refused += 1
                return False
            self.admitted += 1
            return True

    def release(self) -> None:
        """Give back a slot taken by `try_admit` (always exactly once per admitted request)."""
        with self._lock:
            self.admitted -= 1

    def stats(self) -> dict:
        with self._lock:
            return {"workers": self.workers, "capacity": self.capacity, "admitted": self.admitted,
                    "running": self.running, "served": self.served, "refused_503": self.refused}

    def submit(self, rgb: np.ndarray, boxes: np.ndarray | None, min_score: float | None) -> Future:
        """Future of a `Result` for one decoded image; the caller holds an admitted slot."""
        return self.executor.submit(self._run, rgb, boxes, min_score, time.perf_counter())

    def _run(self, rgb, boxes, min_score, t_submit) -> Result:
        t0 = time.perf_counter()
        aligner = self.aligners.get()
        with self._lock:
            self.running += 1
        try:
            if boxes is None:
                dets = aligner.detect(rgb, min_score=min_score)
            else:
                dets = None
            t1 = time.perf_counter()
            faces = aligner.align([rgb], [dets])[0] if dets is not None else aligner.predict(rgb, boxes=boxes)
            t2 = time.perf_counter()
            return Result(faces, (t0 - t_submit) * 1e3, (t1 - t0) * 1e3, (t2 - t1) * 1e3)
        finally:
            self.aligners.put(aligner)
            with self._lock:
                self.running -= 1
                self.served += 1

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
