"""DeepSDF-style normalisation: a mesh centred and scaled into the unit sphere or cube.

As in DeepSDF's preprocessing (``src/PreprocessMesh.cpp`` in facebookresearch/DeepSDF), the centre
of the bounding box of the vertices that faces use goes to the origin, and the farthest of those
vertices to radius 1/1.03 (``normalize(method="sphere")``); ``method="cube"`` fits the longest
bounding-box side to [-1/1.03, 1/1.03] instead. The offset and scale follow DeepSDF's
``NormalizationParameters`` files: ``offset = -centre`` and ``normalised = (original + offset) * scale``,
so DeepSDF's evaluation code, which maps meshes back with ``p / scale - offset``, can use the
``offset`` and ``scale`` stored in our files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastsdf._arrays import to_numpy
from fastsdf._validation import one_of, real
from fastsdf.geometry.mesh_io import mesh_arrays

__all__ = ["DEEPSDF_PADDING", "NormalizationTransform", "normalize"]

# DeepSDF's `max_distance_buffer`: the mesh fills a sphere (or cube) of radius 1/1.03.
DEEPSDF_PADDING = 1.03


@dataclass(frozen=True, eq=False)
class NormalizationTransform:
    """A translation then a uniform scale: ``normalised = (original + offset) * scale``.

    The convention of DeepSDF's ``NormalizationParameters`` files: ``offset`` is minus the centre
    of the original mesh's bounding box. Distances scale by ``scale`` (``apply_distance``).

    Attributes:
        offset: float64 (3,), added to original points before scaling; (2,) for 2D shapes.
        scale: positive float.
    """

    offset: np.ndarray
    scale: float

    def __post_init__(self) -> None:
        offset = np.array(self.offset, dtype=np.float64).reshape(-1)
        scale = np.asarray(self.scale, dtype=np.float64).reshape(-1)
        if offset.shape not in ((2,), (3,)) or not np.isfinite(offset).all():
            raise ValueError(f"offset must be three (2D: two) finite numbers, got {self.offset!r}")
        if scale.shape != (1,) or not (np.isfinite(scale[0]) and scale[0] > 0):
            raise ValueError(f"scale must be one finite number > 0, got {self.scale!r}")
        offset.setflags(write=False)
        object.__setattr__(self, "offset", offset)
        object.__setattr__(self, "scale", float(scale[0]))

    @classmethod
    def identity(cls, dim: int = 3) -> "NormalizationTransform":
        return cls(np.zeros(dim), 1.0)

    @property
    def dim(self) -> int:
        """Coordinates per point: 3, or 2 for a 2D shape."""
        return len(self.offset)

    def apply(self, points: Any) -> np.ndarray:
        """Original coordinates (..., dim) to normalised ones; float32 stays float32."""
        p, dtype = _points(points, self.dim)
        return ((p + self.offset) * self.scale).astype(dtype, copy=False)

    def invert(self, points: Any) -> np.ndarray:
        """Normalised coordinates (..., dim) back to original ones; float32 stays float32."""
        p, dtype = _points(points, self.dim)
        return (p / self.scale - self.offset).astype(dtype, copy=False)

    def apply_distance(self, distances: Any) -> np.ndarray:
        """Distances measured in the original mesh's units, in normalised units."""
        d = np.asarray(distances)
        return d * np.asarray(self.scale, d.dtype if d.dtype.kind == "f" else np.float64)

    def invert_distance(self, distances: Any) -> np.ndarray:
        """Distances measured in normalised units, in the original mesh's units."""
        d = np.asarray(distances)
        return d / np.asarray(self.scale, d.dtype if d.dtype.kind == "f" else np.float64)

    def to_dict(self) -> dict[str, Any]:
        """``{"offset": [x, y, z], "scale": s}`` (two offsets in 2D), plain floats (JSON-ready)."""
        return {"offset": [float(v) for v in self.offset], "scale": self.scale}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NormalizationTransform":
        """Reads ``to_dict``'s output, or a DeepSDF ``NormalizationParameters`` .npz (its ``scale``
        is an array of shape (1,))."""
        try:
            return cls(data["offset"], data["scale"])
        except KeyError as exc:
            raise ValueError(f"a normalisation transform needs 'offset' and 'scale', missing {exc}") from None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NormalizationTransform):
            return NotImplemented
        return bool(np.array_equal(self.offset, other.offset)) and self.scale == other.scale

    def __repr__(self) -> str:
        return f"NormalizationTransform(offset={self.offset.tolist()}, scale={self.scale!r})"


def normalize(mesh: Any, method: str = "sphere",
              padding: float = DEEPSDF_PADDING) -> tuple[Any, NormalizationTransform]:
    """Centres a mesh and scales it into the unit sphere or cube, as DeepSDF's preprocessing does.

    Only vertices that some face uses count (as in DeepSDF), but all vertices are moved.

    Args:
        mesh: a ``trimesh.Trimesh`` or a ``(vertices, faces)`` pair.
        method: ``"sphere"`` (DeepSDF): the bounding box's centre goes to the origin and the
            farthest vertex from it to radius ``1 / padding``. ``"cube"``: the same centre, and the
            longest bounding-box side spans ``[-1 / padding, 1 / padding]``.
        padding: the margin factor, at least 1 (DeepSDF's 1.03).

    Returns:
        ``(normalised_mesh, transform)``: the same kind of mesh as given (a Trimesh copy, or a
        ``(vertices, faces)`` pair of new NumPy arrays: float32 vertices stay float32, others
        become float64, faces int64), and the
        ``NormalizationTransform`` from original to normalised coordinates.

    Any finite coordinates work, from subnormal to near the float64 limit, except a mesh so small
    (within about 1e-308 of its centre) that its scale would exceed float64.

    Raises:
        ValueError: an empty mesh, NaN/Inf vertices, all used vertices at one point, a mesh too
            small for its scale to be a float64 number, a bad ``method`` or ``padding``.
    """
    one_of(method, "method", ("sphere", "cube"))
    padding = real(padding, "padding", 1)
    vertices, faces = mesh_arrays(mesh)
    used = vertices[np.unique(faces)]
    # In halves and in units of a power of two near the extent, so that no sum, square or
    # difference overflows or underflows, whatever the mesh's (finite) coordinates.
    half_lo, half_hi = used.min(axis=0) / 2.0, used.max(axis=0) / 2.0
    centre = half_lo + half_hi
    offsets = used - centre  # at most half the extent: finite
    largest = float(np.abs(offsets).max())
    if largest == 0.0:
        raise ValueError(f"cannot normalise a degenerate mesh: all its vertices are at {centre.tolist()}")
    exponent = math.frexp(largest)[1]
    if method == "sphere":
        half_extent = float(np.sqrt((np.ldexp(offsets, -exponent) ** 2).sum(axis=1)).max())
    else:
        half_extent = math.ldexp(float((half_hi - half_lo).max()), -exponent)
    try:
        scale = math.ldexp(1.0 / (half_extent * padding), -exponent)
    except OverflowError:
        raise ValueError(f"cannot normalise a mesh this small: its vertices lie within {largest:.3g} of their "
                         "centre, and the scale that takes that to 1 is beyond float64") from None
    transform = NormalizationTransform(-centre, scale)
    moved = transform.apply(vertices)
    if _is_trimesh_like(mesh):
        out = mesh.copy()
        out.vertices = moved
        return out, transform
    if to_numpy(mesh[0]).dtype == np.float32:
        moved = moved.astype(np.float32)
    return (moved, faces.copy()), transform


def _points(points: Any, dim: int) -> tuple[np.ndarray, Any]:
    p = np.asarray(points)
    if p.ndim < 1 or p.shape[-1] != dim or p.dtype.kind not in "fiu":
        raise ValueError(f"points must be a real (..., {dim}) array, got {p.dtype} {p.shape}")
    dtype = p.dtype if p.dtype.kind == "f" else np.float64
    return p.astype(np.float64, copy=False), dtype


def _is_trimesh_like(mesh: Any) -> bool:
    return hasattr(mesh, "vertices") and hasattr(mesh, "faces") and hasattr(mesh, "copy")
