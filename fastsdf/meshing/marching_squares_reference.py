"""Plain NumPy twin of the compiled marching squares, the truth the kernel is tested against.

It follows csrc/marching_squares/marching_squares.h's conventions (corner and edge numbering,
saddles decided by the cell's mean, vertex and segment order) but finds each cell's segments by
walking its corners in Python and evaluates everything in float64 with whole-array operations
elsewhere. For tests and small grids.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

__all__ = ["marching_squares_reference"]

# Corner k of cell (i, j) at (i, j) + _CORNERS[k], counter-clockwise; edge k runs from corner k to k + 1.
_CORNERS = np.array([(0, 0), (1, 0), (1, 1), (0, 1)])
# Edge k's vertex: the grid edge from point (i, j) + _EDGE_START[k] along axis _EDGE_AXIS[k].
_EDGE_START = np.array([(0, 0), (1, 0), (0, 1), (0, 0)])
_EDGE_AXIS = np.array([0, 1, 0, 1])


@functools.cache
def _segments(case: int, joined: bool) -> tuple[tuple[int, int], ...]:
    """(start edge, end edge) of each segment of a cell: the below-the-level side on the left."""
    above = [(case >> k) & 1 for k in range(4)]
    starts = [k for k in range(4) if not above[k] and above[(k + 1) % 4]]
    ends = [k for k in range(4) if above[k] and not above[(k + 1) % 4]]
    if len(starts) == 2:  # a saddle: the next end round the ring when the below corners join
        return tuple((s, (s + 1) % 4 if joined else (s - 1) % 4) for s in starts)
    return tuple(zip(starts, ends))


def marching_squares_reference(
    grid: np.ndarray,
    level: float = 0.0,
    spacing: Sequence[float] = (1.0, 1.0),
    origin: Sequence[float] = (0.0, 0.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Same contract and output (vertex and segment order included) as ``fastsdf.marching_squares``
    on a finite NumPy grid."""
    v = np.asarray(grid, dtype=np.float64)
    if v.ndim != 2 or min(v.shape) < 2:
        raise ValueError(f"grid must be 2-D with at least 2 samples per axis, got shape {v.shape}")
    nx, ny = v.shape
    above = v > level
    spacing = np.asarray(spacing, np.float64)
    origin = np.asarray(origin, np.float64)

    def key(point: np.ndarray, axis: np.ndarray | int) -> np.ndarray:
        return (point[:, 0] * ny + point[:, 1]) * 2 + axis

    keys, points = [], []
    for axis in range(2):
        lo, hi = [slice(None)] * 2, [slice(None)] * 2
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        idx = np.argwhere(above[tuple(lo)] != above[tuple(hi)])
        v0 = v[tuple(idx.T)]
        v1 = v[tuple((idx + np.eye(2, dtype=np.int64)[axis]).T)]
        with np.errstate(over="ignore", invalid="ignore"):
            t = (level - v0) / (v1 - v0)
        halves = ~((t >= 0) & (t <= 1))  # differences that overflow: in halves, as the kernel does
        t[halves] = (level * 0.5 - v0[halves] * 0.5) / (v1[halves] * 0.5 - v0[halves] * 0.5)
        p = idx.astype(np.float64)
        p[:, axis] += t
        keys.append(key(idx, axis))
        points.append(origin + p * spacing)
    keys = np.concatenate(keys)
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    verts = np.concatenate(points)[order].astype(np.float32)

    case = np.zeros((nx - 1, ny - 1), np.int64)
    for k, (di, dj) in enumerate(_CORNERS):
        case |= above[di:nx - 1 + di, dj:ny - 1 + dj].astype(np.int64) << k
    # The cell's mean, summed in corner order as the kernel does.
    mean = (((v[:-1, :-1] + v[1:, :-1]) + v[1:, 1:]) + v[:-1, 1:]) / 4.0
    joined = ~(mean > level)
    segments = []
    for i, j in np.argwhere((case != 0) & (case != 15)):
        for start, end in _segments(int(case[i, j]), bool(joined[i, j])):
            segments.append([key(np.array([(i, j) + _EDGE_START[e]]), _EDGE_AXIS[e])[0] for e in (start, end)])
    segments = np.searchsorted(keys, np.array(segments, np.int64).reshape(-1, 2))
    return verts, segments.astype(np.int64)
