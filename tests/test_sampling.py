"""DeepSDF-style sampling: normalisation, sample_sdf, SdfSamples and the DeepSDF .npz layout.

``sample_sdf`` gets its distances from ``fastsdf.MeshSDF`` (winding-number signs by default); the
tests check them against the brute-force NumPy twin ``signed_distance_reference``. Every property
tested here holds for any exact signed distance, so these tests say nothing about MeshSDF's
kernels beyond what sampling needs from them (its own tests are in test_mesh_sdf.py).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import trimesh

import fastsdf
from fastsdf.geometry import sampling
from fastsdf.geometry.mesh_sdf_reference import signed_distance_reference
from fastsdf.geometry.normalization import NormalizationTransform, normalize
from fastsdf.geometry.samples_npz import load_npz, save_npz
from fastsdf.geometry.sampling import DEEPSDF_NEAR_STD, SdfSamples, sample_sdf

MESHES = Path(__file__).resolve().parents[2] / "shared" / "meshes"
R = 1 / 1.03  # DeepSDF's radius after normalisation


def reference_sdf(vertices: Any, faces: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The exact signed distance (float64 brute force, exact winding numbers) of a mesh."""
    return lambda points: signed_distance_reference(vertices, faces, np.asarray(points, np.float64))


# --------------------------------------------------------------------------------------------
# Meshes
# --------------------------------------------------------------------------------------------


def sphere_mesh(radius: float = R, subdivisions: int = 3) -> trimesh.Trimesh:
    return trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)


def random_pose(rng: np.random.Generator, vertices: np.ndarray) -> np.ndarray:
    """``vertices`` scaled by 10^[-2, 2], rotated and moved anywhere within 100 units."""
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    return vertices @ q.T * 10 ** rng.uniform(-2, 2) + rng.uniform(-100, 100, 3)


def pose_rounding(vertices: np.ndarray, transform: NormalizationTransform) -> float:
    """Absolute error, in normalised units, that a normalised mesh inherits from its float64 input.

    A mesh posed 100 units away but 0.01 across holds its shape only to ulp(100) ~ 1.4e-14, which the
    scale magnifies by up to ~1e4: a 1e-12 tolerance of its own is then below the rounding of its
    input. Four times the largest coordinate's eps (1.7 was the most seen), plus 1e-12.
    """
    return 1e-12 + 4 * np.finfo(np.float64).eps * float(np.abs(vertices).max()) * transform.scale


def load(name: str) -> trimesh.Trimesh:
    return trimesh.load(MESHES / name, force="mesh")


# --------------------------------------------------------------------------------------------
# normalize
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cow.obj", "suzanne.obj", "teapot.obj"])
def test_sphere_normalisation_puts_the_farthest_vertex_at_1_over_1_03(rng: np.random.Generator, name: str) -> None:
    mesh = load(name)
    mesh.vertices = random_pose(rng, mesh.vertices)
    out, transform = normalize(mesh)
    v = out.vertices
    tol = pose_rounding(mesh.vertices, transform)
    assert isinstance(out, trimesh.Trimesh) and out is not mesh
    np.testing.assert_allclose(np.linalg.norm(v, axis=1).max(), R, rtol=0, atol=tol)
    np.testing.assert_allclose((v.min(axis=0) + v.max(axis=0)) / 2, 0, atol=tol)
    np.testing.assert_allclose(transform.apply(mesh.vertices), v, rtol=0, atol=1e-12)


def test_cube_normalisation_fits_the_longest_side(rng: np.random.Generator) -> None:
    vertices = random_pose(rng, load("cheburashka.obj").vertices)
    faces = load("cheburashka.obj").faces
    (v, f), transform = normalize((vertices, faces), method="cube")
    extent = v.max(axis=0) - v.min(axis=0)
    tol = pose_rounding(vertices, transform)
    assert (np.abs(v) <= R + tol).all()
    np.testing.assert_allclose(extent.max(), 2 * R, rtol=0, atol=2 * tol)
    np.testing.assert_allclose((v.min(axis=0) + v.max(axis=0)) / 2, 0, atol=tol)
    np.testing.assert_array_equal(f, faces)


def test_padding_sets_the_margin(rng: np.random.Generator) -> None:
    mesh = load("suzanne.obj")
    padding = rng.uniform(1.0, 2.0)
    out, _ = normalize(mesh, padding=padding)
    np.testing.assert_allclose(np.linalg.norm(out.vertices, axis=1).max(), 1 / padding, rtol=1e-12)
    out, _ = normalize(mesh, method="cube", padding=1.0)
    np.testing.assert_allclose(np.abs(out.vertices).max(), 1.0, rtol=1e-12)


def test_transform_follows_deepsdf_and_round_trips(rng: np.random.Generator) -> None:
    vertices = random_pose(rng, load("cow.obj").vertices)
    faces = load("cow.obj").faces
    (v, _), t = normalize((vertices, faces))
    centre = (vertices.min(axis=0) + vertices.max(axis=0)) / 2
    # DeepSDF's NormalizationParameters: offset = -centre, normalised = (p + offset) * scale, and
    # its evaluation maps back with p / scale - offset.
    np.testing.assert_allclose(t.offset, -centre, rtol=1e-15, atol=0)
    np.testing.assert_allclose(v, (vertices + t.offset) * t.scale, rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(v / t.scale - t.offset, vertices, rtol=1e-12, atol=1e-12)
    points = rng.uniform(-200, 200, (100, 3))
    np.testing.assert_allclose(t.invert(t.apply(points)), points, rtol=1e-12, atol=1e-9)
    assert NormalizationTransform.from_dict(t.to_dict()) == t
    assert NormalizationTransform.from_dict(json.loads(json.dumps(t.to_dict()))) == t
    # A DeepSDF NormalizationParameters file: float32, scale of shape (1,).
    deepsdf = {"offset": t.offset.astype(np.float32), "scale": np.array([t.scale], np.float32)}
    loaded = NormalizationTransform.from_dict(deepsdf)
    np.testing.assert_allclose(loaded.offset, t.offset, rtol=1e-6)
    assert math.isclose(loaded.scale, t.scale, rel_tol=1e-6)
    # float32 points stay float32.
    assert t.apply(points.astype(np.float32)).dtype == np.float32
    assert t.invert(points.astype(np.float32)).dtype == np.float32
    assert t.apply(np.zeros((2, 5, 3), np.int64)).shape == (2, 5, 3)


def test_distances_scale_by_scale(rng: np.random.Generator) -> None:
    # Normalising moves and scales the shape, so its signed distance field scales too.
    vertices, faces = random_pose(rng, load("suzanne.obj").vertices), load("suzanne.obj").faces
    (v, f), t = normalize((vertices, faces))
    points = t.invert(rng.uniform(-1, 1, (64, 3)))
    original = reference_sdf(vertices, faces)(points)
    normalised = reference_sdf(v, f)(t.apply(points))
    np.testing.assert_allclose(normalised, t.apply_distance(original), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(t.invert_distance(normalised), original, rtol=1e-9, atol=1e-12 / t.scale)


def test_normalize_returns_what_it_got_and_leaves_the_input_alone() -> None:
    mesh = load("suzanne.obj")
    before = mesh.vertices.copy()
    out, _ = normalize(mesh)
    np.testing.assert_array_equal(mesh.vertices, before)
    assert isinstance(out, trimesh.Trimesh) and len(out.faces) == len(mesh.faces)
    v32, f32 = mesh.vertices.astype(np.float32), mesh.faces.astype(np.int32)
    (v, f), _ = normalize((v32, f32))
    assert v.dtype == np.float32 and v is not v32 and f is not f32
    np.testing.assert_array_equal(v32, before.astype(np.float32))
    np.testing.assert_allclose(np.linalg.norm(v, axis=1).max(), R, rtol=1e-6)


def test_normalize_ignores_unused_vertices_as_deepsdf_does() -> None:
    mesh = load("suzanne.obj")
    vertices = np.vstack([mesh.vertices, [[1e6, 1e6, 1e6]]])
    (v, _), t = normalize((vertices, mesh.faces))
    _, reference = normalize(mesh)
    assert t == reference and v.shape == vertices.shape


@pytest.mark.parametrize("method", ["sphere", "cube"])
@pytest.mark.parametrize("magnitude", [1e-300, 1e-150, 1e-9, 1e150, 1e200, 1e300])
def test_normalize_meshes_of_any_magnitude(method: str, magnitude: float, rng: np.random.Generator) -> None:
    """A mesh scaled and moved by any factor normalises to the same mesh, without warnings (near
    1e200, squares overflowed and the scale came out 0)."""
    mesh = load("suzanne.obj")
    vertices = random_pose(rng, mesh.vertices)
    (unit, _), unit_transform = normalize((vertices, mesh.faces), method=method)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (v, _), transform = normalize((vertices * magnitude, mesh.faces), method=method)
    # Scaling by a power of ten rounds each coordinate: by 1e-16 of the largest one, which is up to
    # 1e4 times the mesh's size (random_pose).
    tol = 1e-15 * (1 + np.abs(vertices).max() * unit_transform.scale)
    np.testing.assert_allclose(v, unit, rtol=0, atol=tol, err_msg=f"{magnitude:g}")
    assert math.isclose(transform.scale * magnitude, unit_transform.scale, rel_tol=tol)
    np.testing.assert_allclose(transform.invert(v), vertices * magnitude, rtol=1e-12, atol=1e-12 * magnitude)


def test_normalize_at_the_ends_of_float64() -> None:
    """Coordinates from -1.7e308 to 1.7e308 (an extent beyond float64) normalise; a mesh within
    1e-320 of its centre cannot (its scale would be beyond float64), and says so."""
    sphere = sphere_mesh(subdivisions=1)
    limit = np.finfo(np.float64).max
    huge = sphere.vertices / np.abs(sphere.vertices).max() * limit
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for method in ("sphere", "cube"):
            (v, _), t = normalize((huge, sphere.faces), method=method)
            assert np.isfinite(v).all() and 0 < t.scale < 1e-300
            np.testing.assert_allclose(np.abs(v).max(), R, rtol=1e-9)
    with pytest.raises(ValueError, match=r"cannot normalise a mesh this small: .* beyond float64"):
        normalize((sphere.vertices * 1e-320, sphere.faces))


@pytest.mark.parametrize("mesh, match", [
    ((np.zeros((0, 3)), np.zeros((0, 3), int)), "empty"),
    ((np.zeros((3, 3)), np.zeros((0, 3), int)), "empty"),
    ((np.array([[0, 0, 0], [1, 0, 0], [np.nan, 1, 0]]), [[0, 1, 2]]), "NaN"),
    ((np.array([[0, 0, 0], [1, 0, 0], [np.inf, 1, 0]]), [[0, 1, 2]]), "NaN or Inf"),
    ((np.ones((3, 3)), [[0, 1, 2]]), "degenerate"),
    ((np.eye(3), [[0, 1, 3]]), "do not exist"),
    ((np.eye(3), [[0, 1, -1]]), "do not exist"),
    ((np.eye(4)[:, :3], [[0, 1, 2, 3]]), "triangles"),
    ((np.eye(3), [[0.0, 1.0, 2.0]]), "integer"),
    (np.eye(3), "pair"),
    ("mesh.obj", "pair"),
])
def test_normalize_rejects_bad_meshes(mesh: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        normalize(mesh)


@pytest.mark.parametrize("kwargs", [{"method": "ball"}, {"padding": 0.9}, {"padding": float("nan")},
                                    {"padding": "wide"}])
def test_normalize_rejects_bad_options(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        normalize(sphere_mesh(), **kwargs)


def test_transform_rejects_bad_values() -> None:
    for offset, scale in [((0,), 1.0), ((0, 0, 0, 0), 1.0), ((0, 0, np.nan), 1.0), ((0, 0, 0), 0.0), ((0, 0, 0), -1.0),
                          ((0, 0, 0), np.inf), ((0, 0, 0), (1.0, 2.0))]:
        with pytest.raises(ValueError):
            NormalizationTransform(offset, scale)
    with pytest.raises(ValueError, match="scale"):
        NormalizationTransform.from_dict({"offset": [0, 0, 0]})
    with pytest.raises(ValueError, match="points"):
        NormalizationTransform.identity().apply(np.zeros((4, 2)))


# --------------------------------------------------------------------------------------------
# sample_sdf
# --------------------------------------------------------------------------------------------


def test_counts_dtypes_and_order(seed: int) -> None:
    mesh = sphere_mesh()
    s = sample_sdf(mesh, n_uniform=70, n_near=131, n_surface=17, seed=seed)
    assert isinstance(s, SdfSamples) and len(s) == 201
    assert s.points.shape == (201, 3) and s.points.dtype == np.float32 and s.points.flags.c_contiguous
    assert s.sdf.shape == (201,) and s.sdf.dtype == np.float32
    assert s.surface_points.shape == s.surface_normals.shape == (17, 3)
    assert s.surface_points.dtype == s.surface_normals.dtype == np.float32
    assert s.transform is None
    assert sample_sdf(mesh, 5, 0, seed=seed).surface_points is None
    only_surface = sample_sdf(mesh, 0, 0, n_surface=9, seed=seed)
    assert only_surface.points.shape == (0, 3) and only_surface.surface_points.shape == (9, 3)


def test_values_are_the_signed_distances_of_the_stored_points(seed: int) -> None:
    mesh = sphere_mesh()
    s = sample_sdf(mesh, 150, 150, seed=seed)
    expected = reference_sdf(mesh.vertices, mesh.faces)(s.points.astype(np.float64))
    np.testing.assert_allclose(s.sdf, expected, rtol=0, atol=2e-6)
    # Negative inside: far from the surface, the sign is the sphere's.
    radius = np.linalg.norm(s.points.astype(np.float64), axis=1)
    clear = np.abs(radius - R) > 0.01
    np.testing.assert_array_equal(s.sdf[clear] < 0, radius[clear] < R)


def test_uniform_samples_fill_the_bounds(rng: np.random.Generator, seed: int) -> None:
    lo = rng.uniform(-2, 0, 3)
    hi = lo + rng.uniform(0.5, 3, 3)
    s = sample_sdf(sphere_mesh(), n_uniform=4000, n_near=10, bounds=(lo, hi), seed=seed)
    uniform = s.points[10:].astype(np.float64)
    assert ((uniform >= lo) & (uniform <= hi)).all()
    # Uniform: mean in the middle, standard deviation (hi - lo) / sqrt(12); 6 sigma slack.
    np.testing.assert_allclose(uniform.mean(axis=0), (lo + hi) / 2, atol=6 * (hi - lo).max() / math.sqrt(12 * 4000))
    np.testing.assert_allclose(uniform.std(axis=0), (hi - lo) / math.sqrt(12), rtol=0.08)


def test_default_bounds_are_the_unit_cube(seed: int) -> None:
    s = sample_sdf(sphere_mesh(), n_uniform=2000, n_near=0, seed=seed)
    assert (np.abs(s.points) <= 1).all() and (np.abs(s.points) > 0.9).any()


def test_near_samples_hug_the_surface_at_deepsdf_std(seed: int) -> None:
    n = 3000
    s = sample_sdf(sphere_mesh(), n_uniform=0, n_near=n, seed=seed)
    first, second = np.abs(s.sdf[: n - n // 2]), np.abs(s.sdf[n - n // 2:])
    big, small = DEEPSDF_NEAR_STD
    assert math.isclose(big, math.sqrt(0.005)) and math.isclose(small, math.sqrt(0.0005))
    assert (first <= 3 * big).mean() > 0.98 and (second <= 3 * small).mean() > 0.98
    # Near a smooth surface the distance is the noise along the normal: |N(0, std)|, whose RMS is std.
    np.testing.assert_allclose(np.sqrt((first.astype(np.float64) ** 2).mean()), big, rtol=0.15)
    np.testing.assert_allclose(np.sqrt((second.astype(np.float64) ** 2).mean()), small, rtol=0.15)


def test_near_std_as_one_number_or_a_pair_in_order(seed: int) -> None:
    mesh = sphere_mesh()
    s = sample_sdf(mesh, 0, 401, near_std=0.01, seed=seed)
    assert (np.abs(s.sdf) <= 0.06).all()
    np.testing.assert_allclose(np.sqrt((s.sdf.astype(np.float64) ** 2).mean()), 0.01, rtol=0.2)
    # An odd count: the first std gets the extra point.
    s = sample_sdf(mesh, 0, 401, near_std=(1e-4, 0.05), seed=seed)
    assert (np.abs(s.sdf[:201]) <= 6e-4).all()
    assert np.abs(s.sdf[201:]).mean() > 0.02


def test_same_seed_same_samples_other_seed_other_samples(seed: int) -> None:
    mesh = sphere_mesh()
    a = sample_sdf(mesh, 40, 60, n_surface=10, seed=seed)
    b = sample_sdf(mesh, 40, 60, n_surface=10, seed=seed)
    for name in ("points", "sdf", "surface_points", "surface_normals"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    c = sample_sdf(mesh, 40, 60, n_surface=10, seed=seed + 1)
    assert not np.array_equal(a.points, c.points) and not np.array_equal(a.surface_points, c.surface_points)
    d = sample_sdf(mesh, 40, 60, n_surface=10, seed=np.random.default_rng(seed))
    np.testing.assert_array_equal(a.points, d.points)
    assert not np.array_equal(sample_sdf(mesh, 40, 60).points, sample_sdf(mesh, 40, 60).points)


def test_surface_points_lie_on_the_surface_with_outward_unit_normals(seed: int) -> None:
    mesh = sphere_mesh()
    s = sample_sdf(mesh, 0, 0, n_surface=500, seed=seed)
    d = reference_sdf(mesh.vertices, mesh.faces)(s.surface_points.astype(np.float64))
    assert np.abs(d).max() < 1e-6
    np.testing.assert_allclose(np.linalg.norm(s.surface_normals, axis=1), 1, rtol=1e-6)
    assert ((s.surface_normals * s.surface_points).sum(axis=1) > 0).all()


def test_surface_points_are_area_weighted(seed: int) -> None:
    # Two separate triangles, areas 1 : 3, and a degenerate one that must never be picked.
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 2, 0], [0, 0, 5], [3, 0, 5], [0, 2, 5],
                         [0, 0, 9], [1, 1, 9], [2, 2, 9]], float)
    faces = np.array([[0, 1, 2], [6, 7, 8], [3, 4, 5]])
    n = 4000
    s = sample_sdf((vertices, faces), 0, 0, n_surface=n, seed=seed, sdf=lambda p: np.zeros(len(p)))
    z = s.surface_points[:, 2]
    assert set(np.round(z).astype(int)) <= {0, 5}
    # Binomial(n, 3/4): 6 sigma slack.
    assert abs((z > 2).mean() - 0.75) < 6 * math.sqrt(0.75 * 0.25 / n)
    np.testing.assert_allclose(np.abs(s.surface_normals[:, 2]), 1)


def test_an_injected_sdf_gets_the_stored_float32_points(seed: int) -> None:
    calls = []

    def sdf(points: np.ndarray) -> np.ndarray:
        calls.append(points)
        return fastsdf.Sphere(0.5)(points)[:, None]  # (N, 1) is fine too

    s = sample_sdf(sphere_mesh(0.5), 30, 40, seed=seed, sdf=sdf)
    seen = np.concatenate(calls)
    assert seen.dtype == np.float32
    np.testing.assert_array_equal(seen, s.points)
    np.testing.assert_allclose(s.sdf, np.linalg.norm(s.points, axis=1) - 0.5, atol=1e-6)


def test_mesh_sdf_is_built_from_the_mesh_with_the_sign(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    built = []

    def fake(vertices: np.ndarray, faces: np.ndarray, sign: str) -> Callable:
        built.append((vertices, faces, sign))
        return lambda p: np.ones(len(p), np.float32)

    monkeypatch.setattr(sampling, "_mesh_sdf", fake)
    mesh = sphere_mesh()
    s = sample_sdf(mesh, 5, 5, seed=seed, sign="pseudonormal")
    (vertices, faces, sign), = built
    assert sign == "pseudonormal" and (s.sdf == 1).all()
    np.testing.assert_array_equal(vertices, mesh.vertices)
    np.testing.assert_array_equal(faces, mesh.faces)


def test_sampling_a_real_open_mesh(seed: int) -> None:
    mesh, _ = normalize(load("suzanne.obj"))
    s = sample_sdf(mesh, n_uniform=100, n_near=200, n_surface=20, seed=seed)
    assert len(s) == 300 and np.isfinite(s.sdf).all()
    assert (np.abs(s.sdf[:200]) < 3 * DEEPSDF_NEAR_STD[0]).mean() > 0.95
    # Outside the sphere of radius 1/1.03 the distance is at least the gap to it.
    radius = np.linalg.norm(s.points, axis=1)
    outside = radius > R
    assert (s.sdf[outside] >= radius[outside] - R - 1e-6).all()
    assert len(s.pos()) > 0 and len(s.neg()) > 0


@pytest.mark.parametrize("kwargs, match", [
    ({"n_uniform": -1}, "n_uniform"),
    ({"n_near": 2.5}, "n_near"),
    ({"n_near": True}, "n_near"),
    ({"n_surface": "3"}, "n_surface"),
    ({"n_uniform": 0, "n_near": 0}, "nothing to sample"),
    ({"near_std": 0.0}, "near_std"),
    ({"near_std": -0.1}, "near_std"),
    ({"near_std": float("nan")}, "near_std"),
    ({"near_std": (0.1, 0.01, 0.001)}, "near_std"),
    ({"near_std": ()}, "near_std"),
    ({"near_std": "wide"}, "near_std"),
    ({"bounds": ((1, 1, 1), (-1, -1, -1))}, "bounds"),
    ({"bounds": ((-1, -1), (1, 1))}, "bounds"),
    ({"bounds": ((-1, -1, np.nan), (1, 1, 1))}, "bounds"),
    ({"bounds": 1.0}, "bounds"),
])
def test_sample_sdf_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    args = {"n_uniform": 3, "n_near": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        sample_sdf(sphere_mesh(), sdf=lambda p: np.zeros(len(p)), **args)


def test_sample_sdf_rejects_bad_meshes_and_bad_distances() -> None:
    with pytest.raises(ValueError, match="empty"):
        sample_sdf((np.zeros((0, 3)), np.zeros((0, 3), int)), 1, 1)
    flat = (np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0]], float), np.array([[0, 1, 2]]))
    with pytest.raises(ValueError, match="area"):
        sample_sdf(flat, 0, 5, sdf=lambda p: np.zeros(len(p)))
    sample_sdf(flat, 5, 0, sdf=lambda p: np.zeros(len(p)))  # uniform samples need no area
    mesh = sphere_mesh()
    with pytest.raises(ValueError, match=r"\(N, 3\) points to \(N,\)"):
        sample_sdf(mesh, 3, 3, sdf=lambda p: np.zeros((len(p), 2)))
    with pytest.raises(ValueError, match="NaN"):
        sample_sdf(mesh, 3, 3, sdf=lambda p: np.full(len(p), np.nan))
    with pytest.raises(TypeError):
        sample_sdf(mesh, 3, 3, sdf="sphere")


# --------------------------------------------------------------------------------------------
# SdfSamples
# --------------------------------------------------------------------------------------------


def test_pos_holds_positive_and_neg_the_rest(rng: np.random.Generator) -> None:
    sdf = rng.standard_normal(50).astype(np.float32)
    sdf[:3] = (0.0, -0.0, np.float32(1e-30))
    s = SdfSamples(rng.uniform(-1, 1, (50, 3)), sdf)
    pos, neg = s.pos(), s.neg()
    assert pos.dtype == neg.dtype == np.float32 and pos.shape[1] == neg.shape[1] == 4
    assert len(pos) + len(neg) == 50
    assert (pos[:, 3] > 0).all() and (neg[:, 3] <= 0).all()
    assert (neg[:, 3] == 0).sum() == 2 and (pos[:, 3] == np.float32(1e-30)).sum() == 1
    np.testing.assert_array_equal(pos[:, :3], s.points[s.sdf > 0])


def test_sdf_samples_check_their_arrays() -> None:
    with pytest.raises(ValueError):
        SdfSamples(np.zeros((3, 3)), np.zeros(2))
    with pytest.raises(ValueError):
        SdfSamples(np.zeros((3, 4)), np.zeros(3))
    with pytest.raises(ValueError):  # 2D points, 3D surface points
        SdfSamples(np.zeros((3, 2)), np.zeros(3), np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError):
        SdfSamples(np.zeros((3, 2)), np.zeros(3), transform=NormalizationTransform.identity())
    with pytest.raises(ValueError):
        SdfSamples(np.zeros((3, 3)), [0, np.nan, 0])
    with pytest.raises(ValueError):
        SdfSamples(np.zeros((3, 3)), np.zeros(3), surface_points=np.zeros((2, 3)))
    with pytest.raises(ValueError):
        SdfSamples(np.zeros((3, 3)), np.zeros(3), np.zeros((2, 3)), np.zeros((1, 3)))
    with pytest.raises(ValueError):
        SdfSamples(np.zeros((3, 3)), np.zeros(3), transform={"offset": [0, 0, 0], "scale": 1})


# --------------------------------------------------------------------------------------------
# DeepSDF .npz files
# --------------------------------------------------------------------------------------------


def _sorted_rows(a: np.ndarray) -> np.ndarray:
    return a[np.lexsort(a.T[::-1])]


def test_npz_round_trip(tmp_path: Path, seed: int) -> None:
    mesh, transform = normalize(load("cow.obj"))
    s = sample_sdf(mesh, 50, 150, n_surface=20, seed=seed)
    s.transform = transform
    path = tmp_path / "cow.npz"
    save_npz(path, s)
    with np.load(path) as data:
        assert set(data.files) == {"pos", "neg", "offset", "scale", "surface_points", "surface_normals"}
        assert data["pos"].dtype == data["neg"].dtype == np.float32
        assert data["pos"].shape[1] == data["neg"].shape[1] == 4
        assert (data["pos"][:, 3] > 0).all() and (data["neg"][:, 3] <= 0).all()
        assert data["offset"].shape == (3,) and data["scale"].shape == (1,)
    back = load_npz(path)
    table = np.column_stack([s.points, s.sdf])
    np.testing.assert_array_equal(np.column_stack([back.points, back.sdf]), np.concatenate([s.pos(), s.neg()]))
    np.testing.assert_array_equal(_sorted_rows(np.column_stack([back.points, back.sdf])), _sorted_rows(table))
    np.testing.assert_array_equal(back.surface_points, s.surface_points)
    np.testing.assert_array_equal(back.surface_normals, s.surface_normals)
    assert back.transform == transform
    # Without the extras, the file has DeepSDF's two keys only.
    save_npz(tmp_path / "plain.npz", SdfSamples(s.points, s.sdf))
    with np.load(tmp_path / "plain.npz") as data:
        assert set(data.files) == {"pos", "neg"}
    plain = load_npz(tmp_path / "plain.npz")
    assert plain.transform is None and plain.surface_points is None


def test_save_npz_writes_exactly_the_path_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = SdfSamples(np.zeros((2, 3)), [1.0, -1.0])
    save_npz(tmp_path / "samples.bin", s)
    assert [p.name for p in tmp_path.iterdir()] == ["samples.bin"]
    target = tmp_path / "keep.npz"
    target.write_bytes(b"precious")

    def broken_savez(file: Any, **arrays: Any) -> None:
        file.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError):
        save_npz(target, s)
    assert target.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.npz", "samples.bin"]
    with pytest.raises(TypeError):
        save_npz(target, {"pos": np.zeros((1, 4))})


def test_loads_files_written_like_deepsdf(tmp_path: Path, rng: np.random.Generator) -> None:
    pos = np.column_stack([rng.uniform(-1, 1, (40, 3)), rng.uniform(0.001, 0.1, 40)]).astype(np.float32)
    neg = np.column_stack([rng.uniform(-1, 1, (30, 3)), -rng.uniform(0, 0.1, 30)]).astype(np.float32)
    path = tmp_path / "deepsdf.npz"
    np.savez(path, pos=pos, neg=neg)
    s = load_npz(path)
    np.testing.assert_array_equal(s.points, np.concatenate([pos, neg])[:, :3])
    np.testing.assert_array_equal(s.sdf, np.concatenate([pos, neg])[:, 3])
    np.testing.assert_array_equal(s.pos(), pos)
    np.testing.assert_array_equal(s.neg(), neg)
    # Extra keys are ignored, float64 is read as float32, NaN rows are dropped (DeepSDF's
    # remove_nans), and an empty side is fine.
    bad_row = np.array([[0.1, 0.2, 0.3, np.nan]])
    np.savez_compressed(path, pos=np.concatenate([pos, bad_row]).astype(np.float64), neg=np.zeros((0, 4), np.float32),
                        normals=np.zeros((5, 3)), name=np.array("chair"))
    s = load_npz(path)
    assert s.points.dtype == np.float32 and len(s) == 40
    np.testing.assert_array_equal(s.pos(), pos)
    assert s.neg().shape == (0, 4) and s.transform is None


def _zip_member_corrupted(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("write, match", [
    (lambda p: p.write_bytes(b"not a zip file at all"), "npz"),
    (lambda p: p.write_bytes(b""), "npz"),
    (lambda p: np.save(p.with_suffix(".npy"), np.zeros((3, 4))) or p.with_suffix(".npy").rename(p), ".npy"),
    (lambda p: np.savez(p, pos=np.zeros((3, 4), np.float32)), "'neg'"),
    (lambda p: np.savez(p, positive=np.zeros((3, 4)), negative=np.zeros((3, 4))), "'pos' or 'neg'"),
    (lambda p: np.savez(p, pos=np.zeros((3, 3), np.float32), neg=np.zeros((3, 4), np.float32)), "pos"),
    (lambda p: np.savez(p, pos=np.zeros((3, 4), np.int32), neg=np.zeros((3, 4), np.float32)), "pos"),
    (lambda p: np.savez(p, pos=np.zeros((3, 4)), neg=np.zeros((2, 4, 1))), "neg"),
    (lambda p: np.savez(p, pos=np.zeros((3, 4)), neg=np.zeros((2, 4)), offset=np.zeros(3)), "scale"),
    (lambda p: np.savez(p, pos=np.zeros((3, 4)), neg=np.zeros((2, 4)), offset=np.zeros(3), scale=[-1.0]), "scale"),
    (lambda p: np.savez(p, pos=np.zeros((3, 4)), neg=np.zeros((2, 4)), surface_points=np.zeros((2, 3))), "surface"),
    (lambda p: np.savez(p, pos=np.zeros((3, 4)), neg=np.zeros((2, 4)), surface_points=np.zeros((2, 3)),
                        surface_normals=np.zeros((1, 3))), "surface"),
    (lambda p: np.savez(p, pos=np.array([None, 1], dtype=object), neg=np.zeros((2, 4))), "npz"),
])
def test_load_npz_rejects_bad_files(tmp_path: Path, write: Callable[[Path], Any], match: str) -> None:
    path = tmp_path / "bad.npz"
    write(path)
    with pytest.raises(ValueError, match=match):
        load_npz(path)


def test_load_npz_rejects_damaged_and_truncated_archives(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "s.npz"
    np.savez(path, pos=rng.random((500, 4)).astype(np.float32), neg=-rng.random((500, 4)).astype(np.float32))
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError):
        load_npz(path)
    path.write_bytes(whole)
    _zip_member_corrupted(path)
    with pytest.raises(ValueError):
        load_npz(path)
    with pytest.raises(FileNotFoundError):
        load_npz(tmp_path / "missing.npz")
