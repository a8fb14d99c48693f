"""Shared fixtures and settings for the pytest-benchmark suite in benchmarks/.

The suite is not part of the normal test run (pyproject.toml has ``testpaths = ["tests"]``); run it
explicitly, see benchmarks/README.md:

    .venv/bin/pytest benchmarks/ --benchmark-json=benchmarks/results/cpu.json

Environment (meant for quick smoke runs; read by bench_common):
    FASTSDF_BENCH_SIZES: comma-separated grid sizes (e.g. "128" or "128,256") that replace the
        default sizes of every benchmark, CPU and CUDA alike.
    FASTSDF_BENCH_POINTS: comma-separated query point counts (e.g. "10000") that replace the
        default counts of the mesh SDF benchmarks, CPU and CUDA alike.
    FASTSDF_BENCH_MESHES: comma-separated mesh names (e.g. "suzanne,icosphere20k") that the mesh
        SDF benchmarks run on, instead of every mesh of shared/meshes and the icosphere.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench_common import ICOSPHERE, SPHERE_RADIUS, MeshWorkloads, cpu_threads, cuda_ready


def pytest_configure(config: pytest.Config) -> None:
    # pytest-benchmark writes --benchmark-json=PATH at the end without creating its folder.
    path = config.getoption("benchmark_json", None)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for name in ("test_bench_fit", "test_bench_models"):
        module = sys.modules.get(name)
        for line in module.summary_lines() if module is not None else []:
            terminalreporter.write_line(line)


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    """Adds what benchmarks/make_results.py reports beside pytest-benchmark's own machine info."""
    import fastsdf
    from fastsdf import _backend

    info: dict[str, Any] = {
        "version": fastsdf.__version__,
        "cpu_threads": cpu_threads(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "openmp": bool(_backend.has_cpu() and getattr(_backend.cpu(), "has_openmp", False)),
        "numpy": np.__version__,
        "gpu": None,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        if cuda_ready() is None:
            info["gpu"] = torch.cuda.get_device_name()
    except Exception:  # noqa: BLE001 - machine info must never fail the run
        pass
    machine_info["fastsdf"] = info


def _numpy_sphere(n: int) -> np.ndarray:
    """sqrt(x^2 + y^2 + z^2) - r over linspace(-1, 1, n) per axis, float32, by broadcasting."""
    x2 = np.square(np.linspace(-1.0, 1.0, n, dtype=np.float32))
    volume = (x2[:, None, None] + x2[None, :, None]) + x2[None, None, :]  # the only n^3 allocation
    np.sqrt(volume, out=volume)
    volume -= np.float32(SPHERE_RADIUS)
    return volume


def _torch_sphere(n: int, device: Any) -> Any:
    """The same grid built on ``device`` with torch (1024^3 float32 is 4 GiB: never via NumPy)."""
    import torch

    x2 = torch.linspace(-1.0, 1.0, n, dtype=torch.float64, device=device).to(torch.float32).square_()
    volume = (x2[:, None, None] + x2[None, :, None]) + x2[None, None, :]  # the only n^3 allocation
    volume.sqrt_().sub_(SPHERE_RADIUS)
    if volume.is_cuda:
        torch.cuda.synchronize(volume.device)
    return volume


@pytest.fixture(scope="session")
def sphere_grid() -> Callable[[int], np.ndarray]:
    """``sphere_grid(n)``: the float32 NumPy sphere SDF grid of size n^3, built once per session."""
    cache: dict[int, np.ndarray] = {}

    def get(n: int) -> np.ndarray:
        if n not in cache:
            cache[n] = _numpy_sphere(n)
        return cache[n]

    return get


def _cuda_cache(make: Callable[[int], Any], keep_one: bool = False) -> Iterator[Callable[[int], Any]]:
    """A session cache of ``make(n)`` on the GPU (only the latest entry with ``keep_one``), freed at the
    end; skips the test when there is no CUDA device or fastsdf._cuda is not built."""
    reason = cuda_ready()
    if reason is not None:
        pytest.skip(reason)
    import torch

    cache: dict[int, Any] = {}

    def get(n: int) -> Any:
        if n not in cache:
            if keep_one:
                cache.clear()
            cache[n] = make(n)
        return cache[n]

    yield get
    cache.clear()
    torch.cuda.empty_cache()


@pytest.fixture(scope="session")
def cuda_sphere_grid() -> Iterator[Callable[[int], Any]]:
    """``cuda_sphere_grid(n)``: the same grid as a CUDA tensor, built once per session on the GPU."""
    yield from _cuda_cache(lambda n: _torch_sphere(n, "cuda"))


@pytest.fixture(scope="session")
def mesh_workload() -> MeshWorkloads:
    """``mesh_workload(name, n)``: mesh ``name`` normalised, n query points on it and fastsdf's reference
    distances for them (bench_common.MeshWorkload); ``.mesh(name)`` and ``.grid_check(name, n, count)``."""
    return MeshWorkloads()


@pytest.fixture(scope="session")
def cuda_mesh_points(mesh_workload: MeshWorkloads) -> Iterator[Callable[[int], Any]]:
    """``cuda_mesh_points(n)``: the n query points of the icosphere workload as a CUDA float32 tensor."""
    import torch

    yield from _cuda_cache(lambda n: torch.from_numpy(mesh_workload(ICOSPHERE, n).points).to("cuda"), keep_one=True)
