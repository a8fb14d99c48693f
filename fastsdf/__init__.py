"""fastsdf: kernel-accelerated signed distance functions.

The public API lives here and nothing else: see the README for a tour. The networks need torch and
are imported on first use, so that ``import fastsdf`` stays light.
"""

from typing import Any

from fastsdf._backend import BackendUnavailableError
from fastsdf.geometry.analytic import Box, Difference, Intersection, Sphere, Torus, Union
from fastsdf.geometry.mesh_sdf import MeshSDF
from fastsdf.geometry.sampling import (
    NormalizationTransform,
    SdfSamples,
    load_npz,
    normalize,
    sample_sdf,
    save_npz,
)
from fastsdf.meshing.extract import extract_mesh
from fastsdf.meshing.marching_cubes import marching_cubes

__version__ = "0.1.0"

_NETWORKS = {"Siren", "SirenMLP"}


def __getattr__(name: str) -> Any:
    if name in _NETWORKS:
        from fastsdf import nn

        return getattr(nn, name)
    raise AttributeError(f"module 'fastsdf' has no attribute {name!r}")

__all__ = [
    "BackendUnavailableError",
    "Box",
    "Difference",
    "Intersection",
    "MeshSDF",
    "NormalizationTransform",
    "SdfSamples",
    "Siren",
    "SirenMLP",
    "Sphere",
    "Torus",
    "Union",
    "extract_mesh",
    "load_npz",
    "marching_cubes",
    "normalize",
    "sample_sdf",
    "save_npz",
]
