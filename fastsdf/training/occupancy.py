"""The trained occupancy network (``OccupancyNetwork``): a point-cloud encoder and an occupancy decoder
(``fastsdf.nn.occupancy``), saved and loaded as one file; and the batches it trains on
(``OccupancyDraw``).

Frame and units: everything is in the normalised frame of the shapes' samples (``fastsdf sample``'s:
DeepSDF's unit sphere of radius 1/1.03, or the cube with ``--normalize cube``), whose padded box is
[-1, 1]^3. Occupancy Networks work in a unit cube (the shape's longest side 1, padded by 0.1 to
[-0.55, 0.55]^3): lengths here are about twice theirs, so ONet's input noise of 0.005 is 0.01 here
(``CLOUD_NOISE``).

A point cloud in, a shape out: ``OccupancyNetwork.shape(points)`` encodes the points (all of a
shape's surface, or the part seen from one side: ``partial_cloud``) and returns the occupancy field
as a ``FittedSDF`` of kind ``"occupancy"`` (``.sdf(points)`` gives logits, negative inside; it meshes
with ``extract_mesh(..., level=0)``, ``method="mise"`` for ONet's hierarchical extraction, and
``mesh``, which does that).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from fastsdf._validation import integer, real
from fastsdf.geometry.normalization import NormalizationTransform
from fastsdf.training.autodecoder import LatentShape
from fastsdf.training.fitted import FittedSDF
from fastsdf.training.saved import field, network_from_state, network_state, write_state
from fastsdf.training.shape_collection import ShapeCollection, draw_rows, shape_generator

__all__ = ["CLOUD_NOISE", "CLOUD_POINTS", "OccupancyDraw", "OccupancyNetwork", "check_cloud_settings", "check_surfaces",
           "input_cloud", "partial_cloud"]

FORMAT = "fastsdf.occupancy"
CLOUD_POINTS = 300  # ONet's point-cloud completion: 300 input points per shape
CLOUD_NOISE = 0.01  # its Gaussian noise, 0.005 in its unit cube: 0.01 in the normalised frame here
_CLOUD_STREAM = 1  # the stream of shape_generator that draws the input points


class OccupancyNetwork(nn.Module):
    """An encoder from point clouds to codes and a decoder from (point, code) to a logit.

    Args:
        encoder: ``PointNetEncoder`` (or any module (..., N, 3) -> (..., latent_size) with
            ``latent_size``; to be saved, one of ``fastsdf.nn.NETWORKS``).
        decoder: ``OccupancyDecoder`` (``decoder(points, latent)`` -> (..., 1) logits, negative
            inside) taking the encoder's codes.
        settings: what training used (``input_points``, ``input_noise`` and the rest; kept in the
            saved file). ``input_points`` is the cloud size ``shape`` subsamples to by default.

    The model is in eval mode (running batch statistics, so each point's value is its own) until
    set otherwise.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, settings: dict[str, Any] | None = None,
                 history: dict[str, Any] | None = None):
        super().__init__()
        sizes = getattr(encoder, "latent_size", None), getattr(decoder, "latent_size", None)
        if sizes[0] is None or sizes[0] != sizes[1]:
            raise ValueError(f"the encoder's codes ({sizes[0]}) must be the decoder's latent size ({sizes[1]})")
        self.encoder, self.decoder = encoder, decoder
        self.settings = dict(settings or {})
        self.history = history or {}
        self.eval()

    @property
    def latent_size(self) -> int:
        return int(self.encoder.latent_size)

    def encode(self, points: Any, count: int | None = None, seed: int | None = None) -> torch.Tensor:
        """The code (latent_size,) of a point cloud (N, 3) (NumPy or a tensor; normalised frame).

        ``count``: encode ``count`` of the points drawn at random (with replacement where there are
        fewer, as ONet's subsampling), seeded by ``seed``; default: all of them.
        """
        cloud = input_cloud(points, count, seed)
        param = next(self.parameters())
        with torch.no_grad():
            return self.encoder(cloud.to(param.device, param.dtype)).reshape(-1)

    def shape(self, points: Any, transform: NormalizationTransform | None = None, count: int | None = None,
              seed: int | None = None) -> FittedSDF:
        """The occupancy field of a point cloud (normalised frame): a ``FittedSDF`` of kind
        ``"occupancy"`` whose values are logits, negative inside; in the original coordinates of
        ``transform`` where given (the samples' ``transform``). ``count`` and ``seed`` as ``encode``."""
        code = self.encode(points, count, seed)
        return FittedSDF(LatentShape(self.decoder, code), transform or NormalizationTransform.identity(),
                         kind="occupancy")

    def save(self, path: str | os.PathLike) -> Any:
        """Writes the encoder, decoder, settings and history to ``path`` (a file, or a folder that
        gets ``model.pt``), atomically; ``fastsdf.load_model`` reads it."""
        return write_state(path, FORMAT, {"encoder": network_state(self.encoder), "decoder": network_state(self.decoder),
                                          "settings": self.settings, "history": self.history})

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "OccupancyNetwork":
        """The model ``save`` wrote, from its dict; ValueError saying which field is wrong otherwise."""
        settings = field(state, "settings", dict, "a dict")
        history = field(state, "history", dict, "a dict")
        encoder = network_from_state(field(state, "encoder", dict, "a dict"))
        decoder = network_from_state(field(state, "decoder", dict, "a dict"))
        return cls(encoder, decoder, settings, history)


def input_cloud(points: Any, count: int | None = None, seed: int | None = None) -> torch.Tensor:
    """``points`` as a float32 (N, 3) CPU tensor with N >= 1, all finite (ValueError otherwise): an
    encoder's input. ``count``: that many of the points drawn at random, with replacement (as ONet
    subsamples), seeded by ``seed`` (default 0)."""
    if isinstance(points, torch.Tensor):
        points = points.detach().cpu()
        points = points.float() if points.is_floating_point() else points
        points = points.numpy()
    array = np.asarray(points)
    if array.ndim != 2 or array.shape[1:] != (3,) or len(array) == 0 or array.dtype.kind not in "fiu":
        raise ValueError(f"points must be a non-empty real (N, 3) array, got {array.dtype} {array.shape}")
    cloud = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if not bool(torch.isfinite(cloud).all()):
        raise ValueError("points must be finite (NaN or Inf found)")
    if count is None:
        return cloud
    count = integer(count, "count", minimum=1)
    generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
    return cloud[torch.randint(0, len(cloud), (count,), generator=generator)]


def partial_cloud(points: Any, direction: Any = (0.0, 0.0, 1.0)) -> np.ndarray:
    """The points of a cloud (N, 3) on the side facing ``direction`` (p . d >= 0 in the normalised
    frame, the shape centred at the origin): what a sensor on that side sees, for shape completion
    (``fastsdf.partial_view``'s rule for samples)."""
    cloud = input_cloud(points).numpy()
    d = np.asarray(direction, dtype=np.float64).reshape(-1)
    if d.shape != (3,) or not np.isfinite(d).all() or not np.any(d):
        raise ValueError(f"direction must be a non-zero 3-vector, got {direction!r}")
    kept = cloud[cloud @ d >= 0]
    if not len(kept):
        raise ValueError(f"no points face the direction {tuple(d)}")
    return kept


@dataclass(frozen=True)
class OccupancyDraw:
    """Draws the training batch of some shapes in an epoch (picklable, for DataLoader workers):
    per shape, ``samples_per_shape`` rows (``draw_rows``, uniform over all rows unless
    ``balanced``) whose sign gives the occupancy (or, with ``distances``, their signed distances
    themselves: a shape VAE's batches), and ``cloud_points`` of its surface points (with
    replacement) plus N(0, ``cloud_noise``^2) on each coordinate, from ``shape_generator``'s own
    stream: the same (seed, epoch, shape) gives the same batch on any process.

    Returns (clouds (S, cloud_points, 3), points (S, samples_per_shape, 3), inside (S,
    samples_per_shape) float 1.0 / 0.0, or the distances), S the number of shapes.
    """

    shapes: ShapeCollection
    samples_per_shape: int
    cloud_points: int
    cloud_noise: float
    seed: int
    balanced: bool = False
    distances: bool = False

    def __call__(self, indices: Sequence[int], epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        clouds, points, inside = [], [], []
        for index in map(int, indices):
            rows = self.shapes.rows(index, draw_rows(self.shapes.sizes(index), self.samples_per_shape, self.seed,
                                                     epoch, index, self.balanced))
            points.append(rows[:, :3])
            inside.append(rows[:, 3] if self.distances else (rows[:, 3] <= 0).to(torch.float32))
            generator = shape_generator(self.seed, epoch, index, _CLOUD_STREAM)
            chosen = torch.randint(0, self.shapes.surface_size(index), (self.cloud_points,), generator=generator)
            noise = torch.randn((self.cloud_points, 3), generator=generator) * self.cloud_noise
            clouds.append(self.shapes.surface_rows(index, chosen) + noise)
        if not clouds:
            return (torch.zeros((0, self.cloud_points, 3)), torch.zeros((0, self.samples_per_shape, 3)),
                    torch.zeros((0, self.samples_per_shape)))
        return torch.stack(clouds), torch.stack(points), torch.stack(inside)


def check_cloud_settings(cloud_points: int, cloud_noise: float) -> tuple[int, float]:
    """The input-cloud settings checked: points >= 1, noise >= 0."""
    return integer(cloud_points, "cloud_points", minimum=1), real(cloud_noise, "cloud_noise", 0)


def check_surfaces(shapes: ShapeCollection) -> None:
    """ValueError unless every shape has surface points, an encoder's input."""
    bare = [name for i, name in enumerate(shapes.names) if shapes.surface_size(i) == 0]
    if bare:
        raise ValueError(f"{len(bare)} shapes have no surface points for the input clouds (e.g. {bare[0]!r}): "
                         "sample them with `fastsdf sample --n-surface N`")
