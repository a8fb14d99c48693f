"""``marching_cubes``: an indexed, watertight iso-surface from a 3-D grid, on CPU or CUDA.

This module validates input, picks the backend from where the data lives, and allocates outputs;
the counting and filling happen in ``fastsdf._C`` (csrc/marching_cubes/*_cpu.cpp) or
``fastsdf._cuda`` (csrc/marching_cubes/*.cu). ``fastsdf.meshing.reference`` is the plain NumPy twin.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from fastsdf import _backend, _memory

__all__ = ["marching_cubes"]

# Bytes of output per vertex (3 float32) and per triangle (3 int64).
_VERTEX_BYTES = 12
_TRIANGLE_BYTES = 24
# Smaller real dtypes are widened without loss; the rest need float64 to stay exact.
_TO_FLOAT32 = {"float16", "bfloat16", "bool", "int8", "uint8", "int16", "uint16"}
_TO_FLOAT64 = {"int32", "uint32", "int64", "uint64"}


def marching_cubes(
    volume: Any,
    level: float = 0.0,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    origin: Sequence[float] = (0.0, 0.0, 0.0),
) -> tuple[Any, Any]:
    """Extracts the iso-surface ``volume == level`` as an indexed triangle mesh.

    Args:
        volume: 3-D NumPy array or torch tensor (CPU or CUDA), any strides, at least 2 samples
            along every axis. float32 and float64 are used as they are; smaller real dtypes (float16,
            bfloat16, bool, 8/16-bit integers) are widened to float32 and 32/64-bit integers to
            float64. NaN or Inf anywhere raises ``ValueError``: a surface next to them is undefined.
        level: the iso-value. A level outside the data range, or a constant volume, gives an empty
            mesh (arrays of shape (0, 3)), not an error.
        spacing: grid step along each axis (positive).
        origin: world position of ``volume[0, 0, 0]``.

    Returns:
        ``(verts, faces)``: float32 (V, 3) world positions ``origin + index * spacing`` in the
        volume's axis order (as scikit-image), and int64 (F, 3) vertex indices. One vertex per
        grid edge the surface crosses, shared by all its triangles, plus one at the centre of the
        rare cube whose surface is a tunnel through two or more of its faces (where scikit-image's
        Lewiner tables add one too). Triangle normals (right-hand
        rule) point towards values above the level: outwards for an SDF that is negative inside.
        NumPy in gives NumPy out; a tensor gives tensors on its device.

    A sample exactly equal to the level counts as below it, as in scikit-image. Ambiguous cube
    faces are resolved with the asymptotic decider, identically in the two cubes that share them,
    so a closed surface inside the volume gives a closed, manifold mesh.

    Raises:
        ValueError: bad shape, NaN/Inf, non-finite level, spacing or origin.
        TypeError: a complex or non-numeric volume.
        MemoryError: the output would not fit in the memory available, checked before allocating.
        BackendUnavailableError: the compiled module for the volume's device is not built.
    """
    level = _finite_scalar(level, "level")
    spacing = _triple(spacing, "spacing", positive=True)
    origin = _triple(origin, "origin")
    kernels, data, wrap = _prepare(volume)
    counts = kernels.count(data, level)
    verts, faces = kernels.fill(data, level, counts, vertex_base=0, layers=data.shape[0],
                                index_offset=(0, 0, 0), origin=origin, spacing=spacing)
    return wrap(verts), wrap(faces)


@dataclass
class LayerCounts:
    """Counts of one volume, on the host: edge vertices per point layer, and triangles and centre
    vertices per cube layer (int64)."""

    vertices: np.ndarray
    triangles: np.ndarray
    centres: np.ndarray
    device_counts: Any = None  # the CUDA backend's (3, segments) counts, reused by its fill pass

    def layer_starts(self, vertex_base: int) -> np.ndarray:
        """Global id of each point layer's first vertex: its edge vertices come first, then the
        centre vertices of the cube layer starting there."""
        per_layer = self.vertices.copy()
        per_layer[:-1] += self.centres
        return vertex_base + _exclusive_cumsum(per_layer)

    def sizes(self, layers: int) -> tuple[int, int]:
        """Vertices and triangles of point and cube layers [0, layers)."""
        n_verts = int(self.vertices[:layers].sum() + self.centres[:layers].sum())
        return n_verts, int(self.triangles[:layers].sum())


class CpuKernels:
    """fastsdf._C on NumPy volumes."""

    def count(self, volume: np.ndarray, level: float) -> LayerCounts:
        vertices, triangles, centres, finite = _backend.cpu().mc_count(volume, level)
        if not finite:
            raise ValueError(_nonfinite_message(np.isfinite(volume)))
        return LayerCounts(vertices, triangles, centres)

    def fill(self, volume, level, counts, *, vertex_base, layers, index_offset, origin, spacing):
        """Writes vertices of point layers [0, layers) and triangles of cube layers [0, layers)."""
        starts = counts.layer_starts(vertex_base)
        centre_offsets = starts[:-1] + counts.vertices[:-1]
        triangle_offsets = _exclusive_cumsum(counts.triangles)
        n_verts, n_tris = counts.sizes(layers)
        _check_output_fits(n_verts, n_tris, None)
        verts = np.empty((n_verts, 3), np.float32)
        faces = np.empty((n_tris, 3), np.int64)
        _backend.cpu().mc_fill(volume, level, starts, triangle_offsets, centre_offsets, (0, layers),
                               (0, layers), vertex_base, index_offset, origin, spacing, verts, faces)
        return verts, faces


class CudaKernels:
    """fastsdf._cuda on CUDA tensors: count per segment, prefix sums with torch, then fill."""

    def count(self, volume, level: float) -> LayerCounts:
        import torch

        module = _backend.cuda()
        n_segments = volume.shape[0] * volume.shape[1] * module.segments_per_row(volume.shape[2])
        seg = torch.empty((3, n_segments), dtype=torch.int32, device=volume.device)
        nonfinite = torch.zeros(1, dtype=torch.int32, device=volume.device)
        module.mc_count(*_device_volume(volume), level, _device_tables(volume.device), seg.data_ptr(),
                        nonfinite.data_ptr(), _stream(volume))
        if nonfinite.item():
            raise ValueError(_nonfinite_message(torch.isfinite(volume).cpu().numpy()))
        per_layer = seg.view(3, volume.shape[0], -1).sum(dim=2, dtype=torch.int64).cpu().numpy()
        return LayerCounts(per_layer[0], per_layer[1][:-1], per_layer[2][:-1], device_counts=seg)

    def fill(self, volume, level, counts, *, vertex_base, layers, index_offset, origin, spacing):
        import torch

        seg = counts.device_counts.view(3, volume.shape[0], -1).to(torch.int64)
        within_layer = torch.cumsum(seg, dim=2) - seg
        starts = torch.from_numpy(counts.layer_starts(vertex_base)).to(volume.device)[:, None]
        edge_totals = seg[0].sum(dim=1, keepdim=True)
        triangles = seg[1].flatten()
        offsets = torch.stack([
            (starts + within_layer[0]).flatten(),
            torch.cumsum(triangles, 0) - triangles,
            (starts + edge_totals + within_layer[2]).flatten(),
        ]).contiguous()
        n_verts, n_tris = counts.sizes(layers)
        _check_output_fits(n_verts, n_tris, volume.device)
        verts = torch.empty((n_verts, 3), dtype=torch.float32, device=volume.device)
        faces = torch.empty((n_tris, 3), dtype=torch.int64, device=volume.device)
        _backend.cuda().mc_fill(*_device_volume(volume), level, _device_tables(volume.device),
                                counts.device_counts.data_ptr(), offsets.data_ptr(), (0, layers),
                                (0, layers), vertex_base, index_offset, origin, spacing, verts.data_ptr(),
                                n_verts, faces.data_ptr(), n_tris, _stream(volume))
        return verts, faces


def _prepare(volume: Any):
    """Validates ``volume``; returns the kernels for its device, the data they take, and a function
    that turns NumPy outputs back into the caller's kind of array."""
    if _is_tensor(volume):
        import torch

        tensor = volume.detach()
        _check_shape(tuple(tensor.shape))
        name = str(tensor.dtype).removeprefix("torch.")
        if tensor.is_complex() or name not in {"float32", "float64"} | _TO_FLOAT32 | _TO_FLOAT64:
            raise TypeError(f"volume must be a real tensor, got dtype {tensor.dtype}")
        if name in _TO_FLOAT32:
            tensor = tensor.to(torch.float32)
        elif name in _TO_FLOAT64:
            tensor = tensor.to(torch.float64)
        if tensor.device.type == "cuda":
            return CudaKernels(), tensor, lambda x: x
        if tensor.device.type != "cpu":
            raise ValueError(f"volume on device {tensor.device} is not supported: use a CPU or CUDA tensor")
        return CpuKernels(), _native_array(tensor.numpy()), torch.from_numpy
    array = np.asarray(volume)
    _check_shape(array.shape)
    if array.dtype.kind not in "fiub" or array.dtype.name not in {"float32", "float64"} | _TO_FLOAT32 | _TO_FLOAT64:
        raise TypeError(f"volume must be a real array, got dtype {array.dtype}")
    if array.dtype.name in _TO_FLOAT32:
        array = array.astype(np.float32)
    elif array.dtype.name in _TO_FLOAT64:
        array = array.astype(np.float64)
    return CpuKernels(), _native_array(array), lambda x: x


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "data_ptr")


def _native_array(array: np.ndarray) -> np.ndarray:
    """The kernels read native-endian, aligned data through any strides; anything else is copied."""
    if not array.dtype.isnative or not array.flags.aligned:
        return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))
    return array


def _check_shape(shape: tuple[int, ...]) -> None:
    if len(shape) != 3:
        raise ValueError(f"volume must be 3-D, got shape {shape}")
    if min(shape) < 2:
        raise ValueError(f"volume needs at least 2 samples along every axis, got shape {shape}")


def _finite_scalar(value: Any, name: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {out}")
    return out


def _triple(values: Sequence[float], name: str, positive: bool = False) -> tuple[float, float, float]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be three real numbers, got {values!r}") from None
    if len(out) != 3 or not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be three finite numbers, got {values!r}")
    if positive and min(out) <= 0:
        raise ValueError(f"{name} must be positive, got {values!r}")
    return out


def _exclusive_cumsum(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(len(counts), np.int64)
    np.cumsum(counts[:-1], out=out[1:])
    return out


def _check_output_fits(n_verts: int, n_tris: int, device) -> None:
    _memory.check_fits(
        n_verts * _VERTEX_BYTES + n_tris * _TRIANGLE_BYTES,
        f"the marching cubes output ({n_verts:,} vertices, {n_tris:,} triangles)",
        device,
        "mesh a coarser grid or a smaller region",
    )


def _nonfinite_message(finite: np.ndarray) -> str:
    bad = np.argwhere(~finite)
    return (f"volume holds {len(bad):,} NaN or Inf values (first at index {tuple(int(i) for i in bad[0])}); "
            "marching cubes needs finite samples: replace them, e.g. with a large value outside the shape")


def _device_volume(volume) -> tuple:
    dtype = {"torch.float32": 0, "torch.float64": 1}[str(volume.dtype)]
    return volume.data_ptr(), dtype, tuple(volume.shape), tuple(volume.stride())


@functools.cache
def _tables_on(device: str):
    import torch

    return torch.from_numpy(_backend.cuda().mc_tables()).to(device)


def _device_tables(device) -> int:
    """Device address of the triangulation tables, copied once per device and kept."""
    return _tables_on(str(device)).data_ptr()


def _stream(volume) -> int:
    import torch

    return torch.cuda.current_stream(volume.device).cuda_stream
