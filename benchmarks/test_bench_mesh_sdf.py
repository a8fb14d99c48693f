"""Mesh SDF benchmarks: fastsdf.MeshSDF against pysdf, Open3D, libigl, trimesh, fcpw and NVIDIA Warp.

Each mesh is one pytest-benchmark group, so the peers are compared side by side on the same points:

    mesh_sdf-cpu-{mesh}            signed distances (negative inside) at 1,000,000 float32 points,
                                   half uniform in [-1, 1]^3, half near the surface; fastsdf with
                                   each sign mode, pysdf, Open3D (RaycastingScene), libigl with the
                                   sign type matching each fastsdf mode, trimesh (10,000 points),
                                   fcpw (closest points, unsigned and signed by its normal), Warp's
                                   CPU mesh queries (unsigned, and signed by winding number); the
                                   unsigned peers are compared with MeshSDF.unsigned
    mesh_sdf-grid-{n}              MeshSDF.grid(n), n = 256, on cheburashka, against the same grid
                                   through pysdf and Open3D
    mesh_sdf-cuda-icosphere20k     fastsdf on CUDA tensors, 1M and 16M points, each sign mode
                                   (skipped without a CUDA device and fastsdf._cuda)

Meshes: every ``*.obj`` of ``shared/meshes`` and a 20,480-face icosphere, normalised into the unit
sphere (bench_common.load_mesh). A peer's structure (BVH, k-d tree, Embree scene) is built before
timing and never timed; fastsdf's build time is recorded in extra_info (``build_s``). libigl's
``igl.signed_distance`` builds its trees inside every call, which therefore sit in its time
(``build_in_call``; the time of a 1-point call is recorded as ``build_s``). Warp's kernels are compiled
before the build (``compile_s``).

Before the timed rounds, one untimed call gives the accuracy of each peer against fastsdf
(``max_abs_error``: largest | |d| - fastsdf.unsigned | over the first 10,000 points;
``sign_disagreement``: share of the points farther than 1e-3 from the surface whose sign differs from
fastsdf's exact winding number) and its peak extra resident memory (``peak_rss_mb``, MiB). A peer
whose call takes more than 60 s is timed in 1 round instead of 1 warm-up and 3 rounds.

Environment (smoke runs): FASTSDF_BENCH_POINTS (e.g. "10000") replaces the point counts,
FASTSDF_BENCH_MESHES (e.g. "suzanne,icosphere20k") picks meshes, FASTSDF_BENCH_SIZES (e.g. "64")
replaces the grid size. Install the peers with the ``bench`` extra; a peer that is not installed is
skipped. See benchmarks/README.md.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

import fastsdf
from bench_common import (
    ERROR_POINTS,
    ICOSPHERE,
    SIGN_EPS,
    BenchMesh,
    MeshWorkloads,
    accuracy,
    bench_meshes,
    bench_points,
    bench_sizes,
    cpu_threads,
    grid_points,
    measure_peak_rss,
    timed_rounds,
)

pytest.importorskip("pytest_benchmark")

MESHES = bench_meshes()
CPU_POINTS = bench_points((1_000_000,))
CUDA_POINTS = bench_points((1_000_000, 16_000_000))
GRID_SIZES = bench_sizes((256,))
GRID_MESH = "cheburashka" if "cheburashka" in MESHES else MESHES[0]
GRID_BATCH = 1 << 18  # the batch MeshSDF.grid evaluates at a time; the peers' grids use the same
GRID_CHECK_POINTS = 100_000  # random grid points the grid accuracy is measured on
TRIMESH_POINTS = 10_000
FASTSDF_SIGNS = ("pseudonormal", "winding", "exact_winding")
DEFAULT_SIGN = "winding"  # MeshSDF's default; peers without a matching sign mode are compared with it
SIGN_NAMES = {"pseudonormal": "pseudonormal", "winding": "fast winding number",
              "exact_winding": "exact winding number"}
CUDA_TARGET = "target: >= 200 M points/s on an H100/H200"


@dataclass
class Built:
    """A peer ready to query: ``query(points (N, 3) float32) -> (N,)`` signed distances, negative inside."""

    query: Callable[[np.ndarray], np.ndarray]
    grid: Callable[[int], np.ndarray] | None = None  # its own grid routine, where it has one


@dataclass
class Peer:
    """One implementation under test."""

    name: str
    version: str
    threads: int | None  # CPU threads it uses; None on a GPU
    sign: str  # how it decides inside/outside
    build: Callable[[BenchMesh], Built]
    variant: str | None = None  # the fastsdf sign mode it implements, if any
    compare_with: str = DEFAULT_SIGN  # the fastsdf sign mode its ratio is taken against
    max_points: int | None = None
    build_in_call: bool = False
    signed: bool = True  # False: it returns unsigned distances, whose signs are not compared
    extra: dict[str, Any] = field(default_factory=dict)  # recorded in extra_info
    notes: list[str] = field(default_factory=list)


def _hardware_threads() -> int:
    """std::thread::hardware_concurrency(), which pysdf and libigl use: every online CPU."""
    return os.cpu_count() or 1


def _fastsdf(sign: str) -> Callable[[], Peer]:
    def make() -> Peer:
        def build(mesh: BenchMesh) -> Built:
            sdf = fastsdf.MeshSDF(mesh.vertices, mesh.faces, sign=sign)
            return Built(sdf, sdf.grid)

        return Peer("fastsdf", fastsdf.__version__, cpu_threads(), SIGN_NAMES[sign], build, variant=sign,
                    compare_with=sign)

    return make


def _pysdf() -> Peer:
    pysdf = pytest.importorskip("pysdf")

    def build(mesh: BenchMesh) -> Built:
        sdf = pysdf.SDF(mesh.vertices.astype(np.float32), mesh.faces.astype(np.uint32), robust=True, copy=True)
        return Built(lambda points: np.negative(sdf(points)))  # pysdf is positive inside

    return Peer("pysdf", importlib.metadata.version("pysdf"), int(getattr(pysdf, "num_threads", _hardware_threads())),
                "ray casting (robust mode)", build,
                notes=["pysdf: its distance is approximate (the nearest of the triangles around the nearest "
                       "vertex); positive inside, negated here."])


def _open3d() -> Peer:
    o3d = pytest.importorskip("open3d")

    def build(mesh: BenchMesh) -> Built:
        legacy = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(mesh.vertices),
                                           o3d.utility.Vector3iVector(mesh.faces.astype(np.int32)))
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(legacy))

        def query(points: np.ndarray) -> np.ndarray:
            return scene.compute_signed_distance(o3d.core.Tensor.from_numpy(points)).numpy()

        query(np.zeros((1, 3), np.float32))  # Open3D builds its Embree BVH on the first query
        return Built(query)

    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else _hardware_threads()
    return Peer("Open3D", o3d.__version__, threads, "ray parity, 1 ray", build,
                notes=["Open3D: RaycastingScene.compute_signed_distance (nsamples=1); its sign is only "
                       "right on watertight meshes."])


_IGL_SIGN = {"pseudonormal": "SIGNED_DISTANCE_TYPE_PSEUDONORMAL",
             "winding": "SIGNED_DISTANCE_TYPE_FAST_WINDING_NUMBER",
             "exact_winding": "SIGNED_DISTANCE_TYPE_WINDING_NUMBER"}  # DEFAULT is WINDING_NUMBER


def _libigl(sign: str) -> Callable[[], Peer]:
    def make() -> Peer:
        igl = pytest.importorskip("igl")
        sign_type = getattr(igl.SignedDistanceType, _IGL_SIGN[sign])

        def build(mesh: BenchMesh) -> Built:
            def query(points: np.ndarray) -> np.ndarray:
                # igl.signed_distance wants float64 points, and returns (S, I, C, N) in libigl >= 2.5.
                return igl.signed_distance(points.astype(np.float64), mesh.vertices, mesh.faces, sign_type)[0]

            return Built(query)

        threads = int(os.environ.get("IGL_NUM_THREADS", 0)) or _hardware_threads()
        return Peer("libigl", importlib.metadata.version("libigl"), threads, SIGN_NAMES[sign], build, variant=sign,
                    compare_with=sign, build_in_call=True,
                    notes=["libigl: igl.signed_distance builds its AABB tree and sign structure inside every "
                           "call, so they are part of its time (the build column shows a 1-point call); its "
                           "winding-number modes return (1 - 2w) times the distance, w the (fast) winding "
                           "number, so |d| is the distance only where w is 0 or 1."])

    return make


def _trimesh() -> Peer:
    import trimesh

    pytest.importorskip("rtree")

    def build(mesh: BenchMesh) -> Built:
        tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
        tm.triangles_tree  # noqa: B018 - builds the r-tree (cached on the mesh) outside the timed calls
        tm.ray  # noqa: B018
        return Built(lambda points: np.negative(trimesh.proximity.signed_distance(tm, points)))

    return Peer("trimesh", trimesh.__version__, 1, "ray containment (mesh.contains)", build,
                max_points=TRIMESH_POINTS,
                notes=[f"trimesh: trimesh.proximity.signed_distance on the first {TRIMESH_POINTS:,} points only "
                       "(its ratio compares time per point); positive inside, negated here."])


UNSIGNED = "unsigned"  # the variant of MeshSDF.unsigned, the baseline of the unsigned peers


def _fastsdf_unsigned() -> Peer:
    def build(mesh: BenchMesh) -> Built:
        return Built(fastsdf.MeshSDF(mesh.vertices, mesh.faces).unsigned)

    return Peer("fastsdf", fastsdf.__version__, cpu_threads(), "none (unsigned)", build, variant=UNSIGNED,
                compare_with=UNSIGNED, signed=False)


FCPW_NOTE = ("fcpw: scene_3D built with bvh_surface_area and vectorize=True (its README's CPU settings) from float32 "
             "vertices; find_closest_points runs on one thread, and its results come back as a list of interaction "
             "objects, read in Python inside the timed call (d, or signed_distance from the recorded normal).")


def _fcpw(signed: bool) -> Callable[[], Peer]:
    def make() -> Peer:
        fcpw = pytest.importorskip("fcpw")

        def build(mesh: BenchMesh) -> Built:
            scene = fcpw.scene_3D()
            scene.set_object_count(1)
            scene.set_object_vertices(np.asfortranarray(mesh.vertices, dtype=np.float32), 0)
            scene.set_object_triangles(np.asfortranarray(mesh.faces, dtype=np.int32), 0)
            scene.build(fcpw.aggregate_type.bvh_surface_area, True)

            def query(points: np.ndarray) -> np.ndarray:
                found = fcpw.interaction_3D_list()
                radii = np.full(len(points), np.inf, np.float32)
                scene.find_closest_points(np.asfortranarray(points), radii, found, record_normal=signed)
                if signed:
                    return np.fromiter((i.signed_distance(x) for i, x in zip(found, points)), np.float32, len(found))
                return np.fromiter((i.d for i in found), np.float32, len(found))

            return Built(query)

        if signed:
            return Peer("fcpw", importlib.metadata.version("fcpw"), 1, "normal at the closest point", build,
                        compare_with="pseudonormal", notes=[FCPW_NOTE])
        return Peer("fcpw", importlib.metadata.version("fcpw"), 1, "none (unsigned)", build, compare_with=UNSIGNED,
                    signed=False, notes=[FCPW_NOTE])

    return make


WARP_ACCURACY = 2.0  # mesh_query_point_sign_winding_number's defaults: Barnes-Hut accuracy and inside threshold
WARP_THRESHOLD = 0.5
WARP_MAX_DIST = 1.0e6


@functools.cache
def _warp_kernels() -> tuple[Any, dict[bool, Any], float]:
    """(warp, {signed: kernel}, seconds to compile them): compiled once, before any mesh is built."""
    wp = pytest.importorskip("warp")
    wp.config.quiet = True
    wp.init()

    @wp.kernel
    def unsigned_kernel(mesh: wp.uint64, points: wp.array(dtype=wp.vec3), out: wp.array(dtype=float)):
        tid = wp.tid()
        x = points[tid]
        hit = wp.mesh_query_point_no_sign(mesh, x, WARP_MAX_DIST)
        out[tid] = wp.length(x - wp.mesh_eval_position(mesh, hit.face, hit.u, hit.v))

    @wp.kernel
    def winding_kernel(mesh: wp.uint64, points: wp.array(dtype=wp.vec3), out: wp.array(dtype=float)):
        tid = wp.tid()
        x = points[tid]
        hit = wp.mesh_query_point_sign_winding_number(mesh, x, WARP_MAX_DIST, WARP_ACCURACY, WARP_THRESHOLD)
        out[tid] = hit.sign * wp.length(x - wp.mesh_eval_position(mesh, hit.face, hit.u, hit.v))

    start = time.perf_counter()
    wp.load_module(device="cpu")  # compiles this module's kernels (or loads them from Warp's cache)
    return wp, {False: unsigned_kernel, True: winding_kernel}, time.perf_counter() - start


def _warp(signed: bool) -> Callable[[], Peer]:
    def make() -> Peer:
        wp, kernels, compile_s = _warp_kernels()
        kernel = kernels[signed]

        def build(mesh: BenchMesh) -> Built:
            warp_mesh = wp.Mesh(points=wp.array(mesh.vertices.astype(np.float32), dtype=wp.vec3, device="cpu"),
                                indices=wp.array(mesh.faces.astype(np.int32).reshape(-1), dtype=int, device="cpu"),
                                support_winding_number=signed)

            def query(points: np.ndarray) -> np.ndarray:
                where = wp.array(points, dtype=wp.vec3, device="cpu", copy=False)
                out = wp.empty(len(points), dtype=float, device="cpu")
                wp.launch(kernel, dim=len(points), inputs=[warp_mesh.id, where, out], device="cpu")
                return out.numpy()

            return Built(query)

        note = ("Warp: wp.Mesh from float32 vertices; a kernel calling mesh_query_point_no_sign, or "
                f"mesh_query_point_sign_winding_number (accuracy {WARP_ACCURACY:g}, threshold {WARP_THRESHOLD:g}), "
                "then the distance to the closest point; Warp runs CPU kernels on one thread. Kernels are compiled "
                "before the build, outside the timed calls (compile_s, or loaded from Warp's kernel cache).")
        sign = "winding number (Warp)" if signed else "none (unsigned)"
        return Peer("Warp", wp.__version__, 1, sign, build, compare_with="winding" if signed else UNSIGNED,
                    signed=signed, extra={"compile_s": compile_s}, notes=[note])

    return make


CPU_PEERS: dict[str, Callable[[], Peer]] = {
    **{f"fastsdf-{s}": _fastsdf(s) for s in FASTSDF_SIGNS},
    "fastsdf-unsigned": _fastsdf_unsigned,
    "pysdf": _pysdf,
    "open3d": _open3d,
    **{f"libigl-{s}": _libigl(s) for s in FASTSDF_SIGNS},
    "trimesh": _trimesh,
    "fcpw-unsigned": _fcpw(False),
    "fcpw": _fcpw(True),
    "warp-unsigned": _warp(False),
    "warp-winding": _warp(True),
}
GRID_PEERS: dict[str, Callable[[], Peer]] = {"fastsdf": _fastsdf(DEFAULT_SIGN), "pysdf": _pysdf, "open3d": _open3d}


def _build(peer: Peer, mesh: BenchMesh) -> tuple[Built, float]:
    """Builds the peer and primes it with a 1-point query: (built, build seconds).

    For libigl, whose build happens in every call, the build time is that of the 1-point query."""
    start = time.perf_counter()
    built = peer.build(mesh)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    built.query(np.zeros((1, 3), np.float32))
    return built, time.perf_counter() - start if peer.build_in_call else build_s


def _grid_via(query: Callable[[np.ndarray], np.ndarray], n: int) -> np.ndarray:
    """The n^3 grid of MeshSDF.grid(n) through ``query``, in MeshSDF.grid's batches."""
    volume = np.empty((n, n, n), np.float32)
    flat = volume.reshape(-1)
    for start in range(0, flat.size, GRID_BATCH):
        stop = min(start + GRID_BATCH, flat.size)
        flat[start:stop] = query(grid_points(n, start, stop))
    return volume


def _check(distances: Any, n: int) -> None:
    values = np.asarray(distances)
    assert values.shape == (n,), values.shape
    assert np.isfinite(values).all()


def _record(benchmark: Any, peer: Peer, device: str, points: int, build_s: float, call: dict[str, Any],
            input_text: str, notes: list[str]) -> None:
    benchmark.extra_info.update(
        peer=peer.name,
        version=peer.version,
        device=device,
        threads=peer.threads,
        sign=peer.sign,
        variant=peer.variant,
        compare_with=peer.compare_with,
        points=points,
        build_s=build_s,
        build_in_call=peer.build_in_call,
        input=input_text,
        notes=[*notes, *peer.notes],
        signed=peer.signed,
        **peer.extra,
        **call,
    )


POINTS_TEXT = ("float32 query points (the points column), half uniform in [-1, 1]^3, half near the surface "
               "(area-weighted surface samples + Gaussian noise, std 0.01), in random order")
ERROR_NOTE = (f"max |error|: the largest difference between |d| and fastsdf's unsigned distance (float64) over "
              f"the first {ERROR_POINTS:,} points.")
SIGN_NOTE = (f"sign disagreements: share of the points farther than {SIGN_EPS:g} from the surface whose sign "
             "differs from fastsdf's exact winding number (negative inside for every peer).")
RSS_NOTE = ("peak RSS: resident memory one untimed call adds at its peak, all threads and C++ allocations "
            "included (VmHWM after the call minus VmRSS before it, MiB, after freed heap memory went back to the "
            "OS); build (ms): the peer's structure, built before and outside the timed calls.")
CPU_NOTES = [ERROR_NOTE, SIGN_NOTE, RSS_NOTE]


def _cpu_params() -> list[Any]:
    many = len(CPU_POINTS) > 1
    return [
        pytest.param(mesh, key, count, id=f"{mesh}-{key}" + (f"-{count}" if many else ""),
                     marks=pytest.mark.benchmark(group=f"mesh_sdf-cpu-{mesh}"))
        for mesh in MESHES
        for count in CPU_POINTS
        for key in CPU_PEERS
    ]


# The point count is "count", not "n": make_results.py reads a parameter "n" as a grid size.
@pytest.mark.parametrize(("mesh_name", "peer_key", "count"), _cpu_params())
def test_mesh_sdf_cpu(benchmark: Any, mesh_workload: MeshWorkloads, mesh_name: str, peer_key: str,
                      count: int) -> None:
    peer = CPU_PEERS[peer_key]()
    work = mesh_workload(mesh_name, count)
    points = work.points[: peer.max_points]
    built, build_s = _build(peer, work.mesh)
    distances, call_s, rss_mb, rss_method = measure_peak_rss(built.query, points)
    _check(distances, len(points))
    unsigned, exact = work.references()
    quality = accuracy(distances, unsigned, exact)
    if not peer.signed:
        quality = {key: value for key, value in quality.items() if not key.startswith("sign")}
    warmup, rounds = timed_rounds(call_s)
    benchmark.pedantic(built.query, args=(points,), rounds=rounds, warmup_rounds=warmup, iterations=1)
    _record(benchmark, peer, "cpu", len(points), build_s,
            {"mesh": mesh_name, "peak_rss_mb": rss_mb, "peak_rss_method": rss_method, "untimed_call_s": call_s,
             **quality},
            f"mesh {work.mesh.describe()}, normalised into the unit sphere; {POINTS_TEXT}", CPU_NOTES)


@pytest.mark.parametrize(
    ("peer_key", "n"),
    [pytest.param(key, n, id=f"{GRID_MESH}-{key}-{n}", marks=pytest.mark.benchmark(group=f"mesh_sdf-grid-{n}"))
     for n in GRID_SIZES for key in GRID_PEERS],
)
def test_mesh_sdf_grid(benchmark: Any, mesh_workload: MeshWorkloads, peer_key: str, n: int) -> None:
    peer = GRID_PEERS[peer_key]()
    mesh = mesh_workload.mesh(GRID_MESH)
    built, build_s = _build(peer, mesh)
    run = built.grid if built.grid is not None else (lambda size: _grid_via(built.query, size))
    volume, call_s, rss_mb, rss_method = measure_peak_rss(run, n)
    assert volume.shape == (n, n, n) and volume.dtype == np.float32
    check = mesh_workload.grid_check(GRID_MESH, n, GRID_CHECK_POINTS)
    unsigned, exact = check.references()
    quality = accuracy(volume.reshape(-1)[check.index], unsigned, exact)
    warmup, rounds = timed_rounds(call_s)
    benchmark.pedantic(run, args=(n,), rounds=rounds, warmup_rounds=warmup, iterations=1)
    _record(benchmark, peer, "cpu", n**3, build_s,
            {"mesh": GRID_MESH, "n": n, "peak_rss_mb": rss_mb, "peak_rss_method": rss_method,
             "untimed_call_s": call_s, **quality},
            f"mesh {mesh.describe()}, normalised into the unit sphere; the {n}^3 float32 grid over [-1, 1]^3 of "
            f"MeshSDF.grid({n}), filled in batches of {GRID_BATCH:,} points (the grid points are made inside "
            "the timed call, for every peer)",
            [f"Accuracy is measured on {len(check.index):,} random points of the grid:", *CPU_NOTES])


def _cuda_rounds(n: int) -> int:
    return 20 if n <= 1_000_000 else 10


@pytest.mark.cuda
@pytest.mark.parametrize(
    ("sign", "count"),
    [pytest.param(sign, count, id=f"fastsdf-{sign}-{count}",
                  marks=pytest.mark.benchmark(group=f"mesh_sdf-cuda-{ICOSPHERE}"))
     for count in CUDA_POINTS for sign in FASTSDF_SIGNS],
)
def test_mesh_sdf_cuda(benchmark: Any, cuda_mesh_points: Callable[[int], Any], mesh_workload: MeshWorkloads,
                       sign: str, count: int) -> None:
    n = count
    import torch

    points = cuda_mesh_points(n)  # skips without CUDA
    peer = _fastsdf(sign)()
    peer.threads = None
    mesh = mesh_workload.mesh(ICOSPHERE)
    start = time.perf_counter()
    sdf = fastsdf.MeshSDF(mesh.vertices, mesh.faces, sign=sign)
    build_s = time.perf_counter() - start

    def run(p: Any) -> Any:
        out = sdf(p)
        torch.cuda.synchronize()  # time the finished GPU work, not just its launch
        return out

    run(points[:1])  # uploads the BVH to the device (once per MeshSDF and device)
    torch.cuda.reset_peak_memory_stats(points.device)
    base = torch.cuda.memory_allocated(points.device)
    start = time.perf_counter()
    distances = run(points)
    call_s = time.perf_counter() - start
    peak_gpu_mb = (torch.cuda.max_memory_allocated(points.device) - base) / 2**20
    assert distances.is_cuda and distances.shape == (n,)
    check = mesh_workload(ICOSPHERE, n)  # the same points on the CPU; accuracy on a prefix of them
    m = min(n, 100_000)
    unsigned, exact = check.references(m)
    quality = accuracy(distances[:m].cpu().numpy(), unsigned, exact)
    benchmark.pedantic(run, args=(points,), rounds=_cuda_rounds(n), warmup_rounds=1, iterations=1)
    _record(benchmark, peer, "cuda", n, build_s,
            {"mesh": ICOSPHERE, "peak_gpu_mb": peak_gpu_mb, "untimed_call_s": call_s,
             "gpu": torch.cuda.get_device_name(points.device), **quality},
            f"mesh {mesh.describe()}, normalised into the unit sphere; {POINTS_TEXT}, as a CUDA tensor",
            [f"{CUDA_TARGET}; times include torch.cuda.synchronize(), the points already lie on the GPU.",
             f"Accuracy against fastsdf's CPU references on the first {m:,} points:", ERROR_NOTE, SIGN_NOTE,
             "peak GPU: torch.cuda.max_memory_allocated() during one untimed call, minus what was allocated "
             "before it (MiB)."])
