"""DeepSDF-style ground truth: a mesh's signed distance sampled near its surface and in a box.

What DeepSDF's preprocessing (``src/PreprocessMesh.cpp`` in facebookresearch/DeepSDF) does, and
what this module does the same way or differently (normalise the mesh first:
``fastsdf.geometry.normalization``; the files: ``fastsdf.geometry.samples_npz``):

- Samples: 500,000 per shape, 47/50 of them near the surface: area-weighted random surface points
  plus Gaussian noise on each coordinate, half with variance 0.005 and half with variance 0.0005
  (standard deviations 0.0707 and 0.0224, in normalised units); the other 3/50 uniform in
  [-1, 1]^3. Same distributions here (``DEEPSDF_NEAR_STD``, ``DEEPSDF_N_NEAR``,
  ``DEEPSDF_N_UNIFORM``), except that each near sample has its own surface point (DeepSDF perturbs
  each surface point twice, once per variance): more of the surface covered for the same count.
- Signs: DeepSDF votes with the normals of 11 nearby points seen in 100 rendered views and drops
  the points whose votes disagree. Here every point is kept and ``fastsdf.MeshSDF`` gives the
  distance and sign (generalised winding numbers by default), which also works for open meshes.

``sample_sdf`` builds its distance function with ``_mesh_sdf(vertices, faces, sign)``; pass
``sdf=`` (or replace ``_mesh_sdf``, as the tests do) to sample any other distance function.

In 2D the same function samples an outline (a ``PolygonSDF``, or its vertices (V, 2) and segments
(S, 2)): near points around length-weighted points of the segments, uniform ones in a rectangle,
signed distances from ``PolygonSDF``; the samples then have two coordinates per point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from fastsdf._arrays import to_numpy
from fastsdf._validation import integer, real
from fastsdf.geometry.grid import UNIT_BOUNDS, UNIT_BOUNDS_2D, Bounds, parse_bounds
from fastsdf.geometry.mesh_io import mesh_arrays
from fastsdf.geometry.normalization import NormalizationTransform
from fastsdf.geometry.polygon_sdf import PolygonSDF

__all__ = [
    "DEEPSDF_NEAR_STD",
    "DEEPSDF_N_NEAR",
    "DEEPSDF_N_UNIFORM",
    "SdfSamples",
    "sample_sdf",
]

# DeepSDF's PreprocessMesh: `variance = 0.005`, `second_variance = variance / 10`, and the noise is
# N(0, sqrt(variance)) per coordinate. These are standard deviations, in normalised units.
DEEPSDF_NEAR_STD = (math.sqrt(0.005), math.sqrt(0.0005))
# DeepSDF's 500,000 samples per shape, 47/50 of them near the surface.
DEEPSDF_N_NEAR = 470_000
DEEPSDF_N_UNIFORM = 30_000

# Points per call of the distance function: bounds the memory a brute-force one would need.
_BATCH = 1 << 18


@dataclass(eq=False)
class SdfSamples:
    """Points and their signed distances (negative inside), plus optional on-surface points.

    Attributes:
        points: float32 (N, 3), or (N, 2) for a 2D shape. From ``sample_sdf``: the near-surface
            samples first (those with the first standard deviation, then those with the second),
            then the uniform ones.
        sdf: float32 (N,) signed distances of ``points``.
        surface_points: float32 (S, dim) points on the surface (distance 0), or None.
        surface_normals: float32 (S, dim) unit normals of the triangles (segments) they lie on, or
            None.
        transform: how the mesh was normalised before sampling, if it was (None otherwise).
    """

    points: np.ndarray
    sdf: np.ndarray
    surface_points: np.ndarray | None = None
    surface_normals: np.ndarray | None = None
    transform: NormalizationTransform | None = None

    def __post_init__(self) -> None:
        self.points = _float32_rows(self.points, (2, 3), "points")
        self.sdf = np.ascontiguousarray(np.asarray(self.sdf, dtype=np.float32).reshape(-1))
        if len(self.sdf) != len(self.points):
            raise ValueError(f"{len(self.points)} points but {len(self.sdf)} sdf values")
        if not np.isfinite(self.sdf).all():
            raise ValueError("sdf values must be finite")
        if (self.surface_points is None) != (self.surface_normals is None):
            raise ValueError("surface_points and surface_normals come together")
        if self.surface_points is not None:
            self.surface_points = _float32_rows(self.surface_points, (self.dim,), "surface_points")
            self.surface_normals = _float32_rows(self.surface_normals, (self.dim,), "surface_normals")
            if len(self.surface_points) != len(self.surface_normals):
                raise ValueError(f"{len(self.surface_points)} surface points but "
                                 f"{len(self.surface_normals)} surface normals")
        if self.transform is not None and not isinstance(self.transform, NormalizationTransform):
            raise ValueError(f"transform must be a NormalizationTransform, got {type(self.transform).__name__}")
        if self.transform is not None and self.transform.dim != self.dim:
            raise ValueError(f"a {self.transform.dim}D transform for {self.dim}D points")

    @property
    def dim(self) -> int:
        """Coordinates per point: 3, or 2 for a 2D shape."""
        return self.points.shape[1]

    def __len__(self) -> int:
        return len(self.points)

    def pos(self) -> np.ndarray:
        """float32 (M, dim + 1) rows (x, y, z, sdf) with sdf > 0 (outside), as in DeepSDF's ``pos``."""
        return self._rows(self.sdf > 0)

    def neg(self) -> np.ndarray:
        """float32 (K, dim + 1) rows (x, y, z, sdf) with sdf <= 0 (inside or on the surface), as in
        DeepSDF's ``neg``."""
        return self._rows(~(self.sdf > 0))

    def _rows(self, mask: np.ndarray) -> np.ndarray:
        return np.concatenate([self.points[mask], self.sdf[mask, None]], axis=1)


def sample_sdf(
    mesh: Any,
    n_uniform: int,
    n_near: int,
    near_std: float | Sequence[float] = DEEPSDF_NEAR_STD,
    n_surface: int = 0,
    bounds: Bounds | None = None,
    seed: Any = None,
    sign: str = "winding",
    sdf: Callable[[np.ndarray], Any] | None = None,
) -> SdfSamples:
    """Samples a mesh's signed distance the way DeepSDF's preprocessing does.

    The mesh is used as it is: normalise it first (``normalize``) so that it sits inside
    ``bounds``. For DeepSDF's own recipe use ``n_near=DEEPSDF_N_NEAR, n_uniform=DEEPSDF_N_UNIFORM``.

    Args:
        mesh: a ``trimesh.Trimesh`` or a ``(vertices, faces)`` pair; or, in 2D, an outline: a
            ``PolygonSDF`` or its ``(vertices (V, 2), segments (S, 2))`` pair (see the module doc).
        n_uniform: points uniformly distributed in ``bounds``.
        n_near: points near the surface: area-weighted random surface points (length-weighted
            outline points in 2D), each moved by Gaussian noise N(0, std^2) on every coordinate. They are not clipped to ``bounds``.
        near_std: the noise's standard deviation, one number (all near points) or two (the first
            ``n_near - n_near // 2`` points use the first, the rest the second). The default is
            DeepSDF's: variances 0.005 and 0.0005, i.e. std 0.0707 and 0.0224. DeepSDF's option
            is a variance; pass its square root here.
        n_surface: points exactly on the surface (area-weighted), returned apart from ``points``
            as ``surface_points`` with their triangles' unit normals (right-hand rule: outwards
            for a consistently oriented closed mesh), e.g. for SIREN's on-surface loss. In 2D the
            segments' normals point to their right: outwards for counter-clockwise loops.
        bounds: ``(lo, hi)`` of the uniform samples, each three (2D: two) finite numbers with
            lo < hi; default the cube (square) [-1, 1].
        seed: anything ``np.random.default_rng`` takes; the same seed gives the same samples.
        sign: how ``fastsdf.MeshSDF`` decides inside from outside (``"winding"``,
            ``"pseudonormal"``, ``"exact_winding"``); an outline has ``PolygonSDF``'s signs.
        sdf: a distance function from float32 (N, dim) points to (N,) values, negative inside, used
            instead of ``MeshSDF(vertices, faces, sign=sign)``.

    Returns:
        ``SdfSamples`` with ``n_near + n_uniform`` points (near-surface first, then uniform), and
        ``n_surface`` surface points and normals when ``n_surface > 0`` (None otherwise).

    Raises:
        ValueError: negative or non-integer counts, no samples at all, a bad ``near_std`` or
            ``bounds``, an empty mesh, NaN/Inf vertices, a mesh without area to sample from, or
            a distance function that returns the wrong shape or NaN/Inf.
    """
    n_uniform = integer(n_uniform, "n_uniform", minimum=0)
    n_near = integer(n_near, "n_near", minimum=0)
    n_surface = integer(n_surface, "n_surface", minimum=0)
    stds = near_stds(near_std)
    if n_uniform + n_near + n_surface == 0:
        raise ValueError("nothing to sample: n_uniform, n_near and n_surface are all 0")
    outline = _outline(mesh)
    dim = 3 if outline is None else 2
    lo, hi = (np.array(b) for b in parse_bounds((UNIT_BOUNDS if dim == 3 else UNIT_BOUNDS_2D)
                                                if bounds is None else bounds, dim))
    if outline is None:
        vertices, faces = mesh_arrays(mesh)
        on_surface = sample_surface
    else:
        vertices, faces, on_surface = outline.vertices, outline.segments, sample_outline
    if sdf is None and n_near + n_uniform:
        sdf = _mesh_sdf(vertices, faces, sign) if outline is None else outline
    elif sdf is not None and not callable(sdf):
        raise TypeError(f"sdf must be callable, got {type(sdf).__name__}")
    rng = np.random.default_rng(seed)

    parts = []
    if n_near:
        surface, _ = on_surface(vertices, faces, n_near, rng)
        first = n_near - n_near // 2 if len(stds) == 2 else n_near
        std = np.full(n_near, stds[-1])
        std[:first] = stds[0]
        parts.append(surface + rng.standard_normal((n_near, dim)) * std[:, None])
    if n_uniform:
        parts.append(lo + rng.random((n_uniform, dim)) * (hi - lo))
    points = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, dim), np.float32)
    surface_points = surface_normals = None
    if n_surface:
        surface_points, surface_normals = on_surface(vertices, faces, n_surface, rng)

    # Distances of the float32 points as stored, not of the float64 ones they were rounded from.
    values = np.empty(len(points), np.float32)
    for start in range(0, len(points), _BATCH):
        batch = points[start:start + _BATCH]
        values[start:start + len(batch)] = _checked_values(sdf(batch), batch)
    return SdfSamples(points, values, surface_points, surface_normals)


def near_stds(near_std: float | Sequence[float]) -> tuple[float, ...]:
    """``near_std`` checked: one or two finite numbers > 0, as a tuple; ValueError otherwise."""
    values = (near_std,) if np.ndim(near_std) == 0 else tuple(near_std)
    try:
        stds = tuple(real(v, "near_std", 0, low_open=True) for v in values)
    except ValueError:
        stds = ()
    if len(stds) not in (1, 2):
        raise ValueError(f"near_std must be one or two finite numbers > 0, got {near_std!r}")
    return stds


def _outline(shape: Any) -> PolygonSDF | None:
    """``shape`` as a ``PolygonSDF`` when it is a 2D outline (one, or a pair whose vertices have two
    columns), None for a mesh."""
    if isinstance(shape, PolygonSDF):
        return shape
    if isinstance(shape, (tuple, list)) and len(shape) == 2 and np.ndim(shape[0]) == 2 and np.shape(shape[0])[1] == 2:
        return PolygonSDF(*shape)
    return None


def _mesh_sdf(vertices: np.ndarray, faces: np.ndarray, sign: str) -> Callable[[np.ndarray], Any]:
    """The distance function ``sample_sdf`` uses unless given one (tests replace this)."""
    from fastsdf.geometry.mesh_sdf import MeshSDF

    return MeshSDF(vertices, faces, sign=sign)


def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` area-weighted random points on the triangles (float64 (n, 3)) and their unit face
    normals (right-hand rule), from ``mesh_arrays``' vertices and faces. ValueError when the mesh
    has no area."""
    tri = vertices[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    double_area = np.sqrt((cross ** 2).sum(axis=1))
    cdf = np.cumsum(double_area)
    total = cdf[-1]
    if not (total > 0 and math.isfinite(total)):
        raise ValueError("the mesh has no surface area to sample points from: all its triangles are degenerate")
    # side="right" never picks a zero-area triangle: its cdf value equals its predecessor's.
    index = np.minimum(np.searchsorted(cdf, rng.random(n) * total, side="right"), len(faces) - 1)
    r1, r2 = rng.random((2, n, 1))
    s = np.sqrt(r1)
    a, b, c = tri[index, 0], tri[index, 1], tri[index, 2]
    points = (1.0 - s) * a + s * (1.0 - r2) * b + s * r2 * c
    normals = cross[index] / double_area[index, None]
    return points, normals


def sample_outline(vertices: np.ndarray, segments: np.ndarray, n: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` length-weighted random points on the segments (float64 (n, 2)) and their unit normals,
    pointing to the right of each segment (outwards for counter-clockwise loops). ValueError when
    the outline has no length."""
    ends = vertices[segments]
    edge = ends[:, 1] - ends[:, 0]
    length = np.hypot(edge[:, 0], edge[:, 1])
    cdf = np.cumsum(length)
    total = cdf[-1]
    if not (total > 0 and math.isfinite(total)):
        raise ValueError("the outline has no length to sample points from: all its segments are points")
    index = np.minimum(np.searchsorted(cdf, rng.random(n) * total, side="right"), len(segments) - 1)
    t = rng.random((n, 1))
    points = ends[index, 0] + t * edge[index]
    normals = np.stack([edge[index, 1], -edge[index, 0]], axis=1) / length[index, None]
    return points, normals


def _checked_values(values: Any, points: np.ndarray) -> np.ndarray:
    values = to_numpy(values)
    if values.size == len(points):
        values = values.reshape(-1)
    if values.ndim != 1 or len(values) != len(points) or values.dtype.kind not in "fiu":
        raise ValueError(f"sdf must map (N, {points.shape[1]}) points to (N,) or (N, 1) real values; got {values.dtype} "
                         f"{tuple(values.shape)} for N = {len(points)}")
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(f"sdf returned NaN or Inf at point {points[bad.nonzero()[0][0]].tolist()}")
    return values


def _float32_rows(a: Any, widths: tuple[int, ...], name: str) -> np.ndarray:
    """``a`` as C-contiguous, finite float32 rows of one of ``widths`` (an empty array: the last)."""
    a = np.asarray(a)
    if a.size == 0 and a.ndim <= 2 and (a.ndim < 2 or a.shape[1] not in widths):
        a = a.reshape(0, widths[-1])
    if a.ndim != 2 or a.shape[1] not in widths or a.dtype.kind not in "fiu":
        shape = " or ".join(f"(N, {w})" for w in widths)
        raise ValueError(f"{name} must be a real {shape} array, got {a.dtype} {a.shape}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite")
    return a
