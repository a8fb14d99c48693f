"""``marching_squares``: indexed contours of a 2-D grid, the plane's ``marching_cubes``.

This module validates input and allocates outputs; the counting and filling happen in
``fastsdf._C`` (csrc/marching_squares/). ``fastsdf.meshing.marching_squares_reference`` is the
plain NumPy twin.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fastsdf import _backend, _memory
from fastsdf._arrays import is_tensor
from fastsdf._validation import real, vector
from fastsdf.meshing.marching_cubes import nonfinite_message, real_samples

__all__ = ["marching_squares"]

# Bytes of output per vertex (2 float32) and per segment (2 int64); of the per-row counts and
# offsets (int64) and their temporaries, per row.
_VERTEX_BYTES = 8
_SEGMENT_BYTES = 16
_ROW_BYTES = 64


def marching_squares(
    grid: Any,
    level: float = 0.0,
    spacing: Sequence[float] = (1.0, 1.0),
    origin: Sequence[float] = (0.0, 0.0),
) -> tuple[Any, Any]:
    """Extracts the contour ``grid == level`` as indexed segments.

    Args:
        grid: 2-D NumPy array or torch tensor, any strides, at least 2 samples along each axis,
            axis 0 along x and axis 1 along y (as ``PolygonSDF.grid`` makes). float32 and float64
            are used as they are; smaller real dtypes (float16, bfloat16, bool, 8/16-bit integers)
            are widened to float32 and 32/64-bit integers to float64. NaN or Inf anywhere raises
            ``ValueError``. A CUDA tensor is contoured on the host (the result goes back to its
            device).
        level: the iso-value. A level outside the data range, or a constant grid, gives no
            contour (arrays of shape (0, 2)), not an error.
        spacing: grid step along each axis (positive).
        origin: world position of ``grid[0, 0]``.

    Returns:
        ``(verts, segments)``: float32 (V, 2) world positions ``origin + index * spacing``, one per
        grid edge the contour crosses (linear interpolation), shared by the two segments that
        meet there; and int64 (S, 2) vertex indices, each segment with the values below the level
        on its left: contours run counter-clockwise around the regions below the level (around
        the inside of an SDF, negative inside) and clockwise around the holes in them. Every
        contour that does not reach the grid's border is closed, each of its vertices in exactly
        two segments (one ending there, one starting); one that does ends at the border. NumPy in
        gives NumPy out; a tensor gives tensors on its device.

    A sample exactly equal to the level counts as below it. A saddle cell (its corners above and
    below the level in turn) joins its two corners below the level when the mean of its four
    samples is at or below the level, and its two corners above otherwise. Vertices come by grid
    row (axis 0), then point, then the edge along axis 0 before the one along axis 1; segments by
    cell in the same order.

    Raises:
        ValueError: bad shape, NaN/Inf, non-finite level, spacing or origin.
        TypeError: a complex or non-numeric grid.
        MemoryError: the output, a converted copy of the grid or the kernels' working memory would
            not fit in the memory available, checked before allocating.
        BackendUnavailableError: fastsdf._C is not built.
    """
    level = real(level, "level")
    spacing = vector(spacing, "spacing", 2, positive=True)
    origin = vector(origin, "origin", 2)
    device = grid.device if is_tensor(grid) and grid.device.type == "cuda" else None
    data, wrap = real_samples(grid.cpu() if device is not None else grid, 2, "grid")
    module = _backend.cpu()
    rows = data.shape[0]
    _memory.check_fits(int(module.ms_scratch_bytes(data.shape)) + _ROW_BYTES * rows,
                       f"marching squares over a grid of shape {data.shape} (working memory of every thread)",
                       hint="contour a smaller grid, or set OMP_NUM_THREADS lower")
    vertex_counts, segment_counts, finite = module.ms_count(data, level)
    if not finite:
        raise ValueError(nonfinite_message(data, "grid", "marching squares"))
    n_verts, n_segments = int(vertex_counts.sum()), int(segment_counts.sum())
    _memory.check_fits(n_verts * _VERTEX_BYTES + n_segments * _SEGMENT_BYTES,
                       f"the marching squares output ({n_verts:,} vertices, {n_segments:,} segments)",
                       hint="contour a coarser grid")
    verts = np.empty((n_verts, 2), np.float32)
    segments = np.empty((n_segments, 2), np.int64)
    module.ms_fill(data, level, origin, spacing, np.cumsum(vertex_counts) - vertex_counts,
                   np.cumsum(segment_counts) - segment_counts, verts, segments)
    verts, segments = wrap(verts), wrap(segments)
    if device is not None:
        return verts.to(device), segments.to(device)
    return verts, segments

