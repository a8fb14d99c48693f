"""Settings and helpers shared by benchmarks/conftest.py and the benchmark modules (not a test module itself)."""

from __future__ import annotations

import gc
import os
import re
import resource
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

SPHERE_RADIUS = 0.6
MIN_SIZE = 8  # smaller grids may miss the sphere altogether

# Meshes: the shared test models, normalised like fastsdf.normalize does, plus a generated icosphere.
MESH_DIR = Path(__file__).resolve().parents[2] / "shared" / "meshes"
ICOSPHERE = "icosphere20k"  # trimesh.creation.icosphere(subdivisions=5): 10,242 vertices, 20,480 faces
UNIT_SPHERE_MARGIN = 1.03  # after centring the bounding box, the farthest vertex lies at 1 / 1.03
NEAR_SURFACE_STD = 0.01
SLOW_CALL_S = 60.0  # a call slower than this is timed in 1 round instead of 3 (and no separate warm-up)

T = TypeVar("T")


def _env_list(name: str, convert: Callable[[str], T], what: str) -> tuple[T, ...] | None:
    """The comma-separated values of environment variable ``name``, None when it is unset or blank."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        values = tuple(convert(part.strip()) for part in raw.split(",") if part.strip())
    except ValueError:
        raise pytest.UsageError(f"{name} must be comma-separated {what}, got {raw!r}") from None
    if not values:
        raise pytest.UsageError(f"{name} must be comma-separated {what}, got {raw!r}")
    return values


def bench_sizes(default: tuple[int, ...]) -> tuple[int, ...]:
    """The grid sizes to benchmark: ``default``, unless FASTSDF_BENCH_SIZES (e.g. "128,256") says otherwise.

    The variable replaces the sizes of every benchmark, CPU and CUDA alike; it is meant for smoke runs.
    """
    sizes = _env_list("FASTSDF_BENCH_SIZES", int, "integers")
    if sizes is None:
        return default
    if min(sizes) < MIN_SIZE:
        raise pytest.UsageError(f"FASTSDF_BENCH_SIZES needs sizes of at least {MIN_SIZE}, got {sizes}")
    return sizes


def bench_points(default: tuple[int, ...]) -> tuple[int, ...]:
    """Query point counts: ``default``, unless FASTSDF_BENCH_POINTS (e.g. "10000") replaces them.

    Like FASTSDF_BENCH_SIZES, the variable replaces the counts of every benchmark (CPU and CUDA).
    """
    counts = _env_list("FASTSDF_BENCH_POINTS", int, "integers")
    if counts is None:
        return default
    if min(counts) < 2:
        raise pytest.UsageError(f"FASTSDF_BENCH_POINTS needs at least 2 points, got {counts}")
    return tuple(dict.fromkeys(counts))


def available_meshes() -> tuple[str, ...]:
    """Every mesh of MESH_DIR (file stem) and the generated icosphere."""
    stems = sorted(p.stem for p in MESH_DIR.glob("*.obj")) if MESH_DIR.is_dir() else []
    return (*stems, ICOSPHERE)


def bench_meshes() -> tuple[str, ...]:
    """The meshes to benchmark: all of them, unless FASTSDF_BENCH_MESHES (e.g. "suzanne,icosphere20k") picks some."""
    every = available_meshes()
    names = _env_list("FASTSDF_BENCH_MESHES", str, "mesh names")
    if names is None:
        return every
    unknown = [n for n in names if n not in every]
    if unknown:
        raise pytest.UsageError(f"FASTSDF_BENCH_MESHES: unknown mesh(es) {unknown}; known: {', '.join(every)}")
    return tuple(dict.fromkeys(names))


def cpu_threads() -> int:
    """OpenMP threads fastsdf's CPU kernels use: OMP_NUM_THREADS, else the cores this process may run on."""
    try:
        return int(os.environ["OMP_NUM_THREADS"].split(",")[0])
    except (KeyError, ValueError):
        if hasattr(os, "sched_getaffinity"):
            return len(os.sched_getaffinity(0))
        return os.cpu_count() or 1


def timed_rounds(call_s: float) -> tuple[int, int]:
    """(warm-up rounds, timed rounds) after an untimed call that took ``call_s`` seconds."""
    return (1, 3) if call_s <= SLOW_CALL_S else (0, 1)


# --- meshes and query points -------------------------------------------------------------------


@dataclass
class BenchMesh:
    """A normalised benchmark mesh: float64 (V, 3) vertices, int64 (F, 3) faces, where it came from."""

    name: str
    vertices: np.ndarray
    faces: np.ndarray
    source: str

    def describe(self) -> str:
        return f"{self.source} ({len(self.vertices):,} vertices, {len(self.faces):,} faces)"


def load_mesh(name: str) -> BenchMesh:
    """Loads ``name`` (a MESH_DIR stem or ICOSPHERE) as is (trimesh ``process=False``, as
    ``fastsdf.MeshSDF.load`` reads it) and moves it into the unit sphere: bounding-box centre at the
    origin, farthest vertex at 1 / UNIT_SPHERE_MARGIN."""
    import trimesh

    if name == ICOSPHERE:
        mesh = trimesh.creation.icosphere(subdivisions=5)
        source = "trimesh.creation.icosphere(subdivisions=5)"
    else:
        mesh = trimesh.load(MESH_DIR / f"{name}.obj", force="mesh", process=False)
        source = f"{name}.obj"
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    vertices = vertices - (vertices.min(axis=0) + vertices.max(axis=0)) / 2
    vertices /= np.linalg.norm(vertices, axis=1).max() * UNIT_SPHERE_MARGIN
    return BenchMesh(name, np.ascontiguousarray(vertices), np.ascontiguousarray(mesh.faces, dtype=np.int64), source)


def query_points(mesh: BenchMesh, n: int, seed: int | None = None) -> np.ndarray:
    """(n, 3) float32 points in random order: half uniform in [-1, 1]^3, half near the surface
    (area-weighted surface samples plus isotropic Gaussian noise of std NEAR_SURFACE_STD).

    The seed defaults to one derived from the mesh name, so a mesh gets the same points whichever
    meshes run beside it; any prefix of the result holds both kinds in about equal shares.
    """
    rng = np.random.default_rng(zlib.crc32(mesh.name.encode()) if seed is None else seed)
    n_uniform = n // 2
    n_near = n - n_uniform
    uniform = rng.uniform(-1.0, 1.0, size=(n_uniform, 3))
    corners = mesh.vertices[mesh.faces]
    area = np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    face = rng.choice(len(area), size=n_near, p=area / area.sum())
    r1 = np.sqrt(rng.random(n_near))
    r2 = rng.random(n_near)
    bary = np.stack([1.0 - r1, r1 * (1.0 - r2), r1 * r2], axis=1)
    near = np.einsum("nk,nkd->nd", bary, corners[face])
    near += rng.normal(0.0, NEAR_SURFACE_STD, size=near.shape)
    points = np.concatenate([uniform, near]).astype(np.float32)
    return points[rng.permutation(n)]


def grid_axis(n: int) -> np.ndarray:
    """The n float32 samples of [-1, 1] that ``MeshSDF.grid(n)`` (``fastsdf.extract_mesh``'s grid) uses."""
    return (-1.0 + np.arange(n) * (2.0 / (n - 1))).astype(np.float32)


def grid_points_at(n: int, index: np.ndarray) -> np.ndarray:
    """float32 points of the n^3 grid over [-1, 1]^3 at C-order flat indices ``index`` (x slowest)."""
    axis = grid_axis(n)
    x, rem = np.divmod(index, n * n)
    y, z = np.divmod(rem, n)
    return np.stack([axis[x], axis[y], axis[z]], axis=1)


def grid_points(n: int, start: int, stop: int) -> np.ndarray:
    """float32 points [start, stop) of the n^3 grid, in the order ``MeshSDF.grid`` fills them."""
    return grid_points_at(n, np.arange(start, stop, dtype=np.int64))


# --- accuracy -------------------------------------------------------------------------------------

ERROR_POINTS = 10_000
SIGN_EPS = 1e-3


def accuracy(signed: np.ndarray, unsigned_ref: np.ndarray, sign_ref: np.ndarray) -> dict[str, Any]:
    """Accuracy of signed distances (negative inside) against fastsdf's references for the same points
    (``signed`` may cover only a prefix of them): the largest | |signed| - unsigned_ref | over the first
    ERROR_POINTS points, and the share of points farther than SIGN_EPS from the surface whose sign
    differs from ``sign_ref`` (fastsdf's exact winding number)."""
    signed = np.asarray(signed, dtype=np.float64).reshape(-1)
    m = len(signed)
    k = min(m, ERROR_POINTS)
    error = np.abs(np.abs(signed[:k]) - unsigned_ref[:k])
    away = unsigned_ref[:m] > SIGN_EPS
    disagree = (signed[:m] < 0) != (sign_ref[:m] < 0)
    checked = int(away.sum())
    wrong = int((disagree & away).sum())
    return {
        "max_abs_error": float(error.max()),
        "error_points": k,
        "sign_disagreement": wrong / checked if checked else 0.0,
        "sign_disagreements": wrong,
        "sign_points": checked,
    }


# --- memory ---------------------------------------------------------------------------------------

_HWM_RESET = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    if match is None:
        raise OSError(f"no {field} in {_STATUS}")
    return int(match[1])


def _release_free_memory() -> None:
    """Collects garbage and hands the C heap's free pages back to the OS (glibc's malloc_trim), so that a
    call reusing memory freed earlier shows up in the RSS instead of hiding in the allocator's free lists."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _reset_peak_rss() -> bool:
    """Resets the process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0); False where it cannot."""
    try:
        _HWM_RESET.write_text("5")
        _status_kib("VmHWM")
        return True
    except OSError:
        return False


def measure_peak_rss(fn: Callable[..., T], *args: Any) -> tuple[T, float, float, str]:
    """Calls ``fn(*args)`` once: (its result, seconds, peak extra resident memory in MiB, method).

    The peak covers C/C++ allocations of every thread (which tracemalloc cannot see), after freed
    heap memory has been returned to the OS. Where Linux lets the process reset its high-water mark
    (/proc/self/clear_refs), it is VmHWM after the call minus VmRSS before it. Elsewhere it falls back
    to resource.getrusage's ru_maxrss, the high-water mark of the whole process, which only shows
    what the call adds above the process's earlier peak.
    """
    _release_free_memory()
    if _reset_peak_rss():
        before = _status_kib("VmRSS")
        start = time.perf_counter()
        out = fn(*args)
        seconds = time.perf_counter() - start
        return out, seconds, max(_status_kib("VmHWM") - before, 0) / 1024, "VmHWM - VmRSS"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    out = fn(*args)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return out, seconds, max(after - before, 0) / 1024, "ru_maxrss delta (lower bound)"


# --- workloads ------------------------------------------------------------------------------------


@dataclass
class MeshWorkload:
    """A mesh, query points on it, and fastsdf's references for them (computed on first use).

    ``index`` says which flat grid points ``points`` are, for workloads sampled from a grid.
    """

    mesh: BenchMesh
    points: np.ndarray
    index: np.ndarray | None = None
    _references: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    def references(self, count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """fastsdf's float64 unsigned distances and exact-winding signed distances at the first
        ``count`` points (all by default): the yardsticks of :func:`accuracy`."""
        import fastsdf

        count = len(self.points) if count is None else min(count, len(self.points))
        if count not in self._references:
            sdf = fastsdf.MeshSDF(self.mesh.vertices, self.mesh.faces, sign="exact_winding")
            points = self.points[:count].astype(np.float64)
            self._references[count] = (np.asarray(sdf.unsigned(points)), np.asarray(sdf(points)))
        return self._references[count]


class MeshWorkloads:
    """Meshes and workloads built on demand; the conftest's ``mesh_workload`` fixture is one of these.

    Meshes are kept for the session; of the workloads only the latest is kept (the benchmarks run
    mesh after mesh, and a 1M-point workload with its references takes about 30 MB).
    """

    def __init__(self) -> None:
        self._meshes: dict[str, BenchMesh] = {}
        self._latest: tuple[Any, MeshWorkload] | None = None

    def mesh(self, name: str) -> BenchMesh:
        if name not in self._meshes:
            self._meshes[name] = load_mesh(name)
        return self._meshes[name]

    def _cached(self, key: Any, make: Callable[[], MeshWorkload]) -> MeshWorkload:
        if self._latest is None or self._latest[0] != key:
            self._latest = None  # free the previous one before making the next
            self._latest = (key, make())
        return self._latest[1]

    def __call__(self, name: str, n: int) -> MeshWorkload:
        """``n`` query points on mesh ``name`` (see :func:`query_points`)."""
        return self._cached(("points", name, n), lambda: MeshWorkload(self.mesh(name), query_points(self.mesh(name), n)))

    def grid_check(self, name: str, n: int, count: int) -> MeshWorkload:
        """``count`` random points of the n^3 grid (without repeats), with their flat indices."""

        def make() -> MeshWorkload:
            rng = np.random.default_rng(zlib.crc32(f"{name}-grid-{n}".encode()))
            index = rng.choice(n**3, size=min(count, n**3), replace=False)
            return MeshWorkload(self.mesh(name), grid_points_at(n, index), index)

        return self._cached(("grid", name, n, count), make)


def cuda_ready() -> str | None:
    """None when the CUDA benchmarks can run, else the reason they cannot."""
    import torch

    from fastsdf import _backend

    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    if not _backend.has_cuda():
        return "fastsdf._cuda is not built"
    return None
