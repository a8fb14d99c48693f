"""DeepSDF-style ground truth: normalise a mesh, sample its signed distance, read and write .npz.

What DeepSDF's preprocessing (``src/PreprocessMesh.cpp`` in facebookresearch/DeepSDF) does, and
what this module does the same way or differently:

- Normalisation: the centre of the bounding box of the vertices that faces use goes to the origin,
  and the farthest of those vertices to radius 1/1.03. Same here (``normalize(method="sphere")``);
  ``method="cube"`` fits the longest bounding-box side to [-1/1.03, 1/1.03] instead. The offset and
  scale follow DeepSDF's ``NormalizationParameters`` files: ``offset = -centre`` and
  ``normalised = (original + offset) * scale``, so DeepSDF's evaluation code, which maps meshes
  back with ``p / scale - offset``, can use the ``offset`` and ``scale`` stored in our files.
- Samples: 500,000 per shape, 47/50 of them near the surface: area-weighted random surface points
  plus Gaussian noise on each coordinate, half with variance 0.005 and half with variance 0.0005
  (standard deviations 0.0707 and 0.0224, in normalised units); the other 3/50 uniform in
  [-1, 1]^3. Same distributions here (``DEEPSDF_NEAR_STD``, ``DEEPSDF_N_NEAR``,
  ``DEEPSDF_N_UNIFORM``), except that each near sample has its own surface point (DeepSDF perturbs
  each surface point twice, once per variance): more of the surface covered for the same count.
- Signs: DeepSDF votes with the normals of 11 nearby points seen in 100 rendered views and drops
  the points whose votes disagree. Here every point is kept and ``fastsdf.MeshSDF`` gives the
  distance and sign (generalised winding numbers by default), which also works for open meshes.
- Files: ``pos`` holds the rows (x, y, z, sdf) with sdf > 0 and ``neg`` those with sdf <= 0, both
  float32 (N, 4), exactly as DeepSDF's ``writeSDFToNPZ``. A point exactly on the surface
  (sdf == 0) therefore goes to ``neg``. Extra keys (``offset``, ``scale``, ``surface_points``,
  ``surface_normals``) ride along; DeepSDF's loader reads only ``pos`` and ``neg``.

``sample_sdf`` builds its distance function with ``_mesh_sdf(vertices, faces, sign)``; pass
``sdf=`` (or replace ``_mesh_sdf``, as the tests do) to sample any other distance function.
"""

from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from fastsdf.geometry.mesh_io import mesh_arrays
from fastsdf.io import _to_numpy, atomic_write

__all__ = [
    "DEEPSDF_NEAR_STD",
    "DEEPSDF_N_NEAR",
    "DEEPSDF_N_UNIFORM",
    "DEEPSDF_PADDING",
    "NormalizationTransform",
    "SdfSamples",
    "load_npz",
    "normalize",
    "sample_sdf",
    "save_npz",
]

# DeepSDF's PreprocessMesh: `variance = 0.005`, `second_variance = variance / 10`, and the noise is
# N(0, sqrt(variance)) per coordinate. These are standard deviations, in normalised units.
DEEPSDF_NEAR_STD = (math.sqrt(0.005), math.sqrt(0.0005))
# DeepSDF's 500,000 samples per shape, 47/50 of them near the surface.
DEEPSDF_N_NEAR = 470_000
DEEPSDF_N_UNIFORM = 30_000
# DeepSDF's `max_distance_buffer`: the mesh fills a sphere (or cube) of radius 1/1.03.
DEEPSDF_PADDING = 1.03

_UNIT_BOUNDS = ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))
# The keys of a sample file that load_npz reads; any others are ignored.
_NPZ_KEYS = {"pos", "neg", "offset", "scale", "surface_points", "surface_normals"}
# Points per call of the distance function: bounds the memory a brute-force one would need.
_BATCH = 1 << 18


# --------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class NormalizationTransform:
    """A translation then a uniform scale: ``normalised = (original + offset) * scale``.

    The convention of DeepSDF's ``NormalizationParameters`` files: ``offset`` is minus the centre
    of the original mesh's bounding box. Distances scale by ``scale`` (``apply_distance``).

    Attributes:
        offset: float64 (3,), added to original points before scaling.
        scale: positive float.
    """

    offset: np.ndarray
    scale: float

    def __post_init__(self) -> None:
        offset = np.array(self.offset, dtype=np.float64).reshape(-1)
        scale = np.asarray(self.scale, dtype=np.float64).reshape(-1)
        if offset.shape != (3,) or not np.isfinite(offset).all():
            raise ValueError(f"offset must be three finite numbers, got {self.offset!r}")
        if scale.shape != (1,) or not (np.isfinite(scale[0]) and scale[0] > 0):
            raise ValueError(f"scale must be one finite number > 0, got {self.scale!r}")
        offset.setflags(write=False)
        object.__setattr__(self, "offset", offset)
        object.__setattr__(self, "scale", float(scale[0]))

    @classmethod
    def identity(cls) -> "NormalizationTransform":
        return cls(np.zeros(3), 1.0)

    def apply(self, points: Any) -> np.ndarray:
        """Original coordinates (..., 3) to normalised ones; float32 stays float32."""
        p, dtype = _points(points)
        return ((p + self.offset) * self.scale).astype(dtype, copy=False)

    def invert(self, points: Any) -> np.ndarray:
        """Normalised coordinates (..., 3) back to original ones; float32 stays float32."""
        p, dtype = _points(points)
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
        """``{"offset": [x, y, z], "scale": s}``, plain floats (JSON-ready)."""
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
    if method not in ("sphere", "cube"):
        raise ValueError(f"method must be 'sphere' or 'cube', got {method!r}")
    try:
        padding = float(padding)
    except (TypeError, ValueError):
        raise ValueError(f"padding must be a number >= 1, got {padding!r}") from None
    if not (math.isfinite(padding) and padding >= 1.0):
        raise ValueError(f"padding must be a finite number >= 1, got {padding!r}")
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
    if _to_numpy(mesh[0]).dtype == np.float32:
        moved = moved.astype(np.float32)
    return (moved, faces.copy()), transform


# --------------------------------------------------------------------------------------------
# Samples
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class SdfSamples:
    """Points and their signed distances (negative inside), plus optional on-surface points.

    Attributes:
        points: float32 (N, 3). From ``sample_sdf``: the near-surface samples first (those with
            the first standard deviation, then those with the second), then the uniform ones.
        sdf: float32 (N,) signed distances of ``points``.
        surface_points: float32 (S, 3) points on the surface (distance 0), or None.
        surface_normals: float32 (S, 3) unit normals of the triangles they lie on, or None.
        transform: how the mesh was normalised before sampling, if it was (None otherwise).
    """

    points: np.ndarray
    sdf: np.ndarray
    surface_points: np.ndarray | None = None
    surface_normals: np.ndarray | None = None
    transform: NormalizationTransform | None = None

    def __post_init__(self) -> None:
        self.points = _float32_rows(self.points, 3, "points")
        self.sdf = np.ascontiguousarray(np.asarray(self.sdf, dtype=np.float32).reshape(-1))
        if len(self.sdf) != len(self.points):
            raise ValueError(f"{len(self.points)} points but {len(self.sdf)} sdf values")
        if not np.isfinite(self.sdf).all():
            raise ValueError("sdf values must be finite")
        if (self.surface_points is None) != (self.surface_normals is None):
            raise ValueError("surface_points and surface_normals come together")
        if self.surface_points is not None:
            self.surface_points = _float32_rows(self.surface_points, 3, "surface_points")
            self.surface_normals = _float32_rows(self.surface_normals, 3, "surface_normals")
            if len(self.surface_points) != len(self.surface_normals):
                raise ValueError(f"{len(self.surface_points)} surface points but "
                                 f"{len(self.surface_normals)} surface normals")
        if self.transform is not None and not isinstance(self.transform, NormalizationTransform):
            raise ValueError(f"transform must be a NormalizationTransform, got {type(self.transform).__name__}")

    def __len__(self) -> int:
        return len(self.points)

    def pos(self) -> np.ndarray:
        """float32 (M, 4) rows (x, y, z, sdf) with sdf > 0 (outside), as in DeepSDF's ``pos``."""
        return self._rows(self.sdf > 0)

    def neg(self) -> np.ndarray:
        """float32 (K, 4) rows (x, y, z, sdf) with sdf <= 0 (inside or on the surface), as in
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
    bounds: tuple[Sequence[float], Sequence[float]] = _UNIT_BOUNDS,
    seed: Any = None,
    sign: str = "winding",
    sdf: Callable[[np.ndarray], Any] | None = None,
) -> SdfSamples:
    """Samples a mesh's signed distance the way DeepSDF's preprocessing does.

    The mesh is used as it is: normalise it first (``normalize``) so that it sits inside
    ``bounds``. For DeepSDF's own recipe use ``n_near=DEEPSDF_N_NEAR, n_uniform=DEEPSDF_N_UNIFORM``.

    Args:
        mesh: a ``trimesh.Trimesh`` or a ``(vertices, faces)`` pair.
        n_uniform: points uniformly distributed in ``bounds``.
        n_near: points near the surface: area-weighted random surface points, each moved by
            Gaussian noise N(0, std^2) on every coordinate. They are not clipped to ``bounds``.
        near_std: the noise's standard deviation, one number (all near points) or two (the first
            ``n_near - n_near // 2`` points use the first, the rest the second). The default is
            DeepSDF's: variances 0.005 and 0.0005, i.e. std 0.0707 and 0.0224. DeepSDF's option
            is a variance; pass its square root here.
        n_surface: points exactly on the surface (area-weighted), returned apart from ``points``
            as ``surface_points`` with their triangles' unit normals (right-hand rule: outwards
            for a consistently oriented closed mesh), e.g. for SIREN's on-surface loss.
        bounds: ``(lo, hi)`` of the uniform samples, each three finite numbers with lo < hi.
        seed: anything ``np.random.default_rng`` takes; the same seed gives the same samples.
        sign: how ``fastsdf.MeshSDF`` decides inside from outside (``"winding"``,
            ``"pseudonormal"``, ``"exact_winding"``).
        sdf: a distance function from float32 (N, 3) points to (N,) values, negative inside, used
            instead of ``MeshSDF(vertices, faces, sign=sign)``.

    Returns:
        ``SdfSamples`` with ``n_near + n_uniform`` points (near-surface first, then uniform), and
        ``n_surface`` surface points and normals when ``n_surface > 0`` (None otherwise).

    Raises:
        ValueError: negative or non-integer counts, no samples at all, a bad ``near_std`` or
            ``bounds``, an empty mesh, NaN/Inf vertices, a mesh without area to sample from, or
            a distance function that returns the wrong shape or NaN/Inf.
    """
    n_uniform = _count(n_uniform, "n_uniform")
    n_near = _count(n_near, "n_near")
    n_surface = _count(n_surface, "n_surface")
    stds = _near_stds(near_std)
    if n_uniform + n_near + n_surface == 0:
        raise ValueError("nothing to sample: n_uniform, n_near and n_surface are all 0")
    lo, hi = _bounds(bounds)
    vertices, faces = mesh_arrays(mesh)
    if sdf is None and n_near + n_uniform:
        sdf = _mesh_sdf(vertices, faces, sign)
    elif sdf is not None and not callable(sdf):
        raise TypeError(f"sdf must be callable, got {type(sdf).__name__}")
    rng = np.random.default_rng(seed)

    parts = []
    if n_near:
        surface, _ = _surface_points(vertices, faces, n_near, rng)
        first = n_near - n_near // 2 if len(stds) == 2 else n_near
        std = np.full(n_near, stds[-1])
        std[:first] = stds[0]
        parts.append(surface + rng.standard_normal((n_near, 3)) * std[:, None])
    if n_uniform:
        parts.append(lo + rng.random((n_uniform, 3)) * (hi - lo))
    points = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 3), np.float32)
    surface_points = surface_normals = None
    if n_surface:
        surface_points, surface_normals = _surface_points(vertices, faces, n_surface, rng)

    # Distances of the float32 points as stored, not of the float64 ones they were rounded from.
    values = np.empty(len(points), np.float32)
    for start in range(0, len(points), _BATCH):
        batch = points[start:start + _BATCH]
        values[start:start + len(batch)] = _checked_values(sdf(batch), batch)
    return SdfSamples(points, values, surface_points, surface_normals)


def _near_stds(near_std: float | Sequence[float]) -> tuple[float, ...]:
    """``near_std`` checked: one or two finite numbers > 0, as a tuple."""
    values = (near_std,) if np.ndim(near_std) == 0 else tuple(near_std)
    try:
        stds = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        stds = ()
    if len(stds) not in (1, 2) or not all(math.isfinite(s) and s > 0 for s in stds):
        raise ValueError(f"near_std must be one or two finite numbers > 0, got {near_std!r}")
    return stds


def _mesh_sdf(vertices: np.ndarray, faces: np.ndarray, sign: str) -> Callable[[np.ndarray], Any]:
    """The distance function ``sample_sdf`` uses unless given one (tests replace this)."""
    from fastsdf.geometry.mesh_sdf import MeshSDF

    return MeshSDF(vertices, faces, sign=sign)


def _surface_points(vertices: np.ndarray, faces: np.ndarray, n: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` area-weighted random points on the triangles (float64) and their unit face normals."""
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


def _checked_values(values: Any, points: np.ndarray) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    values = np.asarray(values)
    if values.size == len(points):
        values = values.reshape(-1)
    if values.ndim != 1 or len(values) != len(points) or values.dtype.kind not in "fiu":
        raise ValueError(f"sdf must map (N, 3) points to (N,) or (N, 1) real values; got {values.dtype} "
                         f"{tuple(values.shape)} for N = {len(points)}")
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(f"sdf returned NaN or Inf at point {points[bad.nonzero()[0][0]].tolist()}")
    return values


# --------------------------------------------------------------------------------------------
# DeepSDF .npz files
# --------------------------------------------------------------------------------------------


def save_npz(path: str | os.PathLike, samples: SdfSamples) -> None:
    """Writes ``samples`` in DeepSDF's layout, atomically (never a half-written file).

    Keys: ``pos`` (M, 4) and ``neg`` (K, 4) float32 rows (x, y, z, sdf), with sdf > 0 in ``pos``
    and sdf <= 0 in ``neg`` (DeepSDF's ``writeSDFToNPZ``). Also, when ``samples`` has them:
    ``offset`` float64 (3,) and ``scale`` float64 (1,), DeepSDF's ``NormalizationParameters``
    layout; ``surface_points`` and ``surface_normals`` float32 (S, 3). The file is written
    uncompressed at exactly ``path`` (no ``.npz`` is appended).
    """
    if not isinstance(samples, SdfSamples):
        raise TypeError(f"samples must be SdfSamples, got {type(samples).__name__}")
    arrays = {"pos": samples.pos(), "neg": samples.neg()}
    if samples.transform is not None:
        arrays["offset"] = samples.transform.offset.astype(np.float64)
        arrays["scale"] = np.array([samples.transform.scale], np.float64)
    if samples.surface_points is not None:
        arrays["surface_points"] = samples.surface_points
        arrays["surface_normals"] = samples.surface_normals
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def load_npz(path: str | os.PathLike) -> SdfSamples:
    """Reads a DeepSDF sample file (``save_npz``'s or DeepSDF's own) into ``SdfSamples``.

    ``pos`` and ``neg`` must be real (N, 4) arrays (any float dtype; read as float32); their
    rows become ``points``/``sdf``, ``pos`` first. Rows with NaN or Inf are dropped, as DeepSDF's
    loader (``remove_nans``) does. Other keys are ignored, except ``offset`` + ``scale`` (read as
    the ``transform``) and ``surface_points`` + ``surface_normals``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not an .npz archive, a damaged one, ``pos`` or ``neg`` missing or of the
            wrong shape or dtype, bad extra arrays.
    """
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path} is not a readable .npz archive: {exc}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is an .npy array, not an .npz archive with 'pos' and 'neg'")
    try:
        with data:
            keys = set(data.files)
            arrays = {k: np.asarray(data[k]) for k in keys & _NPZ_KEYS}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise ValueError(f"{path} is a damaged .npz archive: {exc}") from None
    missing = [k for k in ("pos", "neg") if k not in arrays]
    if missing:
        raise ValueError(f"{path} has no {' or '.join(map(repr, missing))} array (it has {sorted(keys)})")
    rows = []
    for key in ("pos", "neg"):
        a = arrays[key]
        if a.size == 0:
            a = a.reshape(0, 4) if a.dtype.kind == "f" else np.zeros((0, 4), np.float32)
        if a.ndim != 2 or a.shape[1] != 4 or a.dtype.kind != "f":
            raise ValueError(f"{path}: {key!r} must be a float (N, 4) array, got {a.dtype} {a.shape}")
        a = a.astype(np.float32)
        rows.append(a[np.isfinite(a).all(axis=1)])
    table = np.concatenate(rows)
    transform = surface_points = surface_normals = None
    try:
        if "offset" in arrays or "scale" in arrays:
            transform = NormalizationTransform.from_dict(arrays)
        if "surface_points" in arrays or "surface_normals" in arrays:
            surface_points, surface_normals = arrays.get("surface_points"), arrays.get("surface_normals")
            if surface_points is None or surface_normals is None:
                raise ValueError("surface_points and surface_normals come together")
        return SdfSamples(table[:, :3], table[:, 3], surface_points, surface_normals, transform)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def _count(value: Any, name: str) -> int:
    try:
        ok = not isinstance(value, bool) and float(value).is_integer() and value >= 0
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _bounds(bounds: Any) -> tuple[np.ndarray, np.ndarray]:
    try:
        lo, hi = (np.array([float(v) for v in b]) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"bounds must be ((x0, y0, z0), (x1, y1, z1)), got {bounds!r}") from None
    if lo.shape != (3,) or hi.shape != (3,) or not np.isfinite([lo, hi]).all() or not (lo < hi).all():
        raise ValueError(f"bounds must be two finite 3-vectors with lo < hi, got {bounds!r}")
    return lo, hi


def _points(points: Any) -> tuple[np.ndarray, Any]:
    p = np.asarray(points)
    if p.ndim < 1 or p.shape[-1] != 3 or p.dtype.kind not in "fiu":
        raise ValueError(f"points must be a real (..., 3) array, got {p.dtype} {p.shape}")
    dtype = p.dtype if p.dtype.kind == "f" else np.float64
    return p.astype(np.float64, copy=False), dtype


def _float32_rows(a: Any, width: int, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.size == 0 and a.ndim <= 2:
        a = a.reshape(0, width)
    if a.ndim != 2 or a.shape[1] != width or a.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be a real (N, {width}) array, got {a.dtype} {a.shape}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite")
    return a


def _is_trimesh_like(mesh: Any) -> bool:
    return hasattr(mesh, "vertices") and hasattr(mesh, "faces") and hasattr(mesh, "copy")
