"""Training points: a pool of points with their exact signed distances, drawn from in batches.

From a mesh (normalised first) the pool holds points near the surface with Gaussian noise at three
scales and points uniform in [-1, 1]^3, labelled by ``fastsdf.MeshSDF``, and, for SIREN's loss,
points on the surface with their normals. Drawing fresh batches from a large pool, rather than
from DeepSDF's 500k fixed samples, is what lets a network fit a shape closely in a minute; the mix
below was chosen by measurement (benchmarks/test_bench_fit.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fastsdf.geometry.mesh_io import mesh_arrays
from fastsdf.geometry.mesh_sdf import MeshSDF
from fastsdf.geometry.sampling import SdfSamples, sample_sdf

__all__ = ["NEAR_STDS", "POOL_NEAR", "POOL_UNIFORM", "PointPool"]

# Noise of the near-surface points, in normalised units (the unit sphere): equal shares of each.
# 0.007 resolves the surface, 0.07 covers the band a marching-cubes grid looks at.
NEAR_STDS = (0.007, 0.021, 0.07)
POOL_NEAR = 2_000_000
POOL_UNIFORM = 500_000


@dataclass
class PointPool:
    """Points (N, 3) with signed distances (N,) and optionally surface points with unit normals
    (S, 3), all float32 tensors in the normalised frame."""

    points: torch.Tensor
    sdf: torch.Tensor
    surface_points: torch.Tensor | None = None
    surface_normals: torch.Tensor | None = None

    @classmethod
    def from_mesh(cls, mesh: Any, near: int = POOL_NEAR, uniform: int = POOL_UNIFORM, surface: int = 0,
                  seed: Any = None, sign: str = "winding") -> "PointPool":
        """A pool from a normalised mesh (a Trimesh or a (vertices, faces) pair)."""
        vertices, faces = mesh_arrays(mesh)
        truth = MeshSDF(vertices, faces, sign=sign)
        rng = np.random.default_rng(seed)
        share = [near // len(NEAR_STDS) + (i < near % len(NEAR_STDS)) for i in range(len(NEAR_STDS))]
        parts = [sample_sdf((vertices, faces), n_uniform=0, n_near=n, near_std=std, seed=rng, sdf=truth)
                 for n, std in zip(share, NEAR_STDS) if n]
        if uniform:
            parts.append(sample_sdf((vertices, faces), n_uniform=uniform, n_near=0, seed=rng, sdf=truth))
        surface_points = surface_normals = None
        if surface:
            on = sample_sdf((vertices, faces), n_uniform=0, n_near=0, n_surface=surface, seed=rng)
            surface_points, surface_normals = on.surface_points, on.surface_normals
        points = np.concatenate([p.points for p in parts]) if parts else np.zeros((0, 3), np.float32)
        sdf = np.concatenate([p.sdf for p in parts]) if parts else np.zeros(0, np.float32)
        return cls.from_arrays(points, sdf, surface_points, surface_normals)

    @classmethod
    def from_samples(cls, samples: SdfSamples) -> "PointPool":
        """A pool from precomputed samples (e.g. a DeepSDF .npz read with ``fastsdf.load_npz``)."""
        return cls.from_arrays(samples.points, samples.sdf, samples.surface_points, samples.surface_normals)

    @classmethod
    def from_arrays(cls, points: np.ndarray, sdf: np.ndarray, surface_points: np.ndarray | None = None,
                    surface_normals: np.ndarray | None = None) -> "PointPool":
        def tensor(a: np.ndarray | None) -> torch.Tensor | None:
            return None if a is None else torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

        if len(points) == 0 and (surface_points is None or len(surface_points) == 0):
            raise ValueError("no training points")
        return cls(tensor(points), tensor(sdf).reshape(-1), tensor(surface_points), tensor(surface_normals))

    def to(self, device: Any) -> "PointPool":
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return PointPool(move(self.points), move(self.sdf), move(self.surface_points), move(self.surface_normals))

    def batch(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``size`` random points and their signed distances."""
        if len(self.points) == 0:
            raise ValueError("this pool has only surface points")
        index = torch.randint(0, len(self.points), (size,), generator=generator).to(self.points.device)
        return self.points[index], self.sdf[index]

    def surface_batch(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``size`` random surface points and their normals."""
        if self.surface_points is None or len(self.surface_points) == 0:
            raise ValueError("this pool has no surface points (SIREN's loss needs them: sample with n_surface > 0)")
        index = torch.randint(0, len(self.surface_points), (size,), generator=generator).to(self.points.device)
        return self.surface_points[index], self.surface_normals[index]
