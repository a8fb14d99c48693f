"""``MeshSDF``: exact signed distance to a triangle mesh, with signs that hold on open meshes.

Distances come from a 4-wide BVH over the triangles (built in C++, queried by ``fastsdf._C`` with
OpenMP or ``fastsdf._cuda``, see ``csrc/mesh_sdf/bvh.h``) and are exact in float64: float32 SIMD
bounds, conservative by construction, only decide which triangles the float64 test sees. On the CPU
a batch is processed in Morton (space-filling curve) order, each point starting its search from
its neighbour's closest triangle. The sign is a separate decision that never scales the distance:

- ``"winding"``: the fast winding number (Barill et al. 2018, to second order); inside where it
  exceeds 1/2. Right on open, self-intersecting and messy meshes, up to its approximation near
  the 1/2 level set.
- ``"pseudonormal"``: the angle-weighted pseudonormal of the closest feature (Baerentzen and
  Aanaes 2005): exact for closed manifold meshes, and the fastest.
- ``"exact_winding"``: the exact generalised winding number (Jacobson et al. 2013), evaluated
  hierarchically: a BVH node seen from outside its box is replaced by the fan closing its boundary.

In both winding modes the CPU skips the sum where a neighbour settles the side: between two points
whose distance balls overlap no surface is crossed, and the winding number changes by at most the
length of the step times a bound from the mesh boundary alone (0 on a closed mesh), so where the
neighbour's value minus that change stays above 1/2, or plus it below, the side is the neighbour's.
The result is the one the sum would give, up to the fast winding number's own approximation.

Any finite float64 coordinates work. The kernels take the mesh into units of a power of two (exact)
where its largest coordinate is in [1, 2), so no product of a few coordinates overflows or
underflows, and each query point likewise; a point more than 2^40 of those units out is moved in
along its ray from the origin to there, which changes its closest point and winding number by less
than float64 resolves, and its distance is put back (``csrc/mesh_sdf/query.h``). Only a distance
too large for the points' dtype comes back as ``inf``. Within one mesh, a triangle whose edges are
all below 2^-200 of its largest coordinate counts for distances (exactly) but not for signs: its
normal and solid angles would leave float64's range.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any, Sequence

import numpy as np

from fastsdf import _backend, _memory
from fastsdf._arrays import is_tensor
from fastsdf._validation import one_of
from fastsdf.geometry.grid import UNIT_BOUNDS, Bounds, Grid
from fastsdf.geometry.mesh_bvh import BvhArrays, build_bvh
from fastsdf.geometry.mesh_io import load_mesh, mesh_arrays

__all__ = ["MeshSDF", "SIGNS"]

_SIGNS = {"winding": 1, "pseudonormal": 2, "exact_winding": 3}
SIGNS = tuple(_SIGNS)  # the sign modes, default first
# Barill et al.'s accuracy parameter: a node beyond beta times its radius counts as its second-order
# expansion. With their 2 the fast winding number stays within 0.05 of the exact one on the shared
# meshes (points 0.01 from the surface); the first order alone was off by up to 0.13.
_BETA = 2.0
# A triangle whose doubled area is below this fraction of its longest edge squared has no normal;
# it counts for distances as its three edges.
_DEGENERATE = 1e-12
# Nor has one whose edges are all below this, in mesh units (the largest |vertex coordinate| in
# [1, 2)): its normal and solid angles, products of two or three of its lengths, would leave float64's
# range. It counts for distances as the triangle it is (the closest-point test scales itself).
_TINY_EDGE = 2.0 ** -200
# The kernels' per-triangle roles (csrc/mesh_sdf/bvh.h's distance_only).
_SIGNED, _DISTANCE_ONLY, _AS_EDGES = 0, 1, 2
_GRID_BATCH = 1 << 18


class MeshSDF:
    """Signed distance (negative inside) to the triangle mesh ``(vertices, faces)``.

    Args:
        vertices: (V, 3) real array-like (NumPy or torch).
        faces: (F, 3) integer array-like, F >= 1, indices in [0, V).
        sign: ``"winding"`` (default), ``"pseudonormal"`` or ``"exact_winding"``; see the module doc.

    Degenerate (zero-area) triangles count for distances, as segments, and not for signs; a face
    repeated (the same oriented triangle again, corners possibly rotated) counts once for signs.
    Non-manifold edges are accepted (winding numbers stay right; pseudonormals assume a closed
    manifold). Vertices at the same position are merged for the signs, so UV seams do not open a
    closed mesh. In ``"pseudonormal"`` mode a point whose closest triangle is degenerate gets its
    sign from the exact winding number.

    Vertices and points may have any finite coordinates (see the module doc).

    Raises:
        ValueError: no faces, wrong shapes, NaN/Inf vertices, an index out of range, unknown sign.
    """

    def __init__(self, vertices: Any, faces: Any, sign: str = "winding"):
        self.sign = one_of(sign, "sign", sorted(_SIGNS))
        self.vertices, self.faces = (np.ascontiguousarray(a) for a in mesh_arrays((vertices, faces)))
        # The kernels work in mesh units (see csrc/mesh_sdf/bvh.h): the vertices times a power of two
        # (exact), so that no product of a few coordinates overflows or underflows.
        exponent = _exponent(self.vertices)
        merged, inverse = np.unique(np.ldexp(self.vertices, -exponent), axis=0, return_inverse=True)
        merged_faces = inverse.reshape(-1)[self.faces]
        corners = merged[merged_faces]
        no_area = _degenerate(corners)
        distance_only = no_area | _repeated(merged_faces) | _tiny(corners)
        role = np.where(no_area, _AS_EDGES, np.where(distance_only, _DISTANCE_ONLY, _SIGNED)).astype(np.uint8)
        self._arrays, self._order = build_bvh(merged, np.ascontiguousarray(merged_faces), role, corners,
                                              _pseudonormals(corners, merged_faces, distance_only), exponent)
        self._device_arrays: dict[str, tuple[BvhArrays, Any]] = {}

    def __setstate__(self, state: dict) -> None:
        # Pickles from before the arrays had names hold them as a plain tuple, in BvhArrays' order.
        if not isinstance(state["_arrays"], BvhArrays):
            state = {**state, "_arrays": BvhArrays(*state["_arrays"]), "_device_arrays": {}}
        self.__dict__.update(state)

    @classmethod
    def from_trimesh(cls, mesh: Any, sign: str = "winding") -> "MeshSDF":
        """From a ``trimesh.Trimesh`` (its vertices and faces as they are)."""
        return cls(np.asarray(mesh.vertices), np.asarray(mesh.faces), sign=sign)

    @classmethod
    def load(cls, path: str | os.PathLike, sign: str = "winding") -> "MeshSDF":
        """Reads any mesh format trimesh reads, with its vertex and face arrays as they are;
        scenes are flattened into one mesh.

        Raises FileNotFoundError for a missing file, ValueError for one that holds no triangles
        or cannot be parsed.
        """
        return cls.from_trimesh(load_mesh(path, merge=False), sign=sign)

    def __repr__(self) -> str:
        return f"MeshSDF({len(self.vertices)} vertices, {len(self.faces)} faces, sign={self.sign!r})"

    def __call__(self, points: Any) -> Any:
        """Signed distances (N,), negative inside."""
        return self._query(points, _SIGNS[self.sign], with_closest=False)[0]

    def unsigned(self, points: Any) -> Any:
        """Distances (N,) to the surface."""
        return self._query(points, 0, with_closest=False)[0]

    def closest(self, points: Any) -> tuple[Any, Any, Any]:
        """Closest points on the surface (N, 3), their face ids (N,) int64, and barycentric
        coordinates (N, 3) in that face (``point = sum(bary[k] * vertices[faces[id, k]])``)."""
        _, closest, face, bary = self._query(points, 0, with_closest=True)
        return closest, face, bary

    def contains(self, points: Any) -> Any:
        """True (N,) where the signed distance is negative."""
        return self(points) < 0

    def winding_number(self, points: Any, exact: bool = False) -> Any:
        """Generalised winding numbers (N,): 1 inside a closed, outward-oriented surface, 0
        outside, fractional near holes. The fast approximation unless ``exact``."""
        data, wrap, _ = _points(points)
        if _is_cuda(data):
            out = self._cuda_winding(data, exact)
        else:
            out = _backend.cpu().msdf_winding(self._arrays, data, bool(exact), _BETA)
        return wrap(out)

    def grid(self, resolution: int | Sequence[int], bounds: Bounds = UNIT_BOUNDS) -> np.ndarray:
        """Signed distances on the grid ``fastsdf.extract_mesh`` samples (``fastsdf.geometry.grid.Grid``),
        as a float32 (R0, R1, R2) NumPy volume computed in batches: ready for ``fastsdf.marching_cubes``.
        MemoryError, before allocating, when the volume would not fit."""
        grid = Grid(resolution, bounds)
        res = grid.resolution
        _memory.check_fits(4 * math.prod(res), f"a {res[0]}x{res[1]}x{res[2]} float32 distance grid",
                           hint="use fastsdf.extract_mesh(sdf, resolution, method='chunked') to mesh it")
        volume = np.empty(res, np.float32)
        flat = volume.reshape(-1)
        for start in range(0, flat.size, _GRID_BATCH):
            stop = min(start + _GRID_BATCH, flat.size)
            flat[start:stop] = self(grid.points(0, start, stop))
        return volume

    def _query(self, points: Any, sign: int, with_closest: bool) -> tuple:
        data, wrap, wrap_index = _points(points)
        if _is_cuda(data):
            results = self._cuda_query(data, sign, with_closest)
        else:
            results = _backend.cpu().msdf_query(self._arrays, self._order, data, sign, _BETA, with_closest)
        distance, closest, face, bary = results
        if not with_closest:
            return (wrap(distance),)
        return wrap(distance), wrap(closest), wrap_index(face), wrap(bary)

    def _on_device(self, device: Any) -> tuple[BvhArrays, Any]:
        """The arrays and the slots' face ids on ``device``, copied there once."""
        import torch

        key = str(device)
        if key not in self._device_arrays:
            self._device_arrays[key] = (self._arrays.to(device), torch.from_numpy(self._order).to(device))
        return self._device_arrays[key]

    def _cuda_query(self, points: Any, sign: int, with_closest: bool) -> tuple:
        import torch

        arrays, order = self._on_device(points.device)
        n = len(points)
        distance = torch.empty(n, dtype=torch.float64, device=points.device)
        closest = torch.empty((n, 3), dtype=torch.float64, device=points.device) if with_closest else None
        face = torch.empty(n, dtype=torch.int64, device=points.device) if with_closest else None
        bary = torch.empty((n, 3), dtype=torch.float64, device=points.device) if with_closest else None
        _backend.cuda().msdf_query(
            arrays.addresses(), order.data_ptr(), len(order), len(arrays.node_link), len(arrays.boundary),
            points.data_ptr(),
            int(points.dtype == torch.float64), n, sign, _BETA, distance.data_ptr(),
            *(0 if t is None else t.data_ptr() for t in (closest, face, bary)), *_backend.cuda_target(points))
        return distance, closest, face, bary

    def _cuda_winding(self, points: Any, exact: bool) -> Any:
        import torch

        arrays, order = self._on_device(points.device)
        out = torch.empty(len(points), dtype=torch.float64, device=points.device)
        _backend.cuda().msdf_winding(arrays.addresses(), len(order), len(arrays.node_link), len(arrays.boundary),
                                     points.data_ptr(),
                                     int(points.dtype == torch.float64), len(points), bool(exact), _BETA,
                                     out.data_ptr(), *_backend.cuda_target(points))
        return out


def _exponent(vertices: np.ndarray) -> int:
    """The power of two that takes the largest |coordinate| into [1, 2): mesh units are the vertices
    times 2^-exponent. Kept within [-1022, 1023], where 2^exponent and 2^-exponent are both float64
    numbers (a mesh of subnormal coordinates then has them all below 1)."""
    largest = float(np.abs(vertices).max())
    if largest == 0.0:
        return 0
    return max(math.frexp(largest)[1] - 1, -1022)


def _edges(corners: np.ndarray) -> np.ndarray:
    """(F, 3, 3) edge vectors b - a, c - b, a - c of triangles (F, 3, 3)."""
    return np.roll(corners, -1, axis=1) - corners


def _degenerate(corners: np.ndarray) -> np.ndarray:
    """(F,) True where a triangle (F, 3, 3) has (numerically) no area, whatever its size: its edges
    are scaled by a power of two (exact) that keeps their squares and cross products in range."""
    edges = _edges(corners)
    _, exponent = np.frexp(np.abs(edges).max(axis=(1, 2)))
    edges = np.ldexp(edges, -exponent[:, None, None])
    doubled_area = np.linalg.norm(np.cross(edges[:, 0], -edges[:, 2]), axis=1)
    longest2 = (edges ** 2).sum(2).max(1)
    return doubled_area <= _DEGENERATE * longest2


def _tiny(corners: np.ndarray) -> np.ndarray:
    """(F,) True where every edge of a triangle (F, 3, 3), in mesh units, is below _TINY_EDGE."""
    return (np.abs(_edges(corners)).max(axis=(1, 2)) < _TINY_EDGE)


def _repeated(faces: np.ndarray) -> np.ndarray:
    """(F,) True for every copy of an oriented triangle after its first."""
    rotate = np.argmin(faces, axis=1)[:, None]
    canonical = np.take_along_axis(faces, (rotate + np.arange(3)) % 3, axis=1)
    _, first = np.unique(canonical, axis=0, return_index=True)
    repeated = np.ones(len(faces), bool)
    repeated[first] = False
    return repeated


def _pseudonormals(corners: np.ndarray, faces: np.ndarray, no_sign: np.ndarray) -> np.ndarray:
    """(F, 7, 3): face normal, edge k normals (edge k runs from corner k to k + 1), vertex k normals.

    Edge normals sum the unit normals of the faces on the edge; vertex normals weight them by the
    face's angle at the vertex. Only their directions matter for the sign."""
    n = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    length = np.linalg.norm(n, axis=1, keepdims=True)
    n = np.where(no_sign[:, None], 0.0, n / np.where(length > 0, length, 1.0))
    edge_keys = np.sort(np.stack([faces, np.roll(faces, -1, axis=1)], axis=2), axis=2).reshape(-1, 2)
    _, edge_id = np.unique(edge_keys, axis=0, return_inverse=True)
    edge_id = edge_id.reshape(-1, 3)
    edge_normal = np.zeros((edge_id.max() + 1, 3))
    vertex_normal = np.zeros((faces.max() + 1, 3))
    for k in range(3):
        np.add.at(edge_normal, edge_id[:, k], n)
        u = corners[:, (k + 1) % 3] - corners[:, k]
        w = corners[:, (k + 2) % 3] - corners[:, k]
        cos = (u * w).sum(1) / np.maximum(np.linalg.norm(u, axis=1) * np.linalg.norm(w, axis=1), 1e-300)
        np.add.at(vertex_normal, faces[:, k], np.arccos(np.clip(cos, -1.0, 1.0))[:, None] * n)
    return np.concatenate([n[:, None], edge_normal[edge_id], vertex_normal[faces]], axis=1)


def _is_cuda(x: Any) -> bool:
    return getattr(getattr(x, "device", None), "type", None) == "cuda"


def _points(points: Any):
    """Validated (N, 3) float32/float64 C-contiguous points, and functions that return results in
    the caller's kind and dtype: (data, wrap floats, wrap indices)."""
    if is_tensor(points):
        import torch

        tensor = points.detach()
        if not tensor.is_floating_point() or tensor.dtype not in (torch.float32, torch.float64):
            tensor = tensor.to(torch.float64 if not tensor.is_floating_point() else torch.float32)
        _check_points(tuple(tensor.shape), float(tensor.abs().max()) if tensor.numel() else 0.0)
        dtype = tensor.dtype
        if tensor.device.type == "cuda":
            tensor = tensor.contiguous()
            if tensor.data_ptr() % tensor.element_size():
                tensor = tensor.clone()
            return tensor, (lambda x: x.to(dtype)), (lambda x: x)
        data = _aligned(tensor.cpu().numpy())
        return data, (lambda x: torch.from_numpy(_cast(x, data.dtype))), torch.from_numpy
    array = np.asarray(points)
    if array.dtype not in (np.float32, np.float64):
        if array.dtype.kind not in "fiub":
            raise ValueError(f"points must be real numbers, got dtype {array.dtype}")
        array = array.astype(np.float64)
    _check_points(array.shape, float(np.abs(array).max()) if array.size else 0.0)
    data = _aligned(array)
    return data, functools.partial(_cast, dtype=data.dtype), (lambda x: x)


def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """float64 results in the points' dtype; a distance beyond float32's range becomes inf, quietly
    (it is documented)."""
    with np.errstate(over="ignore"):
        return np.asarray(values, dtype=dtype)


def _aligned(array: np.ndarray) -> np.ndarray:
    """``array`` C-contiguous and aligned to its item size, copied only where it is not (a contiguous
    array can still be misaligned: a view at an odd offset into a byte buffer)."""
    return np.require(array, requirements=("C_CONTIGUOUS", "ALIGNED"))


def _check_points(shape: tuple[int, ...], largest: float) -> None:
    """Raises ValueError unless ``shape`` is (N, 3) and ``largest`` (the largest |coordinate|) is finite."""
    if len(shape) != 2 or shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {shape}")
    if not math.isfinite(largest):
        raise ValueError("points hold NaN or Inf")
