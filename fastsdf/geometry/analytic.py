"""Analytic signed distance functions (negative inside) for tests, demos and CSG, in 3D and 2D.

Each shape is a callable from points (..., dim) to distances (...), on NumPy arrays or torch tensors
(any device), computed in the points' own dtype; ``dim`` is 3 for ``Sphere``, ``Box`` and ``Torus``,
2 for ``Circle`` and ``Rectangle``, and the length of its end points for a ``Capsule``. The 2D
shapes are their 3D twins' formulas in the plane (one code path each). Shapes of one dimension
combine with ``|`` (union), ``&`` (intersection) and ``-`` (difference), or ``SmoothUnion``; the
results are exact distances only for the primitives, and bounds (correct sign and zero set) for the
min/max combinations; a smooth union moves the zero set where its shapes come within ``radius``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fastsdf._arrays import constant_like, is_tensor
from fastsdf._validation import real, vector

__all__ = ["SDF", "check_points", "Sphere", "Circle", "Box", "Rectangle", "Torus", "Capsule", "Union", "Intersection",
           "Difference", "SmoothUnion"]


def check_points(points: Any, dim: int | None) -> Any:
    """``points`` as a float array or tensor (integers become float64) of shape (..., dim)
    (any last axis for ``dim=None``); ValueError otherwise."""
    if not is_tensor(points):
        points = np.asarray(points)
        if points.dtype.kind not in "f":
            points = points.astype(np.float64)
    elif not points.is_floating_point():
        points = points.double()
    if points.ndim < 1 or (dim is not None and points.shape[-1] != dim):
        raise ValueError(f"points must have shape (..., {dim}), got {tuple(points.shape)}")
    return points


def _norm(x: Any) -> Any:
    if is_tensor(x):
        import torch

        return torch.linalg.vector_norm(x, dim=-1)
    return np.linalg.norm(x, axis=-1)


def _clamp_min0(x: Any) -> Any:
    return x.clamp(min=0) if is_tensor(x) else np.maximum(x, 0)


def _clamp_max0(x: Any) -> Any:
    return x.clamp(max=0) if is_tensor(x) else np.minimum(x, 0)


def _elementwise(op: str, a: Any, b: Any) -> Any:
    if is_tensor(a):
        import torch

        return getattr(torch, op)(a, b)
    return getattr(np, op)(a, b)


class SDF:
    """Base class: subclasses set ``dim`` (the points' last axis; None: not checked) and implement
    ``distance(points)`` on validated (..., dim) points."""

    dim: int | None = 3

    def __call__(self, points: Any) -> Any:
        return self.distance(check_points(points, self.dim))

    def distance(self, points: Any) -> Any:
        raise NotImplementedError

    def __or__(self, other: "SDF") -> "SDF":
        return Union(self, other)

    def __and__(self, other: "SDF") -> "SDF":
        return Intersection(self, other)

    def __sub__(self, other: "SDF") -> "SDF":
        return Difference(self, other)


class Sphere(SDF):
    def __init__(self, radius: float = 0.5, center: Sequence[float] = (0.0, 0.0, 0.0)):
        self.radius = real(radius, "radius", 0, low_open=True)
        self.center = vector(center, "center", self.dim)

    def distance(self, points: Any) -> Any:
        return _norm(points - constant_like(self.center, points)) - self.radius

    def __repr__(self) -> str:
        return f"{type(self).__name__}(radius={self.radius}, center={self.center})"


class Circle(Sphere):
    """A disc in the plane: ``Sphere`` in 2D."""

    dim = 2

    def __init__(self, radius: float = 0.5, center: Sequence[float] = (0.0, 0.0)):
        super().__init__(radius, center)


class Box(SDF):
    """Axis-aligned box with the given half extents, its edges and corners rounded with ``radius``
    (0: sharp; less than the smallest half extent), which stay inside the half extents."""

    def __init__(self, half_size: Sequence[float] = (0.5, 0.5, 0.5), center: Sequence[float] = (0.0, 0.0, 0.0),
                 radius: float = 0.0):
        self.half_size = vector(half_size, "half_size", self.dim, positive=True)
        self.center = vector(center, "center", self.dim)
        self.radius = real(radius, "radius", 0, min(self.half_size), high_open=True)

    def distance(self, points: Any) -> Any:
        core = [h - self.radius for h in self.half_size]
        q = abs(points - constant_like(self.center, points)) - constant_like(core, points)
        outside = _norm(_clamp_min0(q))
        largest = q[..., 0]
        for axis in range(1, q.shape[-1]):
            largest = _elementwise("maximum", largest, q[..., axis])
        inside = _clamp_max0(largest)
        return outside + inside - self.radius

    def __repr__(self) -> str:
        rounded = f", radius={self.radius}" if self.radius else ""
        return f"{type(self).__name__}(half_size={self.half_size}, center={self.center}{rounded})"


class Rectangle(Box):
    """An axis-aligned rectangle, optionally with rounded corners: ``Box`` in 2D."""

    dim = 2

    def __init__(self, half_size: Sequence[float] = (0.5, 0.5), center: Sequence[float] = (0.0, 0.0),
                 radius: float = 0.0):
        super().__init__(half_size, center, radius)


class Torus(SDF):
    """Torus around the axis-2 (z) direction: ring radius ``major``, tube radius ``minor``."""

    def __init__(self, major: float = 0.5, minor: float = 0.2, center: Sequence[float] = (0.0, 0.0, 0.0)):
        self.major = real(major, "major", 0, low_open=True)
        self.minor = real(minor, "minor", 0, low_open=True)
        if self.minor >= self.major:
            raise ValueError(f"minor radius ({minor}) must be smaller than major radius ({major})")
        self.center = vector(center, "center", 3)

    def distance(self, points: Any) -> Any:
        p = points - constant_like(self.center, points)
        ring = _norm(p[..., :2]) - self.major
        return _norm(_stack2(ring, p[..., 2])) - self.minor

    def __repr__(self) -> str:
        return f"Torus(major={self.major}, minor={self.minor}, center={self.center})"


class Capsule(SDF):
    """The points within ``radius`` of the segment from ``a`` to ``b`` (2D or 3D, by their length).
    ``radius=0`` gives the unsigned distance to the segment (positive everywhere off it)."""

    def __init__(self, a: Sequence[float] = (-0.5, 0.0), b: Sequence[float] = (0.5, 0.0), radius: float = 0.1):
        self.dim = len(a) if len(a) in (2, 3) else 3
        self.a = vector(a, "a", self.dim)
        self.b = vector(b, "b", self.dim)
        self.radius = real(radius, "radius", 0)

    def distance(self, points: Any) -> Any:
        a = constant_like(self.a, points)
        ab = constant_like(self.b, points) - a
        length2 = float((np.asarray(self.b) - np.asarray(self.a)) @ (np.asarray(self.b) - np.asarray(self.a)))
        ap = points - a
        # A segment of zero length is the point a.
        t = (ap * ab).sum(-1) / length2 if length2 > 0 else ap[..., 0] * 0
        t = _clamp_max1(_clamp_min0(t))
        return _norm(ap - t[..., None] * ab) - self.radius

    def __repr__(self) -> str:
        return f"Capsule(a={self.a}, b={self.b}, radius={self.radius})"


def _clamp_max1(x: Any) -> Any:
    return x.clamp(max=1) if is_tensor(x) else np.minimum(x, 1)


def _stack2(a: Any, b: Any) -> Any:
    if is_tensor(a):
        import torch

        return torch.stack([a, b], dim=-1)
    return np.stack([a, b], axis=-1)


class _Combination(SDF):
    _op = ""

    def __init__(self, *shapes: SDF):
        if len(shapes) < 2 or not all(callable(s) for s in shapes):
            raise ValueError(f"{type(self).__name__} needs at least two SDFs")
        # Shapes that say their dimension must agree; other callables (a MeshSDF) check their own points.
        dims = {getattr(s, "dim", None) for s in shapes} - {None}
        if len(dims) > 1:
            raise ValueError(f"{type(self).__name__} of shapes of different dimensions: {sorted(dims)}")
        self.dim = dims.pop() if dims else None
        self.shapes = shapes

    def distance(self, points: Any) -> Any:
        out = self.shapes[0](points)
        for shape in self.shapes[1:]:
            out = _elementwise(self._op, out, self._operand(shape(points)))
        return out

    def _operand(self, d: Any) -> Any:
        return d

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(map(repr, self.shapes))})"


class Union(_Combination):
    _op = "minimum"


class Intersection(_Combination):
    _op = "maximum"


class Difference(_Combination):
    """The first shape minus all the others."""

    _op = "maximum"

    def _operand(self, d: Any) -> Any:
        return -d


class SmoothUnion(_Combination):
    """The union of shapes with the seams rounded over ``radius`` (Quilez's polynomial smooth
    minimum, ``min(a, b) - h^2 radius / 4`` with ``h = max(radius - |a - b|, 0) / radius``): equal to
    ``Union`` wherever the shapes' distances differ by ``radius`` or more, and never above it."""

    def __init__(self, *shapes: SDF, radius: float = 0.1):
        super().__init__(*shapes)
        self.radius = real(radius, "radius", 0, low_open=True)

    def distance(self, points: Any) -> Any:
        out = self.shapes[0](points)
        for shape in self.shapes[1:]:
            d = shape(points)
            h = _clamp_min0(self.radius - abs(out - d)) / self.radius
            out = _elementwise("minimum", out, d) - h * h * (self.radius / 4)
        return out

    def __repr__(self) -> str:
        return f"SmoothUnion({', '.join(map(repr, self.shapes))}, radius={self.radius})"
