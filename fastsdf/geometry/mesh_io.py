"""Reading triangle meshes (through trimesh) and checking (vertices, faces) pairs.

Every function that takes a mesh takes either a ``trimesh.Trimesh`` or a ``(vertices, faces)``
pair; ``mesh_arrays`` turns both into checked NumPy arrays. trimesh is imported only where a file
is read or a Trimesh is built, so pairs work without it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from fastsdf._arrays import to_numpy

__all__ = ["MESH_SUFFIXES", "load_mesh", "mesh_arrays"]

# File types the `fastsdf sample` command picks up in a folder (all read by trimesh).
MESH_SUFFIXES = (".obj", ".ply", ".stl", ".off", ".glb", ".gltf")


def load_mesh(path: str | os.PathLike, merge: bool = True) -> Any:
    """Reads a triangle mesh file into one ``trimesh.Trimesh``.

    Scenes (.glb, .gltf, multi-object files) are flattened into one mesh with their transforms
    applied. With ``merge``, vertices that share a position are merged even where their texture
    coordinates or normals differ (UV seams), so a closed model comes back closed, as the sign of
    a distance needs, and texture coordinates are dropped; without it the file's own vertex and
    face arrays are kept as they are.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file cannot be read, holds no triangles, or has NaN/Inf vertices.
    """
    import trimesh

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as exc:  # noqa: BLE001 - trimesh's parsers fail in many ways on a bad file
        raise ValueError(f"cannot read {path} as a mesh: {exc or type(exc).__name__}") from None
    if not isinstance(mesh, trimesh.Trimesh):
        raise ValueError(f"cannot read {path} as a triangle mesh (trimesh gave {type(mesh).__name__})")
    if len(mesh.faces) == 0:
        raise ValueError(f"{path} holds no triangles")
    if not np.isfinite(mesh.vertices).all():
        raise ValueError(f"{path} has NaN or Inf vertex coordinates")
    if merge:
        _merge_vertices(mesh)
    return mesh


def _merge_vertices(mesh: Any) -> None:
    """trimesh's ``merge_vertices`` (UV and normal seams too) in units where the largest |coordinate|
    is in [1, 2). trimesh merges positions that agree to 8 decimals, which overflows on coordinates
    near 1e200 and merges every vertex of a mesh a billionth across; relative to the mesh's own size
    neither happens. A power of two scales the vertices there and back exactly."""
    largest = float(np.abs(mesh.vertices).max()) if len(mesh.vertices) else 0.0
    exponent = math.frexp(largest)[1] - 1 if largest > 0 else 0
    mesh.vertices = np.ldexp(mesh.vertices, -exponent)
    mesh.merge_vertices(merge_tex=True, merge_norm=True)
    mesh.vertices = np.ldexp(mesh.vertices, exponent)


def mesh_arrays(mesh: Any, name: str = "mesh") -> tuple[np.ndarray, np.ndarray]:
    """``(vertices, faces)`` of a Trimesh or a ``(vertices, faces)`` pair, checked.

    Returns:
        float64 (V, 3) vertices and int64 (F, 3) faces (copies where a conversion was needed).

    Raises:
        ValueError: not a mesh, no triangles, faces that are not triangles or index missing
            vertices, NaN or Inf vertex coordinates.
    """
    if hasattr(mesh, "vertices") and hasattr(mesh, "faces"):
        vertices, faces = mesh.vertices, mesh.faces
    else:
        try:
            vertices, faces = mesh
        except (TypeError, ValueError):
            raise ValueError(
                f"{name} must be a trimesh.Trimesh or a (vertices, faces) pair, got {type(mesh).__name__}") from None
    vertices = to_numpy(vertices)
    faces = to_numpy(faces)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or vertices.dtype.kind not in "fiu":
        raise ValueError(f"{name} vertices must be a real (V, 3) array, got {vertices.dtype} {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3 or (faces.size and faces.dtype.kind not in "iu"):
        raise ValueError(f"{name} faces must be an integer (F, 3) array of triangles, got {faces.dtype} {faces.shape}")
    if len(faces) == 0:
        raise ValueError(f"{name} is empty: it has no triangles")
    faces = faces.astype(np.int64, copy=False)
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise ValueError(f"{name} faces index vertices that do not exist (have {len(vertices)} vertices)")
    vertices = vertices.astype(np.float64, copy=False)
    if not np.isfinite(vertices).all():
        raise ValueError(f"{name} has NaN or Inf vertex coordinates")
    return vertices, faces
