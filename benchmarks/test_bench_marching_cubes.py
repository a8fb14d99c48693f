"""Marching cubes benchmarks: fastsdf against scikit-image, PyMCubes and VTK on a sphere SDF grid.

Each grid size is one pytest-benchmark group, so the peers are compared side by side:

    marching_cubes-cpu-{n}   fastsdf.marching_cubes on a NumPy float32 grid (OpenMP threads),
                             skimage.measure.marching_cubes and mcubes.marching_cubes (one thread),
                             VTK's vtkFlyingEdges3D (vtkSMPTools, STDThread backend, as many
                             threads as fastsdf) and classic vtkMarchingCubes (one thread),
                             n = 128, 256, 512
    marching_cubes-cuda-{n}  fastsdf.marching_cubes on a CUDA tensor, n = 512, 1024
                             (skipped without a CUDA device and fastsdf._cuda)

VTK's filters read a vtkImageData: the NumPy grid is wrapped into one (zero-copy) before timing, as a
VTK pipeline already holds its volume as an image; the timed call runs the filter and views its output
as NumPy arrays (zero-copy). Every peer's vertex and triangle counts are checked against fastsdf's on
the same grid (``same_counts_as_fastsdf``).

Run them with ``.venv/bin/pytest benchmarks/``, see benchmarks/README.md; set FASTSDF_BENCH_SIZES
(e.g. "128") to run fewer sizes.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass, field
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
    """One implementation under test: ``run(prepare(volume)) -> (verts, faces)``, only ``run`` timed."""

    name: str
    version: str
    threads: int | None  # CPU threads it uses; None on a GPU
    run: Callable[[Any], tuple[Any, Any]]
    prepare: Callable[[np.ndarray], Any] = lambda volume: volume  # the input as the peer takes it
    extra: dict[str, Any] = field(default_factory=dict)  # recorded in extra_info
    notes: list[str] = field(default_factory=list)


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


VTK_SMP_BACKEND = "STDThread"


def _vtk(flying_edges: bool) -> Callable[[], Peer]:
    """VTK's vtkFlyingEdges3D (multi-threaded through vtkSMPTools) or its classic, serial vtkMarchingCubes."""

    def make() -> Peer:
        core = pytest.importorskip("vtkmodules.vtkCommonCore")
        data_model = pytest.importorskip("vtkmodules.vtkCommonDataModel")
        filters = pytest.importorskip("vtkmodules.vtkFiltersCore")
        from vtkmodules.util.numpy_support import numpy_to_vtk, vtk_to_numpy

        smp = core.vtkSMPTools
        if flying_edges:
            if not smp.SetBackend(VTK_SMP_BACKEND):
                pytest.skip(f"this VTK build has no {VTK_SMP_BACKEND} SMP backend")
            smp.Initialize(cpu_threads())
        threads = smp.GetEstimatedNumberOfThreads() if flying_edges else 1

        def prepare(volume: np.ndarray) -> Any:
            # VTK's x axis varies fastest, so the C-order grid's last axis becomes VTK's x: the vertices
            # come out with their coordinates reversed (z, y, x), which leaves the counts unchanged.
            image = data_model.vtkImageData()
            image.SetDimensions(*volume.shape[::-1])
            scalars = numpy_to_vtk(np.ascontiguousarray(volume).reshape(-1), deep=False)
            image.GetPointData().SetScalars(scalars)
            image.keep_alive = volume  # numpy_to_vtk(deep=False) does not hold the array
            return image

        def run(image: Any) -> tuple[Any, Any]:
            extract = filters.vtkFlyingEdges3D() if flying_edges else filters.vtkMarchingCubes()
            extract.SetInputData(image)
            extract.SetValue(0, LEVEL)
            extract.ComputeNormalsOff()  # fastsdf returns vertices and triangles only
            extract.ComputeGradientsOff()
            extract.ComputeScalarsOff()
            extract.Update()
            mesh = extract.GetOutput()
            verts = vtk_to_numpy(mesh.GetPoints().GetData())
            faces = vtk_to_numpy(mesh.GetPolys().GetConnectivityArray()).reshape(-1, 3)  # triangles only
            return verts, faces

        name = "VTK FlyingEdges3D" if flying_edges else "VTK MarchingCubes"
        extra = {"smp_backend": smp.GetBackend(), "smp_threads": threads} if flying_edges else {}
        return Peer(name, importlib.metadata.version("vtk"), threads, run, prepare, extra,
                    notes=["VTK: the NumPy grid is wrapped into a vtkImageData (zero-copy) before the timed calls; "
                           "each timed call runs a new filter (normals, gradients and scalars off) and views its "
                           "points and triangles as NumPy arrays (zero-copy). vtkFlyingEdges3D runs on "
                           f"vtkSMPTools' {VTK_SMP_BACKEND} backend with fastsdf's thread count; vtkMarchingCubes "
                           "is serial."])

    return make


CPU_PEERS: dict[str, Callable[[], Peer]] = {"fastsdf": _fastsdf, "skimage": _skimage, "pymcubes": _pymcubes,
                                            "vtk-flyingedges": _vtk(True), "vtk-marchingcubes": _vtk(False)}


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
        **peer.extra,
    )
    if peer.notes:
        benchmark.extra_info["notes"] = peer.notes


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
    data = peer.prepare(volume)
    verts, faces = benchmark.pedantic(peer.run, args=(data,), rounds=cpu_rounds(n), iterations=1, warmup_rounds=1)
    assert len(verts) > 0 and len(faces) > 0
    _record(benchmark, peer, n, "cpu", verts, faces)
    if peer.name != "fastsdf":
        ours_verts, ours_faces = fastsdf.marching_cubes(volume, LEVEL)
        benchmark.extra_info.update(
            same_counts_as_fastsdf=(len(verts), len(faces)) == (len(ours_verts), len(ours_faces)),
            fastsdf_vertices=int(len(ours_verts)), fastsdf_faces=int(len(ours_faces)))


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
