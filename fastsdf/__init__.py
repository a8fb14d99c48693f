"""fastsdf: kernel-accelerated signed distance functions.

The public API lives here and nothing else: see the README for a tour. The networks need torch and
are imported on first use, so that ``import fastsdf`` stays light.
"""

from typing import TYPE_CHECKING, Any

from fastsdf._backend import BackendUnavailableError
from fastsdf.geometry.analytic import Box, Difference, Intersection, Sphere, Torus, Union
from fastsdf.geometry.mesh_sdf import MeshSDF
from fastsdf.geometry.normalization import NormalizationTransform, normalize
from fastsdf.geometry.dataset_sampling import SampleReport, sample_meshes
from fastsdf.geometry.samples_npz import load_npz, save_npz
from fastsdf.geometry.sampling import SdfSamples, sample_sdf
from fastsdf.meshing.extract import extract_mesh
from fastsdf.meshing.marching_cubes import marching_cubes
from fastsdf import measure

if TYPE_CHECKING:  # the names __getattr__ imports on first use, spelled out for type checkers and IDEs
    from fastsdf.nn import DeepSDFDecoder, LatentDenoiser, Siren, SirenMLP
    from fastsdf.training.autodecoder import AutoDecoder
    from fastsdf.training.fit import fit
    from fastsdf.training.fitted import FittedSDF
    from fastsdf.training.latent_diffusion import LatentDiffusion
    from fastsdf.training.loading import load_model
    from fastsdf.training.reconstruct import partial_view, reconstruct
    from fastsdf.training.train_deepsdf import train_deepsdf
    from fastsdf.training.train_diffusion import train_diffusion

__version__ = "0.1.0"

# Names whose modules import torch, and the modules they come from (the TYPE_CHECKING imports above).
_LAZY = {"Siren": "fastsdf.nn", "SirenMLP": "fastsdf.nn", "DeepSDFDecoder": "fastsdf.nn",
         "FittedSDF": "fastsdf.training.fitted", "load_model": "fastsdf.training.loading", "fit": "fastsdf.training.fit",
         "AutoDecoder": "fastsdf.training.autodecoder", "train_deepsdf": "fastsdf.training.train_deepsdf",
         "reconstruct": "fastsdf.training.reconstruct", "partial_view": "fastsdf.training.reconstruct",
         "LatentDenoiser": "fastsdf.nn", "LatentDiffusion": "fastsdf.training.latent_diffusion",
         "train_diffusion": "fastsdf.training.train_diffusion"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fastsdf' has no attribute {name!r}")

__all__ = [
    "AutoDecoder",
    "BackendUnavailableError",
    "Box",
    "DeepSDFDecoder",
    "Difference",
    "FittedSDF",
    "Intersection",
    "LatentDenoiser",
    "LatentDiffusion",
    "MeshSDF",
    "NormalizationTransform",
    "SampleReport",
    "SdfSamples",
    "Siren",
    "SirenMLP",
    "Sphere",
    "Torus",
    "Union",
    "extract_mesh",
    "fit",
    "load_model",
    "load_npz",
    "marching_cubes",
    "measure",
    "normalize",
    "partial_view",
    "reconstruct",
    "sample_meshes",
    "sample_sdf",
    "save_npz",
    "train_deepsdf",
    "train_diffusion",
]
