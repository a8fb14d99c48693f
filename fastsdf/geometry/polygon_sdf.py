"""``PolygonSDF``: exact signed distance to a 2D outline (polygons, holes, open polylines), the
plane's ``MeshSDF``.

An outline is vertices (V, 2) and segments (S, 2) of vertex indices, the layout
``fastsdf.marching_squares`` returns. Distances are exact in float64, every point against every
segment in NumPy (O(points x segments), in chunks that bound the memory): ample for outlines of a
few thousand segments.

The sign is the generalised winding number's (Jacobson et al. 2013, in the plane): ``w(p)`` is the
sum over the segments of the signed angle each subtends at ``p``, over 2 pi, and ``p`` is inside
(negative distance) where ``|w(p)| >= 1/2``, as ``MeshSDF``'s winding signs are. What that gives:

- Closed loops: the nonzero fill rule, whatever the loops' direction. A hole is a loop running the
  other way round from the loop around it (``marching_squares`` draws them so); a loop inside
  another running the same way counts twice and stays inside.
- Open polylines: fractional winding numbers; a point is inside where the polyline wraps at least
  half a turn around it, so a nearly closed outline (a "C") is filled up to about the chord across
  its gap, and a straight polyline or a single segment is never inside: the distance is then
  unsigned (positive off it).
- Self-touching or self-intersecting outlines: the same rule, loop by loop (a figure eight has
  ``|w| = 1`` in both lobes).

Points on the outline have distance 0. Coordinates may be any finite numbers: the outline is
taken into units of a power of two where its largest coordinate is in [1, 2), and a point farther
than 2^60 of those units is moved in along its ray from the origin for the closest-point search
(its winding number cannot change: the outline lies within 2 units), its distance then measured
from where it is.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from fastsdf import _memory
from fastsdf._arrays import is_tensor, to_numpy
from fastsdf.geometry.analytic import SDF, check_points
from fastsdf.geometry.grid import UNIT_BOUNDS_2D, Bounds, Grid

__all__ = ["PolygonSDF"]

# Entries of the (points x segments) arrays one chunk makes, several float64 arrays of them.
_CHUNK_ENTRIES = 1 << 18
_FAR = 60  # points beyond 2^_FAR outline units are moved in (see the module doc)


class PolygonSDF(SDF):
    """Signed distance (negative inside) to the 2D outline ``(vertices, segments)``.

    Args:
        vertices: (V, 2) real array-like (NumPy or torch), finite.
        segments: (S, 2) integer indices in [0, V), S >= 1, each from its first vertex to its
            second; None: one closed loop through the vertices in order (V >= 2).

    A callable from points (..., 2) (NumPy or torch, any device) to distances (...) in the points'
    float dtype (float64 for integer points); combines with the analytic shapes (``|``, ``&``,
    ``-``). Segments of zero length count as points. See the module doc for the signs.

    Raises:
        ValueError: wrong shapes, NaN/Inf vertices, no segments, an index out of range.
    """

    dim = 2

    def __init__(self, vertices: Any, segments: Any = None):
        vertices = to_numpy(vertices)
        if vertices.ndim != 2 or vertices.shape[1] != 2 or vertices.dtype.kind not in "fiu":
            raise ValueError(f"vertices must be a real (V, 2) array, got {vertices.dtype} {vertices.shape}")
        vertices = vertices.astype(np.float64)
        if not np.isfinite(vertices).all():
            raise ValueError("vertices hold NaN or Inf")
        if segments is None:
            if len(vertices) < 2:
                raise ValueError(f"a closed loop needs at least 2 vertices, got {len(vertices)}")
            segments = np.stack([np.arange(len(vertices)), np.roll(np.arange(len(vertices)), -1)], axis=1)
        segments = to_numpy(segments)
        if segments.ndim != 2 or segments.shape[1] != 2 or segments.dtype.kind not in "iu" or not len(segments):
            raise ValueError(f"segments must be an integer (S, 2) array with S >= 1, got {segments.dtype} "
                             f"{segments.shape}")
        if segments.min() < 0 or segments.max() >= len(vertices):
            raise ValueError(f"segment indices must be in [0, {len(vertices)}), got [{segments.min()}, "
                             f"{segments.max()}]")
        self.vertices = np.ascontiguousarray(vertices)
        self.segments = np.ascontiguousarray(segments, dtype=np.int64)
        largest = float(np.abs(vertices).max())
        # Outline units: the vertices times 2^-exponent (exact), see the module doc.
        self._exponent = max(math.frexp(largest)[1] - 1, -1022) if largest else 0
        corners = np.ldexp(self.vertices, -self._exponent)[self.segments]
        self._start, self._end = corners[:, 0], corners[:, 1]
        self._edge = self._end - self._start
        self._length2 = (self._edge ** 2).sum(axis=1)

    @classmethod
    def from_loops(cls, loops: Sequence[Any], closed: bool = True) -> "PolygonSDF":
        """The outline of several polylines, each a (n, 2) array of points: closed loops (the last
        point joined to the first) unless ``closed=False``. Give holes the other direction from
        the loop around them (see the module doc)."""
        arrays = [to_numpy(loop) for loop in loops]
        if not arrays:
            raise ValueError("no loops given")
        segments, first = [], 0
        for loop in arrays:
            if loop.ndim != 2 or len(loop) < 2:
                raise ValueError(f"every loop must be a (n, 2) array with n >= 2, got shape {loop.shape}")
            index = np.arange(first, first + len(loop))
            ends = np.roll(index, -1) if closed else index[1:]
            segments.append(np.stack([index[:len(ends)], ends], axis=1))
            first += len(loop)
        return cls(np.concatenate(arrays), np.concatenate(segments))

    def __repr__(self) -> str:
        return f"PolygonSDF({len(self.vertices)} vertices, {len(self.segments)} segments)"

    def distance(self, points: Any) -> Any:
        distance, _, _, winding = self._query(points)
        return _like(np.where((np.abs(winding) >= 0.5) & (distance > 0), -distance, distance), points)

    def unsigned(self, points: Any) -> Any:
        """Distances (...) to the outline."""
        return _like(self._query(self._check(points))[0], points)

    def closest(self, points: Any) -> tuple[Any, Any, Any]:
        """Closest points on the outline (..., 2), their segment ids (...) int64, and the position
        along that segment in [0, 1] (``point = (1 - t) * start + t * end``)."""
        points = self._check(points)
        _, segment, t, _ = self._query(points)
        start = self.vertices[self.segments[segment, 0]]
        end = self.vertices[self.segments[segment, 1]]
        closest = (1 - t)[..., None] * start + t[..., None] * end
        return _like(closest, points), _like(segment, points, index=True), _like(t, points)

    def winding_number(self, points: Any) -> Any:
        """Generalised winding numbers (...): 1 inside a counter-clockwise loop, -1 inside a
        clockwise one, 0 outside, fractional near the ends of open polylines."""
        return _like(self._query(self._check(points))[3], points)

    def contains(self, points: Any) -> Any:
        """True (...) where the signed distance is negative."""
        return self(points) < 0

    def grid(self, resolution: int | Sequence[int], bounds: Bounds = UNIT_BOUNDS_2D) -> np.ndarray:
        """Signed distances on ``Grid(resolution, bounds, dim=2)`` as a float32 (R0, R1) NumPy
        array (axis 0 along x), ready for ``fastsdf.marching_squares``. MemoryError, before
        allocating, when it would not fit."""
        grid = Grid(resolution, bounds, dim=2)
        res = grid.resolution
        _memory.check_fits(4 * math.prod(res), f"a {res[0]}x{res[1]} float32 distance grid")
        return self(grid.points(0, 0, math.prod(res))).astype(np.float32).reshape(res)

    def _check(self, points: Any) -> Any:
        return check_points(points, 2)

    def _query(self, points: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Unsigned distances, closest segments, positions along them and winding numbers, (...)
        each, of validated points (..., 2), in float64."""
        p = to_numpy(points).astype(np.float64)
        lead = p.shape[:-1]
        p = p.reshape(-1, 2)
        if not np.isfinite(p).all():
            raise ValueError("points hold NaN or Inf")
        largest = np.abs(p).max(axis=1) if len(p) else np.zeros(0)
        beyond = np.maximum(np.frexp(largest)[1] - self._exponent - _FAR, 0)
        local = np.ldexp(p, -(self._exponent + beyond)[:, None])
        n = len(p)
        distance, segment, t, winding = np.empty(n), np.empty(n, np.int64), np.empty(n), np.empty(n)
        chunk = max(1, _CHUNK_ENTRIES // len(self.segments))
        for lo in range(0, n, chunk):
            q = local[lo:lo + chunk, None, :]
            to_start = self._start - q  # (n, S, 2)
            along = -(to_start * self._edge).sum(axis=2)
            with np.errstate(invalid="ignore", divide="ignore"):
                s = np.where(self._length2 > 0, np.clip(along / self._length2, 0.0, 1.0), 0.0)
            offset = to_start + s[..., None] * self._edge
            best = np.argmin(np.hypot(offset[..., 0], offset[..., 1]), axis=1)
            rows = np.arange(len(best))
            segment[lo:lo + chunk], t[lo:lo + chunk] = best, s[rows, best]
            to_end = to_start + self._edge
            cross = to_start[..., 0] * to_end[..., 1] - to_start[..., 1] * to_end[..., 0]
            dot = (to_start * to_end).sum(axis=2)
            winding[lo:lo + chunk] = np.arctan2(cross, dot).sum(axis=1) / (2 * math.pi)
        # Measured from the point where it is, in its own coordinates: only a distance beyond
        # float64 overflows.
        # An end is its vertex exactly (start + 1 * edge can round off it).
        on_segment = np.where(t[:, None] == 1.0, self._end[segment],
                              self._start[segment] + t[:, None] * self._edge[segment])
        closest = np.ldexp(on_segment, self._exponent)
        distance[:] = np.hypot(p[:, 0] - closest[:, 0], p[:, 1] - closest[:, 1])
        return distance.reshape(lead), segment.reshape(lead), t.reshape(lead), winding.reshape(lead)


def _like(values: np.ndarray, points: Any, index: bool = False) -> Any:
    """``values`` in the points' kind: the same dtype (indices stay int64), a tensor on their device
    for a tensor. A distance too large for float32 becomes inf."""
    if is_tensor(points):
        import torch

        out = torch.from_numpy(np.ascontiguousarray(values))
        return out.to(points.device) if index else out.to(device=points.device, dtype=points.dtype)
    if index:
        return values
    with np.errstate(over="ignore"):
        return values.astype(points.dtype)
