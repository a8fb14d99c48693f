"""Plain NumPy float64 twin of ``fastsdf.MeshSDF``: the truth its kernels are tested against.

Brute force, no acceleration structure: every point meets every triangle (for distances, through
a cheap bound first), in chunks of points so that memory stays bounded (about ``_PAIRS_PER_CHUNK``
point-triangle pairs at a time). Slow: for a thousand points on a 13k-triangle mesh, about 0.3 s
for closest points and 1 s for winding numbers on one core. For tests only.

Conventions, shared with ``MeshSDF``:

* Distances are exact Euclidean distances to the closest triangle, every triangle counted. A
  degenerate triangle (collinear or coincident corners: ``|(b - a) x (c - a)| <= 1e-8 L^2``, L its
  longest edge) counts as its three edges, as segments. The cut-off only decides whether the
  interior is tried; either way the distance is right to ``1e-8 L``.
* Ties between triangles at exactly the same (float64) squared distance go to the smallest face id.
* Signs come from the *sign mesh* (``sign_mesh``): vertices merged by exact position (so unmerged UV
  seams keep their adjacency), degenerate triangles dropped, and a triangle repeated with the same
  orientation (the same merged corners in the same cyclic order) kept once. Two copies with
  opposite orientations are both kept: they cancel in the winding number, as a two-sided sheet
  should.
* Negative inside. ``"exact_winding"``: inside when the generalised winding number is above 0.5.
  ``"pseudonormal"``: by the angle-weighted pseudonormal of the closest feature of the sign mesh.
  Points at distance 0 get distance 0, whatever their sign.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from fastsdf._validation import one_of

__all__ = [
    "closest_points_reference",
    "pseudonormal_sign_reference",
    "sign_mesh",
    "signed_distance_reference",
    "triangle_closest_points",
    "winding_number_reference",
]

# Point-triangle pairs per chunk: each (points, faces) float64 temporary takes 4 MiB.
_PAIRS_PER_CHUNK = 1 << 19
# A triangle with |(b - a) x (c - a)| <= _FLAT * (longest edge)^2 is degenerate.
_FLAT = 1e-8

# Vectors are tuples of three coordinate arrays (x, y, z): every operation then runs on whole
# contiguous (points, faces) arrays, several times faster than on (..., 3) arrays.
Vec = tuple[np.ndarray, np.ndarray, np.ndarray]


def _xyz(x: Any) -> Vec:
    x = np.asarray(x, dtype=np.float64)
    return x[..., 0], x[..., 1], x[..., 2]


def _sub(x: Vec, y: Vec) -> Vec:
    return x[0] - y[0], x[1] - y[1], x[2] - y[2]


def _dot(x: Vec, y: Vec) -> np.ndarray:
    return x[0] * y[0] + x[1] * y[1] + x[2] * y[2]


def _cross(x: Vec, y: Vec) -> Vec:
    return x[1] * y[2] - x[2] * y[1], x[2] * y[0] - x[0] * y[2], x[0] * y[1] - x[1] * y[0]


def _mesh(vertices: Any, faces: Any) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"vertices must be (V, 3) and faces (F, 3), got {v.shape} and {f.shape}")
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError(f"face indices must lie in [0, {len(v)})")
    return v, f


def _points(points: Any) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {p.shape}")
    return p


def _chunks(n_points: int, n_faces: int) -> Iterator[slice]:
    step = max(1, _PAIRS_PER_CHUNK // max(n_faces, 1))
    for start in range(0, n_points, step):
        yield slice(start, min(start + step, n_points))


def _is_flat(a: Vec, b: Vec, c: Vec) -> np.ndarray:
    """True for degenerate triangles (see the module docstring)."""
    ab, bc, ca = _sub(b, a), _sub(c, b), _sub(a, c)
    n = _cross(ab, _sub(c, a))
    longest = np.maximum(np.maximum(_dot(ab, ab), _dot(bc, bc)), _dot(ca, ca))
    return _dot(n, n) <= (_FLAT * longest) ** 2


def triangle_closest_points(points: Any, a: Any, b: Any, c: Any) -> tuple[np.ndarray, np.ndarray]:
    """Closest points of triangles (a, b, c) to ``points``, arrays broadcastable to (..., 3).

    Returns ``(squared_distance (...), barycentric (..., 3))``, the closest point being
    ``u a + v b + w c``. It is the projection on the plane when that falls in the triangle (tried
    for non-degenerate triangles only), otherwise the closest point of the three edges as segments;
    the nearest of these four candidates wins (on exact ties the interior, then edges ab, bc, ca).
    Barycentrics are exactly 0 off the closest feature (the third one on an edge, two at a vertex),
    so they name it.
    """
    p, a, b, c = (_xyz(x) for x in (points, a, b, c))
    ab, ac, ap = _sub(b, a), _sub(c, a), _sub(p, a)
    n = _cross(ab, ac)
    flat = _is_flat(a, b, c)
    nn = np.where(flat, 1.0, _dot(n, n))
    # Barycentrics of the projection of p on the plane: signed areas over the whole one.
    v = _dot(ap, _cross(ac, n)) / nn
    w = _dot(ap, _cross(n, ab)) / nn
    inside = (v >= 0) & (w >= 0) & (v + w <= 1) & ~flat
    best = np.where(inside, _dot(ap, n) ** 2 / nn, np.inf)
    bary = [1.0 - v - w, v, w]
    # Edges as segments from corner i to corner j (the third corner k gets weight 0).
    for i, j, k in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
        start, end = (a, b, c)[i], (a, b, c)[j]
        d, sp = _sub(end, start), _sub(p, start)
        dd = _dot(d, d)
        t = np.clip(_dot(sp, d) / np.where(dd > 0, dd, 1.0), 0.0, 1.0)
        off = (sp[0] - t * d[0], sp[1] - t * d[1], sp[2] - t * d[2])
        dist2 = _dot(off, off)
        take = dist2 < best
        best = np.where(take, dist2, best)
        bary[i] = np.where(take, 1.0 - t, bary[i])
        bary[j] = np.where(take, t, bary[j])
        bary[k] = np.where(take, 0.0, bary[k])
    return best, np.stack(np.broadcast_arrays(*bary), axis=-1)


def closest_points_reference(vertices: Any, faces: Any, points: Any
                             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exact closest points on a triangle mesh (every triangle counts, degenerate ones as segments).

    Returns ``(distances (N,), closest_points (N, 3), face_ids (N,) int64, barycentric (N, 3))``,
    float64, with ``closest_points = barycentric @ vertices[faces[face_ids]]``; ties go to the
    smallest face id. Raises ``ValueError`` for a mesh without faces.

    Every point meets every triangle, first through bounds: with the triangle's centroid c and
    radius r (its farthest corner), ``|p - c| - r <= distance <= |p - c| + r``. The exact distance
    is computed for the pairs whose lower bound is within the point's smallest upper bound (plus a
    1e-9 relative margin for rounding); no other triangle can be the closest.
    """
    v, f = _mesh(vertices, faces)
    p = _points(points)
    if len(f) == 0:
        raise ValueError("the mesh has no faces")
    tri = v[f]  # (F, corner, xyz)
    centre = tri.mean(axis=1)
    radius = np.sqrt(((tri - centre[:, None]) ** 2).sum(axis=2)).max(axis=1)
    dist2 = np.empty(len(p))
    face_ids = np.empty(len(p), dtype=np.int64)
    bary = np.empty((len(p), 3))
    for s in _chunks(len(p), len(f)):
        offset = _sub(_xyz(p[s, None]), _xyz(centre[None]))
        to_centre = np.sqrt(_dot(offset, offset))
        upper = (to_centre + radius).min(axis=1, keepdims=True)
        rows, cols = np.nonzero(to_centre - radius <= upper * (1 + 1e-9))
        d2, b = triangle_closest_points(p[s][rows], tri[cols, 0], tri[cols, 1], tri[cols, 2])
        order = np.lexsort((cols, d2, rows))  # by point, then distance, then face id
        first = order[np.r_[True, rows[order][1:] != rows[order][:-1]]]
        dist2[s], face_ids[s], bary[s] = d2[first], cols[first], b[first]
    closest = np.einsum("nk,nki->ni", bary, tri[face_ids])
    return np.sqrt(dist2), closest, face_ids, bary


def winding_number_reference(vertices: Any, faces: Any, points: Any) -> np.ndarray:
    """Exact generalised winding number (N,) float64: the sum over the given triangles of their
    signed solid angles (Van Oosterom & Strackee 1983), over 4 pi.

    1 inside and 0 outside a closed mesh whose normals (right-hand rule) point outwards; anything
    in between for open meshes. Degenerate triangles add nothing (to rounding). Every given face
    counts: pass ``sign_mesh(...)`` to drop repeated ones, as ``signed_distance_reference`` does.
    """
    v, f = _mesh(vertices, faces)
    p = _points(points)
    corners = [_xyz(v[f[None, :, k]]) for k in range(3)]
    out = np.zeros(len(p))
    for s in _chunks(len(p), len(f)):
        q = _xyz(p[s, None])
        a, b, c = (_sub(corner, q) for corner in corners)
        la, lb, lc = (np.sqrt(_dot(x, x)) for x in (a, b, c))
        num = _dot(a, _cross(b, c))
        den = la * lb * lc + _dot(a, b) * lc + _dot(a, c) * lb + _dot(b, c) * la
        out[s] = np.arctan2(num, den).sum(axis=1)
    return out / (2.0 * np.pi)  # solid angle 2 atan2(num, den), over 4 pi


def sign_mesh(vertices: Any, faces: Any) -> tuple[np.ndarray, np.ndarray]:
    """The mesh that signs come from: vertices merged by exact position, degenerate triangles
    dropped, repeated triangles (same merged corners in the same cyclic order) kept once (the
    first). Returns ``(vertices (V', 3) float64, faces (F', 3) int64)``; F' may be 0.
    """
    v, f = _mesh(vertices, faces)
    merged, inverse = np.unique(v, axis=0, return_inverse=True)
    f = inverse.reshape(-1)[f]
    f = f[~_is_flat(*(_xyz(merged[f[:, k]]) for k in range(3)))]
    # Rotate each face so that its smallest index comes first: one key per oriented triangle.
    roll = (np.argmin(f, axis=1)[:, None] + np.arange(3)) % 3
    _, first = np.unique(np.take_along_axis(f, roll, axis=1), axis=0, return_index=True)
    return merged, f[np.sort(first)]


def pseudonormal_sign_reference(vertices: Any, faces: Any, points: Any) -> np.ndarray:
    """Signs (N,) float64, +1 outside and -1 inside, from angle-weighted pseudonormals (Baerentzen
    & Aanaes 2005) on the sign mesh (``sign_mesh``).

    The closest point q of the sign mesh lies inside a face (pseudonormal: its normal), on an edge
    (the sum of the unit normals of every face on that edge) or at a vertex (the sum of the unit
    normals of its faces, each weighted by its angle there); the sign is that of
    ``(p - q) . pseudonormal``, +1 when 0. Right for every point off the surface of a closed,
    consistently oriented mesh without self-intersections. +1 everywhere if the sign mesh is empty.
    """
    v, f = sign_mesh(vertices, faces)
    p = _points(points)
    if len(f) == 0:
        return np.ones(len(p))
    tri = v[f]  # (F', corner, xyz)
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    # Vertex pseudonormals: each corner's angle (robust atan2 form) times its face's unit normal.
    vertex_pn = np.zeros_like(v)
    for k in range(3):
        e1, e2 = tri[:, (k + 1) % 3] - tri[:, k], tri[:, (k + 2) % 3] - tri[:, k]
        angle = np.arctan2(np.linalg.norm(np.cross(e1, e2), axis=1), (e1 * e2).sum(axis=1))
        np.add.at(vertex_pn, f[:, k], angle[:, None] * normal)
    # Edge pseudonormals. Edge slot k of a face joins its corners k and k + 1.
    ends = np.sort(np.stack([f, np.roll(f, -1, axis=1)], axis=-1), axis=-1).reshape(-1, 2)
    _, edge_of_slot = np.unique(ends, axis=0, return_inverse=True)
    edge_of_slot = edge_of_slot.reshape(-1)
    edge_pn = np.zeros((edge_of_slot.max() + 1, 3))
    np.add.at(edge_pn, edge_of_slot, np.repeat(normal, 3, axis=0))

    _, q, fid, bary = closest_points_reference(v, f, p)
    on = bary != 0
    count = on.sum(axis=1)
    pn = normal[fid]
    edge = count == 2  # the zero barycentric sits opposite the edge: slot (zero + 1) % 3
    slot = (np.argmin(on[edge], axis=1) + 1) % 3
    pn[edge] = edge_pn[edge_of_slot[3 * fid[edge] + slot]]
    vertex = count == 1
    pn[vertex] = vertex_pn[f[fid[vertex], np.argmax(bary[vertex], axis=1)]]
    return np.where(((p - q) * pn).sum(axis=1) >= 0, 1.0, -1.0)


def signed_distance_reference(vertices: Any, faces: Any, points: Any, sign: str = "exact_winding"
                              ) -> np.ndarray:
    """Exact signed distance (N,) float64, negative inside.

    The magnitude is ``closest_points_reference``'s distance (every triangle); the sign comes from
    the sign mesh, by ``"exact_winding"`` (inside iff ``winding_number_reference > 0.5``) or
    ``"pseudonormal"`` (``pseudonormal_sign_reference``).
    """
    one_of(sign, "sign", ("exact_winding", "pseudonormal"))
    distance = closest_points_reference(vertices, faces, points)[0]
    if sign == "pseudonormal":
        return distance * pseudonormal_sign_reference(vertices, faces, points)
    inside = winding_number_reference(*sign_mesh(vertices, faces), points) > 0.5
    return np.where(inside, -distance, distance)
