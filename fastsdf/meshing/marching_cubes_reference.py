"""Plain NumPy twin of the compiled marching cubes, the truth the kernels are tested against.

It follows the same conventions as csrc/marching_cubes (corner, edge and face numbering, the
asymptotic decider on ambiguous faces, loops of face segments triangulated without diagonals in
cube faces, vertex and
triangle order) but builds its tables from cube coordinates and evaluates everything in float64
with whole-array operations. Slow and memory-hungry (several arrays the size of the volume): for
tests and small grids only.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

__all__ = ["marching_cubes_reference"]

# Corner c at (c & 1, c >> 1 & 1, c >> 2 & 1).
_CORNERS = np.array([[(c >> a) & 1 for a in range(3)] for c in range(8)])
# Edge 4 * axis + n starts at the n-th corner (in increasing order) with a 0 along that axis.
_EDGES = [(c, c | (1 << axis)) for axis in range(3) for c in range(8) if not (c >> axis) & 1]
_EDGE_START = np.array([_CORNERS[c0] for c0, _ in _EDGES])
_EDGE_AXIS = np.array([e // 4 for e in range(12)])


def _face_cycles() -> list[list[int]]:
    """Face 2 * axis + side: its corners counter-clockwise as seen from outside the cube."""
    cycles = []
    for axis in range(3):
        for side in range(2):
            normal = np.zeros(3)
            normal[axis] = 1.0 if side else -1.0
            corners = [c for c in range(8) if _CORNERS[c][axis] == side]
            centre = _CORNERS[corners].mean(axis=0)
            u = np.zeros(3)
            u[(axis + 1) % 3] = 1.0
            v = np.cross(normal, u)
            start = min(corners)
            ang0 = np.arctan2((_CORNERS[start] - centre) @ v, (_CORNERS[start] - centre) @ u)
            order = sorted(corners, key=lambda c: (np.arctan2((_CORNERS[c] - centre) @ v,
                                                              (_CORNERS[c] - centre) @ u) - ang0) % (2 * np.pi))
            cycles.append(order)
    return cycles


_FACES = _face_cycles()


def _edge_id(c0: int, c1: int) -> int:
    return _EDGES.index((min(c0, c1), max(c0, c1)))


def _edge_faces(e: int) -> set[int]:
    return {f for f, ring in enumerate(_FACES) if any(_edge_id(ring[i], ring[(i + 1) % 4]) == e for i in range(4))}


_CENTRE = 12  # stands for the cube's centre vertex in triangle tables


def _triangulate_loop(loop: list[int]) -> list[tuple[int, int, int]] | None:
    """Minimum sum of squared diagonal lengths (between edge midpoints) over the triangulations
    whose diagonals do not lie in a cube face; ties go to the smallest split vertex. Triangles are
    listed sub-polygon first, then its left and right parts. None when every triangulation has a
    diagonal in a face (the neighbouring cube could draw it too)."""
    n = len(loop)
    mid = [2 * _EDGE_START[e] + np.eye(3, dtype=np.int64)[_EDGE_AXIS[e]] for e in loop]

    def weight(i: int, j: int) -> float:
        if (j - i) % n in (1, n - 1):
            return 0
        if _edge_faces(loop[i]) & _edge_faces(loop[j]):
            return float("inf")
        return int(((mid[i] - mid[j]) ** 2).sum())

    @functools.cache
    def best(i: int, j: int) -> tuple[float, int]:
        if j - i < 2:
            return 0, -1
        return min((best(i, k)[0] + best(k, j)[0] + weight(i, k) + weight(k, j), k) for k in range(i + 1, j))

    def emit(i: int, j: int) -> list[tuple[int, int, int]]:
        if j - i < 2:
            return []
        k = best(i, j)[1]
        return [(loop[i], loop[k], loop[j])] + emit(i, k) + emit(k, j)

    if best(0, n - 1)[0] == float("inf"):
        return None
    return emit(0, n - 1)


def _triangles(cube: int, connected: int) -> tuple[list[tuple[int, int, int]], list[int]]:
    """Triangles (as edge triples, _CENTRE for the centre vertex) of one cube index and one set of
    face decisions, and the edges whose vertices the centre vertex averages (empty if none)."""
    above = [(cube >> c) & 1 for c in range(8)]
    successor: dict[int, int] = {}
    for f, ring in enumerate(_FACES):
        # Segment i runs on face edge (ring[i], ring[i + 1]); walking the ring counter-clockwise,
        # crossing from above to below starts a segment, from below to above ends one.
        sides = [(_edge_id(ring[i], ring[(i + 1) % 4]), above[ring[i]], above[ring[(i + 1) % 4]])
                 for i in range(4)]
        starts = [i for i, (_, a, b) in enumerate(sides) if a and not b]
        ends = [i for i, (_, a, b) in enumerate(sides) if b and not a]
        if len(starts) == 1:
            successor[sides[starts[0]][0]] = sides[ends[0]][0]
        elif len(starts) == 2:
            # Joined above corners: each segment cuts off a below corner, so a start is followed by
            # the next end around the ring; separated: by the previous one.
            step = 1 if (connected >> f) & 1 else -1
            for s in starts:
                successor[sides[s][0]] = sides[(s + step) % 4][0]
    tris: list[tuple[int, int, int]] = []
    centre: list[int] = []
    seen: set[int] = set()
    for first in sorted(successor):
        if first in seen:
            continue
        loop = [first]
        seen.add(first)
        while successor[loop[-1]] != first:
            loop.append(successor[loop[-1]])
            seen.add(loop[-1])
        triangulated = _triangulate_loop(loop)
        if triangulated is None:
            assert not centre, "at most one loop per cube can need a centre vertex"
            centre = sorted(loop)
            triangulated = [(_CENTRE, loop[m], loop[(m + 1) % len(loop)]) for m in range(len(loop))]
        tris += triangulated
    return tris, centre


@functools.cache
def _tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Triangle edges (16384, 12, 3) padded with -1, triangle counts, centre-vertex edge masks
    (16384, 12) as booleans, and ambiguous-face masks (256,)."""
    ambiguous = np.zeros(256, np.int64)
    for cube in range(256):
        for f, ring in enumerate(_FACES):
            a = [(cube >> c) & 1 for c in ring]
            if a[0] == a[2] and a[1] == a[3] and a[0] != a[1]:
                ambiguous[cube] |= 1 << f
    edges = np.full((256 * 64, 12, 3), -1, np.int64)
    counts = np.zeros(256 * 64, np.int64)
    centres = np.zeros((256 * 64, 12), bool)
    for bits in range(64):
        for cube in range(256):
            tris, centre = _triangles(cube, bits & ambiguous[cube])
            key = bits * 256 + cube
            counts[key] = len(tris)
            centres[key, centre] = True
            if tris:
                edges[key, : len(tris)] = tris
    return edges, counts, centres, ambiguous


def marching_cubes_reference(
    volume: np.ndarray,
    level: float = 0.0,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    cube_mask: np.ndarray | None = None,
    attributes: bool = False,
) -> tuple[np.ndarray, ...]:
    """Same contract and output (vertex and triangle order included) as ``fastsdf.marching_cubes``
    on a finite NumPy volume.

    The compiled kernels' extras, as ``fastsdf.measure.marching_cubes`` uses them: ``cube_mask``
    (one less than the volume along every axis) meshes only the cubes where it is true, and a grid
    edge gets a vertex only when one of those holds it; ``attributes=True`` also returns per-vertex
    unit gradients (towards values above the level: ``numpy.gradient`` interpolated along the
    vertex's edge, summed over the loop for a centre vertex) and values (the largest spread of
    samples over the meshed cubes holding the vertex), float32.
    """
    v = np.asarray(volume, dtype=np.float64)
    if v.ndim != 3 or min(v.shape) < 2:
        raise ValueError(f"volume must be 3-D with at least 2 samples per axis, got shape {v.shape}")
    above = v > level
    spacing = np.asarray(spacing, np.float64)
    origin = np.asarray(origin, np.float64)

    nx, ny, nz = v.shape
    kept = np.ones((nx - 1, ny - 1, nz - 1), bool) if cube_mask is None else np.asarray(cube_mask, bool)
    if kept.shape != (nx - 1, ny - 1, nz - 1):
        raise ValueError(f"cube_mask must have shape {(nx - 1, ny - 1, nz - 1)}, got {kept.shape}")
    # Spread of each cube's samples (-inf where the mask drops it), padded by one on every side
    # with cubes that are not meshed, so that the cubes around an edge are found without bounds
    # checks: spread[c + 1] is cube c's.
    spread = np.full((nx + 1, ny + 1, nz + 1), -np.inf)
    if attributes or cube_mask is not None:
        rel = v - level
        lo = hi = rel[: nx - 1, : ny - 1, : nz - 1]
        for dx, dy, dz in _CORNERS[1:]:
            corner = rel[dx : nx - 1 + dx, dy : ny - 1 + dy, dz : nz - 1 + dz]
            lo, hi = np.minimum(lo, corner), np.maximum(hi, corner)
        spread[1:nx, 1:ny, 1:nz] = np.where(kept, hi - lo, -np.inf)
    gradient = np.stack(np.gradient(v, *spacing), axis=-1) if attributes else None
    # Vertex order: by point layer, its edge vertices (row, point, axis) then the centre vertices
    # of the cube layer starting there (cube order). Sort keys encode exactly that.
    layer_span = 4 * ny * nz

    def edge_keys(idx: np.ndarray, axis: np.ndarray | int) -> np.ndarray:
        return idx[:, 0] * layer_span + (idx[:, 1] * nz + idx[:, 2]) * 3 + axis

    def edge_fraction(idx: np.ndarray, axis: int) -> np.ndarray:
        nxt = idx.copy()
        nxt[:, axis] += 1
        v0, v1 = v[tuple(idx.T)], v[tuple(nxt.T)]
        return (level - v0) / (v1 - v0)

    def edge_points(idx: np.ndarray, axis: int) -> np.ndarray:
        p = idx.astype(np.float64)
        p[:, axis] += edge_fraction(idx, axis)
        return origin + p * spacing

    def edge_gradients(idx: np.ndarray, axis: int) -> np.ndarray:
        g0 = gradient[tuple(idx.T)]
        g1 = gradient[tuple((idx + np.eye(3, dtype=np.int64)[axis]).T)]
        return g0 + edge_fraction(idx, axis)[:, None] * (g1 - g0)

    def around_edges(idx: np.ndarray, axis: int) -> np.ndarray:
        """(N, 4) spreads of the cubes around each edge, -inf where there is no meshed cube."""
        b, c = (axis + 1) % 3, (axis + 2) % 3
        out = []
        for db in (0, 1):
            for dc in (0, 1):
                cube = idx + 1
                cube[:, b] -= db
                cube[:, c] -= dc
                out.append(spread[tuple(cube.T)])
        return np.stack(out, axis=1)

    keys, points, normals, values = [], [], [], []
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        idx = np.argwhere(above[tuple(lo)] != above[tuple(hi)])
        around = around_edges(idx, axis)
        if cube_mask is not None:
            meshed = np.isfinite(around).any(axis=1)
            idx, around = idx[meshed], around[meshed]
        keys.append(edge_keys(idx, axis))
        points.append(edge_points(idx, axis))
        if attributes:
            normals.append(edge_gradients(idx, axis))
            values.append(around.max(axis=1))

    cube = np.zeros((nx - 1, ny - 1, nz - 1), np.int64)
    for c, (dx, dy, dz) in enumerate(_CORNERS):
        cube |= above[dx : nx - 1 + dx, dy : ny - 1 + dy, dz : nz - 1 + dz].astype(np.int64) << c
    cells = np.argwhere((cube != 0) & (cube != 255) & kept)
    cube = cube[tuple(cells.T)]
    edges, counts, centre_edges, ambiguous = _tables()

    rel = np.stack([v[tuple((cells + _CORNERS[c]).T)] - level for c in range(8)], axis=1)
    bits = np.zeros(len(cells), np.int64)
    for f, (q0, q1, q2, q3) in enumerate(_FACES):
        amb = (ambiguous[cube] >> f) & 1 == 1
        q0_above = (cube >> q0) & 1 == 1
        d02 = rel[:, q0] * rel[:, q2]
        d13 = rel[:, q1] * rel[:, q3]
        connected = np.where(q0_above, d02 > d13, d13 > d02)
        bits |= (amb & connected).astype(np.int64) << f
    key = bits * 256 + cube

    has_centre = centre_edges[key].any(axis=1)
    centre_cells = cells[has_centre]
    centre_sum = np.zeros((len(centre_cells), 3))
    centre_gradient = np.zeros((len(centre_cells), 3))
    for e in range(12):  # summed in edge order, as the kernels do
        use = centre_edges[key[has_centre], e]
        centre_sum[use] += edge_points(centre_cells[use] + _EDGE_START[e], int(_EDGE_AXIS[e]))
        if attributes:
            centre_gradient[use] += edge_gradients(centre_cells[use] + _EDGE_START[e], int(_EDGE_AXIS[e]))
    keys.append(centre_cells[:, 0] * layer_span + 3 * ny * nz + centre_cells[:, 1] * nz + centre_cells[:, 2])
    points.append(centre_sum / centre_edges[key[has_centre]].sum(axis=1, keepdims=True))
    normals.append(centre_gradient)
    values.append(spread[tuple((centre_cells + 1).T)])

    keys = np.concatenate(keys)
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    verts = np.concatenate(points)[order].astype(np.float32)

    tri_edges = edges[key]  # (cells, 12, 3)
    valid = np.arange(12)[None, :] < counts[key][:, None]
    tri_cells = np.repeat(cells, counts[key], axis=0)
    tri_edges = tri_edges[valid]  # (T, 3), cube order then table order
    faces = np.empty(tri_edges.shape, np.int64)
    for corner in range(3):
        e = tri_edges[:, corner]
        centre = e == _CENTRE
        e = np.where(centre, 0, e)
        point = tri_cells + _EDGE_START[e]
        vertex_key = np.where(
            centre,
            tri_cells[:, 0] * layer_span + 3 * ny * nz + tri_cells[:, 1] * nz + tri_cells[:, 2],
            edge_keys(point, _EDGE_AXIS[e]),
        )
        faces[:, corner] = np.searchsorted(keys, vertex_key)
    faces = faces.reshape(-1, 3)
    if not attributes:
        return verts, faces
    normals = np.concatenate(normals)[order]
    norm = np.linalg.norm(normals, axis=1, keepdims=True)
    unit = np.divide(normals, norm, out=np.zeros_like(normals), where=norm > 0)
    return verts, faces, unit.astype(np.float32), np.concatenate(values)[order].astype(np.float32)
