"""The NumPy mesh reference (fastsdf.geometry.mesh_sdf_reference) against hand-computed answers and
independent computations, so that the MeshSDF tests can trust it."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

import fastsdf.geometry.mesh_sdf_reference as mesh_sdf_reference
from fastsdf.geometry.mesh_sdf_reference import (
    closest_points_reference,
    pseudonormal_sign_reference,
    sign_mesh,
    signed_distance_reference,
    triangle_closest_points,
    winding_number_reference,
)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def unit_cube() -> tuple[np.ndarray, np.ndarray]:
    """[-0.5, 0.5]^3 with outward normals."""
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    return np.asarray(box.vertices, np.float64), np.asarray(box.faces, np.int64)


def segment_distance(p: np.ndarray, s: np.ndarray, e: np.ndarray) -> np.ndarray:
    d = e - s
    dd = d @ d
    t = np.zeros(len(p)) if dd == 0 else np.clip((p - s) @ d / dd, 0, 1)
    return np.linalg.norm(p - (s + t[:, None] * d), axis=1)


# --------------------------------------------------------------------------------------------
# Closest points
# --------------------------------------------------------------------------------------------

# Triangle (0,0,0), (1,0,0), (0,1,0): one point in each Voronoi region, worked out by hand:
# (point, closest point, barycentric).
REGIONS = {
    "face": ((0.2, 0.3, 0.5), (0.2, 0.3, 0.0), (0.5, 0.2, 0.3)),
    "vertex a": ((-1.0, -2.0, 0.5), (0.0, 0.0, 0.0), (1.0, 0.0, 0.0)),
    "vertex b": ((2.0, -1.0, -1.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "vertex c": ((-1.0, 3.0, 2.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    "edge ab": ((0.3, -1.0, 2.0), (0.3, 0.0, 0.0), (0.7, 0.3, 0.0)),
    "edge bc": ((1.0, 1.0, 0.5), (0.5, 0.5, 0.0), (0.0, 0.5, 0.5)),
    "edge ca": ((-2.0, 0.6, -1.0), (0.0, 0.6, 0.0), (0.4, 0.0, 0.6)),
}


@pytest.mark.parametrize("region", list(REGIONS))
def test_closest_point_in_each_voronoi_region(region: str, rng, seed) -> None:
    point, closest, bary = (np.array(x) for x in REGIONS[region])
    # The same configuration under a random similarity transform, and every corner order.
    rot, shift, scale = random_rotation(rng), rng.uniform(-5, 5, 3), rng.uniform(0.1, 10)
    move = lambda x: scale * x @ rot.T + shift  # noqa: E731
    tri = move(np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    for order in ([0, 1, 2], [1, 2, 0], [2, 1, 0]):
        d2, b = triangle_closest_points(move(point), tri[order[0]], tri[order[1]], tri[order[2]])
        np.testing.assert_allclose(np.sqrt(d2), scale * np.linalg.norm(point - closest), rtol=1e-12,
                                   err_msg=f"seed={seed} {region} {order}")
        np.testing.assert_allclose(b, bary[order], rtol=0, atol=1e-12, err_msg=f"seed={seed} {region} {order}")
        # Exact zeros off the closest feature.
        np.testing.assert_array_equal(b == 0, bary[order] == 0, err_msg=f"{region} {order}")
        _, q, fid, _ = closest_points_reference(tri[order], [[0, 1, 2]], move(point)[None])
        np.testing.assert_allclose(q[0], move(closest), rtol=0, atol=1e-12 * scale, err_msg=f"seed={seed}")
        assert fid[0] == 0


def test_degenerate_triangles_are_segments(rng, seed) -> None:
    points = rng.uniform(-3, 3, (500, 3))
    x = np.sort(rng.uniform(-1, 1, 3))
    y, z = rng.uniform(-1, 1, 2)
    cases = {
        "collinear (middle corner last)": np.array([[x[0], y, z], [x[2], y, z], [x[1], y, z]]),
        "collinear (middle corner first)": np.array([[x[1], y, z], [x[0], y, z], [x[2], y, z]]),
        "repeated corner": np.array([[x[0], y, z], [x[0], y, z], rng.uniform(-1, 1, 3)]),
        "one point": np.repeat(rng.uniform(-1, 1, (1, 3)), 3, axis=0),
    }
    for name, tri in cases.items():
        expected = np.min([segment_distance(points, tri[i], tri[(i + 1) % 3]) for i in range(3)], axis=0)
        dist, closest, _, bary = closest_points_reference(tri, [[0, 1, 2]], points)
        np.testing.assert_allclose(dist, expected, rtol=0, atol=1e-12, err_msg=f"seed={seed} {name}")
        np.testing.assert_allclose(bary.sum(axis=1), 1.0, atol=1e-12, err_msg=name)
        assert (bary >= 0).all() and (bary <= 1).all(), name
        np.testing.assert_allclose(np.linalg.norm(points - closest, axis=1), dist, atol=1e-12, err_msg=name)
        # No area: no solid angle, no sign.
        np.testing.assert_allclose(winding_number_reference(tri, [[0, 1, 2]], points), 0, atol=1e-12, err_msg=name)
        assert len(sign_mesh(tri, [[0, 1, 2]])[1]) == 0, name


def test_hand_computed_collinear_case() -> None:
    tri = np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0]])
    dist, closest, _, bary = closest_points_reference(tri, [[0, 1, 2]], [[0.5, 1.0, 0.0], [3.0, 0.0, 2.0]])
    np.testing.assert_allclose(dist, [1.0, np.sqrt(5.0)], rtol=1e-15)
    np.testing.assert_allclose(closest, [[0.5, 0, 0], [2, 0, 0]], atol=1e-15)
    np.testing.assert_allclose(bary @ tri, closest, atol=1e-15)


@pytest.mark.parametrize("n_faces", [1, 7, 60])
def test_mesh_closest_points_equal_all_pairs(n_faces: int, rng, seed, monkeypatch) -> None:
    """The bound-based pruning and the chunking never change the answer: the same as evaluating
    every pair, and as trimesh's own point-triangle routine on every pair."""
    centres = rng.uniform(-1, 1, (n_faces, 1, 3))
    sizes = np.exp(rng.uniform(np.log(0.01), np.log(0.5), (n_faces, 1, 1)))
    tri = centres + rng.normal(0, 1, (n_faces, 3, 3)) * sizes
    verts, faces = tri.reshape(-1, 3), np.arange(3 * n_faces).reshape(-1, 3)
    points = np.concatenate([rng.uniform(-1.5, 1.5, (300, 3)), verts[rng.integers(0, len(verts), 101)]
                             + rng.normal(0, 0.01, (101, 3))])
    d2_all, _ = triangle_closest_points(points[:, None], tri[None, :, 0], tri[None, :, 1], tri[None, :, 2])
    pairs = np.linalg.norm(trimesh.triangles.closest_point(np.tile(tri, (len(points), 1, 1)),
                                                           np.repeat(points, n_faces, axis=0))
                           - np.repeat(points, n_faces, axis=0), axis=1).reshape(len(points), n_faces)
    np.testing.assert_allclose(np.sqrt(d2_all), pairs, rtol=0, atol=1e-12, err_msg=f"seed={seed}")
    for chunk in (1 << 19, 1, 3 * n_faces + 1):
        monkeypatch.setattr(mesh_sdf_reference, "_PAIRS_PER_CHUNK", chunk)
        dist, closest, fid, bary = closest_points_reference(verts, faces, points)
        np.testing.assert_allclose(dist, np.sqrt(d2_all.min(axis=1)), rtol=0, atol=1e-14, err_msg=f"seed={seed}")
        assert (fid == np.argmin(d2_all, axis=1)).mean() > 0.99  # ties only
        np.testing.assert_allclose(np.sqrt(d2_all[np.arange(len(points)), fid]), dist, rtol=0, atol=1e-14)
        np.testing.assert_allclose(np.einsum("nk,nki->ni", bary, tri[fid]), closest, atol=1e-14)


def test_ties_go_to_the_smallest_face_id() -> None:
    verts, faces = unit_cube()
    doubled = np.concatenate([faces, faces])
    _, _, fid, _ = closest_points_reference(verts, doubled, [[0.0, 0.0, 2.0], [2.0, 2.0, 2.0]])
    assert (fid < len(faces)).all()


def test_empty_mesh_and_bad_shapes_raise() -> None:
    verts, faces = unit_cube()
    with pytest.raises(ValueError):
        closest_points_reference(verts, np.zeros((0, 3), np.int64), np.zeros((1, 3)))
    with pytest.raises(ValueError):
        closest_points_reference(verts, faces + 8, np.zeros((1, 3)))
    with pytest.raises(ValueError):
        closest_points_reference(verts, faces, np.zeros((1, 2)))
    with pytest.raises(ValueError):
        signed_distance_reference(verts, faces, np.zeros((1, 3)), sign="winding")


# --------------------------------------------------------------------------------------------
# Winding numbers and signs
# --------------------------------------------------------------------------------------------


def test_winding_number_of_a_closed_cube(rng, seed) -> None:
    verts, faces = unit_cube()
    rot, shift = random_rotation(rng), rng.uniform(-2, 2, 3)
    local = rng.uniform(-1.5, 1.5, (2000, 3))
    inside = (np.abs(local) < 0.5).all(axis=1)
    margin = np.abs(np.abs(local) - 0.5).min(axis=1) > 1e-3
    w = winding_number_reference(verts @ rot.T + shift, faces, local @ rot.T + shift)
    np.testing.assert_allclose(w[margin], inside[margin].astype(float), rtol=0, atol=1e-12, err_msg=f"seed={seed}")
    # Reversed orientation: -1 inside.
    w = winding_number_reference(verts, faces[:, ::-1], local)
    np.testing.assert_allclose(w[margin], -inside[margin].astype(float), rtol=0, atol=1e-12)


def test_winding_number_of_one_triangle() -> None:
    # The octant triangle seen from the origin covers 1/8 of the sphere; its normal (1, 1, 1)
    # points away from the origin, which is the inside of an outward-oriented closed mesh: +1/8.
    tri = np.eye(3)
    assert winding_number_reference(tri, [[0, 1, 2]], [[0.0, 0, 0]])[0] == pytest.approx(1 / 8, abs=1e-15)
    assert winding_number_reference(tri, [[0, 2, 1]], [[0.0, 0, 0]])[0] == pytest.approx(-1 / 8, abs=1e-15)
    # Seen from the side its normal points to: negative; far away: vanishing.
    w = winding_number_reference(tri, [[0, 1, 2]], [[1.0, 1, 1], [-1.0, -1, -1], [1e6, 0, 0]])
    assert w[0] < 0 < w[1] and abs(w[2]) < 1e-10


def test_winding_number_of_a_bumpy_sphere(rng, seed) -> None:
    """1 inside, 0 outside, decided independently: the surface is star-shaped around the origin,
    so p is inside iff p = sum(k_i * corner_i) with k >= 0 in the triangle whose cone holds p, and
    sum(k) < 1."""
    sphere = trimesh.creation.icosphere(subdivisions=2)
    verts = np.asarray(sphere.vertices) * (1 + rng.uniform(-0.05, 0.05, (len(sphere.vertices), 1)))
    faces = np.asarray(sphere.faces)
    points = rng.uniform(-1.2, 1.2, (2000, 3))
    k = np.einsum("fij,nj->nfi", np.linalg.inv(verts[faces].transpose(0, 2, 1)), points)
    cone = np.argmax((k >= -1e-12).all(axis=2), axis=1)
    inside = k[np.arange(len(points)), cone].sum(axis=1) < 1
    far = closest_points_reference(verts, faces, points)[0] > 1e-6
    w = winding_number_reference(verts, faces, points)
    np.testing.assert_allclose(w[far], inside[far].astype(float), rtol=0, atol=1e-10, err_msg=f"seed={seed}")


@pytest.mark.parametrize("unmerged", [False, True], ids=["merged", "unmerged corners"])
def test_pseudonormal_signs_on_a_cube(unmerged: bool, rng, seed) -> None:
    verts, faces = unit_cube()
    if unmerged:  # every triangle its own corners, as after splitting UV seams
        verts, faces = verts[faces].reshape(-1, 3), np.arange(3 * len(faces)).reshape(-1, 3)
    rot = random_rotation(rng)
    # Many points near edges and corners, where the edge and vertex pseudonormals decide.
    local = np.concatenate([rng.uniform(-1, 1, (1000, 3)), rng.choice([-0.5, 0.5], (1000, 3))
                            + rng.normal(0, 0.05, (1000, 3))])
    inside = (np.abs(local) < 0.5).all(axis=1)
    margin = np.abs(np.abs(local) - 0.5).min(axis=1) > 1e-6
    signs = pseudonormal_sign_reference(verts @ rot.T, faces, local @ rot.T)
    np.testing.assert_array_equal(signs[margin], np.where(inside, -1.0, 1.0)[margin], err_msg=f"seed={seed}")
    # The same from the signed distance, whose magnitude is the box distance.
    sdf = signed_distance_reference(verts @ rot.T, faces, local @ rot.T, sign="pseudonormal")
    q = np.abs(local) - 0.5
    box = np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(axis=1), 0)
    np.testing.assert_allclose(sdf, box, rtol=0, atol=1e-12, err_msg=f"seed={seed}")


def random_polytope(rng: np.random.Generator, unmerged: bool) -> tuple[np.ndarray, np.ndarray]:
    """Convex hull of 8 random points: sharp edges (normals up to nearly opposite), outward faces.
    ``unmerged`` gives every triangle its own corners, as after splitting UV seams or in STL."""
    hull = trimesh.convex.convex_hull(rng.normal(size=(8, 3)))
    verts, faces = np.asarray(hull.vertices, np.float64), np.asarray(hull.faces, np.int64)
    if unmerged:
        verts, faces = verts[faces].reshape(-1, 3), np.arange(3 * len(faces)).reshape(-1, 3)
    return verts, faces


def near_edges_and_corners(rng: np.random.Generator, verts: np.ndarray, faces: np.ndarray, n: int) -> np.ndarray:
    start, end = verts[faces[:, 0]], verts[faces[:, 1]]
    pick = rng.integers(0, len(faces), n)
    t = rng.choice([0.0, 1.0, 0.5], n)[:, None] * rng.uniform(0.5, 1, (n, 1)) ** 8
    return start[pick] + t * (end[pick] - start[pick]) + rng.normal(0, 0.1, (n, 3))


@pytest.mark.parametrize("unmerged", [False, True], ids=["merged", "unmerged corners"])
def test_pseudonormal_signs_on_sharp_convex_polytopes(unmerged: bool, rng, seed) -> None:
    """Inside iff behind every face plane (decided without pseudonormals). With unmerged corners,
    a single face normal at a sharp edge or corner gives wrong signs: only merging positions
    rebuilds the edge and vertex pseudonormals."""
    verts, faces = random_polytope(rng, unmerged)
    points = np.concatenate([rng.uniform(-2, 2, (500, 3)), near_edges_and_corners(rng, verts, faces, 2000)])
    a, b, c = (verts[faces[:, k]] for k in range(3))
    normal = np.cross(b - a, c - a)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    height = np.einsum("fi,nfi->nf", normal, points[:, None, :] - a[None])  # signed plane distances
    inside = (height < 0).all(axis=1)
    far = closest_points_reference(verts, faces, points)[0] > 1e-9
    signs = pseudonormal_sign_reference(verts, faces, points)
    np.testing.assert_array_equal(signs[far] < 0, inside[far], err_msg=f"seed={seed}")
    # Where a single face normal would be wrong: the test is not vacuous.
    _, q, fid, _ = closest_points_reference(verts, faces, points)
    one_normal = np.einsum("ni,ni->n", points - q, normal[fid]) < 0
    assert (one_normal != inside)[far].any() or not unmerged


def test_pseudonormal_agrees_with_winding_on_a_non_convex_mesh(rng, seed) -> None:
    # A bumpy sphere: saddle and concave vertices, where only angle weights give the right sign.
    sphere = trimesh.creation.icosphere(subdivisions=2)
    verts = np.asarray(sphere.vertices) * (1 + rng.uniform(-0.08, 0.08, (len(sphere.vertices), 1)))
    points = np.concatenate([rng.uniform(-1.2, 1.2, (1000, 3)),
                             verts[rng.integers(0, len(verts), 1000)] * rng.uniform(0.95, 1.05, (1000, 1))])
    dist = closest_points_reference(verts, sphere.faces, points)[0]
    far = dist > 1e-9
    signs = pseudonormal_sign_reference(verts, sphere.faces, points)
    w = winding_number_reference(verts, sphere.faces, points)
    np.testing.assert_array_equal(signs[far] < 0, w[far] > 0.5, err_msg=f"seed={seed}")


def test_sign_mesh_merges_drops_degenerate_and_repeated() -> None:
    verts, faces = unit_cube()
    # A copy of every vertex, used by a repeat of face 0; face 1 rotated; face 2 reversed; a
    # repeated-corner triangle.
    both = np.concatenate([verts, verts])
    extra = np.array([faces[0] + 8, faces[1][[1, 2, 0]], faces[2][::-1], [0, 0, 5]])
    merged, kept = sign_mesh(both, np.concatenate([faces, extra]))
    assert len(merged) == 8
    assert len(kept) == len(faces) + 1  # only the reversed copy stays
    key = lambda f: tuple(np.roll(f, -np.argmin(f)))  # noqa: E731
    kept_keys = [key(merged_face) for merged_face in kept]
    assert len(set(kept_keys)) == len(kept_keys)


def test_repeated_faces_do_not_change_signs(rng, seed) -> None:
    """A thin slab whose bottom triangles appear three times with the same orientation: counted
    every time they would push the winding number above 0.5 just over the slab."""
    slab = trimesh.creation.box(extents=(1.0, 1.0, 0.02))
    verts, faces = np.asarray(slab.vertices), np.asarray(slab.faces)
    bottom = faces[(verts[faces][:, :, 2] < 0).all(axis=1)]
    repeated = np.concatenate([faces, bottom, np.roll(bottom, 1, axis=1)])
    points = np.column_stack([rng.uniform(-0.4, 0.4, (500, 2)), rng.uniform(0.011, 0.05, 500)])
    raw = winding_number_reference(verts, repeated, points)
    assert (raw > 0.5).any()  # the test can see the difference
    for sign in ("exact_winding", "pseudonormal"):
        np.testing.assert_array_equal(signed_distance_reference(verts, repeated, points, sign),
                                      signed_distance_reference(verts, faces, points, sign), err_msg=sign)
        assert (signed_distance_reference(verts, repeated, points, sign) > 0).all()


def test_degenerate_triangle_changes_distances_not_signs(rng, seed) -> None:
    verts, faces = unit_cube()
    # A needle through the cube: collinear corners along x, from inside to far outside.
    y, z = rng.uniform(-0.4, 0.4, 2)
    needle = np.array([[0.0, y, z], [2.0, y, z], [1.0, y, z]])
    all_verts = np.concatenate([verts, needle])
    all_faces = np.concatenate([faces, [[8, 9, 10]]])
    points = rng.uniform(-1.5, 2.5, (2000, 3))
    expected = np.minimum(closest_points_reference(verts, faces, points)[0],
                          segment_distance(points, needle[0], needle[1]))
    cube_dist = closest_points_reference(verts, faces, points)[0]
    for sign in ("exact_winding", "pseudonormal"):
        sdf = signed_distance_reference(all_verts, all_faces, points, sign)
        np.testing.assert_allclose(np.abs(sdf), expected, rtol=0, atol=1e-12, err_msg=f"seed={seed} {sign}")
        original = signed_distance_reference(verts, faces, points, sign)
        far = cube_dist > 1e-9
        np.testing.assert_array_equal(sdf[far] < 0, original[far] < 0, err_msg=f"seed={seed} {sign}")
