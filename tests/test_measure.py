"""fastsdf.measure.marching_cubes, scikit-image's signature on fastsdf's kernels: scikit-image
0.26.0's own marching-cubes tests (tests/skimage/measure/test_marching_cubes.py) rewritten for it,
agreement with scikit-image itself, and the kernels' new outputs (normals, values, the cube mask)
against the NumPy reference twin."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
import torch

from fastsdf.measure import marching_cubes
from fastsdf.meshing.marching_cubes_reference import marching_cubes_reference

from conftest import (
    assert_closed_oriented_manifold,
    assert_same_point_sets,
    euler_characteristic,
    gradient_flux,
    random_sphere,
    random_torus,
    random_volume,
    sample_sdf,
    smooth_random_volume,
    surface_area,
    to_numpy,
)

skimage_measure = pytest.importorskip("skimage.measure")
skimage_draw = pytest.importorskip("skimage.draw")
cKDTree = pytest.importorskip("scipy.spatial").cKDTree


def as_kind(array: np.ndarray, kind: str) -> Any:
    return torch.from_numpy(array) if kind == "torch" else array


def triangle_set(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """The triangles as rows of their three corners in sorted order, rows sorted: equal for equal
    meshes whatever the vertex and face order."""
    corners = verts[faces].astype(np.float64)
    order = np.lexsort((corners[:, :, 2], corners[:, :, 1], corners[:, :, 0]), axis=1)
    rows = np.take_along_axis(corners, order[:, :, None], axis=1).reshape(len(faces), 9)
    return rows[np.lexsort(rows.T[::-1])]


def edge_vertices(volume: np.ndarray, level: float, spacing=(1.0, 1.0, 1.0), step: int = 1,
                  mask: np.ndarray | None = None, with_cubes: bool = False) -> Any:
    """Where scikit-image's marching cubes puts a vertex on a grid edge, worked out directly: on
    each crossed edge of the stepped grid that a meshed cube holds, at the linear crossing. With
    ``with_cubes``, also the lowest index along each axis of the cubes that hold each edge."""
    view = np.asarray(volume, np.float64)[::step, ::step, ::step]
    n = np.array(view.shape)
    meshed = np.zeros(n + 1, bool)  # meshed[c + 1]: cube c is meshed
    meshed[1:-1, 1:-1, 1:-1] = True if mask is None else mask[step::step, step::step, step::step]
    points, cubes = [], []
    for axis in range(3):
        lo, hi = [slice(None)] * 3, [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        idx = np.argwhere((view[tuple(lo)] > level) != (view[tuple(hi)] > level))
        b, c = (axis + 1) % 3, (axis + 2) % 3
        held = np.zeros(len(idx), bool)
        for db in (0, 1):
            for dc in (0, 1):
                cube = idx + 1
                cube[:, b] -= db
                cube[:, c] -= dc
                held |= meshed[tuple(cube.T)]
        idx = idx[held]
        v0, v1 = view[tuple(idx.T)], view[tuple((idx + np.eye(3, dtype=np.int64)[axis]).T)]
        p = idx.astype(np.float64)
        p[:, axis] += (level - v0) / (v1 - v0)
        points.append(p * step * np.asarray(spacing))
        cubes.append(idx - 1 + np.eye(3, dtype=np.int64)[axis])
    return (np.concatenate(points), np.concatenate(cubes)) if with_cubes else np.concatenate(points)


def assert_has_edge_vertices(verts: np.ndarray, expected: np.ndarray, context: str) -> np.ndarray:
    """Every expected edge vertex is in ``verts``, and at most 8% more vertices (tunnel cubes'
    centre vertices) are; returns the indices in ``verts`` of the expected ones."""
    atol = vertex_atol(expected)
    assert len(verts) - len(expected) <= 0.08 * len(expected) + 2, context
    # Pairs by increasing distance, each vertex used once: vertices a rounding error apart (a sample
    # next to the level puts two edges' vertices at nearly the same place) still pair right.
    distance, index = cKDTree(verts).query(expected, k=min(4, len(verts)), distance_upper_bound=atol)
    distance, index = distance.reshape(len(expected), -1), index.reshape(len(expected), -1)
    pairs = np.argsort(distance, axis=None, kind="stable")
    found = np.full(len(expected), -1)
    used = np.zeros(len(verts) + 1, bool)
    used[len(verts)] = True  # the index cKDTree gives for "none within atol"
    for row, col in zip(*np.unravel_index(pairs, distance.shape)):
        if found[row] < 0 and not used[index[row, col]]:
            found[row] = index[row, col]
            used[found[row]] = True
    missing = found < 0
    assert not missing.any(), f"{missing.sum()} edge vertices missing, e.g. {expected[missing][:3]}; {context}"
    return found


def vertex_atol(expected: np.ndarray) -> float:
    """How far a vertex may lie from where it is expected: float32 rounding of the positions."""
    return 1e-5 * max(1.0, float(np.abs(expected).max(initial=0)))


def coincident(expected: np.ndarray) -> np.ndarray:
    """Expected vertices with another one within twice the tolerance: pairing by position may swap
    them (a sample next to the level puts two edges' vertices at nearly the same place)."""
    if len(expected) < 2:
        return np.zeros(len(expected), bool)
    distance, _ = cKDTree(expected).query(expected, k=2)
    return distance[:, 1] <= 2 * vertex_atol(expected)


def near_cubes(cubes: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Mask of the cubes within one step of any of ``cubes`` (rows of cube indices)."""
    mask = np.zeros(shape, bool)
    for offset in itertools.product((-1, 0, 1), repeat=3):
        shifted = cubes + np.asarray(offset)
        shifted = shifted[((shifted >= 0) & (shifted < np.asarray(shape))).all(axis=1)]
        mask[tuple(shifted.T)] = True
    return mask


def matched(ours: np.ndarray, theirs: np.ndarray, atol: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices (ours, theirs) of vertices at the same place."""
    distance, index = cKDTree(theirs).query(ours)
    close = distance <= atol
    return np.flatnonzero(close), index[close]


def unambiguous_cube_counts(volume: np.ndarray, level: float, step: int, faces: np.ndarray,
                            edge_index: np.ndarray, edge_cube: np.ndarray) -> np.ndarray:
    """Triangles per cube of the stepped volume, over the cubes whose triangulation is not a choice
    (no ambiguous face and no interior ambiguity): those must agree between any two correct tables.
    ``edge_index`` maps vertices to rows of ``edge_cube`` (see edge_vertices), -1 for others."""
    above = volume[::step, ::step, ::step] > level
    n = np.array(above.shape) - 1
    corners = [above[dx:n[0] + dx, dy:n[1] + dy, dz:n[2] + dz] for dz in (0, 1) for dy in (0, 1) for dx in (0, 1)]
    corner = np.stack(corners)  # corner c = dx + 2 dy + 4 dz
    ambiguous = np.zeros(tuple(n), bool)
    for axis in range(3):
        for side in (0, 1):
            ring = [c for c in range(8) if (c >> axis) & 1 == side]
            a, b, c, d = ring[0], ring[1], ring[3], ring[2]  # a, b, c, d around the face
            ambiguous |= (corner[a] == corner[c]) & (corner[b] == corner[d]) & (corner[a] != corner[b])
    count = corner.sum(axis=0)
    for c in range(4):  # two corners on a body diagonal, alone on their side of the level
        diagonal = corner[c] == corner[7 - c]
        ambiguous |= diagonal & (corner[c] & (count == 2) | ~corner[c] & (count == 6))
    # A triangle's cube: along each axis, the one that all its edges' cubes share (the first, for
    # a triangle lying in the volume's lower boundary face, whose edges' lower cube is outside).
    corner_edges = edge_index[faces]
    on_edges = (corner_edges >= 0).all(axis=1)
    cube = np.maximum(edge_cube[corner_edges[on_edges]].max(axis=1), 0)
    flat = np.ravel_multi_index(tuple(cube.T), tuple(n))
    per_cube = np.bincount(flat, minlength=int(np.prod(n))).reshape(tuple(n))
    return np.where(ambiguous, -1, per_cube)


def ellipsoid_levelset(*axes: float, spacing=(1.0, 1.0, 1.0)) -> tuple[np.ndarray, float]:
    """scikit-image's test shape: an ellipsoid level set and its exact surface area."""
    volume = skimage_draw.ellipsoid(*axes, spacing=spacing, levelset=True)
    return volume, skimage_draw.ellipsoid_stats(*axes)[1]


# --------------------------------------------------------------------------------------------
# scikit-image 0.26.0's tests, rewritten
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["lewiner", "lorensen"])
def test_isotropic_ellipsoid_area(method: str) -> None:
    volume, area = ellipsoid_levelset(6, 10, 16)
    verts, faces = marching_cubes(volume, 0.0, method=method)[:2]
    # A polyhedron inscribed in a convex surface has a smaller area, within 1% here.
    assert 0.99 * area < surface_area(verts, faces) < area


@pytest.mark.parametrize("method", ["lewiner", "lorensen"])
def test_anisotropic_ellipsoid_area(method: str) -> None:
    spacing = np.array([1.0, 10 / 6.0, 16 / 6.0])  # an array, not only a tuple
    volume, area = ellipsoid_levelset(6, 10, 16, spacing=spacing)
    verts, faces = marching_cubes(volume, 0.0, spacing=spacing, method=method)[:2]
    assert 0.985 * area < surface_area(verts, faces) < area
    with pytest.raises(ValueError):
        marching_cubes(volume, 0.0, spacing=spacing, mask=np.array([]))
    verts, faces = marching_cubes(volume, 0.0, spacing=spacing, allow_degenerate=False)[:2]
    assert 0.985 * area < surface_area(verts, faces) < area


@pytest.mark.parametrize("method", ["lewiner", "lorensen"])
def test_invalid_input(method: str) -> None:
    with pytest.raises(ValueError):
        marching_cubes(np.zeros((2, 2, 1)), 0, method=method)
    with pytest.raises(ValueError):
        marching_cubes(np.zeros((2, 2, 1)), 1, method=method)
    with pytest.raises(ValueError):
        marching_cubes(np.ones((3, 3, 3)), 1, spacing=(1, 2), method=method)
    with pytest.raises(ValueError):
        marching_cubes(np.zeros((20, 20)), 0, method=method)
    volume, _ = ellipsoid_levelset(6, 10, 16)
    with pytest.raises(ValueError):
        marching_cubes(volume, 0.0, method="abcd")


def test_methods_agree_on_small_sphere() -> None:
    # scikit-image checks that its two methods agree where nothing is ambiguous; here they are one
    # method, and the mesh must also have scikit-image's vertices.
    volume, _ = ellipsoid_levelset(1, 1, 1)
    lewiner = marching_cubes(volume, 0, allow_degenerate=False)
    lorensen = marching_cubes(volume, 0, allow_degenerate=False, method="lorensen")
    np.testing.assert_array_equal(triangle_set(*lewiner[:2]), triangle_set(*lorensen[:2]))
    theirs = skimage_measure.marching_cubes(volume, 0, allow_degenerate=False)
    assert_same_point_sets(lewiner[0], theirs[0], atol=1e-6)
    assert surface_area(*lewiner[:2]) == pytest.approx(surface_area(*theirs[:2]), rel=1e-6)


def double_torus(n: int = 48) -> np.ndarray:
    """Lewiner's two-tori test volume (two linked tori), as scikit-image's test builds it."""
    a, b = 2.5 / n, -1.25
    z, y, x = np.meshgrid(*(np.arange(n) * a + b,) * 3, indexing="ij")
    x8, y8, z8 = 8 * x, 8 * y - 2, 8 * z
    r = 16 - 1.85 * 1.85
    first = (x8 ** 2 + y8 ** 2 + z8 ** 2 + r) ** 2 - 64 * (x8 ** 2 + y8 ** 2)
    second = (x8 ** 2 + (y8 + 4) ** 2 + z8 ** 2 + r) ** 2 - 64 * ((y8 + 4) ** 2 + z8 ** 2)
    return (first * second + 1025).astype(np.float32)


def test_double_torus() -> None:
    # scikit-image asserts that its Lorensen and Lewiner meshes differ here (the classic tables
    # leave holes in ambiguous cubes: Euler characteristic -24). Ours resolve every ambiguous face
    # the same way for either method name: two closed tori, on scikit-image's (Lewiner's) edge
    # vertices and with its Euler characteristic.
    volume = double_torus()
    lewiner = marching_cubes(volume, 0)
    lorensen = marching_cubes(volume, 0, method="lorensen")
    for ours, theirs in zip(lewiner, lorensen):
        np.testing.assert_array_equal(ours, theirs)
    verts, faces = lewiner[:2]
    assert_closed_oriented_manifold(verts, faces)
    theirs = skimage_measure.marching_cubes(volume, 0)
    assert euler_characteristic(verts, faces) == euler_characteristic(*theirs[:2]) == 0
    expected = edge_vertices(volume, 0.0)
    assert_has_edge_vertices(verts, expected, "")
    assert_has_edge_vertices(theirs[0], expected, "")


def test_masked_ellipsoid_area() -> None:
    volume, _ = ellipsoid_levelset(6, 10, 16)
    mask = np.ones_like(volume, dtype=bool)
    mask[:10, :, :] = False
    mask[:, :, 20:] = False
    verts, faces, _, _ = marching_cubes(volume, 0, mask=mask)
    assert surface_area(verts, faces) == pytest.approx(299.56878662109375, rel=0.01)  # scikit-image's value


def test_empty_mask_raises() -> None:
    volume, _ = ellipsoid_levelset(6, 10, 16)
    with pytest.raises(ValueError):
        marching_cubes(volume, 0, mask=np.array([]))


def test_all_true_mask_changes_nothing() -> None:
    volume, _ = ellipsoid_levelset(6, 10, 16)
    masked = marching_cubes(volume, 0, mask=np.ones_like(volume, dtype=bool))
    for ours, plain in zip(masked, marching_cubes(volume, 0)):
        np.testing.assert_array_equal(ours, plain)


# --------------------------------------------------------------------------------------------
# Against scikit-image
# --------------------------------------------------------------------------------------------


def random_block_mask(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """True except in a few random boxes, and random noise in one corner region."""
    mask = np.ones(shape, bool)
    for _ in range(3):
        lo = [int(rng.integers(0, n - 2)) for n in shape]
        hi = [int(rng.integers(l + 1, n + 1)) for l, n in zip(lo, shape)]
        mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = False
    mask[: shape[0] // 3, : shape[1] // 3] = rng.random((shape[0] // 3, shape[1] // 3, shape[2])) > 0.3
    return mask


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("step", [1, 2, 3])
@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_matches_skimage_on_smooth_random_volumes(masked: bool, step: int, kind: str, rng, seed) -> None:
    shape = tuple(int(n) for n in rng.integers(30, 46, 3))
    volume = smooth_random_volume(rng, shape)
    spacing = (1.0, 1.0, 1.0) if step == 1 else tuple(rng.uniform(0.5, 2.0, 3))
    mask = random_block_mask(rng, shape) if masked else None
    level = float(rng.uniform(-0.3, 0.3))
    context = f"seed={seed} shape={shape} step={step} masked={masked} level={level}"
    kwargs = dict(spacing=spacing, step_size=step, mask=mask)
    verts, faces, normals, values = (to_numpy(x) for x in marching_cubes(as_kind(volume, kind), level, **kwargs))
    sk_verts, sk_faces, sk_normals, sk_values = skimage_measure.marching_cubes(volume, level, **kwargs)
    assert verts.dtype == normals.dtype == values.dtype == np.float32 and faces.dtype == np.int64

    expected, edge_cube = edge_vertices(volume, level, spacing, step, mask, with_cubes=True)
    ours = assert_has_edge_vertices(verts, expected, context)
    theirs = assert_has_edge_vertices(sk_verts, expected, context)
    # Vertices at the same place may be paired the other way round in one of the meshes: their
    # values, and the triangle counts of the cubes around them, are not compared.
    unsure = coincident(expected)
    # Values are scikit-image's measure, computed the same way from the same float32 samples.
    # (Normals are compared on smooth SDFs below: this field is piecewise trilinear, with kinks
    # between its coarse cells where central and one-sided differences part ways.)
    np.testing.assert_allclose(values[ours[~unsure]], sk_values[theirs[~unsure]], rtol=1e-6, err_msg=context)
    # Triangles of the cubes whose triangulation is not a choice: the same number in every cube.
    counts = []
    for found, n_verts, tris in ((ours, len(verts), faces), (theirs, len(sk_verts), sk_faces)):
        edge_index = np.full(n_verts, -1)
        edge_index[found[~unsure]] = np.flatnonzero(~unsure)
        counts.append(unambiguous_cube_counts(volume, level, step, tris, edge_index, edge_cube))
    skip = near_cubes(edge_cube[unsure], counts[0].shape)
    np.testing.assert_array_equal(np.where(skip, -1, counts[0]), np.where(skip, -1, counts[1]), err_msg=context)
    # The same side out.
    flux = gradient_flux(volume, verts, faces, spacing)
    assert np.sign(flux) == np.sign(gradient_flux(volume, sk_verts, sk_faces, spacing)), context


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("step", [1, 2])
@pytest.mark.parametrize("shape_name", ["sphere", "torus"])
def test_normals_and_area_match_skimage_on_sdfs(shape_name: str, step: int, kind: str, rng, seed) -> None:
    sdf = random_sphere(rng) if shape_name == "sphere" else random_torus(rng)
    grid = tuple(int(n) for n in rng.integers(37, 50, 3))
    volume, _, _ = sample_sdf(sdf, grid)
    context = f"seed={seed} {sdf} grid={grid} step={step}"
    mask = np.ones(grid, bool)
    mask[: grid[0] // 2] = False  # half the shape: an open surface
    for m in (mask, None):
        out = marching_cubes(as_kind(volume, kind), 0.0, step_size=step, mask=m)
        verts, faces, normals, values = (to_numpy(x) for x in out)
        sk_verts, sk_faces, sk_normals, _ = skimage_measure.marching_cubes(volume, 0.0, step_size=step, mask=m)
        assert surface_area(verts, faces) == pytest.approx(surface_area(sk_verts, sk_faces), rel=0.01), context
        i, j = matched(verts, sk_verts, 1e-4)
        assert len(i) > 0.99 * len(verts), context
        cosine = np.einsum("ij,ij->i", normals[i], sk_normals[j])
        assert cosine.min() > 0.9, context
        assert np.median(cosine) > 0.99, context
    if shape_name == "sphere":
        # Negative inside: the normals point down the gradient, inwards, as scikit-image's.
        centre = (np.asarray(sdf.center) + 1) * (np.asarray(grid) - 1) / 2
        assert (np.einsum("ij,ij->i", normals, verts - centre) < 0).all(), context


def test_gradient_direction_matches_skimage(rng, seed) -> None:
    volume, _, _ = sample_sdf(random_sphere(rng), (31, 33, 35))
    for direction in ("descent", "ascent"):
        verts, faces, normals, _ = marching_cubes(volume, 0.0, gradient_direction=direction)
        sk_verts, sk_faces, sk_normals, _ = skimage_measure.marching_cubes(volume, 0.0, gradient_direction=direction)
        flux, sk_flux = gradient_flux(volume, verts, faces), gradient_flux(volume, sk_verts, sk_faces)
        assert np.sign(flux) == np.sign(sk_flux) == (1 if direction == "descent" else -1), f"seed={seed}"
        # Vertex normals do not follow gradient_direction, in scikit-image either.
        i, j = matched(verts, sk_verts, 1e-4)
        assert np.median(np.einsum("ij,ij->i", normals[i], sk_normals[j])) > 0.999, f"seed={seed}"
    descent, ascent = marching_cubes(volume, 0.0), marching_cubes(volume, 0.0, gradient_direction="ascent")
    np.testing.assert_array_equal(ascent[1], descent[1][:, ::-1])


def test_default_level_is_mid_range(rng, seed) -> None:
    volume = smooth_random_volume(rng, (20, 21, 22)) * 3 + 1
    level = float((volume.min() + volume.max()) * np.float32(0.5))
    expected = edge_vertices(volume, level)
    assert_has_edge_vertices(marching_cubes(volume)[0], expected, f"seed={seed}")
    assert_has_edge_vertices(skimage_measure.marching_cubes(volume)[0], expected, f"seed={seed}")


def test_allow_degenerate_false(rng, seed) -> None:
    # Integer samples and an integer level: many samples lie on the level and make zero-area
    # triangles, which allow_degenerate=False must remove without changing the surface.
    volume = np.round(smooth_random_volume(rng, (24, 25, 26)) * 4).astype(np.float32)
    level = 0.0
    verts, faces, normals, values = marching_cubes(volume, level, allow_degenerate=False)
    corners = verts[faces]
    assert not (corners[:, 0] == corners[:, 1]).all(axis=1).any()
    assert not (corners[:, 1] == corners[:, 2]).all(axis=1).any()
    assert not (corners[:, 0] == corners[:, 2]).all(axis=1).any()
    assert len(normals) == len(values) == len(verts) and faces.max() < len(verts)
    keep = marching_cubes(volume, level)
    assert len(keep[1]) > len(faces), f"seed={seed}: the volume made no degenerate triangle"
    np.testing.assert_array_equal(triangle_set(verts, faces), triangle_set(*_proper_triangles(*keep[:2])))
    sk_verts, sk_faces, _, _ = skimage_measure.marching_cubes(volume, level, allow_degenerate=False)
    expected = np.unique(edge_vertices(volume, level).astype(np.float32), axis=0)
    assert_has_edge_vertices(np.unique(verts, axis=0), expected, f"seed={seed}")
    assert_has_edge_vertices(np.unique(sk_verts, axis=0), expected, f"seed={seed}")
    # The torch path gives the same.
    out = marching_cubes(torch.from_numpy(volume), level, allow_degenerate=False)
    for ours, numpy_out in zip(out, (verts, faces, normals, values)):
        np.testing.assert_array_equal(ours.numpy(), numpy_out)


def _proper_triangles(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    corners = verts[faces]
    degenerate = ((corners[:, 0] == corners[:, 1]).all(1) | (corners[:, 1] == corners[:, 2]).all(1)
                  | (corners[:, 0] == corners[:, 2]).all(1))
    return verts, faces[~degenerate]


# --------------------------------------------------------------------------------------------
# Against the NumPy reference twin: every output, order included
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 2, 2), (2, 3, 7), (7, 2, 3), (13, 9, 17), (24, 19, 21)],
                         ids=lambda s: "x".join(map(str, s)))
def test_matches_reference(shape: tuple[int, int, int], dtype: type, kind: str, rng, seed) -> None:
    volume = random_volume(rng, shape, dtype)
    for trial in range(4):
        step = 1 if min(shape) < 5 or trial < 2 else int(rng.integers(2, 4))
        mask = rng.random(shape) > 0.3 if trial % 2 else None
        spacing = tuple(rng.uniform(0.2, 3.0, 3))
        level = float(rng.uniform(volume.min(), volume.max()))
        direction = "ascent" if rng.random() < 0.5 else "descent"
        context = f"seed={seed} trial={trial} step={step} masked={mask is not None} level={level}"
        try:
            out = marching_cubes(as_kind(volume, kind), level, spacing=spacing, step_size=step, mask=mask,
                                 gradient_direction=direction)
        except RuntimeError:  # no surface: the reference must agree
            out = None
        view = volume[::step, ::step, ::step]
        cube_mask = None if mask is None else mask[step::step, step::step, step::step]
        verts, faces, normals, values = marching_cubes_reference(
            view, level, tuple(s * step for s in spacing), cube_mask=cube_mask, attributes=True)
        if out is None:
            assert len(faces) == 0, context
            continue
        if direction == "ascent":
            faces = faces[:, ::-1]
        got = [to_numpy(x) for x in out]
        np.testing.assert_allclose(got[0], verts, rtol=1e-6, atol=1e-6 * float(np.abs(verts).max()), err_msg=context)
        np.testing.assert_array_equal(got[1], faces, err_msg=context)
        np.testing.assert_allclose(got[2], -normals, atol=1e-6, err_msg=context)
        np.testing.assert_array_equal(got[3], values, err_msg=context)
        assert isinstance(out[0], torch.Tensor) == (kind == "torch")


def test_reference_mask_drops_cubes_and_their_edges(rng, seed) -> None:
    # The reference's own mask semantics, from first principles: meshing with a mask equals meshing
    # each kept cube alone and merging the vertices they share.
    volume = random_volume(rng, (6, 5, 7), np.float64)
    cube_mask = rng.random((5, 4, 6)) > 0.5
    verts, faces = marching_cubes_reference(volume, cube_mask=cube_mask)
    pieces = []
    for cube in np.argwhere(cube_mask):
        i, j, k = cube
        v, f = marching_cubes_reference(volume[i:i + 2, j:j + 2, k:k + 2], origin=tuple(float(c) for c in cube))
        pieces.append(v[f])
    expected = np.concatenate(pieces) if pieces else np.zeros((0, 3, 3))
    np.testing.assert_allclose(triangle_set(verts, faces),
                               triangle_set(expected.reshape(-1, 3), np.arange(3 * len(expected)).reshape(-1, 3)),
                               atol=1e-6, err_msg=f"seed={seed}")
    assert len(np.unique(faces)) == len(verts), f"seed={seed}: a vertex of no kept cube"


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("step_size", [0, -1, 1.5, True, "2", None])
def test_bad_step_size_raises(step_size: Any) -> None:
    with pytest.raises(ValueError, match="step_size"):
        marching_cubes(np.random.default_rng(0).standard_normal((5, 5, 5)), 0.0, step_size=step_size)


def test_integral_step_sizes_are_accepted(rng) -> None:
    volume = random_volume(rng, (9, 9, 9))
    expected = marching_cubes(volume, 0.0, step_size=2)
    for step in (2.0, np.int64(2), np.float32(2)):
        for ours, theirs in zip(marching_cubes(volume, 0.0, step_size=step), expected):
            np.testing.assert_array_equal(ours, theirs)


def test_step_size_too_large_finds_no_surface(rng) -> None:
    with pytest.raises(RuntimeError, match="step_size"):
        marching_cubes(random_volume(rng, (5, 9, 9)), 0.0, step_size=5)


@pytest.mark.parametrize("kwargs", [dict(gradient_direction="up"), dict(method="classic"),
                                    dict(spacing=(1, 0, 1)), dict(spacing=(1, 1, np.nan))], ids=str)
def test_bad_options_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        marching_cubes(np.random.default_rng(0).standard_normal((5, 5, 5)), 0.0, **kwargs)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_level_outside_range_and_no_surface(kind: str, rng) -> None:
    volume = random_volume(rng, (5, 6, 7))
    arg = as_kind(volume, kind)
    for level in (float(volume.max()) + 0.1, float(volume.min()) - 0.1):
        with pytest.raises(ValueError, match="range"):
            marching_cubes(arg, level)
    with pytest.raises(RuntimeError, match="No surface"):
        marching_cubes(arg, float(volume.max()))  # samples at the level count as below
    with pytest.raises(RuntimeError, match="No surface"):
        marching_cubes(as_kind(np.ones((4, 4, 4), np.float32), kind))


@pytest.mark.parametrize("mask", [np.ones((5, 5, 4), bool), np.ones((5, 5, 5), np.int64),
                                  np.ones((5, 5, 5), np.float32), np.ones(5, bool)], ids=["shape", "int64", "float32", "1d"])
def test_bad_masks_raise(mask: np.ndarray) -> None:
    with pytest.raises((ValueError, TypeError)):
        marching_cubes(np.random.default_rng(0).standard_normal((5, 5, 5)), 0.0, mask=mask)


@pytest.mark.parametrize("mask_kind", ["uint8", "torch_bool", "strided"])
def test_mask_kinds_agree(mask_kind: str, rng, seed) -> None:
    volume = random_volume(rng, (11, 12, 13))
    mask = rng.random(volume.shape) > 0.4
    expected = marching_cubes(volume, 0.0, mask=mask)
    if mask_kind == "uint8":
        other = mask.astype(np.uint8) * 7
    elif mask_kind == "torch_bool":
        other = torch.from_numpy(mask)
    else:
        other = np.asfortranarray(np.repeat(mask, 2, axis=1))[:, ::2]
    for ours, theirs in zip(marching_cubes(volume, 0.0, mask=other), expected):
        np.testing.assert_array_equal(ours, theirs, err_msg=f"seed={seed}")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_volume_raises(bad: float, rng) -> None:
    volume = random_volume(rng, (6, 6, 6))
    volume[2, 3, 4] = bad
    with pytest.raises(ValueError, match=r"NaN.*\(2, 3, 4\)"):
        marching_cubes(volume, 0.0)


def test_list_and_int_volumes(rng) -> None:
    volume = rng.integers(-5, 6, (6, 7, 8))
    out = marching_cubes(volume.tolist(), 0.5)
    expected = marching_cubes(volume.astype(np.float64), 0.5)
    for ours, theirs in zip(out, expected):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_cuda_matches_cpu(masked: bool, dtype: torch.dtype, rng, seed) -> None:
    # Normals, values and the mask go through the same shared code on both: same bits, same order.
    volume = torch.from_numpy(random_volume(rng, (23, 19, 300), np.float64)).to(dtype)
    mask = torch.from_numpy(rng.random(tuple(volume.shape)) > 0.3) if masked else None
    for step in (1, 2):
        kwargs = dict(spacing=(0.5, 1.5, 1.0), step_size=step, gradient_direction="ascent")
        out = marching_cubes(volume.cuda(), 0.1, mask=None if mask is None else mask.cuda(), **kwargs)
        expected = marching_cubes(volume, 0.1, mask=mask, **kwargs)
        assert all(x.is_cuda for x in out)
        for got, want in zip(out, expected):
            torch.testing.assert_close(got.cpu(), want, rtol=0, atol=0, msg=f"seed={seed} step={step}")
