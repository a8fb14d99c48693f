"""Analytic signed distance functions (negative inside) for tests, demos and CSG.

Each shape is a callable from points (..., 3) to distances (...), on NumPy arrays or torch tensors
(any device), computed in the points' own dtype. Shapes combine with ``|`` (union), ``&``
(intersection) and ``-`` (difference); the results are exact distances only for the primitives,
and bounds (correct sign and zero set) for the combinations, as usual for min/max CSG.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fastsdf._arrays import is_tensor
from fastsdf._validation import real, triple

__all__ = ["SDF", "Sphere", "Box", "Torus", "Union", "Intersection", "Difference"]


def _check_points(points: Any) -> Any:
    if not is_tensor(points):
        points = np.asarray(points)
        if points.dtype.kind not in "f":
            points = points.astype(np.float64)
    elif not points.is_floating_point():
        points = points.double()
    if points.ndim < 1 or points.shape[-1] != 3:
        raise ValueError(f"points must have shape (..., 3), got {tuple(points.shape)}")
    return points


def _const(values: Sequence[float], like: Any) -> Any:
    if is_tensor(like):
        import torch

        return torch.as_tensor(values, dtype=like.dtype, device=like.device)
    return np.asarray(values, dtype=like.dtype)


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
    """Base class: subclasses implement ``distance(points)`` on validated (..., 3) points."""

    def __call__(self, points: Any) -> Any:
        return self.distance(_check_points(points))

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
        self.center = triple(center, "center")

    def distance(self, points: Any) -> Any:
        return _norm(points - _const(self.center, points)) - self.radius

    def __repr__(self) -> str:
        return f"Sphere(radius={self.radius}, center={self.center})"


class Box(SDF):
    """Axis-aligned box with the given half extents."""

    def __init__(self, half_size: Sequence[float] = (0.5, 0.5, 0.5), center: Sequence[float] = (0.0, 0.0, 0.0)):
        self.half_size = triple(half_size, "half_size", positive=True)
        self.center = triple(center, "center")

    def distance(self, points: Any) -> Any:
        q = abs(points - _const(self.center, points)) - _const(self.half_size, points)
        outside = _norm(_clamp_min0(q))
        largest = _elementwise("maximum", _elementwise("maximum", q[..., 0], q[..., 1]), q[..., 2])
        inside = _clamp_max0(largest)
        return outside + inside

    def __repr__(self) -> str:
        return f"Box(half_size={self.half_size}, center={self.center})"


class Torus(SDF):
    """Torus around the axis-2 (z) direction: ring radius ``major``, tube radius ``minor``."""

    def __init__(self, major: float = 0.5, minor: float = 0.2, center: Sequence[float] = (0.0, 0.0, 0.0)):
        self.major = real(major, "major", 0, low_open=True)
        self.minor = real(minor, "minor", 0, low_open=True)
        if self.minor >= self.major:
            raise ValueError(f"minor radius ({minor}) must be smaller than major radius ({major})")
        self.center = triple(center, "center")

    def distance(self, points: Any) -> Any:
        p = points - _const(self.center, points)
        ring = _norm(p[..., :2]) - self.major
        return _norm(_stack2(ring, p[..., 2])) - self.minor

    def __repr__(self) -> str:
        return f"Torus(major={self.major}, minor={self.minor}, center={self.center})"


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
