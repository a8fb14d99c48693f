"""fastsdf: kernel-accelerated signed distance functions.

The public API lives here and nothing else: see the README for a tour. The networks need torch and
are imported on first use, so that ``import fastsdf`` stays light.
"""

from typing import TYPE_CHECKING, Any

from fastsdf._backend import BackendUnavailableError
from fastsdf.geometry.analytic import (Box, Capsule, Circle, Difference, Intersection, Rectangle, SmoothUnion, Sphere,
                                      Torus, Union)
from fastsdf.geometry.mesh_sdf import MeshSDF
from fastsdf.geometry.polygon_sdf import PolygonSDF
from fastsdf.geometry.random_shapes import random_mesh, random_shape, write_random_shapes
from fastsdf.geometry.normalization import NormalizationTransform, normalize
from fastsdf.geometry.dataset_sampling import SampleReport, sample_meshes
from fastsdf.geometry.samples_npz import load_npz, save_npz
from fastsdf.geometry.sampling import SdfSamples, sample_sdf
from fastsdf.meshing.extract import extract_mesh
from fastsdf.meshing.marching_cubes import marching_cubes
from fastsdf.meshing.marching_squares import marching_squares
from fastsdf import measure

if TYPE_CHECKING:  # the names __getattr__ imports on first use, spelled out for type checkers and IDEs
    from fastsdf.nn import (DeepSDFDecoder, FourierFeatures, LatentDenoiser, OccupancyDecoder, PointNetEncoder, ReluMLP,
                            Siren, SirenMLP)
    from fastsdf.training.autodecoder import AutoDecoder
    from fastsdf.training.fit import fit
    from fastsdf.training.fitted import FittedSDF
    from fastsdf.training.latent_diffusion import LatentDiffusion
    from fastsdf.training.loading import load_model
    from fastsdf.training.occupancy import OccupancyNetwork, partial_cloud
    from fastsdf.training.reconstruct import partial_view, reconstruct
    from fastsdf.training.shape_vae import ShapeVAE
    from fastsdf.training.train_deepsdf import train_deepsdf
    from fastsdf.training.train_occupancy import train_occupancy
    from fastsdf.training.train_diffusion import train_diffusion
    from fastsdf.training.train_shape_vae import train_shape_vae

__version__ = "0.1.0"

# Names whose modules import torch, and the modules they come from (the TYPE_CHECKING imports above).
_LAZY = {"Siren": "fastsdf.nn", "SirenMLP": "fastsdf.nn", "DeepSDFDecoder": "fastsdf.nn", "ReluMLP": "fastsdf.nn",
         "FourierFeatures": "fastsdf.nn",
         "FittedSDF": "fastsdf.training.fitted", "load_model": "fastsdf.training.loading", "fit": "fastsdf.training.fit",
         "AutoDecoder": "fastsdf.training.autodecoder", "train_deepsdf": "fastsdf.training.train_deepsdf",
         "reconstruct": "fastsdf.training.reconstruct", "partial_view": "fastsdf.training.reconstruct",
         "OccupancyDecoder": "fastsdf.nn", "PointNetEncoder": "fastsdf.nn",
         "OccupancyNetwork": "fastsdf.training.occupancy", "partial_cloud": "fastsdf.training.occupancy",
         "train_occupancy": "fastsdf.training.train_occupancy",
         "LatentDenoiser": "fastsdf.nn", "LatentDiffusion": "fastsdf.training.latent_diffusion",
         "train_diffusion": "fastsdf.training.train_diffusion", "ShapeVAE": "fastsdf.training.shape_vae",
         "train_shape_vae": "fastsdf.training.train_shape_vae"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fastsdf' has no attribute {name!r}")

__all__ = [
    "AutoDecoder",
    "BackendUnavailableError",
    "Box",
    "Capsule",
    "Circle",
    "DeepSDFDecoder",
    "Difference",
    "FittedSDF",
    "FourierFeatures",
    "Intersection",
    "LatentDenoiser",
    "LatentDiffusion",
    "MeshSDF",
    "NormalizationTransform",
    "OccupancyDecoder",
    "OccupancyNetwork",
    "PolygonSDF",
    "Rectangle",
    "ReluMLP",
    "SampleReport",
    "SdfSamples",
    "ShapeVAE",
    "Siren",
    "SirenMLP",
    "SmoothUnion",
    "Sphere",
    "Torus",
    "Union",
    "extract_mesh",
    "fit",
    "load_model",
    "load_npz",
    "marching_cubes",
    "marching_squares",
    "measure",
    "normalize",
    "partial_cloud",
    "partial_view",
    "PointNetEncoder",
    "random_mesh",
    "random_shape",
    "reconstruct",
    "sample_meshes",
    "sample_sdf",
    "save_npz",
    "train_deepsdf",
    "train_diffusion",
    "train_occupancy",
    "train_shape_vae",
    "write_random_shapes",
]
