"""Shared fixtures and helpers for the marching cubes, extract_mesh and analytic SDF tests.

Randomness: every test that needs it takes the ``rng`` fixture, built from a fresh seed per test
(so each run explores new inputs). The seed is printed in the report of a failing test, and setting
FASTSDF_TEST_SEED=<seed> replays it.

Mesh helpers work on NumPy arrays (use ``to_numpy`` first) and check topology with integer keys
only, so they are exact whatever the vertex positions.
"""

from __future__ import annotations

import os
import secrets
from typing import Any, Callable, Sequence

import numpy as np
import pytest
import torch

import fastsdf
from fastsdf import _backend

# --------------------------------------------------------------------------------------------
# Random seeds
# --------------------------------------------------------------------------------------------

SEED_ENV = "FASTSDF_TEST_SEED"


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """A fresh 63-bit seed per test (or FASTSDF_TEST_SEED), recorded for the failure report."""
    value = int(os.environ.get(SEED_ENV) or secrets.randbits(63))
    request.node.user_properties.append(("random seed", value))
    return value


@pytest.fixture
def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    # Failures show how to replay the exact inputs, whatever assertion failed.
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for name, value in item.user_properties:
            if name == "random seed":
                report.sections.append(("random seed", f"{value}  (replay with {SEED_ENV}={value})"))


# --------------------------------------------------------------------------------------------
# CUDA
# --------------------------------------------------------------------------------------------


def cuda_available() -> bool:
    """Both a visible GPU and the compiled fastsdf._cuda module are needed."""
    return bool(torch.cuda.is_available()) and _backend.has_cuda()


requires_cuda = pytest.mark.skipif(
    not cuda_available(), reason="needs torch.cuda.is_available() and the fastsdf._cuda module")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Any test marked `cuda` is skipped where CUDA is missing, so no test can forget the skipif.
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(requires_cuda)


# --------------------------------------------------------------------------------------------
# Arrays and volumes
# --------------------------------------------------------------------------------------------


def to_numpy(x: Any) -> np.ndarray:
    """NumPy view/copy of an array or tensor (any device)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def random_volume(rng: np.random.Generator, shape: Sequence[int], dtype: Any = np.float32) -> np.ndarray:
    """Standard normal samples: the roughest surface, every cube configuration shows up."""
    return rng.standard_normal(tuple(shape)).astype(dtype)


def smooth_random_volume(rng: np.random.Generator, shape: Sequence[int], coarse: int = 17,
                         dtype: Any = np.float32) -> np.ndarray:
    """Random normal values on a coarse^3 grid, trilinearly upsampled to ``shape``.

    A moderate surface (a few samples between crossings) that still has random topology, cheap
    enough for the NumPy reference at 128^3.
    """
    coarse_values = torch.from_numpy(rng.standard_normal((1, 1, coarse, coarse, coarse)))
    fine = torch.nn.functional.interpolate(coarse_values, size=tuple(shape), mode="trilinear",
                                           align_corners=True)
    return fine[0, 0].numpy().astype(dtype)


def grid_axes(shape: Sequence[int], lo: Sequence[float], hi: Sequence[float]) -> list[np.ndarray]:
    return [np.linspace(lo[a], hi[a], shape[a]) for a in range(3)]


def grid_points(shape: Sequence[int], lo: Sequence[float] = (-1.0, -1.0, -1.0),
                hi: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """(nx, ny, nz, 3) float32 sample positions, built the obvious way with np.linspace."""
    axes = grid_axes(shape, lo, hi)
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).astype(np.float32)


def sample_sdf(sdf: Callable[[np.ndarray], Any], shape: Sequence[int],
               lo: Sequence[float] = (-1.0, -1.0, -1.0), hi: Sequence[float] = (1.0, 1.0, 1.0),
               ) -> tuple[np.ndarray, tuple[float, float, float], tuple[float, float, float]]:
    """(volume float32, spacing, origin) of ``sdf`` sampled on a linspace grid over [lo, hi]."""
    values = to_numpy(sdf(grid_points(shape, lo, hi))).astype(np.float32)
    spacing = tuple((hi[a] - lo[a]) / (shape[a] - 1) for a in range(3))
    return values, spacing, tuple(float(v) for v in lo)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# Comparing meshes
# --------------------------------------------------------------------------------------------


def vertex_atol(*vert_arrays: np.ndarray, rel: float = 1e-6) -> float:
    """1e-6 of the largest coordinate magnitude (float32 positions are exact to ~6e-8 relative)."""
    scale = max([1.0] + [float(np.abs(v).max()) for v in vert_arrays if v.size])
    return rel * scale


def assert_same_mesh(actual: tuple[Any, Any], expected: tuple[Any, Any], context: str = "",
                     rel: float = 1e-6) -> None:
    """Same vertices in the same order (allclose) and exactly the same faces."""
    verts, faces = (to_numpy(x) for x in actual)
    ref_verts, ref_faces = (to_numpy(x) for x in expected)
    assert verts.shape == ref_verts.shape, f"vertex count {verts.shape} != {ref_verts.shape}; {context}"
    assert faces.shape == ref_faces.shape, f"face count {faces.shape} != {ref_faces.shape}; {context}"
    np.testing.assert_array_equal(faces, ref_faces, err_msg=f"faces differ; {context}")
    np.testing.assert_allclose(verts, ref_verts, rtol=0, atol=vertex_atol(verts, ref_verts),
                               err_msg=f"vertices differ; {context}")


def assert_identical_mesh(actual: tuple[Any, Any], expected: tuple[Any, Any], context: str = "") -> None:
    """Bit-for-bit the same arrays (for chunked vs dense, batch sizes, ...)."""
    for name, a, b in zip(("verts", "faces"), actual, expected):
        a, b = to_numpy(a), to_numpy(b)
        assert a.dtype == b.dtype, f"{name} dtype {a.dtype} != {b.dtype}; {context}"
        np.testing.assert_array_equal(a, b, err_msg=f"{name} differ; {context}")


def assert_mesh_arrays(verts: Any, faces: Any, context: str = "", spacing: Sequence[float] = (1.0, 1.0, 1.0),
                       origin: Sequence[float] = (0.0, 0.0, 0.0)) -> None:
    """Output contract that holds for every mesh: dtypes, shapes, index range, no triangle
    repeating a vertex, every vertex used, and one vertex per position.

    Two crossed edges meet only at a grid sample, so two vertices may share a position only there:
    when the sample equals the level, or when t rounds to 0 or 1 in float32. Duplicates anywhere
    else mean one edge got two vertices. ``spacing`` and ``origin`` locate the samples.
    """
    v, f = to_numpy(verts), to_numpy(faces)
    assert v.dtype == np.float32, f"verts dtype {v.dtype}; {context}"
    assert f.dtype == np.int64, f"faces dtype {f.dtype}; {context}"
    assert v.ndim == 2 and v.shape[1] == 3, f"verts shape {v.shape}; {context}"
    assert f.ndim == 2 and f.shape[1] == 3, f"faces shape {f.shape}; {context}"
    assert np.isfinite(v).all(), f"non-finite vertices; {context}"
    if f.size:
        assert f.min() >= 0 and f.max() < len(v), f"face index out of range [0, {len(v)}); {context}"
        distinct = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])
        assert distinct.all(), f"{(~distinct).sum()} faces repeat a vertex, e.g. {f[~distinct][:3]}; {context}"
        # Every vertex sits on a crossed grid edge, which some cube triangulates.
        assert len(np.unique(f)) == len(v), f"{len(v) - len(np.unique(f))} unused vertices; {context}"
    _, first, counts = np.unique(v, axis=0, return_index=True, return_counts=True)
    shared = v[first[counts > 1]].astype(np.float64)
    index = (shared - np.asarray(origin, np.float64)) / np.asarray(spacing, np.float64)
    off_grid = (np.abs(index - np.round(index)) > 1e-3).any(axis=1)
    assert not off_grid.any(), (f"{off_grid.sum()} positions hold several vertices away from grid samples, "
                                f"e.g. {shared[off_grid][:3]}; {context}")


# --------------------------------------------------------------------------------------------
# Topology
# --------------------------------------------------------------------------------------------


def _edge_keys(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    return a.astype(np.int64) * n + b.astype(np.int64)


def directed_edges(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 3F directed edges (start, end) of the triangles, in right-hand-rule order."""
    return faces.reshape(-1), faces[:, [1, 2, 0]].reshape(-1)


def euler_characteristic(verts: np.ndarray, faces: np.ndarray) -> int:
    start, end = directed_edges(faces)
    n = max(len(verts), 1)
    undirected = np.unique(_edge_keys(np.minimum(start, end), np.maximum(start, end), n))
    return len(verts) - len(undirected) + len(faces)


def assert_closed_oriented_manifold(verts: np.ndarray, faces: np.ndarray, context: str = "") -> None:
    """Watertight (every edge shared by exactly two triangles), consistently oriented (each
    directed edge once, so its twin runs the other way) and vertex-manifold (the triangles around
    each vertex form one fan, no pinches)."""
    verts, faces = to_numpy(verts), to_numpy(faces)
    assert len(faces) > 0, f"empty mesh; {context}"
    n = len(verts)
    start, end = directed_edges(faces)
    undirected, uses = np.unique(_edge_keys(np.minimum(start, end), np.maximum(start, end), n),
                                 return_counts=True)
    bad = uses != 2
    assert not bad.any(), (f"{bad.sum()} edges are not shared by exactly two triangles "
                           f"(uses {np.unique(uses[bad])}), e.g. {divmod(int(undirected[bad][0]), n)}; {context}")
    directed, dir_uses = np.unique(_edge_keys(start, end, n), return_counts=True)
    assert (dir_uses == 1).all(), (f"{(dir_uses != 1).sum()} directed edges appear twice: "
                                   f"inconsistent orientation; {context}")
    assert _fan_count(faces, n) == len(np.unique(faces)), f"pinched (non-manifold) vertex; {context}"


def assert_manifold_inside_grid(verts: Any, faces: Any, shape: Sequence[int], context: str = "") -> None:
    """For a surface of a whole volume (index-space vertices): consistently oriented, every edge
    shared by two triangles except border edges on the grid's boundary, used once."""
    v, f = to_numpy(verts).astype(np.float64), to_numpy(faces)
    n = len(v)
    start, end = directed_edges(f)
    keys, uses = np.unique(_edge_keys(np.minimum(start, end), np.maximum(start, end), n), return_counts=True)
    assert (uses <= 2).all(), (f"{(uses > 2).sum()} edges are shared by more than two triangles "
                               f"(uses {np.unique(uses[uses > 2])}), e.g. between vertices "
                               f"{v[list(divmod(int(keys[uses > 2][0]), n))].tolist()}; {context}")
    _, dir_uses = np.unique(_edge_keys(start, end, n), return_counts=True)
    assert (dir_uses == 1).all(), (f"{(dir_uses != 1).sum()} directed edges appear twice: "
                                   f"inconsistent orientation; {context}")
    a, b = np.divmod(keys[uses == 1], n)
    hi = np.asarray(shape, np.float64) - 1
    on_plane = lambda p: np.concatenate([np.abs(p) < 1e-5, np.abs(p - hi) < 1e-5], axis=1)  # noqa: E731
    border = (on_plane(v[a]) & on_plane(v[b])).any(axis=1)
    assert border.all(), (f"{(~border).sum()} holes: edges used once away from the grid boundary, e.g. "
                          f"{v[a[~border][:1]].tolist()} - {v[b[~border][:1]].tolist()}; {context}")


def _fan_count(faces: np.ndarray, n: int) -> int:
    """Number of cycles of triangle corners around vertices (one per vertex on a manifold).

    Corner (v, b, c) of triangle (v, b, c) is followed, turning around v, by the corner of the
    triangle holding the directed edge b -> v; on a closed oriented mesh that is a permutation of
    the corners whose cycles are the fans. Cycles are labelled by their smallest corner with
    pointer doubling, which needs only NumPy.
    """
    corner_v = faces.reshape(-1)
    corner_next = faces[:, [1, 2, 0]].reshape(-1)   # b: the outgoing edge v -> b
    corner_prev = faces[:, [2, 0, 1]].reshape(-1)   # c: the incoming edge c -> v
    incoming = _edge_keys(corner_prev, corner_v, n)
    order = np.argsort(incoming)
    wanted = _edge_keys(corner_next, corner_v, n)   # the corner whose incoming edge is b -> v
    pos = np.searchsorted(incoming, wanted, sorter=order)
    succ = order[np.minimum(pos, len(order) - 1)]
    assert np.array_equal(incoming[succ], wanted), "mesh is not closed: an edge has no twin"
    label = np.arange(len(succ))
    step = succ
    for _ in range(int(np.ceil(np.log2(max(len(succ), 2)))) + 1):
        label = np.minimum(label, label[step])
        step = step[step]
    return len(np.unique(label))


def signed_volume(verts: Any, faces: Any) -> float:
    """Volume enclosed by a closed mesh, positive when its normals (right-hand rule) point out."""
    v, f = to_numpy(verts).astype(np.float64), to_numpy(faces)
    v = v - v.mean(axis=0)  # smaller cancellation error
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def surface_area(verts: Any, faces: Any) -> float:
    v, f = to_numpy(verts).astype(np.float64), to_numpy(faces)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    return float(np.linalg.norm(np.cross(b - a, c - a), axis=1).sum() / 2.0)


def face_normals(verts: Any, faces: Any) -> np.ndarray:
    v, f = to_numpy(verts).astype(np.float64), to_numpy(faces)
    return np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])


# --------------------------------------------------------------------------------------------
# Point sets
# --------------------------------------------------------------------------------------------


def assert_same_point_sets(a: np.ndarray, b: np.ndarray, atol: float, context: str = "") -> None:
    """Equal as sets within ``atol`` (order free), same size.

    Both sets are sorted lexicographically on coordinates rounded to a grid coarser than ``atol``
    (raw coordinates break ties) and paired row by row; the few rows this cannot pair (a point that
    straddles a rounding boundary, or near-coincident points sorted differently) are matched by
    brute force, so no KD-tree is needed.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, f"point sets differ in size: {a.shape} vs {b.shape}; {context}"
    quantum = 100 * atol
    qa, qb = np.round(a / quantum).astype(np.int64), np.round(b / quantum).astype(np.int64)
    ia = np.lexsort((a[:, 2], a[:, 1], a[:, 0], qa[:, 2], qa[:, 1], qa[:, 0]))
    ib = np.lexsort((b[:, 2], b[:, 1], b[:, 0], qb[:, 2], qb[:, 1], qb[:, 0]))
    # Pair rows only within rounded keys that both sets hold equally often.
    _, inverse = np.unique(np.concatenate([qa, qb]), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    ka, kb = inverse[: len(a)], inverse[len(a):]
    balanced = np.bincount(ka, minlength=inverse.max() + 1) == np.bincount(kb, minlength=inverse.max() + 1)
    sa, sb = ia[balanced[ka[ia]]], ib[balanced[kb[ib]]]
    close = (np.abs(a[sa] - b[sb]) <= atol).all(axis=1)
    left_a = np.ones(len(a), bool)
    left_b = np.ones(len(b), bool)
    left_a[sa[close]] = False
    left_b[sb[close]] = False
    rest_a, rest_b = a[left_a], b[left_b]
    assert len(rest_a) <= 2000, (f"{len(rest_a)} points have no partner within {atol}, e.g. "
                                 f"{rest_a[:3]} vs {rest_b[:3]}: the sets differ; {context}")
    if len(rest_a):
        dist = np.zeros((len(rest_a), len(rest_b)))
        for axis in range(3):
            np.maximum(dist, np.abs(rest_a[:, None, axis] - rest_b[None, :, axis]), out=dist)
        lonely_a = dist.min(axis=1) > atol
        lonely_b = dist.min(axis=0) > atol
        assert not lonely_a.any(), (f"{lonely_a.sum()} points of the first set have no partner within "
                                    f"{atol} in the second, e.g. {rest_a[lonely_a][:3]}; {context}")
        assert not lonely_b.any(), (f"{lonely_b.sum()} points of the second set have no partner within "
                                    f"{atol} in the first, e.g. {rest_b[lonely_b][:3]}; {context}")


# --------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------


def random_sphere(rng: np.random.Generator) -> fastsdf.Sphere:
    """A sphere well inside [-1, 1]^3, jittered per run so sample values change."""
    return fastsdf.Sphere(radius=rng.uniform(0.55, 0.75), center=rng.uniform(-0.1, 0.1, 3))


def random_torus(rng: np.random.Generator) -> fastsdf.Torus:
    return fastsdf.Torus(major=rng.uniform(0.5, 0.6), minor=rng.uniform(0.2, 0.25),
                         center=rng.uniform(-0.05, 0.05, 3))


# --------------------------------------------------------------------------------------------
# Sampling a volume between grid points
# --------------------------------------------------------------------------------------------


def trilinear(volume: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Trilinear interpolation of ``volume`` at (N, 3) index-space points inside the grid."""
    vol = np.asarray(volume, np.float64)
    p = np.asarray(points, np.float64)
    shape = np.array(vol.shape)
    base = np.clip(np.floor(p).astype(np.int64), 0, shape - 2)
    frac = p - base
    out = np.zeros(len(p))
    for c in range(8):
        offset = np.array([(c >> a) & 1 for a in range(3)])
        weight = np.prod(np.where(offset == 1, frac, 1.0 - frac), axis=1)
        out += weight * vol[tuple((base + offset).T)]
    return out


def gradient_flux(volume: np.ndarray, verts: np.ndarray, faces: np.ndarray,
                  spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> float:
    """Sum over triangles of (area vector . volume gradient at the centroid).

    Positive when triangle normals point towards increasing values, for open surfaces too, where a
    signed volume means nothing.
    """
    grads = np.gradient(np.asarray(volume, np.float64), *spacing)
    v = to_numpy(verts).astype(np.float64)
    f = to_numpy(faces)
    centroids = v[f].mean(axis=1) / np.asarray(spacing, np.float64)
    g = np.stack([trilinear(grad, centroids) for grad in grads], axis=1)
    return float(np.einsum("ij,ij->i", face_normals(v, f), g).sum() / 2.0)
