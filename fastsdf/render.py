"""Shaded pictures of meshes as PNG, with NumPy only (no display, no OpenGL).

Triangles are sampled densely enough that every covered pixel gets a sample, projected
orthographically, depth-tested per pixel and Lambert-shaded with their face normal.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from fastsdf.io import _to_numpy, atomic_write

__all__ = ["render_mesh"]

_BACKGROUND = np.array([1.0, 1.0, 1.0])
_COLOUR = np.array([0.38, 0.58, 0.85])
# At most this many surface samples are kept in memory at once.
_SAMPLES_PER_CHUNK = 1 << 22


def render_mesh(verts: Any, faces: Any, path: str | os.PathLike | None = None, size: int = 512,
                azimuth: float = 35.0, elevation: float = 25.0) -> np.ndarray:
    """Renders the mesh seen from (azimuth, elevation) in degrees, fitted to a ``size`` square.

    Returns the (size, size, 3) float image in [0, 1] and writes it as PNG to ``path`` if given.
    """
    v = _to_numpy(verts).astype(np.float64)
    f = _to_numpy(faces).astype(np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"expected verts (V, 3) and faces (F, 3), got {v.shape} and {f.shape}")
    if not 16 <= int(size) <= 8192:
        raise ValueError(f"size must be between 16 and 8192 pixels, got {size}")
    size = int(size)
    image = np.tile(_BACKGROUND, (size, size, 1))
    if len(f):
        cam = _camera(math.radians(azimuth), math.radians(elevation))
        p = (v - (v.max(0) + v.min(0)) / 2) @ cam.T
        scale = 0.9 * size / max(np.ptp(p[:, :2], axis=0).max(), 1e-12)
        p = p * scale
        p[:, :2] += size / 2
        tri = p[f]
        normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-30)
        light = np.array([0.3, 0.5, 1.0]) / np.linalg.norm([0.3, 0.5, 1.0])
        shade = 0.25 + 0.75 * np.abs(normal @ light)
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
    if path is not None:
        import matplotlib.image

        with atomic_write(path) as out:
            matplotlib.image.imsave(out, np.clip(image, 0, 1), format="png")
    return image


def _camera(azimuth: float, elevation: float) -> np.ndarray:
    """Rows: screen x, screen y, towards the viewer (z-up world)."""
    forward = np.array([math.cos(elevation) * math.sin(azimuth), -math.cos(elevation) * math.cos(azimuth),
                        math.sin(elevation)])
    right = np.cross([0.0, 0.0, 1.0], forward)
    right /= np.linalg.norm(right)
    up = np.cross(forward, right)
    return np.stack([right, up, forward])


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
