"""Analytic SDFs: exact values, NumPy / torch agreement, batch shapes, dtypes, CSG and bad input."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from fastsdf import Box, Difference, Intersection, Sphere, Torus, Union

# (shape, point, exact distance): centre, on the surface, inside, far away.
EXACT_CASES = [
    (Sphere(0.5, (1.0, 2.0, 3.0)), (1.0, 2.0, 3.0), -0.5),
    (Sphere(0.5, (1.0, 2.0, 3.0)), (1.5, 2.0, 3.0), 0.0),
    (Sphere(0.5, (1.0, 2.0, 3.0)), (1.0, 2.0, 2.5), 0.0),
    (Sphere(0.5, (1.0, 2.0, 3.0)), (1.0, 2.2, 3.0), -0.3),
    (Sphere(0.5, (1.0, 2.0, 3.0)), (1.0, 2.0, 13.0), 9.5),
    (Sphere(2.0), (3.0, 4.0, 0.0), 3.0),
    (Box((1.0, 2.0, 3.0)), (0.0, 0.0, 0.0), -1.0),                 # nearest face is x = 1
    (Box((1.0, 2.0, 3.0)), (1.0, 0.5, -1.0), 0.0),
    (Box((1.0, 2.0, 3.0)), (0.5, 0.0, 2.9), -0.1),
    (Box((1.0, 2.0, 3.0)), (4.0, 0.0, 0.0), 3.0),
    (Box((1.0, 2.0, 3.0)), (2.0, 3.0, 4.0), math.sqrt(3.0)),       # beyond a corner
    (Box((1.0, 2.0, 3.0)), (-2.0, -6.0, 0.0), math.sqrt(1.0 + 16.0)),  # beyond an edge
    (Box((0.5, 0.5, 0.5), (10.0, 0.0, 0.0)), (10.0, 0.0, 0.0), -0.5),
    (Torus(1.0, 0.25), (1.0, 0.0, 0.0), -0.25),                     # tube centre
    (Torus(1.0, 0.25), (0.0, -1.25, 0.0), 0.0),
    (Torus(1.0, 0.25), (0.0, 0.75, 0.0), 0.0),                      # inner equator
    (Torus(1.0, 0.25), (0.0, 0.0, 0.0), 0.75),                      # the hole's centre
    (Torus(1.0, 0.25), (0.0, 0.0, 2.0), math.sqrt(5.0) - 0.25),     # on the axis
    (Torus(1.0, 0.25), (3.0, 0.0, 0.0), 1.75),
    (Torus(1.0, 0.25, (0.0, 0.0, 5.0)), (0.0, 1.0, 5.25), 0.0),
]


def ids(case: tuple) -> str:
    return f"{case[0]!r}@{case[1]}"


@pytest.mark.parametrize("case", EXACT_CASES, ids=[ids(c) for c in EXACT_CASES])
def test_exact_values(case: tuple) -> None:
    shape, point, expected = case
    assert float(shape(np.array(point))) == pytest.approx(expected, abs=1e-12)
    assert float(shape(torch.tensor(point, dtype=torch.float64))) == pytest.approx(expected, abs=1e-12)
    assert float(shape(list(point))) == pytest.approx(expected, abs=1e-12)  # sequences become float64


def random_shapes(rng: np.random.Generator) -> dict[str, Any]:
    sphere = Sphere(rng.uniform(0.3, 0.8), rng.uniform(-0.3, 0.3, 3))
    box = Box(rng.uniform(0.2, 0.7, 3), rng.uniform(-0.3, 0.3, 3))
    torus = Torus(rng.uniform(0.5, 0.7), rng.uniform(0.1, 0.3), rng.uniform(-0.3, 0.3, 3))
    return {"sphere": sphere, "box": box, "torus": torus, "union": sphere | box | torus,
            "intersection": Intersection(sphere, box), "difference": box - sphere - torus}


SHAPE_NAMES = ["sphere", "box", "torus", "union", "intersection", "difference"]


@pytest.mark.parametrize("name", SHAPE_NAMES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_and_torch_agree(name: str, dtype: str, rng, seed) -> None:
    shape = random_shapes(rng)[name]
    points = rng.uniform(-1.5, 1.5, (1000, 3)).astype(dtype)
    np_values = shape(points)
    torch_values = shape(torch.from_numpy(points))
    # Computed in the points' own dtype, on both sides.
    assert np_values.dtype == np.dtype(dtype)
    assert torch_values.dtype == getattr(torch, dtype)
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(torch_values.numpy(), np_values, rtol=0, atol=tol, err_msg=f"seed={seed} {shape!r}")


@pytest.mark.parametrize("name", SHAPE_NAMES)
@pytest.mark.parametrize("batch", [(), (7,), (2, 5), (2, 3, 4), (0,), (1, 1, 1, 1)], ids=str)
def test_batch_shapes(name: str, batch: tuple[int, ...], rng, seed) -> None:
    shape = random_shapes(rng)[name]
    points = rng.uniform(-1, 1, batch + (3,))
    flat = shape(points.reshape(-1, 3))
    for values in (shape(points), shape(torch.from_numpy(points)).numpy()):
        assert values.shape == batch
        np.testing.assert_allclose(np.reshape(values, -1), flat, rtol=0, atol=1e-12, err_msg=f"seed={seed}")


@pytest.mark.parametrize("name", SHAPE_NAMES)
def test_integer_points_become_float64(name: str, rng) -> None:
    shape = random_shapes(rng)[name]
    points = rng.integers(-2, 3, (20, 3))
    values = shape(points)
    assert values.dtype == np.float64
    np.testing.assert_allclose(values, shape(points.astype(np.float64)), rtol=0, atol=0)
    torch_values = shape(torch.from_numpy(points))
    assert torch_values.dtype == torch.float64
    np.testing.assert_allclose(torch_values.numpy(), values, rtol=0, atol=1e-12)


def test_sphere_is_exact_distance_everywhere(rng, seed) -> None:
    # A primitive's value is the true signed distance: sample points on the surface along random
    # directions and move them by known amounts.
    sphere = Sphere(rng.uniform(0.2, 2.0), rng.uniform(-1, 1, 3))
    directions = rng.standard_normal((500, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    offsets = rng.uniform(-sphere.radius, 5, 500)
    points = np.array(sphere.center) + directions * (sphere.radius + offsets)[:, None]
    np.testing.assert_allclose(sphere(points), offsets, rtol=0, atol=1e-12, err_msg=f"seed={seed}")


def test_box_and_torus_gradients_have_unit_norm(rng, seed) -> None:
    # Exact SDFs have |grad| = 1 away from the medial axis; torch autograd sees the same formula.
    for shape in (Box((0.4, 0.6, 0.8)), Torus(0.7, 0.2)):
        points = torch.from_numpy(rng.uniform(-1.5, 1.5, (500, 3))).requires_grad_()
        (grad,) = torch.autograd.grad(shape(points).sum(), points)
        norms = grad.norm(dim=-1).numpy()
        # Drop points too close to the medial axis, where the gradient is undefined.
        assert np.mean(np.abs(norms - 1) < 1e-9) > 0.95, f"seed={seed} {shape!r}"


# --------------------------------------------------------------------------------------------
# CSG
# --------------------------------------------------------------------------------------------


def test_operators_build_combinations(rng, seed) -> None:
    a, b = Sphere(0.5, (-0.2, 0, 0)), Box((0.3, 0.3, 0.3), (0.2, 0, 0))
    assert isinstance(a | b, Union) and isinstance(a & b, Intersection) and isinstance(a - b, Difference)
    points = rng.uniform(-1, 1, (2000, 3))
    da, db = a(points), b(points)
    np.testing.assert_array_equal((a | b)(points), np.minimum(da, db))
    np.testing.assert_array_equal((a & b)(points), np.maximum(da, db))
    np.testing.assert_array_equal((a - b)(points), np.maximum(da, -db))
    np.testing.assert_array_equal(Union(a, b)(points), (a | b)(points))
    # Chaining and n-ary constructors agree.
    c = Torus(0.6, 0.1)
    np.testing.assert_array_equal(Union(a, b, c)(points), ((a | b) | c)(points))
    np.testing.assert_array_equal(Difference(a, b, c)(points), ((a - b) - c)(points))


def test_csg_signs_at_sample_points() -> None:
    left, right = Sphere(0.5, (-0.3, 0, 0)), Sphere(0.5, (0.3, 0, 0))
    only_left, both, only_right, neither = (-0.7, 0, 0), (0.0, 0, 0), (0.7, 0, 0), (0.0, 0.9, 0)
    signs = {
        "union": (left | right, (-1, -1, -1, 1)),
        "intersection": (left & right, (1, -1, 1, 1)),
        "difference": (left - right, (-1, 1, 1, 1)),
        "reverse_difference": (right - left, (1, 1, -1, 1)),
    }
    points = np.array([only_left, both, only_right, neither])
    for name, (shape, expected) in signs.items():
        for kind, values in (("numpy", shape(points)), ("torch", shape(torch.from_numpy(points)).numpy())):
            np.testing.assert_array_equal(np.sign(values), expected, err_msg=f"{name} {kind}")
    # On the union's surface away from the other sphere: zero.
    assert (left | right)(np.array([-0.8, 0.0, 0.0])) == pytest.approx(0.0, abs=1e-12)
    assert (left & right)(np.array([0.2, 0.0, 0.0])) == pytest.approx(0.0, abs=1e-12)


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("points", [np.zeros((4, 2)), np.zeros((3, 4)), np.zeros(2), np.float64(1.0),
                                    torch.zeros(5, 4), torch.zeros(()), np.zeros((2, 3, 1))], ids=str)
@pytest.mark.parametrize("name", ["sphere", "box", "torus", "union"])
def test_points_must_end_in_3(points: Any, name: str, rng) -> None:
    with pytest.raises(ValueError):
        random_shapes(rng)[name](points)


@pytest.mark.parametrize("make", [
    lambda: Sphere(0.0), lambda: Sphere(-1.0), lambda: Sphere(float("nan")), lambda: Sphere(float("inf")),
    lambda: Sphere(0.5, (0.0, float("nan"), 0.0)), lambda: Sphere(0.5, (0.0, 0.0)),
    lambda: Box((0.5, 0.0, 0.5)), lambda: Box((0.5, -0.5, 0.5)), lambda: Box((0.5, 0.5)),
    lambda: Box((0.5, 0.5, 0.5), (float("nan"), 0.0, 0.0)), lambda: Box((0.5, float("inf"), 0.5)),
    lambda: Torus(0.5, 0.5), lambda: Torus(0.5, 0.7), lambda: Torus(0.0, 0.1), lambda: Torus(0.5, 0.0),
    lambda: Torus(0.5, -0.1), lambda: Torus(0.5, 0.2, (float("nan"), 0.0, 0.0)),
    lambda: Union(Sphere()), lambda: Intersection(), lambda: Difference(Sphere(), 3.0),
], ids=["sphere_r0", "sphere_r-1", "sphere_nan", "sphere_inf", "sphere_nan_centre", "sphere_2d_centre",
        "box_zero", "box_negative", "box_2d", "box_nan_centre", "box_inf", "torus_equal", "torus_minor_larger",
        "torus_major0", "torus_minor0", "torus_minor_negative", "torus_nan_centre", "union_of_one",
        "intersection_of_none", "difference_with_number"])
def test_bad_parameters_raise_value_error(make) -> None:
    with pytest.raises(ValueError):
        make()
