"""Marching squares: the compiled kernel against its NumPy twin on fresh random grids, contours of
known SDFs (closed, oriented, on the outline), saddles, and bad or degenerate input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import fastsdf
from fastsdf import Circle, PolygonSDF, marching_squares
from fastsdf.geometry.grid import Grid
from fastsdf.meshing.marching_squares_reference import marching_squares_reference


def _same(a: tuple, b: tuple, extent: float) -> None:
    assert np.array_equal(a[1], b[1])
    # Both round the same float64 position to float32; allow one float32 step of the extent.
    np.testing.assert_allclose(a[0], b[0], rtol=0, atol=4 * np.finfo(np.float32).eps * extent)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_the_reference_on_random_grids(dtype: type, rng, seed) -> None:
    for _ in range(4):
        shape = tuple(int(s) for s in rng.integers(2, 40, size=2) | 1)  # odd sizes
        grid = rng.standard_normal(shape).astype(dtype)
        level = float(rng.uniform(-0.5, 0.5))
        spacing = tuple(rng.uniform(0.1, 3.0, size=2))
        origin = tuple(rng.uniform(-5, 5, size=2))
        extent = max(abs(o) + s * n for o, s, n in zip(origin, spacing, shape))
        _same(marching_squares(grid, level, spacing, origin), marching_squares_reference(grid, level, spacing, origin),
              extent)
        view = grid[::-1].T  # negative and non-unit strides, read in place
        _same(marching_squares(view, level), marching_squares_reference(view, level), max(shape))


def test_quantised_grids_with_samples_on_the_level(rng, seed) -> None:
    grid = rng.integers(-2, 3, size=(17, 23)).astype(np.int16)  # many samples exactly at the level and saddles
    for level in (-1.0, 0.0, 0.5):
        _same(marching_squares(grid, level), marching_squares_reference(grid, level), 23)


def _check_closed(verts: np.ndarray, segments: np.ndarray) -> None:
    """Every vertex starts exactly one segment and ends exactly one."""
    assert np.array_equal(np.bincount(segments[:, 0], minlength=len(verts)), np.ones(len(verts)))
    assert np.array_equal(np.bincount(segments[:, 1], minlength=len(verts)), np.ones(len(verts)))


def _signed_area(verts: np.ndarray, segments: np.ndarray) -> float:
    a, b = verts[segments[:, 0]].astype(np.float64), verts[segments[:, 1]].astype(np.float64)
    return float((a[:, 0] * b[:, 1] - b[:, 0] * a[:, 1]).sum() / 2)


def test_circle_contour_is_closed_counter_clockwise_and_on_the_circle(rng, seed) -> None:
    radius, centre = rng.uniform(0.3, 0.7), rng.uniform(-0.2, 0.2, size=2)
    res = int(rng.integers(40, 80)) | 1
    grid = Grid(res, ((-1, -1), (1, 1)), dim=2)
    field = Circle(radius, centre)(grid.points(0, 0, res * res).astype(np.float64)).reshape(res, res)
    verts, segments = marching_squares(field, 0.0, grid.step, grid.lo)
    _check_closed(verts, segments)
    h = grid.step[0]
    # A linear interpolant of an exact circle's SDF is off by at most about h^2 / radius.
    assert np.abs(np.hypot(*(verts - centre).T) - radius).max() < h * h / radius
    assert _signed_area(verts, segments) == pytest.approx(math.pi * radius ** 2, rel=4 * h)


def test_holes_run_clockwise_and_polygons_are_traced(rng, seed) -> None:
    n = int(rng.integers(5, 12))
    angles = (np.arange(n) + rng.uniform(-0.3, 0.3, size=n)) * 2 * np.pi / n
    outer = np.stack([np.cos(angles), np.sin(angles)], 1) * rng.uniform(0.6, 0.9, size=(len(angles), 1))
    hole = 0.2 * np.stack([np.cos(-angles), np.sin(-angles)], 1)  # the other way round
    shape = PolygonSDF.from_loops([outer, hole])
    res = 101
    grid = Grid(res, ((-1, -1), (1, 1)), dim=2)
    field = shape.grid(res)
    verts, segments = marching_squares(field, 0.0, grid.step, grid.lo)
    _check_closed(verts, segments)
    assert np.abs(shape.unsigned(verts.astype(np.float64))).max() < 0.5 * grid.step[0]
    loop = np.stack([np.arange(n), np.roll(np.arange(n), -1)], 1)
    area = _signed_area(outer, loop) + _signed_area(hole, loop)  # the hole's is negative
    assert _signed_area(verts, segments) == pytest.approx(area, abs=0.02)


def _edge(vertex: np.ndarray) -> int:
    """Which edge of the unit cell a vertex lies on: 0 at y = 0, 1 at x = 1, 2 at y = 1, 3 at x = 0."""
    x, y = vertex
    return 0 if y == 0 else 1 if x == 1 else 2 if y == 1 else 3


@pytest.mark.parametrize("offset, joined", [(-0.5, True), (0.0, True), (0.5, False)])
@pytest.mark.parametrize("flip", [1.0, -1.0])
def test_saddles_follow_the_cell_mean(offset: float, joined: bool, flip: float) -> None:
    # Corners alternate above and below the level; the cell's mean is ``offset``.
    grid = flip * np.array([[-1.0, 1.0], [1.0, -1.0]]) + offset
    verts, segments = marching_squares(grid)
    assert len(verts) == 4 and len(segments) == 2
    pairs = {tuple(_edge(verts[v]) for v in s) for s in segments}
    # Corner k sits between edges k - 1 and k. Joined below corners: the segments cut off the
    # corners above; separated ones: the corners below. Each runs with the below side on its left.
    below = [k for k, (i, j) in enumerate([(0, 0), (1, 0), (1, 1), (0, 1)]) if grid[i, j] <= 0]
    cut = [k for k in range(4) if (k in below) != joined]
    expected = {(k, (k + 3) % 4) if k in below else ((k + 3) % 4, k) for k in cut}
    assert pairs == expected
    assert np.array_equal(segments, marching_squares_reference(grid)[1])


@pytest.mark.parametrize("grid", [np.zeros((3, 4)), np.ones((2, 2)), np.full((5, 3), -1.0)])
def test_no_contour_gives_empty_arrays(grid: np.ndarray) -> None:
    verts, segments = marching_squares(grid)
    assert verts.shape == (0, 2) and verts.dtype == np.float32
    assert segments.shape == (0, 2) and segments.dtype == np.int64
    assert marching_squares(np.arange(6.0).reshape(2, 3), level=10.0)[0].shape == (0, 2)


def test_tensors_and_small_dtypes(rng, seed) -> None:
    grid = rng.standard_normal((9, 7))
    verts, segments = marching_squares(torch.from_numpy(grid).to(torch.float16), 0.1)
    expected = marching_squares_reference(torch.from_numpy(grid).to(torch.float16).float().numpy(), 0.1)
    assert isinstance(verts, torch.Tensor) and np.array_equal(segments.numpy(), expected[1])
    assert len(marching_squares(grid > 0, 0.5)[1]) == len(marching_squares_reference(grid > 0, 0.5)[1])


@pytest.mark.parametrize("grid, error", [
    (np.zeros((1, 5)), ValueError), (np.zeros(5), ValueError), (np.zeros((3, 3, 3)), ValueError),
    (np.zeros((3, 3), complex), TypeError), (np.array([["a", "b"], ["c", "d"]]), TypeError)])
def test_bad_grids(grid: np.ndarray, error: type) -> None:
    with pytest.raises(error):
        marching_squares(grid)


def test_nonfinite_samples_and_bad_arguments(rng) -> None:
    grid = rng.standard_normal((6, 5))
    grid[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"grid holds 1 NaN or Inf values \(first at index \(3, 2\)\)"):
        marching_squares(grid)
    for kwargs in ({"level": float("nan")}, {"spacing": (1.0, 0.0)}, {"spacing": (1.0, 1.0, 1.0)},
                   {"origin": (0.0, float("inf"))}):
        with pytest.raises(ValueError):
            marching_squares(np.zeros((3, 3)), **kwargs)


def test_refuses_outputs_that_do_not_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    grid = np.indices((64, 64)).sum(0) % 2 - 0.5  # a checkerboard: a contour in every cell
    monkeypatch.setattr(fastsdf._memory, "available_bytes", lambda device=None: 150_000)
    with pytest.raises(MemoryError, match="marching squares output"):
        marching_squares(grid)
