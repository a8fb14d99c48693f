"""Marching cubes benchmarks: fastsdf against scikit-image and PyMCubes on a sphere SDF grid.

Each grid size is one pytest-benchmark group, so the peers are compared side by side:

    marching_cubes-cpu-{n}   fastsdf.marching_cubes on a NumPy float32 grid (OpenMP threads),
                             skimage.measure.marching_cubes and mcubes.marching_cubes (one thread),
                             n = 128, 256, 512
    marching_cubes-cuda-{n}  fastsdf.marching_cubes on a CUDA tensor, n = 512, 1024
                             (skipped without a CUDA device and fastsdf._cuda)

Run them with ``.venv/bin/pytest benchmarks/``, see benchmarks/README.md; set FASTSDF_BENCH_SIZES
(e.g. "128") to run fewer sizes.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import fastsdf
from bench_common import SPHERE_RADIUS, bench_sizes, cpu_threads

pytest.importorskip("pytest_benchmark")

CPU_SIZES = bench_sizes((128, 256, 512))
CUDA_SIZES = bench_sizes((512, 1024))
LEVEL = 0.0


def cpu_rounds(n: int) -> int:
    """Timed rounds per CPU benchmark: enough for a stable median, few where one call takes seconds."""
    return 20 if n <= 128 else 10 if n <= 256 else 5


def cuda_rounds(n: int) -> int:
    return 20 if n <= 512 else 10


@dataclass
class Peer:
    """One implementation under test: ``run(volume) -> (verts, faces)``."""

    name: str
    version: str
    threads: int | None  # CPU threads it uses; None on a GPU
    run: Callable[[np.ndarray], tuple[Any, Any]]


def _fastsdf() -> Peer:
    return Peer("fastsdf", fastsdf.__version__, cpu_threads(), lambda v: fastsdf.marching_cubes(v, LEVEL))


def _skimage() -> Peer:
    measure = pytest.importorskip("skimage.measure")

    def run(volume: np.ndarray) -> tuple[Any, Any]:
        verts, faces, _normals, _values = measure.marching_cubes(volume, LEVEL)
        return verts, faces

    return Peer("skimage", importlib.metadata.version("scikit-image"), 1, run)


def _pymcubes() -> Peer:
    mcubes = pytest.importorskip("mcubes")
    return Peer("PyMCubes", importlib.metadata.version("PyMCubes"), 1, lambda v: mcubes.marching_cubes(v, LEVEL))


CPU_PEERS: dict[str, Callable[[], Peer]] = {"fastsdf": _fastsdf, "skimage": _skimage, "pymcubes": _pymcubes}


def _record(benchmark: Any, peer: Peer, n: int, device: str, verts: Any, faces: Any) -> None:
    benchmark.extra_info.update(
        peer=peer.name,
        version=peer.version,
        device=device,
        n=n,
        threads=peer.threads,
        vertices=int(verts.shape[0]),
        faces=int(faces.shape[0]),
        input=f"sphere SDF (r={SPHERE_RADIUS}) on a {n}^3 float32 grid over [-1, 1]^3, level {LEVEL}",
    )


@pytest.mark.parametrize(
    ("peer_key", "n"),
    [
        pytest.param(key, n, id=f"{key}-{n}", marks=pytest.mark.benchmark(group=f"marching_cubes-cpu-{n}"))
        for n in CPU_SIZES
        for key in CPU_PEERS
    ],
)
def test_marching_cubes_cpu(benchmark: Any, sphere_grid: Callable[[int], np.ndarray], peer_key: str, n: int) -> None:
    peer = CPU_PEERS[peer_key]()
    volume = sphere_grid(n)
    verts, faces = benchmark.pedantic(peer.run, args=(volume,), rounds=cpu_rounds(n), iterations=1, warmup_rounds=1)
    assert len(verts) > 0 and len(faces) > 0
    _record(benchmark, peer, n, "cpu", verts, faces)


@pytest.mark.cuda
@pytest.mark.parametrize(
    "n",
    [pytest.param(n, id=f"fastsdf-{n}", marks=pytest.mark.benchmark(group=f"marching_cubes-cuda-{n}")) for n in CUDA_SIZES],
)
def test_marching_cubes_cuda(benchmark: Any, cuda_sphere_grid: Callable[[int], Any], n: int) -> None:
    import torch

    volume = cuda_sphere_grid(n)

    def run(v: Any) -> tuple[Any, Any]:
        out = fastsdf.marching_cubes(v, LEVEL)
        torch.cuda.synchronize()  # time the finished GPU work, not just its launch
        return out

    # warmup_rounds=1 also takes the CUDA context and module loading out of the timed rounds.
    verts, faces = benchmark.pedantic(run, args=(volume,), rounds=cuda_rounds(n), iterations=1, warmup_rounds=1)
    assert verts.is_cuda and len(verts) > 0 and len(faces) > 0
    peer = Peer("fastsdf", fastsdf.__version__, None, run)
    _record(benchmark, peer, n, "cuda", verts, faces)
    benchmark.extra_info["gpu"] = torch.cuda.get_device_name(volume.device)
