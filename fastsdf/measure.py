"""scikit-image's ``measure.marching_cubes``, on fastsdf's kernels.

``from fastsdf.measure import marching_cubes`` stands in for ``from skimage.measure import
marching_cubes``: same signature, same return values (with the differences listed in its
docstring), and NumPy arrays or torch tensors (CPU or CUDA) in.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from fastsdf._arrays import is_tensor
from fastsdf._validation import integer, one_of, real, triple
from fastsdf.meshing.marching_cubes import nonfinite_message, prepare_volume

__all__ = ["marching_cubes"]

_METHODS = ("lewiner", "lorensen")
_DIRECTIONS = ("descent", "ascent")


def marching_cubes(
    volume: Any,
    level: float | None = None,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    gradient_direction: str = "descent",
    step_size: int = 1,
    allow_degenerate: bool = True,
    method: str = "lewiner",
    mask: Any = None,
) -> tuple[Any, Any, Any, Any]:
    """Iso-surface of a 3-D volume, called and answering as ``skimage.measure.marching_cubes``.

    Args:
        volume: 3-D NumPy array (or array-like) or torch tensor (CPU or CUDA), at least 2 samples
            along every axis; dtypes as ``fastsdf.marching_cubes`` takes them (float64 stays
            float64, where scikit-image rounds to float32). NaN or Inf raise ``ValueError``.
        level: the iso-value; None takes the middle of the volume's range. A level outside
            [min, max] raises ``ValueError``, as in scikit-image.
        spacing: grid step along each axis (three positive numbers).
        gradient_direction: ``'descent'`` (the object has the larger values) keeps fastsdf's
            winding, whose right-hand normals point towards values above the level;
            ``'ascent'`` reverses every triangle. Either way this is scikit-image's orientation.
        step_size: mesh every ``step_size``-th sample along each axis (a strided view of the
            volume, not a copy); vertices stay in the full volume's coordinates. A positive
            integer, or an integral float (2.0) as scikit-image takes: it truncates 2.5 to 2, here
            that raises ``ValueError``.
        allow_degenerate: False removes the zero-area triangles that samples lying exactly on the
            level create, welding the coinciding vertices of each such triangle into one.
        method: ``'lewiner'`` or ``'lorensen'``, accepted for compatibility: both give fastsdf's
            mesh, whose ambiguous faces are resolved by the asymptotic decider (closed and
            manifold, like Lewiner's), so ``'lorensen'`` does not reproduce the classic
            algorithm's holes.
        mask: bool (or uint8) array or tensor of the volume's shape, on its device. As in
            scikit-image a cube is meshed only where the mask is true at its corner of highest
            index (cube ``(i, j, k)`` reads ``mask[i + s, j + s, k + s]`` for ``step_size`` s),
            and only edges of meshed cubes get vertices, so the surface stops at the mask's border.

    Returns:
        ``(verts, faces, normals, values)``: float32 (V, 3) positions ``index * spacing``, int64
        (F, 3) vertex indices (scikit-image gives int32), float32 (V, 3) unit normals pointing
        towards lower values whatever ``gradient_direction`` (the volume's gradient in world
        units, interpolated between grid points, negated; zero where it vanishes), and float32
        (V,) values: for each vertex the largest spread (maximum minus minimum sample) of the
        meshed cubes around it, scikit-image's measure. Vertices on grid edges sit where
        scikit-image puts them, but in another order, and the faces differ as triangulations do;
        the rare cube whose surface is a tunnel gets a centre vertex at another place than
        Lewiner's. NumPy in gives NumPy out; a tensor gives tensors on its device.

    Raises:
        ValueError: bad shape, level, spacing, step_size, mask shape, gradient_direction or
            method; NaN or Inf in the volume.
        TypeError: a non-real volume, a mask that is not bool or uint8.
        RuntimeError: no surface (scikit-image's error too), also when ``step_size`` leaves fewer
            than 2 samples along an axis.
        MemoryError: the output or a needed copy would not fit, checked before allocating.
    """
    one_of(method, "method", _METHODS)
    one_of(gradient_direction, "gradient_direction", _DIRECTIONS)
    step = _step_size(step_size)
    spacing = triple(spacing, "spacing", positive=True)
    shape = _shape_of(volume)
    if len(shape) != 3 or min(shape) < 2:
        raise ValueError(f"volume must be 3-D with at least 2 samples along every axis, got shape {shape}")
    if not is_tensor(volume):
        volume = np.asarray(volume)
    stepped = volume[::step, ::step, ::step]
    if min(stepped.shape) < 2:
        raise RuntimeError(f"No surface found: step_size {step} leaves fewer than 2 samples along an axis "
                           f"of a volume of shape {shape}")
    kernels, data, wrap = prepare_volume(stepped)
    kernels.check_working_memory(data)  # before the level's pass over a volume too large to mesh
    level = _level(volume, data.dtype, level)
    cube_mask = _cube_mask(mask, shape, step, data)
    counts = kernels.count(data, level, cube_mask)
    verts, faces, normals, values = kernels.fill(
        data, level, counts, vertex_base=0, layers=data.shape[0], index_offset=(0, 0, 0),
        origin=(0.0, 0.0, 0.0), spacing=tuple(s * step for s in spacing), attributes=True, cube_mask=cube_mask)
    if len(faces) == 0:
        raise RuntimeError("No surface found at the given iso value.")
    normals *= -1  # the kernels' point up the gradient, scikit-image's down
    if gradient_direction == "ascent":
        faces[:, [0, 2]] = faces[:, [2, 0]]
    if not allow_degenerate:
        verts, faces, normals, values = _remove_degenerate(verts, faces, normals, values)
    return wrap(verts), wrap(faces), wrap(normals), wrap(values)


def _shape_of(volume: Any) -> tuple[int, ...]:
    return tuple(volume.shape) if is_tensor(volume) else np.shape(volume)


def _step_size(value: Any) -> int:
    """scikit-image takes ``int(step_size)`` of any number; as its drop-in, this takes a float too,
    but only an integral one (2.0): 1.5 raises rather than becoming 1."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    return integer(value, "step_size", minimum=1)


def _level(volume: Any, dtype: Any, level: float | None) -> float:
    """The level to mesh: by default the middle of the whole volume's range, computed in the
    kernels' dtype (float32 or float64) as scikit-image does in float32; else ``level``, which
    must lie in that range."""
    low, high = (float(volume.min()), float(volume.max()))
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(nonfinite_message(volume))
    if level is None:
        kind = np.float32 if str(dtype).endswith("float32") else np.float64
        return float((kind(low) + kind(high)) * kind(0.5))
    level = real(level, "level")
    if not low <= level <= high:
        raise ValueError(f"Surface level must be within volume data range: {level} is outside [{low}, {high}]")
    return level


def _cube_mask(mask: Any, shape: tuple[int, ...], step: int, data: Any) -> Any:
    """The kernels' cube mask, a view: cube (i, j, k) of the stepped volume is meshed where
    ``mask`` is true at its far corner."""
    if mask is None:
        return None
    if is_tensor(data) and data.device.type == "cuda":
        if not is_tensor(mask) or mask.device != data.device:
            raise ValueError(f"mask must be a tensor on the volume's device ({data.device})")
    elif is_tensor(mask):
        if mask.device.type != "cpu":
            raise ValueError(f"mask on {mask.device} but the volume is on the CPU")
        mask = mask.detach().numpy()
    else:
        mask = np.asarray(mask)
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"volume and mask must have the same shape, got {tuple(mask.shape)} and {tuple(shape)}")
    name = str(mask.dtype).removeprefix("torch.")
    if name not in ("bool", "uint8"):
        raise TypeError(f"mask must be bool or uint8, got dtype {mask.dtype}")
    cubes = mask[step::step, step::step, step::step]
    if is_tensor(cubes):
        import torch

        return cubes.view(torch.uint8)
    return cubes.view(np.uint8)


def _remove_degenerate(verts: Any, faces: Any, normals: Any, values: Any) -> tuple[Any, Any, Any, Any]:
    """Drops triangles with two corners at the same position, welds the vertices that coincide in
    them (to the lowest index at that position) and drops the vertices welded away."""
    import torch

    tensors = is_tensor(verts)
    v, f, n, val = (x if tensors else torch.from_numpy(x) for x in (verts, faces, normals, values))
    corners = v[f]
    pairs = [(a, b) for a, b in ((0, 1), (1, 2), (0, 2))]
    same = [(corners[:, a] == corners[:, b]).all(dim=1) for a, b in pairs]
    degenerate = same[0] | same[1] | same[2]
    if not bool(degenerate.any()):
        return verts, faces, normals, values
    welded = torch.cat([f[same_ab][:, [a, b]].reshape(-1) for (a, b), same_ab in zip(pairs, same)]).unique()
    _, group = torch.unique(v[welded], dim=0, return_inverse=True)
    lowest = torch.full((int(group.max()) + 1,), len(v), dtype=torch.int64, device=v.device)
    lowest = lowest.scatter_reduce(0, group, welded, reduce="amin")
    target = torch.arange(len(v), device=v.device)
    target[welded] = lowest[group]
    keep = target == torch.arange(len(v), device=v.device)
    new_index = torch.cumsum(keep, 0) - 1
    f = new_index[target[f[~degenerate]]]
    out = (v[keep], f, n[keep], val[keep])
    return out if tensors else tuple(x.numpy() for x in out)
