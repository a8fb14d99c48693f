"""Settings shared by benchmarks/conftest.py and the benchmark modules (not a test module itself)."""

from __future__ import annotations

import os

import pytest

SPHERE_RADIUS = 0.6
MIN_SIZE = 8  # smaller grids may miss the sphere altogether


def bench_sizes(default: tuple[int, ...]) -> tuple[int, ...]:
    """The grid sizes to benchmark: ``default``, unless FASTSDF_BENCH_SIZES (e.g. "128,256") says otherwise.

    The variable replaces the sizes of every benchmark, CPU and CUDA alike; it is meant for smoke runs.
    """
    raw = os.environ.get("FASTSDF_BENCH_SIZES", "").strip()
    if not raw:
        return default
    try:
        sizes = tuple(int(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise pytest.UsageError(f"FASTSDF_BENCH_SIZES must be comma-separated integers, got {raw!r}") from None
    if not sizes or min(sizes) < MIN_SIZE:
        raise pytest.UsageError(f"FASTSDF_BENCH_SIZES needs sizes of at least {MIN_SIZE}, got {raw!r}")
    return sizes


def cpu_threads() -> int:
    """OpenMP threads fastsdf's CPU kernels use: OMP_NUM_THREADS, else the cores this process may run on."""
    try:
        return int(os.environ["OMP_NUM_THREADS"].split(",")[0])
    except (KeyError, ValueError):
        if hasattr(os, "sched_getaffinity"):
            return len(os.sched_getaffinity(0))
        return os.cpu_count() or 1
