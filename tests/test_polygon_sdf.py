"""2D SDFs: PolygonSDF against brute force and known shapes (distances, winding signs on closed,
holed and open outlines, far and huge coordinates), the 2D analytic shapes and CSG, and 2D sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from matplotlib.path import Path as MplPath

from fastsdf import Box, Capsule, Circle, PolygonSDF, Rectangle, SmoothUnion, Sphere, sample_sdf


def _star(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random simple (star-shaped) counter-clockwise polygon of n vertices."""
    angles = (np.arange(n) + rng.uniform(-0.4, 0.4, size=n)) * 2 * np.pi / n
    return rng.uniform(0.3, 1.0, size=(n, 1)) * np.stack([np.cos(angles), np.sin(angles)], 1)


def test_distances_and_signs_match_brute_force(rng, seed) -> None:
    n = int(rng.integers(3, 30)) | 1
    vertices = _star(rng, n)
    shape = PolygonSDF(vertices)
    points = rng.uniform(-1.5, 1.5, size=(501, 2))
    # Brute force: the smallest distance to each segment, from the analytic capsule of radius 0.
    brute = np.min([Capsule(vertices[k], vertices[(k + 1) % n], 0.0)(points) for k in range(n)], axis=0)
    inside = MplPath(vertices).contains_points(points)
    np.testing.assert_allclose(shape.unsigned(points), brute, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(shape(points), np.where(inside, -brute, brute), rtol=1e-12, atol=1e-15)
    reversed_loop = PolygonSDF(vertices[::-1])  # the sign does not depend on the direction
    np.testing.assert_allclose(reversed_loop(points), shape(points), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(shape.winding_number(points), inside.astype(float), atol=1e-9)
    np.testing.assert_allclose(reversed_loop.winding_number(points), -inside.astype(float), atol=1e-9)
    closest, segment, t = shape.closest(points)
    np.testing.assert_allclose(np.hypot(*(closest - points).T), brute, rtol=1e-12, atol=1e-15)
    start, end = vertices[segment], vertices[(segment + 1) % n]
    np.testing.assert_allclose(closest, (1 - t)[:, None] * start + t[:, None] * end, atol=1e-15)
    assert shape(vertices).tolist() == [0.0] * n


def test_holes_open_polylines_and_figure_eights() -> None:
    square = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    holed = PolygonSDF.from_loops([square, 0.5 * square[::-1]])
    assert holed(np.array([[0.0, 0.0], [0.75, 0.0], [2.0, 0.0]])).tolist() == [0.5, -0.25, 1.0]
    same_way = PolygonSDF.from_loops([square, 0.5 * square])  # nonzero rule: counts twice, stays inside
    assert same_way(np.array([[0.0, 0.0]]))[0] == -0.5
    # A "C" (a square missing most of its right side) fills up to about its gap; a straight
    # polyline is never inside.
    c_shape = PolygonSDF.from_loops([np.array([[1.0, 0.5], [1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0],
                                               [1.0, -0.5]])], closed=False)
    assert c_shape(np.array([[0.0, 0.0]]))[0] == -1.0 and c_shape(np.array([[3.0, 0.0]]))[0] > 0
    line = PolygonSDF.from_loops([np.array([[-1.0, 0.0], [0.0, 0.1], [1.0, 0.0]])], closed=False)
    assert (line(np.random.default_rng(0).uniform(-2, 2, (200, 2))) >= 0).all()
    eight = PolygonSDF(np.array([[0.0, 0.0], [1.0, 1.0], [1.0, -1.0], [0.0, 0.0], [-1.0, 1.0], [-1.0, -1.0]]))
    assert (eight(np.array([[0.7, 0.0], [-0.7, 0.0]])) < 0).all() and eight(np.array([[0.0, 0.5]]))[0] > 0


def test_any_finite_scale_and_far_points(rng, seed) -> None:
    vertices = _star(rng, 7)
    points = rng.uniform(-1.5, 1.5, size=(50, 2))
    reference = PolygonSDF(vertices)(points)
    for exponent in (-1000, -300, 300, 1000):
        scaled = PolygonSDF(np.ldexp(vertices, exponent))(np.ldexp(points, exponent))
        assert np.array_equal(scaled, np.ldexp(reference, exponent)) or np.allclose(
            np.ldexp(scaled, -exponent), reference, rtol=1e-12, atol=0)
    far = np.array([[1e300, -1e300], [1.7e308, 0.0]])
    np.testing.assert_allclose(PolygonSDF(vertices)(far), np.hypot(*far.T), rtol=1e-12)
    # Only a distance beyond the points' dtype overflows.
    assert np.isinf(PolygonSDF(vertices)(np.full((1, 2), 3e38, np.float32))).all()


def test_tensors_batches_and_bad_input(rng) -> None:
    shape = PolygonSDF(torch.tensor(_star(rng, 5)))
    points = rng.uniform(-1, 1, size=(3, 4, 2))
    values = shape(torch.from_numpy(points).float())
    assert values.shape == (3, 4) and values.dtype == torch.float32
    np.testing.assert_allclose(values.numpy(), shape(points), rtol=1e-6, atol=1e-6)
    assert shape(np.zeros((2, 2), int)).dtype == np.float64
    for bad in (lambda: PolygonSDF(np.zeros((4, 3))), lambda: PolygonSDF(np.array([[0.0, np.nan], [1, 1]])),
                lambda: PolygonSDF(np.zeros((1, 2))), lambda: PolygonSDF(np.zeros((3, 2)), np.array([[0, 3]])),
                lambda: PolygonSDF(np.zeros((3, 2)), np.zeros((0, 2), int)), lambda: shape(np.zeros((4, 3))),
                lambda: shape(np.array([[np.inf, 0.0]])), lambda: PolygonSDF.from_loops([])):
        with pytest.raises(ValueError):
            bad()


def test_analytic_2d_shapes_and_csg() -> None:
    p = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 2.0]])
    np.testing.assert_allclose(Circle(1.0)(p), [-1.0, 0.0, math.sqrt(8) - 1])
    np.testing.assert_allclose(Rectangle((1.0, 0.5))(p), [-0.5, 0.0, math.hypot(1.0, 1.5)])
    rounded = Rectangle((1.0, 0.5), radius=0.25)
    np.testing.assert_allclose(rounded(np.array([[0.0, 0.0], [1.0, 0.5], [2.0, 0.0]])),
                               [-0.5, math.hypot(0.25, 0.25) - 0.25, 1.0])
    np.testing.assert_allclose(Box((1.0, 1.0, 1.0), radius=0.5)(np.array([[2.0, 2.0, 2.0]])),
                               [math.sqrt(3 * 1.5 ** 2) - 0.5])
    capsule = Capsule((0.0, 0.0), (1.0, 0.0), 0.5)
    np.testing.assert_allclose(capsule(p), [-0.5, -0.5, math.hypot(1.0, 2.0) - 0.5])
    np.testing.assert_allclose(Capsule((0, 0, 0), (0, 0, 0), 1.0)(np.array([[0.0, 3.0, 4.0]])), [4.0])
    a, b = Circle(0.5, (-0.4, 0.0)), Circle(0.5, (0.4, 0.0))
    q = np.random.default_rng(0).uniform(-1, 1, (300, 2))
    smooth, union = SmoothUnion(a, b, radius=0.2)(q), (a | b)(q)
    assert (smooth <= union).all()
    apart = np.abs(a(q) - b(q)) >= 0.2
    np.testing.assert_array_equal(smooth[apart], union[apart])
    assert ((Circle(1.0) - PolygonSDF(0.5 * np.array([[-1.0, -1], [1, -1], [1, 1], [-1, 1]])))(p)[:2] > 0).tolist() == [
        True, False]
    for bad in (lambda: Circle(0.5) | Sphere(), lambda: Rectangle((1.0, 1.0), radius=1.0), lambda: Circle(1.0, (0, 0, 0)),
                lambda: Capsule((0, 0), (1, 1, 1)), lambda: SmoothUnion(a, b, radius=0.0), lambda: Circle()(p[:, :1])):
        with pytest.raises(ValueError):
            bad()


def test_sampling_an_outline(rng, seed) -> None:
    theta = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    circle = PolygonSDF(np.stack([np.cos(theta), np.sin(theta)], 1))
    samples = sample_sdf(circle, n_uniform=300, n_near=500, near_std=0.05, n_surface=200, seed=seed,
                         bounds=((-2, -1), (2, 1)))
    assert samples.points.shape == (800, 2) and samples.dim == 2
    np.testing.assert_allclose(samples.sdf, circle(samples.points), rtol=1e-6, atol=1e-7)
    uniform = samples.points[500:]
    assert (uniform >= [-2, -1]).all() and (uniform <= [2, 1]).all()
    assert np.abs(np.hypot(*samples.points[:500].T) - 1).mean() < 0.1
    # On the outline, with unit normals pointing out of the counter-clockwise loop.
    assert np.abs(circle.unsigned(samples.surface_points)).max() < 1e-6
    np.testing.assert_allclose(np.hypot(*samples.surface_normals.T), 1, rtol=1e-6)
    assert ((samples.surface_normals * samples.surface_points).sum(1) > 0.9).all()
    again = sample_sdf((circle.vertices, circle.segments), 300, 500, 0.05, 200, ((-2, -1), (2, 1)), seed)
    assert np.array_equal(again.points, samples.points)
    with pytest.raises(ValueError):
        sample_sdf(circle, 10, 10, bounds=((-1, -1, -1), (1, 1, 1)))
