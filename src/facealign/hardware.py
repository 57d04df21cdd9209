"""What the machine can do: CPU model and instruction-set features, read at run time, never assumed.

These machines vary (seen: a Xeon with AVX-512 and AMX, an AMD EPYC with AVX2 only). bf16 autocast is
fast only where the CPU has native bf16 matrix instructions (AMX or AVX512-BF16); elsewhere PyTorch
emulates it, and on an AVX2-only CPU a bf16-autocast forward pass is many times slower than fp32
(docs/benchmarks-training.md).
"""
from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path

# CPU flags (as /proc/cpuinfo names them) that give native bf16 matrix math.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def _cpuinfo(field: str) -> str | None:
    """The first CPU's `field` from /proc/cpuinfo (None off Linux or when absent)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The first CPU's feature flags from /proc/cpuinfo (empty off Linux)."""
    return frozenset((_cpuinfo("flags") or "").split())


def cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or "unknown"


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cpu_has_fast_bf16(flags: frozenset[str] | None = None) -> bool:
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in BF16_FLAGS)


def cpu_summary() -> dict:
    """Model, cores and the features that matter for speed, for run records and benchmark tables."""
    flags = cpu_flags()
    return {"cpu": cpu_model(), "available_cores": available_cpus(),
            "features": sorted(f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile",
                                           "amx_bf16", "amx_int8") if f in flags)}
