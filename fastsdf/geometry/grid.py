"""``Grid``: the regular grid of sample points over a box (3D) or rectangle (2D) that ``extract_mesh``,
``MeshSDF.grid`` and ``PolygonSDF.grid`` evaluate, and the parsing of the ``resolution`` and
``bounds`` arguments that describe it.

The grid includes both bounds: sample ``n`` along axis ``a`` sits at ``lo[a] + n * step[a]`` with
``step[a] = (hi[a] - lo[a]) / (resolution[a] - 1)``. Points are made per batch from flat indices
(C order, axis 0 slowest), so no (R^3, 3) array ever exists.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fastsdf._validation import WrongTypeError, integer, vector

__all__ = ["Bounds", "Grid", "UNIT_BOUNDS", "UNIT_BOUNDS_2D", "parse_bounds", "parse_resolution"]

Bounds = tuple[Sequence[float], Sequence[float]]
UNIT_BOUNDS: Bounds = ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))
UNIT_BOUNDS_2D: Bounds = ((-1.0, -1.0), (1.0, 1.0))
_PAIRS = {2: "((x0, y0), (x1, y1))", 3: "((x0, y0, z0), (x1, y1, z1))"}


def parse_resolution(resolution: int | Sequence[int], dim: int = 3) -> tuple[int, ...]:
    """Samples per axis: one integer or ``dim`` of them, each at least 2; ValueError otherwise."""
    values = (resolution,) * dim if np.ndim(resolution) == 0 else tuple(resolution)
    if len(values) != dim:
        raise ValueError(f"resolution must be an integer >= 2 or {dim} of them, got {resolution!r}")
    return tuple(integer(r, "resolution", minimum=2) for r in values)


def parse_bounds(bounds: Bounds, dim: int | None = 3) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(lo, hi)`` as two tuples of ``dim`` finite floats with ``lo < hi`` (``dim=None``: 2 or 3,
    as ``lo`` has); ValueError otherwise."""
    try:
        lo, hi = bounds
    except (TypeError, ValueError):
        lo = hi = None  # not a pair: the vector check below says so
    if dim is None:
        dim = 2 if np.ndim(lo) == 1 and len(lo) == 2 else 3
    ordered = f"bounds must be two finite {dim}-vectors with lo < hi, got {bounds!r}"
    try:
        lo, hi = vector(lo, "bounds", dim), vector(hi, "bounds", dim)
    except WrongTypeError:
        raise ValueError(f"bounds must be {_PAIRS[dim]}, got {bounds!r}") from None
    except ValueError:  # NaN or Inf
        raise ValueError(ordered) from None
    if not all(l < h for l, h in zip(lo, hi)):
        raise ValueError(ordered)
    return lo, hi


class Grid:
    """``resolution`` samples per axis over ``bounds``, both included (see the module doc).

    Args:
        resolution: one int or one per axis, each at least 2.
        bounds: ``(lo, hi)``, each ``dim`` finite numbers with ``lo < hi``.
        dim: 3, or 2 for a grid in the plane.

    Attributes:
        resolution: samples per axis, ints.
        lo, hi, step: first sample, last sample and spacing per axis, floats.
        layer_points: samples in one layer of constant axis-0 index.
        axes: per axis, the float32 coordinates of its samples (computed in float64, then rounded).

    Raises:
        ValueError: a bad ``resolution`` or ``bounds``.
    """

    def __init__(self, resolution: int | Sequence[int], bounds: Bounds = UNIT_BOUNDS, dim: int = 3):
        self.lo, self.hi = parse_bounds(bounds, dim)
        self.resolution = parse_resolution(resolution, dim)
        res = self.resolution
        self.step = tuple((h - l) / (r - 1) for l, h, r in zip(self.lo, self.hi, res))
        self.layer_points = int(np.prod(res[1:]))
        self.axes = [(self.lo[a] + np.arange(res[a]) * self.step[a]).astype(np.float32) for a in range(len(res))]

    def __repr__(self) -> str:
        return f"Grid(resolution={self.resolution}, bounds=({self.lo}, {self.hi}))"

    def points(self, first_layer: int, start: int, stop: int) -> np.ndarray:
        """float32 (stop - start, dim) coordinates of flat points [start, stop) of the layers from
        ``first_layer`` on."""
        return self.points_at(first_layer, np.arange(start, stop, dtype=np.int64))

    def points_at(self, first_layer: int, flat: np.ndarray) -> np.ndarray:
        """float32 (N, dim) coordinates of the given flat points (int64 (N,)) of the layers from
        ``first_layer`` on. IndexError for a point outside the grid."""
        if first_layer < 0 or (len(flat) and flat.min() < 0):
            raise IndexError(f"grid points start at layer 0 and index 0, got layer {first_layer}, "
                             f"index {flat.min() if len(flat) else None}")
        layer, rem = np.divmod(flat, self.layer_points)
        out = np.empty((len(flat), len(self.resolution)), np.float32)
        out[:, 0] = self.axes[0][layer + first_layer]
        for axis, index in enumerate(np.unravel_index(rem, self.resolution[1:]), start=1):
            out[:, axis] = self.axes[axis][index]
        return out
