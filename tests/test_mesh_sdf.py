"""fastsdf.MeshSDF against the float64 brute-force twin (fastsdf.geometry.mesh_sdf_reference).

Every mesh is first normalised into the unit sphere (bounding-box centre at the origin, largest
vertex norm 1/1.03), so absolute tolerances mean the same thing on every mesh. Query points are
fresh per run (see the ``rng`` fixture): half uniform in [-1.2, 1.2]^3, half near the surface
(surface samples plus Gaussian noise of std 0.01).

The shared meshes (../shared/meshes) split as follows for signs: cow, fandisk, cheburashka,
homer and spot are closed (spot once its UV seams are merged by position: its winding number is
0 or 1 everywhere); teapot and suzanne are open. cow intersects itself (a small region has winding
number 2), where the pseudonormal sign and the winding number disagree by design, so there
"pseudonormal" is held to the pseudonormal reference rather than to the winding number.
"""

from __future__ import annotations

import functools
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
import trimesh

import fastsdf
from fastsdf.geometry.mesh_sdf_reference import (
    closest_points_reference,
    pseudonormal_sign_reference,
    sign_mesh,
    triangle_closest_points,
    winding_number_reference,
)

from conftest import assert_closed_oriented_manifold, signed_volume, to_numpy
from mesh_helpers import bumpy_sphere, normalise

MeshSDF = getattr(fastsdf, "MeshSDF", None)
pytestmark = pytest.mark.skipif(MeshSDF is None, reason="fastsdf.MeshSDF is not implemented yet")

MESH_DIR = Path(__file__).resolve().parents[2] / "shared" / "meshes"
CLOSED = ["cow", "fandisk", "cheburashka", "homer", "spot"]
OPEN = ["teapot", "suzanne"]
SHARED = CLOSED + OPEN
SELF_INTERSECTING = {"cow"}
SIGNS = ("winding", "pseudonormal", "exact_winding")

ATOL64 = 1e-6  # distances, closest points, barycentrics, exact winding numbers, float64 points
ATOL32 = 1e-5  # the same for float32 points
NEAR = 1e-4  # signs are compared on points farther than this from the surface
# The fast winding number (Barill et al. 2018) is an approximation. Measured on the shared meshes
# (200,000 points each, farther than FAST_NEAR from the surface): MeshSDF's (second order, beta = 2,
# float32) is at most 0.05 off (teapot); a NumPy prototype gave 0.13 with dipoles alone. 0.1 leaves
# about twice the margin (0.05 would be flaky); signs only need the error below 0.5.
FAST_WINDING_ATOL = 0.1
FAST_NEAR = 1e-2


# --------------------------------------------------------------------------------------------
# Meshes and points
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def shared_mesh(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A shared mesh as trimesh reads it (no processing), normalised; read-only arrays."""
    mesh = trimesh.load(MESH_DIR / f"{name}.obj", force="mesh", process=False)
    verts, faces = normalise(mesh.vertices), np.asarray(mesh.faces, np.int64)
    verts.flags.writeable = faces.flags.writeable = False
    return verts, faces


def random_soup(rng: np.random.Generator, n_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """Unconnected triangles of sizes from 0.01 to 0.5, slivers and overlaps included."""
    size = np.exp(rng.uniform(np.log(0.01), np.log(0.5), (n_faces, 1, 1)))
    tri = rng.uniform(-0.7, 0.7, (n_faces, 1, 3)) + rng.normal(0, 1, (n_faces, 3, 3)) * size
    return normalise(tri.reshape(-1, 3)), np.arange(3 * n_faces, dtype=np.int64).reshape(-1, 3)


def sample_points(rng: np.random.Generator, verts: np.ndarray, faces: np.ndarray, n: int) -> np.ndarray:
    """n float64 points: n // 2 uniform in [-1.2, 1.2]^3, the rest near the surface."""
    n_uniform = n // 2
    tri = verts[faces]
    area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    chosen = rng.choice(len(faces), n - n_uniform, p=area / area.sum())
    r1, r2 = rng.random((2, n - n_uniform))
    s = np.sqrt(r1)
    bary = np.stack([1 - s, s * (1 - r2), s * r2], axis=1)
    near = np.einsum("nk,nki->ni", bary, tri[chosen]) + rng.normal(0, 0.01, (n - n_uniform, 3))
    return rng.permutation(np.concatenate([rng.uniform(-1.2, 1.2, (n_uniform, 3)), near]))


def reference_winding(verts: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    return winding_number_reference(*sign_mesh(verts, faces), points)


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def assert_array_kind(out: Any, like: Any, shape: tuple[int, ...], dtype: Any = None, context: str = "") -> None:
    """Same kind as ``like`` (NumPy array, or tensor on its device), with the given shape and dtype
    (a NumPy dtype, matched to the torch one for tensors)."""
    if isinstance(like, torch.Tensor):
        assert isinstance(out, torch.Tensor), f"expected a tensor, got {type(out).__name__}; {context}"
        assert out.device == like.device, f"output on {out.device}, points on {like.device}; {context}"
        if dtype is not None:
            expected = torch.from_numpy(np.zeros(0, dtype)).dtype
            assert out.dtype == expected, f"dtype {out.dtype}, expected {expected}; {context}"
    else:
        assert isinstance(out, np.ndarray), f"expected a NumPy array, got {type(out).__name__}; {context}"
        if dtype is not None:
            assert out.dtype == np.dtype(dtype), f"dtype {out.dtype}, expected {np.dtype(dtype)}; {context}"
    assert tuple(out.shape) == shape, f"shape {tuple(out.shape)}, expected {shape}; {context}"


def assert_closest_matches_reference(sdf: Any, verts: np.ndarray, faces: np.ndarray, points: Any,
                                     atol: float, context: str = "") -> np.ndarray:
    """unsigned() and closest() against the reference; returns the reference distances.

    Closest points may differ from the reference where two triangles tie, so each reported point
    must instead be at the minimum distance, on the reported face, as its barycentrics say.
    """
    p = to_numpy(points).astype(np.float64)
    ref_dist = closest_points_reference(verts, faces, p)[0]
    dtype = to_numpy(points).dtype
    n = len(p)

    dist = sdf.unsigned(points)
    assert_array_kind(dist, points, (n,), dtype, context)
    dist = to_numpy(dist).astype(np.float64)
    worst = np.argmax(np.abs(dist - ref_dist)) if n else 0
    np.testing.assert_allclose(dist, ref_dist, rtol=0, atol=atol,
                               err_msg=f"unsigned distance, worst at {p[worst] if n else None}; {context}")

    closest, face_ids, bary = sdf.closest(points)
    assert_array_kind(closest, points, (n, 3), dtype, context)
    assert_array_kind(face_ids, points, (n,), np.int64, context)
    assert_array_kind(bary, points, (n, 3), dtype, context)
    closest, face_ids, bary = (to_numpy(x) for x in (closest, face_ids, bary))
    closest, bary = closest.astype(np.float64), bary.astype(np.float64)
    assert ((face_ids >= 0) & (face_ids < len(faces))).all(), f"face id out of range; {context}"
    np.testing.assert_allclose(np.linalg.norm(p - closest, axis=1), ref_dist, rtol=0, atol=atol,
                               err_msg=f"closest points not at the minimum distance; {context}")
    tri = verts[faces[face_ids]]
    face_d2, _ = triangle_closest_points(p, tri[:, 0], tri[:, 1], tri[:, 2])
    np.testing.assert_allclose(np.sqrt(face_d2), ref_dist, rtol=0, atol=atol,
                               err_msg=f"reported face is not a closest one; {context}")
    np.testing.assert_allclose(bary.sum(axis=1), 1.0, rtol=0, atol=atol, err_msg=f"barycentric sums; {context}")
    # (Looser: on a sliver, barycentrics are ill-conditioned while the point they give is not.)
    assert (bary >= -10 * atol).all() and (bary <= 1 + 10 * atol).all(), f"barycentrics outside [0, 1]; {context}"
    np.testing.assert_allclose(np.einsum("nk,nki->ni", bary, tri), closest, rtol=0, atol=atol,
                               err_msg=f"barycentrics do not rebuild the closest points; {context}")
    # So each reported point is a closest point: the reference's, or one as close on a tied face.
    return ref_dist


def signs_of(sdf: Any, points: Any) -> np.ndarray:
    """True where inside (negative)."""
    return to_numpy(sdf(points)) < 0


# --------------------------------------------------------------------------------------------
# Distances, closest points, face ids, barycentrics
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_points", [1, 7, 1001])
@pytest.mark.parametrize("n_faces", [1, 7, 50, 300])
def test_random_soups_match_reference(n_faces: int, n_points: int, rng, seed) -> None:
    verts, faces = random_soup(rng, n_faces)
    points = sample_points(rng, verts, faces, n_points)
    sdf = MeshSDF(verts, faces)
    assert_closest_matches_reference(sdf, verts, faces, points, ATOL64, f"seed={seed} float64")
    assert_closest_matches_reference(sdf, verts, faces, points.astype(np.float32), ATOL32, f"seed={seed} float32")


@pytest.mark.parametrize("n_points", [1, 7, 1001])
def test_bumpy_sphere_matches_reference(n_points: int, rng, seed) -> None:
    verts, faces = bumpy_sphere(rng)
    points = sample_points(rng, verts, faces, n_points)
    sdf = MeshSDF(verts, faces, sign="pseudonormal")
    ref_dist = assert_closest_matches_reference(sdf, verts, faces, points, ATOL64, f"seed={seed}")
    inside = reference_winding(verts, faces, points) > 0.5
    far = ref_dist > NEAR
    for sign in SIGNS:
        sdf = MeshSDF(verts, faces, sign=sign)
        values = to_numpy(sdf(points))
        np.testing.assert_array_equal(values[far] < 0, inside[far], err_msg=f"seed={seed} sign={sign}")
        np.testing.assert_allclose(np.abs(values), ref_dist, rtol=0, atol=ATOL64, err_msg=f"seed={seed} {sign}")


@pytest.mark.parametrize("name", SHARED)
def test_shared_meshes_match_reference(name: str, rng, seed) -> None:
    verts, faces = shared_mesh(name)
    points = sample_points(rng, verts, faces, 1001)
    sdf = MeshSDF(verts, faces)
    assert_closest_matches_reference(sdf, verts, faces, points, ATOL64, f"seed={seed} {name} float64")
    assert_closest_matches_reference(sdf, verts, faces, points.astype(np.float32), ATOL32,
                                     f"seed={seed} {name} float32")


def test_large_batch(rng, seed) -> None:
    """100003 points at once: a random subset (first and last included) against the reference, and
    every value the same as in small batches."""
    name = "cheburashka"
    verts, faces = shared_mesh(name)
    points = sample_points(rng, verts, faces, 100003)
    subset = np.unique(np.concatenate([[0, len(points) - 1], rng.choice(len(points), 500, replace=False)]))
    signed = {}
    for sign in SIGNS:
        sdf = MeshSDF(verts, faces, sign=sign)
        values = signed[sign] = to_numpy(sdf(points))
        assert values.shape == (len(points),) and values.dtype == np.float64
        np.testing.assert_array_equal(np.abs(values), to_numpy(sdf.unsigned(points)), err_msg=f"{sign}")
        np.testing.assert_array_equal(to_numpy(sdf.contains(points)), values < 0, err_msg=f"{sign}")
        np.testing.assert_array_equal(values[subset], to_numpy(sdf(points[subset])),
                                      err_msg=f"seed={seed} {sign}: batch size changes values")
    ref_dist = assert_closest_matches_reference(sdf, verts, faces, points[subset], ATOL64, f"seed={seed}")
    inside = reference_winding(verts, faces, points[subset]) > 0.5
    far = ref_dist > NEAR
    for sign in SIGNS:  # cheburashka is closed and does not intersect itself
        np.testing.assert_array_equal(signed[sign][subset][far] < 0, inside[far], err_msg=f"seed={seed} {sign}")
    closest, face_ids, bary = (to_numpy(x) for x in sdf.closest(points))
    np.testing.assert_array_equal(closest[subset], to_numpy(sdf.closest(points[subset])[0]),
                                  err_msg=f"seed={seed}")
    np.testing.assert_allclose(np.einsum("nk,nki->ni", bary, verts[faces[face_ids]]), closest, rtol=0, atol=ATOL64)


# --------------------------------------------------------------------------------------------
# Signs and winding numbers
# --------------------------------------------------------------------------------------------


def assert_winding_numbers(sdf: Any, points: np.ndarray, ref_w: np.ndarray, ref_dist: np.ndarray,
                           context: str) -> None:
    exact = sdf.winding_number(points, exact=True)
    assert_array_kind(exact, points, (len(points),), context=context)
    far = ref_dist > NEAR
    np.testing.assert_allclose(to_numpy(exact)[far], ref_w[far], rtol=0, atol=ATOL64,
                               err_msg=f"exact winding number; {context}")
    fast = to_numpy(sdf.winding_number(points))
    assert fast.shape == (len(points),), context
    farther = ref_dist > FAST_NEAR
    error = np.abs(fast - ref_w)[farther]
    assert error.max(initial=0) <= FAST_WINDING_ATOL, (
        f"fast winding number off by {error.max():.4f} (> {FAST_WINDING_ATOL}) at "
        f"{points[farther][np.argmax(error)]}; {context}")


@pytest.mark.parametrize("name", CLOSED)
def test_signs_on_closed_meshes(name: str, rng, seed) -> None:
    """Every sign mode agrees with the exact winding number away from the surface (pseudonormals
    with the pseudonormal reference instead on self-intersecting cow)."""
    verts, faces = shared_mesh(name)
    points = sample_points(rng, verts, faces, 1001)
    ref_dist = closest_points_reference(verts, faces, points)[0]
    ref_w = reference_winding(verts, faces, points)
    far = ref_dist > NEAR
    inside = ref_w > 0.5
    context = f"seed={seed} {name}"
    for sign in SIGNS:
        sdf = MeshSDF(verts, faces, sign=sign)
        got = signs_of(sdf, points)
        if sign == "pseudonormal" and name in SELF_INTERSECTING:
            expected = pseudonormal_sign_reference(verts, faces, points) < 0
        else:
            expected = inside
        bad = np.nonzero(far & (got != expected))[0]
        assert len(bad) == 0, (f"{len(bad)} wrong signs with sign={sign!r}, e.g. {points[bad[:3]].tolist()} "
                               f"(winding numbers {ref_w[bad[:3]]}, distances {ref_dist[bad[:3]]}); {context}")
    assert_winding_numbers(sdf, points, ref_w, ref_dist, context)


@pytest.mark.parametrize("name", OPEN)
def test_signs_on_open_meshes(name: str, rng, seed) -> None:
    """exact_winding follows the exact winding number; the fast one agrees with it almost always."""
    verts, faces = shared_mesh(name)
    points = sample_points(rng, verts, faces, 2001)
    ref_dist = closest_points_reference(verts, faces, points)[0]
    ref_w = reference_winding(verts, faces, points)
    context = f"seed={seed} {name}"
    exact = signs_of(MeshSDF(verts, faces, sign="exact_winding"), points)
    # Where the winding number is 0.5 to within its own rounding, either sign is right.
    clear = (ref_dist > NEAR) & (np.abs(ref_w - 0.5) > 1e-9)
    bad = np.nonzero(clear & (exact != (ref_w > 0.5)))[0]
    assert len(bad) == 0, (f"{len(bad)} wrong exact_winding signs, e.g. {points[bad[:3]].tolist()} "
                           f"(winding numbers {ref_w[bad[:3]]}); {context}")
    sdf = MeshSDF(verts, faces, sign="winding")
    agree = (signs_of(sdf, points) == exact).mean()
    assert agree >= 0.999, f"fast and exact winding signs agree on only {agree:.2%} of points; {context}"
    assert_winding_numbers(sdf, points, ref_w, ref_dist, context)
    # Whatever the sign, the magnitude is the distance.
    np.testing.assert_allclose(np.abs(to_numpy(sdf(points))), ref_dist, rtol=0, atol=ATOL64, err_msg=context)


def test_carried_signs_match_pointwise_winding_numbers(rng, seed) -> None:
    """Signs handed from point to point (query.h) against winding numbers summed at every point, on
    dense clouds, where nearly every point is a neighbour's: exact_winding exactly (its bound on
    the change is rigorous), "winding" wherever the fast sum is clear of 1/2 by more than its own
    error could move it."""
    for name in ("suzanne", "teapot", "cow"):
        verts, faces = shared_mesh(name)
        near = sample_points(rng, verts, faces, 16000)
        centre = verts[rng.integers(len(verts))]
        points = np.concatenate([near, centre + rng.normal(0, 0.05, (8000, 3))])
        context = f"seed={seed} {name}"
        exact_sdf = MeshSDF(verts, faces, sign="exact_winding")
        distance = to_numpy(exact_sdf.unsigned(points))
        w = to_numpy(exact_sdf.winding_number(points, exact=True))
        check = (distance > NEAR) & (np.abs(w - 0.5) > 1e-6)
        np.testing.assert_array_equal(signs_of(exact_sdf, points)[check], (w > 0.5)[check], err_msg=context)
        fast_sdf = MeshSDF(verts, faces, sign="winding")
        fast = to_numpy(fast_sdf.winding_number(points))
        clear = (distance > NEAR) & (np.abs(fast - 0.5) > 2 * FAST_WINDING_ATOL)
        np.testing.assert_array_equal(signs_of(fast_sdf, points)[clear], (fast > 0.5)[clear], err_msg=context)


def test_cpu_code_paths_agree(tmp_path: Path, rng, seed) -> None:
    """The AVX2 build of the CPU kernels (used where the CPU has it) and the baseline one
    (FASTSDF_CPU_ISA=baseline, run in a subprocess since the choice is made once) give the same results
    up to rounding (the fast winding number: up to its approximation where rounding decides it)."""
    name = str(rng.choice(SHARED))
    verts, faces = shared_mesh(name)
    points = sample_points(rng, verts, faces, 3001)
    np.savez(tmp_path / "input.npz", verts=verts, faces=faces, points=points)
    script = (
        "import sys, numpy as np, fastsdf\n"
        "data = np.load(sys.argv[1])\n"
        "out = {}\n"
        "for sign in ('winding', 'pseudonormal', 'exact_winding'):\n"
        "    sdf = fastsdf.MeshSDF(data['verts'], data['faces'], sign=sign)\n"
        "    out[sign] = sdf(data['points'])\n"
        "out['fast'] = sdf.winding_number(data['points'])\n"
        "out['exact'] = sdf.winding_number(data['points'], exact=True)\n"
        "np.savez(sys.argv[2], **out)\n"
    )
    results = {}
    for flag in ("avx512", "baseline"):
        out = tmp_path / f"{flag}.npz"
        env = {**os.environ, "FASTSDF_CPU_ISA": flag}
        run = subprocess.run([sys.executable, "-c", script, str(tmp_path / "input.npz"), str(out)],
                             capture_output=True, text=True, env=env)
        assert run.returncode == 0, run.stderr
        results[flag] = dict(np.load(out))
    context = f"seed={seed} {name}"
    fast, baseline = results["avx512"], results["baseline"]
    away = np.abs(baseline["exact_winding"]) > NEAR
    for sign in SIGNS:
        np.testing.assert_allclose(np.abs(fast[sign]), np.abs(baseline[sign]), rtol=0, atol=1e-12, err_msg=context)
        agree = ((fast[sign] < 0) == (baseline[sign] < 0))[away]
        assert agree.all() if sign != "winding" else agree.mean() >= 0.999, f"{sign}; {context}"
    # The fast winding number takes a node's expansion where the point lies beyond beta times its
    # radius: where rounding puts a point on either side of that test in the two builds, they differ
    # by that node's approximation error, not by rounding (seed 7697361003276671265: 1 point in 3001
    # of fandisk, 8.7e-4, both within 0.008 of the exact 0). Elsewhere they agree to rounding.
    differ = np.abs(fast["fast"] - baseline["fast"])
    assert (differ > 1e-4).mean() <= 1e-3 and differ.max() <= FAST_WINDING_ATOL, (differ.max(), context)
    np.testing.assert_allclose(fast["exact"], baseline["exact"], rtol=0, atol=1e-9, err_msg=context)


# --------------------------------------------------------------------------------------------
# Frames: any units and position, points far away
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset, scale", [(0.0, 1e-20), (0.0, 1e20), (1e6, 1e-3), (-3e4, 50.0)])
def test_meshes_in_any_frame(offset: float, scale: float, rng, seed) -> None:
    """The float32 filters work in the mesh's own frame (bvh.h): distances stay exact and signs
    right whatever the units and however far from the origin the mesh lies."""
    unit_verts, faces = bumpy_sphere(rng)
    verts = unit_verts * scale + offset
    unit_points = sample_points(rng, unit_verts, faces, 1001)
    points = unit_points * scale + offset
    ref_dist = closest_points_reference(verts, faces, points)[0]
    inside = reference_winding(unit_verts, faces, unit_points) > 0.5
    far = ref_dist > NEAR * scale
    # float64 resolves the points' coordinates to about 1e-16 of their magnitude.
    atol = ATOL64 * scale + 1e-14 * abs(offset)
    context = f"seed={seed} offset={offset} scale={scale}"
    for sign in SIGNS:
        values = to_numpy(MeshSDF(verts, faces, sign=sign)(points))
        np.testing.assert_allclose(np.abs(values), ref_dist, rtol=0, atol=atol, err_msg=f"{sign}; {context}")
        np.testing.assert_array_equal((values < 0)[far], inside[far], err_msg=f"{sign}; {context}")


def test_points_far_away(rng, seed) -> None:
    """Points up to 1e150 away (beyond float32, whose overflow the filters survive): exact
    distances, outside in every sign mode, winding numbers 0."""
    verts, faces = bumpy_sphere(rng)
    directions = rng.normal(size=(40, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    points = directions * np.exp(rng.uniform(np.log(1e3), np.log(1e150), (40, 1)))
    ref_dist = np.linalg.norm(points[:, None] - verts[None], axis=2).min(axis=1)  # a vertex is closest this far
    for sign in SIGNS:
        sdf = MeshSDF(verts, faces, sign=sign)
        values = to_numpy(sdf(points))
        np.testing.assert_allclose(values, ref_dist, rtol=1e-12, err_msg=f"seed={seed} {sign}")
    np.testing.assert_allclose(to_numpy(sdf.winding_number(points)), 0.0, rtol=0, atol=1e-6, err_msg=f"seed={seed}")
    np.testing.assert_allclose(to_numpy(sdf.winding_number(points, exact=True)), 0.0, rtol=0, atol=1e-6,
                               err_msg=f"seed={seed}")


# Powers of ten from 1e-300 to 1e300 (1e-77 and 1e78 sat just past where products of four
# coordinates left float64), factors that are not powers of two, and powers of two.
MAGNITUDES = [1e-300, 1e-200, 1e-150, 1e-100, 1e-90, 1e-80, 1e-77, 1e-40, 1e40, 1e77, 1e78, 1e100, 1e150,
              1e200, 1e300, 3.7e-123, 7.3e251, 2.0 ** -990, 2.0 ** 1000]


class _ScaledBack:
    """A MeshSDF of a mesh scaled by ``factor``, asked at points scaled alike, answering in the
    unscaled units (for ``assert_closest_matches_reference``)."""

    def __init__(self, sdf: Any, factor: float):
        self.sdf, self.factor = sdf, factor

    def unsigned(self, points: np.ndarray) -> np.ndarray:
        return self.sdf.unsigned(points * self.factor) / self.factor

    def closest(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        closest, face, bary = self.sdf.closest(points * self.factor)
        return closest / self.factor, face, bary


@pytest.mark.parametrize("factor", MAGNITUDES)
def test_meshes_of_any_magnitude(factor: float, rng, seed) -> None:
    """A mesh and its points scaled together by any factor: distances, closest points and face
    ids are the unscaled mesh's, scaled, winding numbers and signs are unchanged, in every sign
    mode; by a power of two, bit for bit."""
    context = f"seed={seed} factor={factor:g}"
    soup_verts, soup_faces = random_soup(rng, 60)
    soup_points = sample_points(rng, soup_verts, soup_faces, 501)
    assert_closest_matches_reference(_ScaledBack(MeshSDF(soup_verts * factor, soup_faces), factor), soup_verts,
                                     soup_faces, soup_points, ATOL64, f"soup; {context}")

    verts, faces = bumpy_sphere(rng)
    points = sample_points(rng, verts, faces, 1001)
    ref_dist = closest_points_reference(verts, faces, points)[0]
    ref_w = reference_winding(verts, faces, points)
    far = ref_dist > NEAR
    power_of_two = math.frexp(factor)[0] == 0.5
    for sign in SIGNS:
        sdf, unit = MeshSDF(verts * factor, faces, sign=sign), MeshSDF(verts, faces, sign=sign)
        values = to_numpy(sdf(points * factor))
        np.testing.assert_allclose(np.abs(values) / factor, ref_dist, rtol=0, atol=ATOL64, err_msg=f"{sign}; {context}")
        np.testing.assert_array_equal((values < 0)[far], (ref_w > 0.5)[far], err_msg=f"{sign}; {context}")
        if power_of_two:
            np.testing.assert_array_equal(values, to_numpy(unit(points)) * factor, err_msg=f"{sign}; {context}")
    exact_w = to_numpy(sdf.winding_number(points * factor, exact=True))
    fast_w = to_numpy(sdf.winding_number(points * factor))
    np.testing.assert_allclose(exact_w[far], ref_w[far], rtol=0, atol=ATOL64, err_msg=context)
    assert np.abs(fast_w - ref_w)[ref_dist > FAST_NEAR].max() <= FAST_WINDING_ATOL, context
    if power_of_two:
        np.testing.assert_array_equal(exact_w, to_numpy(unit.winding_number(points, exact=True)), err_msg=context)
        np.testing.assert_array_equal(fast_w, to_numpy(unit.winding_number(points)), err_msg=context)
        (closest, face, bary), (unit_closest, unit_face, unit_bary) = sdf.closest(points * factor), unit.closest(points)
        np.testing.assert_array_equal(closest, unit_closest * factor, err_msg=context)
        np.testing.assert_array_equal(face, unit_face, err_msg=context)
        np.testing.assert_array_equal(bary, unit_bary, err_msg=context)


def _distance_to_vertices(points: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """The distance from each point to the nearest vertex, in units of a power of two near the
    point's coordinates, so that no square overflows (and vertices too small to matter vanish)."""
    exponent = np.frexp(np.abs(points).max(axis=1))[1]
    p = np.ldexp(points, -exponent[:, None])
    v = np.ldexp(verts[None], -exponent[:, None, None])
    return np.ldexp(np.linalg.norm(p[:, None] - v, axis=2).min(axis=1), exponent)


@pytest.mark.parametrize("size", [1e-300, 1e-100, 1.0, 1e100])
def test_points_far_from_the_mesh_for_its_size(size: float, rng, seed) -> None:
    """Points from 1e6 to 1e600 mesh sizes away, up to the float64 limit: distances to float64
    precision (a vertex is closest this far: a face point off a vertex by h, at R away, is nearer
    by about h^2 / 2R, under 1e-13 relative from 1e6 mesh sizes on, where at 1e3 it reached 6e-10,
    seed 7488885838979060238), outside in every sign mode, winding numbers 0, closest points on
    the mesh."""
    verts, faces = bumpy_sphere(rng)
    verts = verts * size
    directions = rng.normal(size=(60, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    points = directions * np.exp(rng.uniform(np.log(1e6 * size), np.log(1e300), (60, 1)))
    limit = np.finfo(np.float64).max
    points = np.concatenate([points, [[limit, 0, 0], [0, -limit, 0], [0, 0, limit], [-limit / 2, limit / 3, 1.0]]])
    ref_dist = _distance_to_vertices(points, verts)
    context = f"seed={seed} size={size:g}"
    for sign in SIGNS:
        sdf = MeshSDF(verts, faces, sign=sign)
        np.testing.assert_allclose(to_numpy(sdf(points)), ref_dist, rtol=1e-12, err_msg=f"{sign}; {context}")
    for exact in (False, True):
        np.testing.assert_allclose(to_numpy(sdf.winding_number(points, exact=exact)), 0.0, rtol=0, atol=1e-6,
                                   err_msg=f"exact={exact}; {context}")
    closest, face, _ = (to_numpy(x) for x in sdf.closest(points))
    assert ((face >= 0) & (face < len(faces))).all(), context
    assert (np.abs(closest) <= np.abs(verts).max(axis=0) * (1 + 1e-12)).all(), context


def test_distances_beyond_float_range_are_inf(rng, seed) -> None:
    """A distance larger than the points' dtype holds comes back as +inf (signed: outside)."""
    sdf = MeshSDF(*bumpy_sphere(rng))
    limit64, limit32 = np.finfo(np.float64).max, np.finfo(np.float32).max
    for points in (np.array([[limit64, limit64, 0.0], [0.5, 0.0, 0.0]]),
                   np.array([[limit32, -limit32, limit32], [0.5, 0.0, 0.0]], np.float32)):
        for values in (sdf(points), sdf.unsigned(points)):
            assert values[0] == np.inf and np.isfinite(values[1]), f"seed={seed} {values}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sign_mode_never_changes_magnitude(dtype: Any, rng, seed) -> None:
    meshes = {"soup": random_soup(rng, 50), "shared": shared_mesh(str(rng.choice(SHARED)))}
    for label, (verts, faces) in meshes.items():
        points = sample_points(rng, verts, faces, 1001).astype(dtype)
        unsigned = to_numpy(MeshSDF(verts, faces).unsigned(points))
        for sign in SIGNS:
            sdf = MeshSDF(verts, faces, sign=sign)
            values = to_numpy(sdf(points))
            context = f"seed={seed} {label} sign={sign} {np.dtype(dtype)}"
            np.testing.assert_array_equal(np.abs(values), unsigned, err_msg=context)
            np.testing.assert_array_equal(np.abs(values), to_numpy(sdf.unsigned(points)), err_msg=context)
            contains = sdf.contains(points)
            assert_array_kind(contains, points, (len(points),), np.bool_, context)
            np.testing.assert_array_equal(contains, values < 0, err_msg=context)


# --------------------------------------------------------------------------------------------
# Grids and meshing
# --------------------------------------------------------------------------------------------


def test_grid_equals_pointwise_evaluation(rng, seed) -> None:
    verts, faces = shared_mesh(str(rng.choice(SHARED)))
    sdf = MeshSDF(verts, faces)
    lo = tuple(rng.uniform(-1.2, -0.8, 3))
    hi = tuple(rng.uniform(0.7, 1.3, 3))
    res = 17
    volume = sdf.grid(res, (lo, hi))
    assert isinstance(volume, np.ndarray) and volume.dtype == np.float32 and volume.shape == (res,) * 3
    axes = [np.linspace(lo[a], hi[a], res) for a in range(3)]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    expected = to_numpy(sdf(points)).reshape(res, res, res)
    np.testing.assert_allclose(volume, expected, rtol=0, atol=2e-6, err_msg=f"seed={seed} bounds {lo} {hi}")
    # Default bounds: [-1, 1]^3.
    np.testing.assert_array_equal(sdf.grid(9), sdf.grid(9, ((-1, -1, -1), (1, 1, 1))))


def test_meshing_a_mesh_sdf_gives_a_closed_manifold(rng, seed) -> None:
    name = str(rng.choice(CLOSED))
    verts, faces = shared_mesh(name)
    sdf = MeshSDF(verts, faces)
    res = 48
    spacing = 2.0 / (res - 1)
    context = f"seed={seed} {name}"
    for label, (mc_verts, mc_faces) in {
        "extract_mesh": fastsdf.extract_mesh(sdf, res),
        "marching_cubes(grid)": fastsdf.marching_cubes(sdf.grid(res), 0.0, spacing=(spacing,) * 3,
                                                       origin=(-1.0, -1.0, -1.0)),
    }.items():
        mc_verts, mc_faces = to_numpy(mc_verts), to_numpy(mc_faces)
        assert_closed_oriented_manifold(mc_verts, mc_faces, f"{label}; {context}")
        assert signed_volume(mc_verts, mc_faces) > 0, f"{label} turned inside out; {context}"
        # Each vertex sits on a grid edge whose ends have opposite signs, so the surface crosses it.
        gap = to_numpy(sdf.unsigned(mc_verts.astype(np.float64)))
        assert gap.max() <= spacing + 1e-6, f"{label}: a vertex {gap.max()} from the surface; {context}"


# --------------------------------------------------------------------------------------------
# Kinds of input
# --------------------------------------------------------------------------------------------


def all_outputs(sdf: Any, points: Any) -> dict[str, Any]:
    closest, face_ids, bary = sdf.closest(points)
    return {"sdf": sdf(points), "unsigned": sdf.unsigned(points), "closest": closest, "face_ids": face_ids,
            "bary": bary, "contains": sdf.contains(points), "winding": sdf.winding_number(points),
            "exact winding": sdf.winding_number(points, exact=True)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_and_torch_points(dtype: Any, rng, seed) -> None:
    verts, faces = bumpy_sphere(rng)
    sdf = MeshSDF(verts, faces)
    points = sample_points(rng, verts, faces, 501).astype(dtype)
    tensor = torch.from_numpy(points)
    np_out, torch_out = all_outputs(sdf, points), all_outputs(sdf, tensor)
    n = len(points)
    dtypes = {"face_ids": np.int64, "contains": np.bool_, "winding": None, "exact winding": None}
    shapes = {"closest": (n, 3), "bary": (n, 3)}
    for key in np_out:
        for out, like in ((np_out[key], points), (torch_out[key], tensor)):
            assert_array_kind(out, like, shapes.get(key, (n,)), dtypes.get(key, dtype), f"{key} seed={seed}")
        tol = 0 if key in ("face_ids", "contains") else (1e-6 if dtype == np.float32 else 1e-12)
        np.testing.assert_allclose(to_numpy(torch_out[key]), np_out[key], rtol=0, atol=tol,
                                   err_msg=f"{key}: tensor and array results differ; seed={seed}")


def test_lists_and_strided_points(rng, seed) -> None:
    verts, faces = bumpy_sphere(rng)
    sdf = MeshSDF(verts, faces)
    points = sample_points(rng, verts, faces, 301)
    expected = to_numpy(sdf(points))
    as_list = sdf(points.tolist())
    assert isinstance(as_list, np.ndarray)
    np.testing.assert_allclose(as_list, expected, rtol=0, atol=1e-12)
    wide = np.zeros((len(points), 5))
    wide[:, 1:4] = points
    strided = {
        "column slice": wide[:, 1:4],
        "fortran order": np.asfortranarray(points),
        "every other row": np.repeat(points, 2, axis=0)[::2],
        "transposed tensor": torch.from_numpy(np.ascontiguousarray(points.T)).t(),
        "sliced tensor": torch.from_numpy(wide)[:, 1:4],
    }
    for label, p in strided.items():
        np.testing.assert_array_equal(to_numpy(sdf(p)), expected, err_msg=f"{label} seed={seed}")
        np.testing.assert_array_equal(to_numpy(sdf.closest(p)[1]), to_numpy(sdf.closest(points)[1]), err_msg=label)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_points_at_an_odd_offset_into_a_buffer(dtype: Any, rng, seed) -> None:
    """A C-contiguous view at an odd byte offset is misaligned; the kernels never read it as it is
    (the binding refuses it) and MeshSDF gives the same results as for an aligned copy."""
    verts, faces = bumpy_sphere(rng)
    points = sample_points(rng, verts, faces, 101).astype(dtype)
    buffer = np.zeros(points.nbytes + 1, np.uint8)
    buffer[1:] = points.reshape(-1).view(np.uint8)
    odd = buffer[1:].view(dtype).reshape(-1, 3)
    assert odd.flags.c_contiguous and not odd.flags.aligned
    sdf = MeshSDF(verts, faces)
    for key, want in all_outputs(sdf, points).items():
        np.testing.assert_array_equal(all_outputs(sdf, odd)[key], want, err_msg=f"seed={seed} {key}")
    cpu = fastsdf._backend.cpu()
    with pytest.raises(ValueError, match="aligned"):
        cpu.msdf_query(sdf._arrays, sdf._order, odd, 1, 2.0, True)
    with pytest.raises(ValueError, match="aligned"):
        cpu.msdf_winding(sdf._arrays, odd, True, 2.0)


def test_pickles_and_those_made_before_the_arrays_had_names(rng, seed) -> None:
    """A pickled MeshSDF answers as the original; so does one pickled while its BVH arrays were a
    plain tuple (MeshSDF.__setstate__ names them)."""
    verts, faces = bumpy_sphere(rng)
    sdf = MeshSDF(verts, faces)
    points = sample_points(rng, verts, faces, 101)
    old = MeshSDF.__new__(MeshSDF)
    old.__dict__.update({**sdf.__dict__, "_arrays": tuple(sdf._arrays), "_device_arrays": {}})
    want = all_outputs(sdf, points)
    for original in (sdf, old):
        loaded = pickle.loads(pickle.dumps(original))
        for key, got in all_outputs(loaded, points).items():
            np.testing.assert_array_equal(got, want[key], err_msg=f"seed={seed} {key}")


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_empty_points(kind: str, rng) -> None:
    sdf = MeshSDF(*bumpy_sphere(rng))
    points = np.zeros((0, 3))
    if kind == "torch":
        points = torch.from_numpy(points)
    out = all_outputs(sdf, points)
    for key, value in out.items():
        assert_array_kind(value, points, (0, 3) if key in ("closest", "bary") else (0,), context=key)


BAD_POINTS: dict[str, Callable[[], np.ndarray]] = {
    "(N, 2)": lambda: np.zeros((5, 2)),
    "(N, 4)": lambda: np.zeros((5, 4)),
    "1-D": lambda: np.zeros(3),
    "(N, 3, 1)": lambda: np.zeros((5, 3, 1)),
    "NaN": lambda: np.array([[0.1, 0.2, 0.3], [0.0, np.nan, 0.0]]),
    "Inf": lambda: np.array([[np.inf, 0.2, 0.3]]),
    "-Inf": lambda: np.array([[0.1, 0.2, 0.3], [0.0, 0.0, -np.inf], [0.5, 0.5, 0.5]]),
}


@pytest.mark.parametrize("kind", ["numpy", "torch", "torch float32"])
@pytest.mark.parametrize("case", list(BAD_POINTS))
def test_bad_points_raise(case: str, kind: str, rng) -> None:
    sdf = MeshSDF(*bumpy_sphere(rng))
    points = BAD_POINTS[case]()
    if kind.startswith("torch"):
        points = torch.from_numpy(points)
        if kind.endswith("float32"):
            points = points.float()
    for method in (sdf, sdf.unsigned, sdf.closest, sdf.contains, sdf.winding_number,
                   lambda p: sdf.winding_number(p, exact=True)):
        with pytest.raises(ValueError):
            method(points)


# --------------------------------------------------------------------------------------------
# CUDA
# --------------------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_points_match_cpu(dtype: torch.dtype, rng, seed) -> None:
    name = str(rng.choice(SHARED))
    verts, faces = shared_mesh(name)
    points = sample_points(rng, verts, faces, 20001)
    cpu = torch.from_numpy(points).to(dtype)
    gpu = cpu.cuda()
    p64 = cpu.double().numpy()
    atol = ATOL32 if dtype == torch.float32 else ATOL64
    context = f"seed={seed} {name} {dtype}"
    truth = MeshSDF(verts, faces, sign="exact_winding")
    cpu_dist = to_numpy(truth.unsigned(cpu)).astype(np.float64)
    exact_inside = to_numpy(truth.contains(cpu))
    away = cpu_dist > NEAR
    for sign in SIGNS:
        sdf = MeshSDF(verts, faces, sign=sign)
        out_gpu, out_cpu = all_outputs(sdf, gpu), all_outputs(sdf, cpu)
        for key in out_gpu:
            assert_array_kind(out_gpu[key], gpu, tuple(out_cpu[key].shape), context=f"{key} {context}")
            assert out_gpu[key].dtype == out_cpu[key].dtype, f"{key} {context}"
        g, c = ({k: to_numpy(v.double() if v.is_floating_point() else v) for k, v in out.items()}
                for out in (out_gpu, out_cpu))
        np.testing.assert_allclose(g["unsigned"], c["unsigned"], rtol=atol, atol=atol, err_msg=context)
        np.testing.assert_allclose(np.abs(g["sdf"]), g["unsigned"], rtol=0, atol=0, err_msg=context)
        np.testing.assert_allclose(np.linalg.norm(p64 - g["closest"], axis=1), c["unsigned"], rtol=atol,
                                   atol=atol, err_msg=context)
        tri = verts[faces[g["face_ids"]]]
        np.testing.assert_allclose(np.einsum("nk,nki->ni", g["bary"], tri), g["closest"], rtol=0, atol=atol,
                                   err_msg=context)
        np.testing.assert_array_equal(g["contains"], g["sdf"] < 0, err_msg=context)
        np.testing.assert_allclose(g["exact winding"][away], c["exact winding"][away], rtol=0, atol=atol,
                                   err_msg=context)
        assert np.abs(g["winding"] - c["exact winding"])[cpu_dist > FAST_NEAR].max() <= FAST_WINDING_ATOL, context
        if sign == "winding" and name in OPEN:  # a fast approximation of a fraction: rarely, 0.5 splits them
            assert ((g["sdf"] < 0) == (c["sdf"] < 0)).mean() >= 0.999, context
        else:
            np.testing.assert_array_equal((g["sdf"] < 0)[away], (c["sdf"] < 0)[away], err_msg=f"{sign} {context}")
        if sign == "exact_winding":
            np.testing.assert_array_equal(g["contains"][away], exact_inside[away], err_msg=context)
    # The mesh itself may come as CUDA tensors.
    on_gpu = MeshSDF(torch.from_numpy(np.array(verts)).cuda(), torch.from_numpy(np.array(faces)).cuda())
    np.testing.assert_array_equal(on_gpu.vertices, verts)
    np.testing.assert_allclose(to_numpy(on_gpu(gpu)), to_numpy(MeshSDF(verts, faces)(gpu)), rtol=0, atol=0)
    empty = torch.zeros((0, 3), dtype=dtype, device="cuda")
    assert_array_kind(truth(empty), empty, (0,), context=context)


@pytest.mark.cuda
@pytest.mark.parametrize("factor", [1e-300, 3.7e-123, 1e200, 2.0 ** 1000])
def test_cuda_meshes_of_any_magnitude_match_cpu(factor: float, rng, seed) -> None:
    """The kernels share their code: on scaled meshes, with points near and far, CUDA gives the CPU's
    distances, signs away from the surface, closest points (near ones: far out, float64 ties them
    all) and winding numbers."""
    verts, faces = bumpy_sphere(rng)
    near = sample_points(rng, verts, faces, 2001)
    directions = rng.normal(size=(50, 3))
    # From 1e3 mesh sizes out to 1e300 (1e307 for meshes past 1e297), drawn in logs: the bounds in
    # mesh sizes would overflow float64 for the smallest factors.
    log_far = rng.uniform(np.log(1e3) + np.log(factor), np.log(1e300 if factor < 1e297 else 1e307), (50, 1))
    points = np.concatenate([near * factor, directions * np.exp(log_far)])
    cpu, gpu = torch.from_numpy(points), torch.from_numpy(points).cuda()
    for sign in SIGNS:
        sdf = MeshSDF(verts * factor, faces, sign=sign)
        c, g = ({k: to_numpy(v) for k, v in all_outputs(sdf, x).items()} for x in (cpu, gpu))
        context = f"seed={seed} factor={factor:g} {sign}"
        np.testing.assert_allclose(g["unsigned"], c["unsigned"], rtol=1e-12, atol=0, err_msg=context)
        away = c["unsigned"] > NEAR * factor
        np.testing.assert_array_equal(g["sdf"][away] < 0, c["sdf"][away] < 0, err_msg=context)
        np.testing.assert_allclose(g["closest"][:len(near)], c["closest"][:len(near)], rtol=0, atol=1e-12 * factor,
                                   err_msg=context)
        np.testing.assert_allclose(g["exact winding"], c["exact winding"], rtol=0, atol=ATOL64, err_msg=context)


# --------------------------------------------------------------------------------------------
# Meshes: validation, degenerate, repeated and non-manifold triangles
# --------------------------------------------------------------------------------------------


def _bad_vertex(verts: np.ndarray, faces: np.ndarray, value: float) -> tuple[np.ndarray, np.ndarray]:
    verts = verts.copy()
    verts[3, 1] = value
    return verts, faces


BAD_MESHES: dict[str, tuple[Callable[[np.ndarray, np.ndarray], tuple[Any, Any]], str]] = {
    "no faces": (lambda v, f: (v, np.zeros((0, 3), np.int64)), r"(?i)face|empty"),
    "no vertices, no faces": (lambda v, f: (np.zeros((0, 3)), np.zeros((0, 3), np.int64)), r"(?i)face|empty|vert"),
    "negative index": (lambda v, f: (v, np.concatenate([f, [[0, 1, -1]]])), r"(?i)index|range|face"),
    "index == V": (lambda v, f: (v, np.concatenate([f, [[0, len(v), 1]]])), r"(?i)index|range|face"),
    "NaN vertex": (lambda v, f: _bad_vertex(v, f, np.nan), r"(?i)finite|nan"),
    "Inf vertex": (lambda v, f: _bad_vertex(v, f, -np.inf), r"(?i)finite|inf"),
    "vertices (V, 2)": (lambda v, f: (v[:, :2], f), r"(?i)shape|vert|\(V, 3\)"),
    "vertices 1-D": (lambda v, f: (v.reshape(-1), f), r"(?i)shape|vert|\(V, 3\)"),
    "faces (F, 4)": (lambda v, f: (v, np.concatenate([f, f[:, :1]], axis=1)), r"(?i)shape|face|\(F, 3\)"),
    "faces 1-D": (lambda v, f: (v, f.reshape(-1)), r"(?i)shape|face|\(F, 3\)"),
}


@pytest.mark.parametrize("case", list(BAD_MESHES))
def test_bad_meshes_raise(case: str, rng) -> None:
    make, message = BAD_MESHES[case]
    verts, faces = make(*bumpy_sphere(rng))
    with pytest.raises(ValueError, match=message):
        MeshSDF(verts, faces)


def test_bad_sign_mode_raises(rng) -> None:
    verts, faces = bumpy_sphere(rng)
    for sign in ("exact", "Winding", "", None):
        with pytest.raises(ValueError, match=r"(?i)sign"):
            MeshSDF(verts, faces, sign=sign)


def test_degenerate_triangles_count_as_segments(rng, seed) -> None:
    """Zero-area triangles (collinear corners, a repeated corner, a single point) change distances,
    as segments and points, and never signs."""
    verts, faces = bumpy_sphere(rng)
    n = len(verts)
    y, z = rng.uniform(-0.3, 0.3, 2)
    x = np.sort(rng.uniform(-0.5, 1.2, 3))
    extra = np.array([
        [x[0], y, z], [x[2], y, z], [x[1], y, z],  # collinear: only x differs, exactly on a line
        rng.uniform(0.9, 1.1, 3),  # a repeated corner: a segment from a mesh vertex to this point
        rng.uniform(-0.2, 0.2, 3),  # a single point, inside
    ])
    all_verts = np.concatenate([verts, extra])
    all_faces = np.concatenate([faces, [[n, n + 1, n + 2], [0, n + 3, 0], [n + 4, n + 4, n + 4]]])
    points = np.concatenate([sample_points(rng, verts, faces, 1001),
                             np.repeat(extra[[0, 1, 3, 4]], 5, axis=0) + rng.normal(0, 0.05, (20, 3)),
                             np.linspace(extra[0], extra[1], 11) + rng.normal(0, 0.02, (11, 3))])
    context = f"seed={seed}"
    assert_closest_matches_reference(MeshSDF(all_verts, all_faces), all_verts, all_faces, points, ATOL64, context)
    sphere_dist = closest_points_reference(verts, faces, points)[0]
    inside = reference_winding(verts, faces, points) > 0.5
    far = sphere_dist > NEAR
    for sign in SIGNS:
        got = signs_of(MeshSDF(all_verts, all_faces, sign=sign), points)
        np.testing.assert_array_equal(got[far], inside[far], err_msg=f"{context} sign={sign}")


@pytest.mark.parametrize("size", [1e-70, 1e-100, 1e-200, 1e-300])
def test_triangles_far_smaller_than_the_mesh_count_as_triangles(size, rng, seed) -> None:
    """A triangle `size` across beside one of size 1 is not taken for its edges: points right
    above its interior (where its edges are farther) get their height as distance, whether or not
    its normal fits float64 (below 2^-200 it counts for distances only)."""
    tiny = size * np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    large = np.array([[2.0, 0.0, 0.0], [3.0, 0.0, 0.0], [2.0, 1.0, 0.0]])
    verts = np.concatenate([tiny, large])
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    bary = rng.dirichlet(np.ones(3), 50)
    height = size * rng.uniform(-0.01, 0.01, 50)
    points = np.concatenate([bary @ tiny[:, :2], height[:, None]], axis=1)
    sdf = MeshSDF(verts, faces)
    np.testing.assert_allclose(to_numpy(sdf.unsigned(points)), np.abs(height), rtol=1e-12, err_msg=f"seed={seed}")
    np.testing.assert_array_equal(to_numpy(sdf.closest(points)[1]), 0, err_msg=f"seed={seed}")


def _random_degenerate_fan(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Up to 20 triangles with a shared corner, all on one line (some with a repeated corner)."""
    n = int(rng.integers(1, 21))
    offsets = rng.normal(size=(2 * n, 1)) * 10 ** rng.uniform(-3, 2)
    if rng.random() < 0.5:
        offsets = np.round(offsets)  # corners that coincide with each other or the shared one
    centre = rng.normal(size=3) * rng.choice([0.0, 1.0, 100.0])
    verts = np.concatenate([[centre], centre + offsets * rng.normal(size=3)])
    faces = np.stack([np.zeros(n, np.int64), 1 + 2 * np.arange(n), 2 + 2 * np.arange(n)], axis=1)
    return verts, faces


def test_winding_numbers_are_finite_on_degenerate_meshes_vertices_and_edges(rng, seed) -> None:
    """The fast winding number was NaN at the shared corner of collinear triangles: a child of
    radius 0 (an empty lane) counted as far from a point 1e-17 away, and its expansion divided 0
    by |r|^3, which underflowed float32. Meshes of degenerate triangles only, small meshes (lanes
    left empty) and points on vertices, edge midpoints, centroids and box centres, and 1e-40 to
    1e-5 from them: every winding number and signed distance finite."""
    verts = np.array([[-0.57032061, 0.06468578, -0.99963237], [-0.44673374, -1.03130167, 0.51628461],
                      [-0.57032061, 0.06468578, -0.99963237], [-0.81749436, 2.25666068, -4.03146633],
                      [-0.32314686, -2.12728912, 2.03220159]])
    fan = MeshSDF(verts, np.array([[0, 1, 2], [0, 3, 4]]))
    for exact in (False, True):
        np.testing.assert_array_equal(fan.winding_number(verts, exact=exact), 0.0, err_msg=f"exact={exact}")

    sphere_verts, sphere_faces = bumpy_sphere(rng)
    box = trimesh.creation.box(extents=(0.5, 0.4, 0.3))
    cases = [_random_degenerate_fan(rng) for _ in range(6)]
    cases += [(sphere_verts, sphere_faces[rng.choice(len(sphere_faces), int(k), replace=False)])
              for k in rng.integers(1, 6, 3)]
    cases += [(np.asarray(box.vertices), np.asarray(box.faces, np.int64))]
    for verts, faces in cases:
        tri = verts[faces]
        anchors = np.concatenate([verts, (tri + np.roll(tri, 1, axis=1)).reshape(-1, 3) / 2, tri.mean(axis=1),
                                  [(verts.min(axis=0) + verts.max(axis=0)) / 2]])
        offsets = rng.normal(size=anchors.shape) * 10 ** rng.uniform(-40, -5, (len(anchors), 1))
        points = np.concatenate([anchors, anchors + offsets])
        context = f"seed={seed} {len(faces)} faces"
        for exact in (False, True):
            w = to_numpy(MeshSDF(verts, faces).winding_number(points, exact=exact))
            assert np.isfinite(w).all(), f"exact={exact}: NaN/Inf at {points[~np.isfinite(w)][:3]}; {context}"
        for sign in SIGNS:
            values = to_numpy(MeshSDF(verts, faces, sign=sign)(points))
            assert np.isfinite(values).all(), f"{sign}: NaN/Inf at {points[~np.isfinite(values)][:3]}; {context}"


def test_repeated_faces_change_nothing(rng, seed) -> None:
    """A face repeated (as it is, or with its corners rotated: the same oriented triangle) counts
    once for signs. On a thin slab, counting the bottom three times would put points just above
    the top inside."""
    slab = trimesh.creation.box(extents=(1.6, 1.6, 0.04))
    verts, faces = np.asarray(slab.vertices, np.float64), np.asarray(slab.faces, np.int64)
    bottom = faces[(verts[faces][:, :, 2] < 0).all(axis=1)]
    repeated = np.concatenate([faces, bottom, np.roll(bottom, 1, axis=1)])
    above = np.column_stack([rng.uniform(-0.7, 0.7, (300, 2)), rng.uniform(0.021, 0.1, 300)])
    assert (winding_number_reference(verts, repeated, above) > 0.5).any()  # the trap is armed
    for sign in SIGNS:
        assert not signs_of(MeshSDF(verts, repeated, sign=sign), above).any(), f"seed={seed} sign={sign}"

    verts, faces = bumpy_sphere(rng)
    chosen = rng.choice(len(faces), 20, replace=False)
    repeated = np.concatenate([faces, faces[chosen], np.roll(faces[chosen[:10]], 2, axis=1)])
    points = sample_points(rng, verts, faces, 1001)
    for sign in SIGNS:
        original, doubled = MeshSDF(verts, faces, sign=sign), MeshSDF(verts, repeated, sign=sign)
        context = f"seed={seed} sign={sign}"
        np.testing.assert_allclose(to_numpy(doubled(points)), to_numpy(original(points)), rtol=0, atol=1e-12,
                                   err_msg=context)


def test_unmerged_corners_at_sharp_edges(rng, seed) -> None:
    """Every triangle with its own corners (as in STL, or along UV seams) on a polytope with sharp
    edges: pseudonormals must come from vertices merged by position, or signs near sharp edges
    and corners go wrong."""
    hull = trimesh.convex.convex_hull(rng.normal(size=(8, 3)))
    verts, faces = normalise(np.asarray(hull.vertices)), np.asarray(hull.faces, np.int64)
    soup_verts, soup_faces = verts[faces].reshape(-1, 3), np.arange(3 * len(faces)).reshape(-1, 3)
    start, end = verts[faces[:, 0]], verts[faces[:, 1]]
    pick = rng.integers(0, len(faces), 2000)
    t = rng.choice([0.0, 1.0, 0.5], 2000)[:, None] * rng.uniform(0.5, 1, (2000, 1)) ** 8
    points = np.concatenate([sample_points(rng, verts, faces, 501),
                             start[pick] + t * (end[pick] - start[pick]) + rng.normal(0, 0.05, (2000, 3))])
    ref_dist = closest_points_reference(verts, faces, points)[0]
    inside = reference_winding(verts, faces, points) > 0.5
    far = ref_dist > NEAR
    for sign in SIGNS:
        sdf = MeshSDF(soup_verts, soup_faces, sign=sign)
        np.testing.assert_allclose(to_numpy(sdf.unsigned(points)), ref_dist, rtol=0, atol=ATOL64,
                                   err_msg=f"seed={seed} {sign}")
        np.testing.assert_array_equal(signs_of(sdf, points)[far], inside[far], err_msg=f"seed={seed} {sign}")


def test_non_manifold_edge(rng, seed) -> None:
    """A fin: a third triangle on an edge of a closed mesh. Distances stay exact; nothing breaks."""
    verts, faces = bumpy_sphere(rng)
    a, b = faces[0, 0], faces[0, 1]
    tip = (verts[a] + verts[b]) * 0.6 + rng.normal(0, 0.05, 3)
    all_verts = np.concatenate([verts, [tip]])
    all_faces = np.concatenate([faces, [[a, b, len(verts)]]])
    points = np.concatenate([sample_points(rng, verts, faces, 501), tip + rng.normal(0, 0.05, (50, 3))])
    for sign in SIGNS:
        sdf = MeshSDF(all_verts, all_faces, sign=sign)
        assert_closest_matches_reference(sdf, all_verts, all_faces, points, ATOL64, f"seed={seed} {sign}")
        assert np.isfinite(to_numpy(sdf(points))).all()
        assert np.isfinite(to_numpy(sdf.winding_number(points))).all()


# --------------------------------------------------------------------------------------------
# Construction and loading
# --------------------------------------------------------------------------------------------


def test_construction_from_arrays_tensors_and_trimesh(rng, seed) -> None:
    verts, faces = bumpy_sphere(rng)
    sdf = MeshSDF(verts, faces)
    assert sdf.vertices.dtype == np.float64 and sdf.vertices.shape == verts.shape
    assert sdf.faces.dtype == np.int64 and sdf.faces.shape == faces.shape
    np.testing.assert_array_equal(sdf.vertices, verts)
    np.testing.assert_array_equal(sdf.faces, faces)
    points = sample_points(rng, verts, faces, 101)
    expected = to_numpy(sdf(points))
    others = {
        "float32 vertices, int32 faces": MeshSDF(verts.astype(np.float32), faces.astype(np.int32)),
        "tensors": MeshSDF(torch.from_numpy(verts), torch.from_numpy(faces)),
        "lists": MeshSDF(verts.tolist(), faces.tolist()),
        "from_trimesh": MeshSDF.from_trimesh(trimesh.Trimesh(verts, faces, process=False)),
    }
    for label, other in others.items():
        assert other.vertices.dtype == np.float64 and other.faces.dtype == np.int64, label
        np.testing.assert_array_equal(other.faces, faces, err_msg=label)
        atol = 1e-6 if "float32" in label else 0
        np.testing.assert_allclose(to_numpy(other(points)), expected, rtol=0, atol=atol,
                                   err_msg=f"{label} seed={seed}")
    assert MeshSDF.from_trimesh(trimesh.Trimesh(verts, faces, process=False), sign="pseudonormal") is not None
    # The arrays are copies: changing the inputs afterwards changes nothing.
    mutable = verts.copy()
    copy = MeshSDF(mutable, faces)
    mutable[:] = 0
    np.testing.assert_array_equal(to_numpy(copy(points)), expected)


@pytest.mark.parametrize("name", SHARED)
def test_load_equals_trimesh_arrays(name: str, rng, seed) -> None:
    path = MESH_DIR / f"{name}.obj"
    mesh = trimesh.load(path, force="mesh", process=False)
    loaded = MeshSDF.load(path)
    np.testing.assert_array_equal(loaded.vertices, np.asarray(mesh.vertices, np.float64))
    np.testing.assert_array_equal(loaded.faces, np.asarray(mesh.faces, np.int64))
    built = MeshSDF(mesh.vertices, mesh.faces, sign="pseudonormal")
    verts = np.asarray(mesh.vertices, np.float64)  # in the file's own units
    size = np.linalg.norm(verts.max(axis=0) - verts.min(axis=0))
    points = verts[rng.integers(0, len(verts), 101)] + rng.normal(0, 0.02 * size, (101, 3))
    np.testing.assert_array_equal(to_numpy(MeshSDF.load(str(path), sign="pseudonormal")(points)),
                                  to_numpy(built(points)), err_msg=f"seed={seed}")


@pytest.mark.parametrize("suffix", ["ply", "stl", "off"])
def test_load_other_formats(suffix: str, tmp_path: Path, rng, seed) -> None:
    verts, faces = bumpy_sphere(rng)
    path = tmp_path / f"mesh.{suffix}"
    trimesh.Trimesh(verts, faces, process=False).export(path)
    loaded = MeshSDF.load(path)
    points = sample_points(rng, verts, faces, 301)
    expected = MeshSDF(verts, faces)
    np.testing.assert_allclose(to_numpy(loaded(points)), to_numpy(expected(points)), rtol=0, atol=1e-6,
                               err_msg=f"{suffix} seed={seed}")


def test_load_errors(tmp_path: Path, rng) -> None:
    with pytest.raises(FileNotFoundError):
        MeshSDF.load(tmp_path / "missing.obj")
    corrupt = tmp_path / "x.obj"
    corrupt.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.obj"
    empty.write_bytes(b"")
    points_only = tmp_path / "points.obj"
    points_only.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    for path in (corrupt, empty, points_only):
        with pytest.raises(ValueError):
            MeshSDF.load(path)


def test_grid_too_large_for_memory_raises_before_allocating(rng, monkeypatch) -> None:
    verts, faces = bumpy_sphere(rng)
    sdf = MeshSDF(verts, faces)
    monkeypatch.setattr(fastsdf._memory, "available_bytes", lambda device=None: 1000)
    with pytest.raises(MemoryError, match="chunked"):
        sdf.grid(64)


def test_unbalanced_geometry_keeps_the_tree_shallow(rng, seed) -> None:
    """Triangles 20 times farther out each than the last lead the surface area heuristic to peel off
    one triangle per level; the build must stay within the traversal stacks (median splits past a
    depth) and the distances exact. The mesh spans 1e77 triangle sizes, so the small triangles'
    closest-point products would underflow without their own scaling: points lie near vertices
    and right above the triangles' interiors. A closest point is a float64 point too, as far off as
    half a spacing of the coordinates, so the distances are exact to a few spacings (0.5 at 4e15,
    where a triangle is 0.5 across)."""
    offsets = 20.0 ** np.arange(60)
    corner = np.array([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.5, 0.0]])
    verts = (corner[None] + np.stack([offsets, 0 * offsets, 0 * offsets], axis=1)[:, None]).reshape(-1, 3)
    faces = np.arange(len(verts)).reshape(-1, 3)
    near_vertices = verts[rng.integers(0, len(verts), 300)] * (1 + rng.normal(0, 0.01, (300, 3)))
    bary = rng.dirichlet(np.ones(3), 300)
    above = np.einsum("nk,nkd->nd", bary, verts[faces[rng.integers(0, len(faces), 300)]])
    above[:, 2] = rng.choice([0.0, 1e-3], 300) * rng.normal(size=300)
    points = np.concatenate([near_vertices, above])
    got = to_numpy(MeshSDF(verts, faces).unsigned(points))
    want = closest_points_reference(verts, faces, points)[0]
    spacing = np.spacing(np.abs(points).max(axis=1))
    assert np.all(np.abs(got - want) <= 1e-12 * want + 4 * spacing), f"seed={seed}"
