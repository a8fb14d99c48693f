"""Meshes the mesh tests share (test_mesh_sdf.py, test_fit.py, test_sparse_extract.py)."""

from __future__ import annotations

import numpy as np
import trimesh


def normalise(verts: np.ndarray) -> np.ndarray:
    verts = np.asarray(verts, np.float64)
    verts = verts - (verts.min(axis=0) + verts.max(axis=0)) / 2
    return verts / (np.linalg.norm(verts, axis=1).max() * 1.03)


def bumpy_sphere(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A closed, outward-oriented icosphere (320 faces) with vertices moved radially by up to 3%:
    star-shaped, so never self-intersecting, with saddle and concave vertices."""
    sphere = trimesh.creation.icosphere(subdivisions=2)
    verts = np.asarray(sphere.vertices) * (1 + rng.uniform(-0.03, 0.03, (len(sphere.vertices), 1)))
    return normalise(verts), np.asarray(sphere.faces, np.int64)
