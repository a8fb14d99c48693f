"""``Grid``: the regular grid of sample points over a box that ``extract_mesh`` and ``MeshSDF.grid``
evaluate, and the parsing of the ``resolution`` and ``bounds`` arguments that describe it.

The grid includes both bounds: sample ``n`` along axis ``a`` sits at ``lo[a] + n * step[a]`` with
``step[a] = (hi[a] - lo[a]) / (resolution[a] - 1)``. Points are made per batch from flat indices
(C order, axis 0 slowest), so no (R^3, 3) array ever exists.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fastsdf._validation import WrongTypeError, integer, triple

__all__ = ["Bounds", "Grid", "UNIT_BOUNDS", "parse_bounds", "parse_resolution"]

Bounds = tuple[Sequence[float], Sequence[float]]
UNIT_BOUNDS: Bounds = ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))


def parse_resolution(resolution: int | Sequence[int]) -> tuple[int, int, int]:
    """Samples per axis: one integer or three, each at least 2; ValueError otherwise."""
    values = (resolution,) * 3 if np.ndim(resolution) == 0 else tuple(resolution)
    if len(values) != 3:
        raise ValueError(f"resolution must be an integer >= 2 or three of them, got {resolution!r}")
    return tuple(integer(r, "resolution", minimum=2) for r in values)  # type: ignore[return-value]


def parse_bounds(bounds: Bounds) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(lo, hi)`` as two tuples of three finite floats with ``lo < hi``; ValueError otherwise."""
    try:
        lo, hi = bounds
    except (TypeError, ValueError):
        lo = hi = None  # not a pair: the triple check below says so
    ordered = f"bounds must be two finite 3-vectors with lo < hi, got {bounds!r}"
    try:
        lo, hi = triple(lo, "bounds"), triple(hi, "bounds")
    except WrongTypeError:
        raise ValueError(f"bounds must be ((x0, y0, z0), (x1, y1, z1)), got {bounds!r}") from None
    except ValueError:  # NaN or Inf
        raise ValueError(ordered) from None
    if not all(l < h for l, h in zip(lo, hi)):
        raise ValueError(ordered)
    return lo, hi


class Grid:
    """``resolution`` samples per axis over ``bounds``, both included (see the module doc).

    Args:
        resolution: one int or three, each at least 2.
        bounds: ``(lo, hi)``, each three finite numbers with ``lo < hi``.

    Attributes:
        resolution: samples per axis, three ints.
        lo, hi, step: first sample, last sample and spacing per axis, floats.
        layer_points: samples in one layer of constant axis-0 index.
        axes: per axis, the float32 coordinates of its samples (computed in float64, then rounded).

    Raises:
        ValueError: a bad ``resolution`` or ``bounds``.
    """

    def __init__(self, resolution: int | Sequence[int], bounds: Bounds = UNIT_BOUNDS):
        self.resolution = parse_resolution(resolution)
        self.lo, self.hi = parse_bounds(bounds)
        res = self.resolution
        self.step = tuple((h - l) / (r - 1) for l, h, r in zip(self.lo, self.hi, res))
        self.layer_points = res[1] * res[2]
        self.axes = [(self.lo[a] + np.arange(res[a]) * self.step[a]).astype(np.float32) for a in range(3)]

    def __repr__(self) -> str:
        return f"Grid(resolution={self.resolution}, bounds=({self.lo}, {self.hi}))"

    def points(self, first_layer: int, start: int, stop: int) -> np.ndarray:
        """float32 (stop - start, 3) coordinates of flat points [start, stop) of the layers from
        ``first_layer`` on."""
        return self.points_at(first_layer, np.arange(start, stop, dtype=np.int64))

    def points_at(self, first_layer: int, flat: np.ndarray) -> np.ndarray:
        """float32 (N, 3) coordinates of the given flat points (int64 (N,)) of the layers from
        ``first_layer`` on. IndexError for a point outside the grid."""
        if first_layer < 0 or (len(flat) and flat.min() < 0):
            raise IndexError(f"grid points start at layer 0 and index 0, got layer {first_layer}, "
                             f"index {flat.min() if len(flat) else None}")
        layer, rem = np.divmod(flat, self.layer_points)
        row, col = np.divmod(rem, self.resolution[2])
        out = np.empty((len(flat), 3), np.float32)
        out[:, 0] = self.axes[0][layer + first_layer]
        out[:, 1] = self.axes[1][row]
        out[:, 2] = self.axes[2][col]
        return out
