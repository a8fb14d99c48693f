"""``marching_cubes``: an indexed, watertight iso-surface from a 3-D grid, on CPU or CUDA.

This module validates input, picks the backend from where the data lives, and allocates outputs;
the counting and filling happen in ``fastsdf._C`` (csrc/marching_cubes/*_cpu.cpp) or
``fastsdf._cuda`` (csrc/marching_cubes/*.cu). ``fastsdf.meshing.marching_cubes_reference`` is the
plain NumPy twin.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from fastsdf import _backend, _memory
from fastsdf._arrays import is_tensor
from fastsdf._validation import real, triple

__all__ = ["marching_cubes"]

# Bytes of output per vertex (3 float32), per vertex of the normals and values (4 float32) and per
# triangle (3 int64).
_VERTEX_BYTES = 12
_ATTRIBUTE_BYTES = 16
_TRIANGLE_BYTES = 24
# Host arrays of one entry per point layer that the count and fill passes make (counts, offsets and
# their temporaries), in bytes per layer.
_LAYER_BYTES = 96
# CUDA: bytes per segment of the count pass (three int32 counts) and of the fill pass's offsets and
# the temporaries that compute them (int64 copies, prefix sums).
_SEGMENT_COUNT_BYTES = 12
_SEGMENT_FILL_BYTES = 128
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
        MemoryError: the output, a converted copy of the volume or the kernels' working memory
            would not fit in the memory available, checked before allocating.
        BackendUnavailableError: the compiled module for the volume's device is not built.
    """
    level = real(level, "level")
    spacing = triple(spacing, "spacing", positive=True)
    origin = triple(origin, "origin")
    kernels, data, wrap = prepare_volume(volume)
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
    above_bits: np.ndarray | None = None  # the CPU backend's bit per point above the level, for its fill pass

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
    """fastsdf._C on NumPy volumes.

    ``cube_mask`` (bool or uint8, one less than the volume along every axis, any strides) meshes
    only the cubes where it is set. ``fill(..., attributes=True)`` also returns the per-vertex unit
    gradients (pointing towards values above the level) and scikit-image's values.
    """

    def check_working_memory(self, volume: np.ndarray) -> None:
        """MemoryError unless the scratch of every thread and the per-layer arrays fit."""
        _memory.check_fits(
            int(_backend.cpu().mc_scratch_bytes(volume.shape)) + _LAYER_BYTES * volume.shape[0],
            f"marching cubes over a volume of shape {volume.shape} (working memory of every thread)",
            None, "mesh a smaller volume, or set OMP_NUM_THREADS lower",
        )

    def count(self, volume: np.ndarray, level: float, cube_mask: np.ndarray | None = None) -> LayerCounts:
        self.check_working_memory(volume)
        above_bits = _above_bits(volume.shape)
        vertices, triangles, centres, finite = _backend.cpu().mc_count(volume, level, cube_mask, above_bits)
        if not finite:
            raise ValueError(nonfinite_message(volume))
        return LayerCounts(vertices, triangles, centres, above_bits=above_bits)

    def fill(self, volume, level, counts, *, vertex_base, layers, index_offset, origin, spacing,
             attributes=False, cube_mask=None):
        """Writes vertices of point layers [0, layers) and triangles of cube layers [0, layers)."""
        starts = counts.layer_starts(vertex_base)
        centre_offsets = starts[:-1] + counts.vertices[:-1]
        triangle_offsets = _exclusive_cumsum(counts.triangles)
        n_verts, n_tris = counts.sizes(layers)
        _check_output_fits(n_verts, n_tris, None, attributes)
        verts = np.empty((n_verts, 3), np.float32)
        faces = np.empty((n_tris, 3), np.int64)
        normals = np.empty((n_verts, 3), np.float32) if attributes else None
        values = np.empty(n_verts, np.float32) if attributes else None
        _backend.cpu().mc_fill(volume, level, starts, triangle_offsets, centre_offsets, (0, layers),
                               (0, layers), vertex_base, index_offset, origin, spacing, verts, faces,
                               normals, values, cube_mask, counts.above_bits)
        return (verts, faces, normals, values) if attributes else (verts, faces)


def _above_bits(shape: tuple[int, ...]) -> np.ndarray | None:
    """A bit per point for the count pass to record which samples lie above the level, so that the
    fill pass need not read the whole volume again; None (the fill pass compares the samples again)
    where it would take more than a quarter of the memory available, as a broadcast volume's would."""
    words = int(_backend.cpu().mc_above_words(shape))
    if 8 * words > _memory.available_bytes() // 4:
        return None
    return np.empty(words, np.uint64)


class CudaKernels:
    """fastsdf._cuda on CUDA tensors: count per segment, prefix sums with torch, then fill."""

    def check_working_memory(self, volume) -> None:
        """MemoryError unless the per-segment counts (device) and per-layer arrays (host) fit."""
        _memory.check_fits(_SEGMENT_COUNT_BYTES * _segments(volume),
                           f"marching cubes' counts over a volume of shape {tuple(volume.shape)}",
                           volume.device, "mesh a smaller volume")
        _memory.check_fits(_LAYER_BYTES * volume.shape[0], "marching cubes' per-layer counts", None,
                           "mesh a smaller volume")

    def count(self, volume, level: float, cube_mask=None) -> LayerCounts:
        import torch

        module = _backend.cuda()
        self.check_working_memory(volume)
        n_segments = _segments(volume)
        seg = torch.empty((3, n_segments), dtype=torch.int32, device=volume.device)
        nonfinite = torch.zeros(1, dtype=torch.int32, device=volume.device)
        module.mc_count(*_device_volume(volume), level, _device_tables(volume.device), seg.data_ptr(),
                        nonfinite.data_ptr(), *_backend.cuda_target(volume), *_device_mask(cube_mask))
        if nonfinite.item():
            raise ValueError(nonfinite_message(volume))
        per_layer = seg.view(3, volume.shape[0], -1).sum(dim=2, dtype=torch.int64).cpu().numpy()
        return LayerCounts(per_layer[0], per_layer[1][:-1], per_layer[2][:-1], device_counts=seg)

    def fill(self, volume, level, counts, *, vertex_base, layers, index_offset, origin, spacing,
             attributes=False, cube_mask=None):
        import torch

        _memory.check_fits(_SEGMENT_FILL_BYTES * counts.device_counts.shape[1],
                           f"marching cubes' vertex offsets over a volume of shape {tuple(volume.shape)}",
                           volume.device, "mesh a smaller volume")
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
        _check_output_fits(n_verts, n_tris, volume.device, attributes)
        verts = torch.empty((n_verts, 3), dtype=torch.float32, device=volume.device)
        faces = torch.empty((n_tris, 3), dtype=torch.int64, device=volume.device)
        normals = torch.empty((n_verts, 3), dtype=torch.float32, device=volume.device) if attributes else None
        values = torch.empty(n_verts, dtype=torch.float32, device=volume.device) if attributes else None
        _backend.cuda().mc_fill(*_device_volume(volume), level, _device_tables(volume.device),
                                counts.device_counts.data_ptr(), offsets.data_ptr(), (0, layers),
                                (0, layers), vertex_base, index_offset, origin, spacing, verts.data_ptr(),
                                n_verts, faces.data_ptr(), n_tris, *_backend.cuda_target(volume),
                                normals.data_ptr() if attributes else 0, values.data_ptr() if attributes else 0,
                                *_device_mask(cube_mask))
        return (verts, faces, normals, values) if attributes else (verts, faces)


def prepare_volume(volume: Any) -> tuple[CpuKernels | CudaKernels, Any, Callable[[Any], Any]]:
    """Validates ``volume``; returns the kernels for its device, the data they take, and a function
    that turns NumPy outputs back into the caller's kind of array."""
    data, wrap = real_samples(volume, 3, "volume")
    return (CudaKernels() if is_tensor(data) else CpuKernels()), data, wrap


def real_samples(samples: Any, ndim: int, name: str) -> tuple[Any, Callable[[Any], Any]]:
    """``samples`` checked (``ndim`` axes of at least 2 samples, a real dtype) and widened to
    float32 or float64 as ``marching_cubes`` documents: a CUDA tensor as such, anything else as an
    aligned, native-endian NumPy array; and a function that turns NumPy outputs back into the
    caller's kind of array (a CUDA tensor's outputs are already tensors)."""
    if is_tensor(samples):
        import torch

        tensor = samples.detach()
        _check_shape(tuple(tensor.shape), ndim, name)
        dtype = str(tensor.dtype).removeprefix("torch.")
        if tensor.is_complex() or dtype not in {"float32", "float64"} | _TO_FLOAT32 | _TO_FLOAT64:
            raise TypeError(f"{name} must be a real tensor, got dtype {tensor.dtype}")
        if dtype in _TO_FLOAT32 | _TO_FLOAT64:
            wide = torch.float32 if dtype in _TO_FLOAT32 else torch.float64
            _check_copy_fits(tensor.numel() * wide.itemsize, tuple(tensor.shape), tensor.device, name)
            tensor = tensor.to(wide)
        if tensor.device.type == "cuda":
            return tensor, lambda x: x
        if tensor.device.type != "cpu":
            raise ValueError(f"{name} on device {tensor.device} is not supported: use a CPU or CUDA tensor")
        return _native_array(tensor.numpy(), name), torch.from_numpy
    array = np.asarray(samples)
    _check_shape(array.shape, ndim, name)
    if array.dtype.kind not in "fiub" or array.dtype.name not in {"float32", "float64"} | _TO_FLOAT32 | _TO_FLOAT64:
        raise TypeError(f"{name} must be a real array, got dtype {array.dtype}")
    if array.dtype.name in _TO_FLOAT32 | _TO_FLOAT64:
        wide = np.dtype(np.float32 if array.dtype.name in _TO_FLOAT32 else np.float64)
        _check_copy_fits(array.size * wide.itemsize, array.shape, None, name)
        array = array.astype(wide)
    return _native_array(array, name), lambda x: x


def _native_array(array: np.ndarray, name: str) -> np.ndarray:
    """The kernels read native-endian, aligned data through any strides; anything else is copied
    into a fresh (hence aligned) array: ``np.ascontiguousarray`` would hand back a C-contiguous but
    misaligned array as it is."""
    if array.dtype.isnative and array.flags.aligned:
        return array
    _check_copy_fits(array.nbytes, array.shape, None, name)
    copy = np.empty(array.shape, array.dtype.newbyteorder("="))
    copy[...] = array
    return copy


def _check_copy_fits(nbytes: int, shape: tuple[int, ...], device, name: str) -> None:
    _memory.check_fits(nbytes, f"a converted copy of the {name} (shape {tuple(shape)})", device,
                       "pass float32 or float64 data, aligned and in native byte order, which is used in place")


def _check_shape(shape: tuple[int, ...], ndim: int, name: str) -> None:
    if len(shape) != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {shape}")
    if min(shape) < 2:
        raise ValueError(f"{name} needs at least 2 samples along every axis, got shape {shape}")


def _exclusive_cumsum(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(len(counts), np.int64)
    np.cumsum(counts[:-1], out=out[1:])
    return out


def _check_output_fits(n_verts: int, n_tris: int, device, attributes: bool = False) -> None:
    _memory.check_fits(
        n_verts * (_VERTEX_BYTES + (_ATTRIBUTE_BYTES if attributes else 0)) + n_tris * _TRIANGLE_BYTES,
        f"the marching cubes output ({n_verts:,} vertices, {n_tris:,} triangles)",
        device,
        "mesh a coarser grid or a smaller region",
    )


def nonfinite_message(volume: Any, name: str = "volume", op: str = "marching cubes") -> str:
    """Says how many samples are NaN or Inf and where the first is. Layer by layer: a whole-volume
    mask would cost a byte per sample, which a broadcast volume does not have."""
    total, first = 0, None
    for i in range(volume.shape[0]):
        bad = ~(volume[i].isfinite() if is_tensor(volume) else np.isfinite(volume[i]))
        n = int(bad.sum())
        if n and first is None:
            rest = bad.nonzero()[0].tolist() if is_tensor(bad) else [int(w[0]) for w in np.nonzero(bad)]
            first = (i, *rest)
        total += n
    return (f"{name} holds {total:,} NaN or Inf values (first at index {first}); "
            f"{op} needs finite samples: replace them, e.g. with a large value outside the shape")


def _segments(volume) -> int:
    return volume.shape[0] * volume.shape[1] * _backend.cuda().segments_per_row(volume.shape[2])


def _device_mask(cube_mask) -> tuple:
    """Address and element strides of a CUDA cube mask (bool or uint8), or none."""
    if cube_mask is None:
        return 0, (0, 0, 0)
    return cube_mask.data_ptr(), tuple(cube_mask.stride())


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
