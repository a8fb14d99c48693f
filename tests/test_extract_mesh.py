"""fastsdf.extract_mesh: the same mesh as marching_cubes on a hand-built grid, for every kind of
SDF callable, chunked exactly equal to dense, batching, argument checks and memory limits."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import pytest
import torch

import fastsdf
import fastsdf._memory
import fastsdf.meshing.extract as extract_module
from fastsdf import extract_mesh, marching_cubes
from fastsdf.geometry.grid import Grid

from conftest import (
    assert_closed_oriented_manifold,
    assert_identical_mesh,
    assert_mesh_arrays,
    assert_same_mesh,
    euler_characteristic,
    grid_points,
    random_sphere,
    random_torus,
    to_numpy,
)
from extract_helpers import Recorder, SphereModule, slab_bytes, torch_only

UNIT = ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))


def manual_mesh(sdf: Callable[[Any], Any], resolution: Sequence[int], bounds=UNIT, level: float = 0.0,
                as_tensor: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The grid built by hand with np.linspace, evaluated in one call, meshed by marching_cubes."""
    lo, hi = bounds
    points = grid_points(resolution, lo, hi).reshape(-1, 3)
    values = sdf(torch.from_numpy(points)) if as_tensor else sdf(points)
    volume = to_numpy(values).reshape(tuple(resolution)).astype(np.float32)
    spacing = tuple((hi[a] - lo[a]) / (resolution[a] - 1) for a in range(3))
    return marching_cubes(volume, level, spacing=spacing, origin=lo)


def quadric_sphere(center: Sequence[float], radius: float) -> Callable[[Any], Any]:
    """|p - c|^2 - r^2 with one IEEE operation at a time: bit-identical on NumPy arrays and on
    tensors of any device (a norm may differ by an ulp between libraries, and flip a sign)."""
    cx, cy, cz = (float(c) for c in center)

    def sdf(p: Any) -> Any:
        x, y, z = p[..., 0] - cx, p[..., 1] - cy, p[..., 2] - cz
        return x * x + y * y + z * z - radius * radius

    return sdf


class PerturbedSphere(torch.nn.Module):
    """A tiny float64 MLP bending a sphere; returns (N, 1) like most SDF networks."""

    def __init__(self, seed: int):
        super().__init__()
        generator = torch.Generator().manual_seed(seed % (2 ** 63))
        self.mlp = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).double()
        with torch.no_grad():
            for p in self.mlp.parameters():
                p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * 0.5)
        self.seen_dtypes: set[torch.dtype] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen_dtypes.add(x.dtype)
        return torch.linalg.vector_norm(x, dim=-1, keepdim=True) - 0.6 + 0.05 * self.mlp(x)


# --------------------------------------------------------------------------------------------
# Same mesh as marching_cubes on a hand-built grid
# --------------------------------------------------------------------------------------------


def test_numpy_function_matches_manual_grid(rng, seed) -> None:
    sphere = random_sphere(rng)
    fn = lambda p: sphere(p)  # noqa: E731 - a plain function, not the SDF object
    resolution = (17, 23, 30)
    lo = tuple(rng.uniform(-1.2, -0.9, 3))
    hi = tuple(rng.uniform(0.9, 1.2, 3))
    level = float(rng.uniform(-0.1, 0.1))
    out = extract_mesh(fn, resolution, bounds=(lo, hi), level=level)
    assert isinstance(out[0], np.ndarray) and isinstance(out[1], np.ndarray)
    assert_mesh_arrays(*out)
    assert_same_mesh(out, manual_mesh(fn, resolution, (lo, hi), level), context=f"seed={seed}")


def test_grid_samples_are_linspace(rng, seed) -> None:
    # Sample n along an axis sits at lo + n * (hi - lo) / (resolution - 1): both bounds included.
    recorder = Recorder(lambda p: np.linalg.norm(p, axis=-1) - 0.5)
    recorder.keep_points = True
    resolution = (5, 7, 9)
    lo, hi = tuple(rng.uniform(-3, -1, 3)), tuple(rng.uniform(1, 3, 3))
    extract_mesh(recorder, resolution, bounds=(lo, hi), batch_size=50)
    grid = np.concatenate(recorder.points[1:])  # the first call is the two-point probe
    assert grid.dtype == np.float32
    np.testing.assert_allclose(grid, grid_points(resolution, lo, hi).reshape(-1, 3), rtol=1e-6, atol=0,
                               err_msg=f"seed={seed}")


SHAPES: dict[str, Callable[[np.random.Generator], fastsdf.geometry.analytic.SDF]] = {
    "sphere": random_sphere,
    "torus": random_torus,
    "box": lambda rng: fastsdf.Box(rng.uniform(0.3, 0.6, 3), rng.uniform(-0.1, 0.1, 3)),
    "union": lambda rng: fastsdf.Sphere(0.4, (-0.35, 0, 0)) | fastsdf.Box((0.3, 0.3, 0.3), (0.25, 0.02, 0)),
    # The ball (radius 0.65-0.72) cuts the faces (at 0.6) but leaves the edges (at 0.85) two cells thick.
    "difference": lambda rng: fastsdf.Box((0.6, 0.6, 0.6)) - fastsdf.Sphere(rng.uniform(0.65, 0.72)),
    "intersection": lambda rng: fastsdf.Intersection(fastsdf.Sphere(0.7), fastsdf.Box((0.5, 0.5, 0.5))),
}


@pytest.mark.parametrize("name", SHAPES)
def test_analytic_sdfs(name: str, rng, seed) -> None:
    shape = SHAPES[name](rng)
    resolution = (31, 33, 35)
    out = extract_mesh(shape, resolution)
    assert isinstance(out[0], np.ndarray)
    context = f"seed={seed} {shape!r}"
    assert_same_mesh(out, manual_mesh(shape, resolution), context=context)
    assert_mesh_arrays(*out, context=context, spacing=(2 / 30, 2 / 32, 2 / 34), origin=UNIT[0])
    assert_closed_oriented_manifold(*out, context=context)
    # A box minus a ball that pokes through its six faces but not its edges is a cube frame: genus 5.
    genus = {"torus": 1, "difference": 5}.get(name, 0)
    assert euler_characteristic(*out) == 2 - 2 * genus, context


def test_torch_function_returns_tensors(rng, seed) -> None:
    fn = quadric_sphere(rng.uniform(-0.1, 0.1, 3), rng.uniform(0.5, 0.7))
    verts, faces = extract_mesh(torch_only(fn), 25)
    assert isinstance(verts, torch.Tensor) and isinstance(faces, torch.Tensor)
    assert verts.dtype == torch.float32 and faces.dtype == torch.int64 and verts.device.type == "cpu"
    expected = manual_mesh(fn, (25, 25, 25))
    assert_same_mesh((verts, faces), expected, context=f"seed={seed}")
    # A function that happily takes NumPy arrays but returns tensors also switches to tensors.
    out = extract_mesh(lambda p: fn(torch.as_tensor(p)), 25)
    assert isinstance(out[0], torch.Tensor)
    assert_same_mesh(out, expected, context=f"seed={seed}")


def test_explicit_cpu_device_uses_tensors(rng, seed) -> None:
    fn = quadric_sphere((0, 0, 0), rng.uniform(0.5, 0.7))
    seen: list[type] = []
    verts, faces = extract_mesh(lambda p: seen.append(type(p)) or fn(p), 20, device="cpu")
    assert set(seen) == {torch.Tensor}
    assert isinstance(verts, torch.Tensor)
    assert_same_mesh((verts, faces), manual_mesh(fn, (20, 20, 20)), context=f"seed={seed}")


def test_module_wrapping_analytic_sphere(rng, seed) -> None:
    fn = quadric_sphere(rng.uniform(-0.1, 0.1, 3), rng.uniform(0.5, 0.7))
    module = torch.nn.Sequential(SphereModule(fn))
    verts, faces = extract_mesh(module, (21, 22, 23))
    assert isinstance(verts, torch.Tensor)
    assert module[0].seen_dtypes == {torch.float32}
    assert_same_mesh((verts, faces), manual_mesh(fn, (21, 22, 23)), context=f"seed={seed}")


def test_mlp_module_float64(seed) -> None:
    module = PerturbedSphere(seed)
    resolution = (24, 25, 26)
    verts, faces = extract_mesh(module, resolution)
    # Evaluated in the parameters' dtype, on float32 grid points; one batch holds the whole grid,
    # so the hand-made evaluation below multiplies exactly the same matrix.
    assert module.seen_dtypes == {torch.float64}
    with torch.no_grad():
        expected = manual_mesh(lambda p: module(p.double()), resolution, as_tensor=True)
    assert isinstance(verts, torch.Tensor)
    assert len(faces) > 0
    assert_same_mesh((verts, faces), expected, context=f"seed={seed}")
    assert not any(p.grad is not None for p in module.parameters())


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_sdf_returning_column(kind: str, rng, seed) -> None:
    fn = quadric_sphere((0, 0, 0), rng.uniform(0.5, 0.7))
    column = (lambda p: fn(p)[:, None]) if kind == "numpy" else torch_only(lambda p: fn(p).unsqueeze(1))
    out = extract_mesh(column, 19)
    assert_same_mesh(out, manual_mesh(fn, (19, 19, 19)), context=f"seed={seed}")


# --------------------------------------------------------------------------------------------
# Chunked equals dense, batching
# --------------------------------------------------------------------------------------------

# (points along axis 0, point layers owned per slab): several slabs, a last slab of one layer
# folded into the previous one (nx - b == 1), slabs of a single layer, and one slab for all.
SLAB_CASES = [(19, 3), (15, 2), (16, 2), (5, 1), (20, 4), (12, 100), (2, 1), (3, 1)]

SDF_KINDS = ["numpy", "analytic", "torch_function", "module"]


def make_sdf(kind: str, rng: np.random.Generator) -> Callable[[Any], Any]:
    fn = quadric_sphere(rng.uniform(-0.1, 0.1, 3), rng.uniform(0.4, 0.7))
    return {"numpy": fn, "analytic": random_torus(rng), "torch_function": torch_only(fn),
            "module": SphereModule(fn)}[kind]


@pytest.mark.parametrize("kind", SDF_KINDS)
@pytest.mark.parametrize("nx,owned", SLAB_CASES, ids=lambda v: str(v))
def test_chunked_equals_dense_exactly(nx: int, owned: int, kind: str, monkeypatch, rng, seed) -> None:
    sdf = make_sdf(kind, rng)
    resolution = (nx, 14, 17)
    dense = extract_mesh(sdf, resolution)
    monkeypatch.setattr(extract_module, "_SLAB_BYTES", slab_bytes(resolution, owned))
    chunked = extract_mesh(sdf, resolution, method="chunked")
    assert type(chunked[0]) is type(dense[0])
    assert_identical_mesh(chunked, dense, context=f"seed={seed} {kind} nx={nx} owned={owned}")


@pytest.mark.parametrize("owned", [1, 2, 3, 5])
def test_chunked_closed_surface_across_slabs(owned: int, monkeypatch, rng, seed) -> None:
    # Vertices of slab boundaries are referenced by id across slabs: the stitched mesh is closed.
    torus = random_torus(rng)
    resolution = (26, 30, 28)
    monkeypatch.setattr(extract_module, "_SLAB_BYTES", slab_bytes(resolution, owned))
    verts, faces = extract_mesh(torus, resolution, method="chunked", level=0.01)
    assert_closed_oriented_manifold(verts, faces, f"seed={seed}")
    assert euler_characteristic(verts, faces) == 0


@pytest.mark.parametrize("method", ["dense", "chunked", "sparse"])
def test_batch_sizes_give_identical_meshes(method: str, monkeypatch, rng, seed) -> None:
    monkeypatch.setattr(extract_module, "_SLAB_BYTES", slab_bytes((11, 12, 13), 3))
    sphere = random_sphere(rng)
    meshes = {b: extract_mesh(sphere, (11, 12, 13), method=method, batch_size=b) for b in (1, 7, 1000, None)}
    for b, mesh in meshes.items():
        assert_identical_mesh(mesh, meshes[None], context=f"seed={seed} batch_size={b}")


@pytest.mark.parametrize("method", ["dense", "chunked"])
@pytest.mark.parametrize("batch_size", [1, 7, 1000, None])
def test_batches_never_exceed_batch_size(batch_size: int | None, method: str, monkeypatch, rng) -> None:
    # The evaluator must never build the (R^3, 3) array: every call holds at most batch_size points.
    resolution = (70, 70, 70) if batch_size is None else (9, 10, 11)
    if method == "chunked":
        monkeypatch.setattr(extract_module, "_SLAB_BYTES", slab_bytes(resolution, 4))
    recorder = Recorder(random_sphere(rng))
    extract_mesh(recorder, resolution, method=method, batch_size=batch_size)
    limit = 262144 if batch_size is None else batch_size
    assert max(recorder.sizes) <= limit
    assert all(len(s) == 2 and s[1] == 3 for s in recorder.shapes)
    # Every grid point evaluated once (plus the probe of at most two points), except the chunked
    # mode's carried layers which are reused, not re-evaluated.
    assert sum(recorder.sizes) == np.prod(resolution) + min(2, limit)


# --------------------------------------------------------------------------------------------
# Bad SDFs and bad arguments
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("bad", ["two_columns", "one_short", "transposed", "scalar"])
def test_sdf_returning_wrong_shape(bad: str, kind: str) -> None:
    def numpy_sdf(p: Any) -> Any:
        d = np.linalg.norm(p, axis=-1) - 0.5
        return {"two_columns": np.stack([d, d], 1), "one_short": d[:-1], "transposed": np.stack([d, d], 0),
                "scalar": d.sum()}[bad]

    def torch_sdf(p: Any) -> Any:
        return torch.as_tensor(numpy_sdf(p.numpy()))

    with pytest.raises(ValueError, match="sdf must map"):
        extract_mesh(numpy_sdf if kind == "numpy" else torch_only(torch_sdf), 6)


@pytest.mark.parametrize("method", ["dense", "chunked", "sparse"])
@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_sdf_returning_non_finite_names_the_point(bad: float, kind: str, method: str) -> None:
    # Grid over [-1, 1] with 5 samples: coordinates -1, -0.5, 0, 0.5, 1, all exact in float32.
    def numpy_sdf(p: np.ndarray) -> np.ndarray:
        d = np.linalg.norm(p, axis=-1) - 0.7
        return np.where((p == np.float32(0.5)).all(axis=-1), bad, d)

    sdf = numpy_sdf if kind == "numpy" else torch_only(lambda p: torch.from_numpy(numpy_sdf(p.numpy())))
    with pytest.raises(ValueError, match=r"NaN.*\[0\.5, 0\.5, 0\.5\]"):
        extract_mesh(sdf, 5, method=method)


@pytest.mark.parametrize("resolution", [1, 0, -3, 2.5, (4, 4), (4, 4, 4, 4), (4, 1, 4), (4, 4, 2.5), (4, -4, 4)],
                         ids=str)
def test_bad_resolution(resolution: Any) -> None:
    with pytest.raises(ValueError):
        extract_mesh(fastsdf.Sphere(0.5), resolution)


@pytest.mark.parametrize("bounds", [
    ((1, 1, 1), (-1, -1, -1)),
    ((0, 0, 0), (0, 1, 1)),
    ((0, 0, 1), (1, 1, 1)),
    ((0, np.nan, 0), (1, 1, 1)),
    ((0, 0, 0), (1, np.inf, 1)),
    ((0, 0), (1, 1)),
    ((0, 0, 0),),
    "cube",
], ids=str)
def test_bad_bounds(bounds: Any) -> None:
    with pytest.raises(ValueError):
        extract_mesh(fastsdf.Sphere(0.5), 8, bounds=bounds)


def test_grid_points_are_the_samples_and_stay_inside_the_grid(rng: np.random.Generator) -> None:
    """The shared grid type: its points are the hand-built grid's, in C order from any layer, and
    an index outside the grid raises instead of wrapping around."""
    res = tuple(int(r) for r in rng.integers(2, 7, 3))
    lo = tuple(rng.uniform(-2, 0, 3))
    hi = tuple(l + rng.uniform(0.5, 2) for l in lo)
    grid = Grid(res, (lo, hi))
    expected = grid_points(res, lo, hi).reshape(-1, 3)
    np.testing.assert_allclose(grid.points(0, 0, len(expected)), expected, rtol=0, atol=1e-6 * max(map(abs, lo + hi)))
    first = res[1] * res[2]
    np.testing.assert_array_equal(grid.points(1, 0, first), grid.points(0, first, 2 * first))
    for first_layer, flat in ((-1, [0]), (0, [-1]), (0, [len(expected)])):
        with pytest.raises(IndexError):
            grid.points_at(first_layer, np.array(flat, np.int64))


@pytest.mark.parametrize("method", ["Dense", "narrow", "", None])
def test_bad_method(method: Any) -> None:
    with pytest.raises(ValueError):
        extract_mesh(fastsdf.Sphere(0.5), 8, method=method)


@pytest.mark.parametrize("batch_size", [0, -1, -1000, 2.5, "many"], ids=str)
def test_bad_batch_size(batch_size: Any) -> None:
    # Like resolution, a batch size is a positive whole number: 2.5 is refused, not truncated.
    with pytest.raises(ValueError):
        extract_mesh(fastsdf.Sphere(0.5), 8, batch_size=batch_size)


@pytest.mark.parametrize("level", [np.nan, np.inf])
def test_bad_level(level: float) -> None:
    with pytest.raises(ValueError):
        extract_mesh(fastsdf.Sphere(0.5), 8, level=level)


@pytest.mark.parametrize("sdf", [None, 3.0, "sphere", np.zeros(3)], ids=str)
def test_not_callable(sdf: Any) -> None:
    with pytest.raises(TypeError):
        extract_mesh(sdf, 8)


# --------------------------------------------------------------------------------------------
# Memory, empty grids, progress
# --------------------------------------------------------------------------------------------


def test_dense_too_large_raises_memory_error_but_chunked_works(monkeypatch, rng, seed) -> None:
    resolution = (48, 40, 44)
    sphere = random_sphere(rng)
    expected = extract_mesh(sphere, resolution)
    # Less memory than the dense float32 volume, more than a few layers and a slab's mesh.
    monkeypatch.setattr(fastsdf._memory, "available_bytes", lambda device=None: 4 * np.prod(resolution) - 1)
    monkeypatch.setattr(extract_module, "_SLAB_BYTES", slab_bytes(resolution, 6))
    recorder = Recorder(sphere)
    with pytest.raises(MemoryError, match="chunked"):
        extract_mesh(recorder, resolution)
    assert sum(recorder.sizes) <= 2, "the grid was evaluated before refusing the dense volume"
    assert_identical_mesh(extract_mesh(sphere, resolution, method="chunked"), expected, context=f"seed={seed}")


@pytest.mark.parametrize("method", ["dense", "chunked", "sparse"])
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_no_surface_in_bounds_gives_empty_mesh(kind: str, method: str, monkeypatch) -> None:
    monkeypatch.setattr(extract_module, "_SLAB_BYTES", slab_bytes((12, 12, 12), 3))
    fn = quadric_sphere((5.0, 5.0, 5.0), 0.5)  # far outside [-1, 1]^3
    sdf = fn if kind == "numpy" else torch_only(fn)
    verts, faces = extract_mesh(sdf, 12, method=method)
    assert isinstance(verts, np.ndarray if kind == "numpy" else torch.Tensor)
    assert tuple(verts.shape) == (0, 3) and tuple(faces.shape) == (0, 3)
    assert_mesh_arrays(verts, faces)


def test_progress_bar(capsys) -> None:
    sphere = fastsdf.Sphere(0.5)
    capsys.readouterr()
    extract_mesh(sphere, 16, progress=True)
    shown = capsys.readouterr()
    assert "extract_mesh" in shown.err and shown.out == ""
    for progress in (False, None):  # None: only for large grids on a terminal
        extract_mesh(sphere, 16, progress=progress)
        quiet = capsys.readouterr()
        assert quiet.out == "" and quiet.err == "", f"progress={progress}"


# --------------------------------------------------------------------------------------------
# CUDA
# --------------------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("method", ["dense", "chunked"])
def test_cuda_evaluation_matches_cpu(method: str, monkeypatch, rng, seed) -> None:
    resolution = (37, 29, 300)
    monkeypatch.setattr(extract_module, "_SLAB_BYTES", slab_bytes(resolution, 5))
    fn = quadric_sphere(rng.uniform(-0.1, 0.1, 3), rng.uniform(0.5, 0.7))
    seen: set[str] = set()
    verts, faces = extract_mesh(lambda p: seen.add(p.device.type) or fn(p), resolution, method=method,
                                device="cuda")
    assert seen == {"cuda"}
    assert verts.is_cuda and faces.is_cuda
    expected = extract_mesh(fn, resolution, method="dense")
    assert_same_mesh((verts, faces), expected, context=f"seed={seed} {method}", rel=1e-5)


@pytest.mark.cuda
def test_cuda_module(rng, seed) -> None:
    fn = quadric_sphere((0, 0, 0), rng.uniform(0.5, 0.7))
    module = SphereModule(fn).cuda()
    module.register_buffer("anchor", torch.zeros(1, device="cuda"))  # puts the module on the GPU
    verts, faces = extract_mesh(module, 40)
    assert verts.is_cuda
    assert_same_mesh((verts, faces), manual_mesh(fn, (40, 40, 40)), context=f"seed={seed}", rel=1e-5)


@pytest.mark.parametrize("to_values", [
    lambda p: np.linalg.norm(p, axis=1) - 0.5 + 0.1j,
    lambda p: torch.linalg.norm(torch.as_tensor(p), dim=1).to(torch.complex64) - 0.5,
    lambda p: np.array(["far"] * len(p)),
])
@pytest.mark.parametrize("method", ["dense", "sparse"])
def test_extract_mesh_rejects_values_that_are_not_real(to_values, method: str) -> None:
    with pytest.raises(TypeError, match="real"):
        fastsdf.extract_mesh(to_values, 9, method=method)


def test_extract_mesh_accepts_integer_and_bool_values() -> None:
    verts, _ = fastsdf.extract_mesh(lambda p: np.linalg.norm(p, axis=1) < 0.5, 9, level=0.5)
    assert len(verts) > 0
    verts, _ = fastsdf.extract_mesh(lambda p: (np.linalg.norm(p, axis=1) * 4).astype(np.int32), 9, level=2)
    assert len(verts) > 0


def test_extract_mesh_rejects_the_meta_device() -> None:
    with torch.device("meta"):
        module = fastsdf.SirenMLP(3, 8, 1, 1)
    for kwargs in ({}, {"device": "cpu"}, {"devices": ["cpu"]}, {"method": "sparse"}):
        with pytest.raises(ValueError, match="meta device"):
            fastsdf.extract_mesh(module, 9, **kwargs)
    with pytest.raises(ValueError, match="meta device"):
        fastsdf.extract_mesh(lambda p: p.norm(dim=1) - 0.5, 9, device="meta")
    with pytest.raises(ValueError, match="meta device"):
        fastsdf.extract_mesh(lambda p: torch.zeros(len(p), device="meta"), 9, device="cpu")


def test_marching_cubes_rejects_complex_volumes() -> None:
    volume = np.zeros((4, 4, 4), np.complex64)
    with pytest.raises(TypeError):
        fastsdf.marching_cubes(volume)
    with pytest.raises(TypeError):
        fastsdf.marching_cubes(torch.from_numpy(volume))
