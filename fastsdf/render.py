"""Shaded pictures of meshes and of implicit surfaces as PNG, without a display or OpenGL.

``render_mesh``: triangles sampled densely enough that every covered pixel gets a sample, projected
orthographically, depth-tested per pixel and Lambert-shaded with their face normal (NumPy only).
``render_sdf``: sphere tracing of a signed distance function, shaded with its gradient as the
normal (the network's ``forward_with_gradient``, one pass per hit point).
``render_grid``: several meshes' ``render_mesh`` pictures side by side, in rows.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from fastsdf._arrays import to_numpy
from fastsdf._validation import integer, one_of, real
from fastsdf.geometry.grid import parse_bounds
from fastsdf.io import atomic_write

__all__ = ["render_grid", "render_mesh", "render_sdf"]

_BACKGROUND = np.array([1.0, 1.0, 1.0])
_COLOUR = np.array([0.38, 0.58, 0.85])
# At most this many surface samples are kept in memory at once.
_SAMPLES_PER_CHUNK = 1 << 22


def render_mesh(verts: Any, faces: Any, path: str | os.PathLike | None = None, size: int = 512,
                azimuth: float = 35.0, elevation: float = 25.0, up: str = "y") -> np.ndarray:
    """Renders the mesh seen from (azimuth, elevation) in degrees, fitted to a ``size`` square.
    ``up`` names the world axis drawn upwards: ``"y"`` (OBJ's and glTF's convention, the default),
    ``"z"`` or ``"x"``; the azimuth turns around it.

    Returns the (size, size, 3) float image in [0, 1] and writes it as PNG to ``path`` if given.
    """
    v = to_numpy(verts).astype(np.float64)
    f = to_numpy(faces).astype(np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"expected verts (V, 3) and faces (F, 3), got {v.shape} and {f.shape}")
    size = integer(size, "size", 16, 8192)
    image = np.tile(_BACKGROUND, (size, size, 1))
    if len(f):
        cam = _camera(azimuth, elevation, up)
        p = (v - (v.max(0) + v.min(0)) / 2) @ cam.T
        scale = 0.9 * size / max(np.ptp(p[:, :2], axis=0).max(), 1e-12)
        p = p * scale
        p[:, :2] += size / 2
        tri = p[f]
        normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-30)
        shade = _lambert(normal)
        edge = np.linalg.norm(tri[:, [1, 2, 0], :2] - tri[:, :, :2], axis=2).max(axis=1)
        steps = int(np.clip(np.ceil(np.percentile(edge, 95) * 1.5), 1, 64))
        depth = np.full(size * size, np.inf)
        value = np.zeros(size * size)
        bary = _barycentric_grid(steps)
        per_chunk = max(1, _SAMPLES_PER_CHUNK // len(bary))
        for s in range(0, len(f), per_chunk):
            pts = np.einsum("sk,tkd->tsd", bary, tri[s : s + per_chunk]).reshape(-1, 3)
            sh = np.repeat(shade[s : s + per_chunk], len(bary))
            _depth_test(pts, sh, size, depth, value)
        hit = np.isfinite(depth).reshape(size, size)
        image[hit] = value.reshape(size, size)[hit, None] * _COLOUR
        image = image[::-1]  # image rows grow downwards, y upwards
    _save_png(image, path)
    return image


def render_grid(meshes: Any, path: str | os.PathLike | None = None, size: int = 192, columns: int | None = None,
                **view: Any) -> np.ndarray:
    """``render_mesh`` of each ``(verts, faces)`` in ``meshes`` (``size`` pixels square, ``view``:
    its azimuth, elevation and up), in rows of ``columns`` (default: about a square's worth),
    left to right; an empty mesh leaves its tile blank. Returns the image and writes a PNG to
    ``path`` if given."""
    meshes = list(meshes)
    if not meshes:
        raise ValueError("meshes is empty: there is nothing to render")
    columns = integer(columns, "columns", 1) if columns is not None else math.ceil(math.sqrt(len(meshes)))
    columns = min(columns, len(meshes))
    size = integer(size, "size", 16, 8192)
    rows = math.ceil(len(meshes) / columns)
    image = np.tile(_BACKGROUND, (rows * size, columns * size, 1))
    for i, (verts, faces) in enumerate(meshes):
        row, column = divmod(i, columns)
        image[row * size:(row + 1) * size, column * size:(column + 1) * size] = render_mesh(verts, faces, size=size,
                                                                                          **view)
    _save_png(image, path)
    return image


def _save_png(image: np.ndarray, path: str | os.PathLike | None) -> None:
    if path is None:
        return
    import matplotlib.image

    with atomic_write(path) as out:
        matplotlib.image.imsave(out, np.clip(image, 0, 1), format="png")


def _lambert(normals: np.ndarray) -> np.ndarray:
    """Brightness (N,) of surfaces with unit normals (N, 3), lit from the viewer's upper right,
    either side alike."""
    light = np.array([0.3, 0.5, 1.0]) / np.linalg.norm([0.3, 0.5, 1.0])
    return 0.25 + 0.75 * np.abs(normals @ light)


def render_sdf(model: Any, path: str | os.PathLike | None = None, bounds: Any = ((-1, -1, -1), (1, 1, 1)),
               size: int = 512, azimuth: float = 35.0, elevation: float = 25.0, max_steps: int = 128,
               distance: bool = True, up: str = "y") -> np.ndarray:
    """Renders the zero level set of ``model`` inside ``bounds`` by sphere tracing, seen from
    (azimuth, elevation) in degrees with ``up`` upwards like ``render_mesh``, lit the same way, framed on the sphere inscribed in the
    bounds; returns the image and writes a PNG to ``path`` if given.

    ``model`` is a torch module with ``forward`` (points (N, 3) -> values (N,) or (N, 1), negative
    inside) and ``forward_with_gradient`` (values and gradients), such as a ``FittedSDF``. With
    ``distance`` False (occupancy logits rather than distances) rays advance by at most 1/256 of
    the box's diagonal and stop where the value changes sign.
    """
    import torch

    size, max_steps = integer(size, "size", 16, 8192), integer(max_steps, "max_steps", minimum=1)
    lo, hi = (np.asarray(b, np.float64) for b in parse_bounds(bounds))
    cam = _camera(azimuth, elevation, up)
    centre, radius = (lo + hi) / 2, float(np.linalg.norm(hi - lo)) / 2
    # The picture spans the sphere inscribed in the box (where a normalised shape lies), not the
    # box's corners.
    span = 1.05 * float((hi - lo).max()) / 2
    u = (np.arange(size) + 0.5) / size * 2 - 1
    grid_x, grid_y = np.meshgrid(u, -u)  # image rows run downwards
    origins = centre + span * (grid_x.reshape(-1, 1) * cam[0] + grid_y.reshape(-1, 1) * cam[1]) + radius * cam[2]
    direction = -cam[2]
    param = next(model.parameters())
    as_tensor = lambda a: torch.as_tensor(a, dtype=param.dtype, device=param.device)  # noqa: E731
    # Rays are traced only inside the box: a learned field is meaningless outside what it was
    # trained on, and can have stray zeros there.
    with np.errstate(divide="ignore", invalid="ignore"):
        near, far = (lo - origins) / direction, (hi - origins) / direction
    t = np.nanmax(np.minimum(near, far), axis=1).clip(min=0)
    t_exit = np.nanmin(np.maximum(near, far), axis=1)
    hit = np.zeros(len(origins), bool)
    active = np.nonzero(t < t_exit)[0]
    epsilon, longest = 1e-3 * radius, np.inf if distance else radius / 128
    with torch.no_grad():
        for _ in range(max_steps):
            if not len(active):
                break
            points = origins[active] + t[active, None] * direction
            value = model(as_tensor(points)).reshape(-1).double().cpu().numpy()
            done = np.abs(value) < epsilon if distance else value < 0
            hit[active[done]] = True
            keep = ~done
            t[active[keep]] += np.minimum(np.abs(value[keep]) * 0.9, longest)
            active = active[keep][t[active[keep]] < t_exit[active[keep]]]
        image = np.tile(_BACKGROUND, (size * size, 1))
        where = np.nonzero(hit)[0]
        for start in range(0, len(where), 1 << 16):
            rows = where[start:start + (1 << 16)]
            _, gradient = model.forward_with_gradient(as_tensor(origins[rows] + t[rows, None] * direction))
            normal = gradient.reshape(len(rows), 3).double().cpu().numpy()
            normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-30)
            image[rows] = _lambert(normal @ cam.T)[:, None] * _COLOUR  # lit in the camera's frame
    image = image.reshape(size, size, 3)
    _save_png(image, path)
    return image


# World coordinates in the order that makes the ``up`` axis the camera's z (a cyclic, hence
# rotation-preserving, permutation).
_UP_ORDER = {"z": (0, 1, 2), "y": (2, 0, 1), "x": (1, 2, 0)}


def _camera(azimuth_degrees: float, elevation_degrees: float, up: str) -> np.ndarray:
    """Rows, in world coordinates: screen x, screen y, towards the viewer."""
    one_of(up, "up", sorted(_UP_ORDER))
    azimuth = math.radians(real(azimuth_degrees, "azimuth"))
    elevation = math.radians(real(elevation_degrees, "elevation"))
    forward = np.array([math.cos(elevation) * math.sin(azimuth), -math.cos(elevation) * math.cos(azimuth),
                        math.sin(elevation)])
    right = np.cross([0.0, 0.0, 1.0], forward)
    right /= np.linalg.norm(right)
    z_up = np.stack([right, np.cross(forward, right), forward])
    cam = np.empty_like(z_up)
    cam[:, list(_UP_ORDER[up])] = z_up
    return cam


def _barycentric_grid(steps: int) -> np.ndarray:
    a, b = np.meshgrid(np.arange(steps + 1), np.arange(steps + 1), indexing="ij")
    keep = a + b <= steps
    a, b = a[keep] / steps, b[keep] / steps
    return np.stack([1 - a - b, a, b], axis=1)


def _depth_test(pts: np.ndarray, shade: np.ndarray, size: int, depth: np.ndarray, value: np.ndarray) -> None:
    x = np.floor(pts[:, 0]).astype(np.int64)
    y = np.floor(pts[:, 1]).astype(np.int64)
    inside = (x >= 0) & (x < size) & (y >= 0) & (y < size)
    pixel = (y * size + x)[inside]
    z = -pts[inside, 2]  # nearer to the viewer is smaller
    order = np.lexsort((z, pixel))
    pixel, z, sh = pixel[order], z[order], shade[inside][order]
    first = np.r_[True, pixel[1:] != pixel[:-1]]
    pixel, z, sh = pixel[first], z[first], sh[first]
    nearer = z < depth[pixel]
    depth[pixel[nearer]] = z[nearer]
    value[pixel[nearer]] = sh[nearer]
