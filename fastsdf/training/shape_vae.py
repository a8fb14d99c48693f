"""A trained point-cloud VAE of shapes (``ShapeVAE``, DiffusionSDF's first stage, Chou et al. 2023): a
PointNet encoder from a shape's point cloud to a diagonal Gaussian over latents, and an SDF decoder
conditioned on a latent (concatenated to the point, as DeepSDF's). ``fastsdf.train_shape_vae``
trains one; saved and loaded as one file.

The encoder is a ``PointNetEncoder`` with ``2 * latent_size`` outputs: the mean, then the
log-variance (its last linear layer is the head that gives both). Training decodes a sample of
the Gaussian (``reparameterise``); once trained, a shape's latent is the mean. The model keeps the
training shapes' latents (``codes``: each one's mean from ``input_points`` of its surface points)
as an ``AutoDecoder`` keeps its codes, so that latent diffusion (``fastsdf.train_diffusion``)
learns either the same way, and ``partial_conditions`` encodes what one side of each training
shape shows, the condition of generation from partial scans.
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import torch
from torch import nn

from fastsdf._validation import integer, real
from fastsdf.geometry.normalization import NormalizationTransform
from fastsdf.training.autodecoder import LatentShape, shape_index
from fastsdf.training.fitted import FittedSDF
from fastsdf.training.occupancy import input_cloud, partial_cloud
from fastsdf.training.saved import field, latent_table_from_state, network_from_state, network_state, write_state
from fastsdf.training.seeding import check_seed, torch_generator
from fastsdf.training.shape_collection import ShapeCollection, shape_generator
from fastsdf.training.shapes import load_shapes

__all__ = ["ShapeVAE", "cloud_latents", "decoder_latent_size", "reparameterise", "shape_vae_encoder"]

FORMAT = "fastsdf.shape_vae"
_LATENT_STREAM = 2  # shape_generator's streams: 1 draws training clouds (OccupancyDraw), 2 the clouds of latents


def reparameterise(mean: torch.Tensor, log_var: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """A sample of N(mean, exp(log_var)) from standard normal ``noise``: differentiable in both."""
    return mean + torch.exp(0.5 * log_var) * noise


def shape_vae_encoder(latent_size: int, hidden_features: int = 128, blocks: int = 5,
                      prior_std: float = 1.0) -> nn.Module:
    """A ``PointNetEncoder`` giving the mean and log-variance of ``latent_size`` values (the default
    width, 128, is DiffusionSDF's PointNet's), its head's log-variance half starting at the prior's,
    log(prior_std^2), whatever the cloud: with the usual initialisation every latent would start
    with a spread near 1 (four times DiffusionSDF's prior std), which drowns what the means say,
    and the first few hundred steps would go into shrinking it."""
    from fastsdf.nn import PointNetEncoder

    encoder = PointNetEncoder(2 * integer(latent_size, "latent_size", 1), hidden_features, blocks)
    with torch.no_grad():
        encoder.fc_c.weight[latent_size:].zero_()
        encoder.fc_c.bias[latent_size:].fill_(2 * math.log(real(prior_std, "prior_std", 0, low_open=True)))
    return encoder


def decoder_latent_size(decoder: nn.Module) -> int | None:
    """The length of the latent a decoder takes (``latent_size`` or ``latent_features``), None if none."""
    return getattr(decoder, "latent_size", getattr(decoder, "latent_features", None)) or None


class ShapeVAE(nn.Module):
    """A point-cloud encoder to latent Gaussians and an SDF decoder of latents, with the latents of
    the shapes it was trained on.

    Args:
        encoder: ``PointNetEncoder`` (or a module (..., N, 3) -> (..., 2 * latent_size) with
            ``latent_size``, its outputs the mean then the log-variance; to be saved, one of
            ``fastsdf.nn.NETWORKS``).
        decoder: ``decoder(points, latent)`` -> (..., 1) signed distances: ``DeepSDFDecoder``, or
            a ``SirenMLP`` or ``ReluMLP`` with ``latent_features``.
        codes: (shapes, latent_size) the training shapes' latents (None: no shapes).
        names, transforms: one per code: the shapes' names and normalisations (None where unknown).
        settings, history: what training used and recorded (``input_points``: the cloud size
            ``encode`` subsamples to by default).

    The model is in eval mode until set otherwise.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, codes: torch.Tensor | None = None,
                 names: Sequence[str] = (), transforms: Sequence[NormalizationTransform | None] | None = None,
                 settings: dict[str, Any] | None = None, history: dict[str, Any] | None = None):
        super().__init__()
        latent_size = decoder_latent_size(decoder)
        if latent_size is None:
            raise ValueError("the decoder has no latent input (DeepSDFDecoder(latent_size=k) or "
                             "SirenMLP(latent_features=k))")
        if getattr(encoder, "latent_size", None) != 2 * latent_size:
            raise ValueError(f"the encoder must give a mean and a log-variance of the decoder's {latent_size} "
                             f"values ({2 * latent_size} outputs), it gives {getattr(encoder, 'latent_size', None)}")
        codes = torch.zeros(0, latent_size) if codes is None else codes.detach()
        if codes.ndim != 2 or codes.shape != (len(names), latent_size):
            raise ValueError(f"codes must be (len(names), {latent_size}) = ({len(names)}, {latent_size}), got "
                             f"{tuple(codes.shape)}")
        self.encoder, self.decoder = encoder, decoder
        self.register_buffer("codes", codes.clone())
        self.names = list(names)
        self.transforms = list(transforms) if transforms is not None else [None] * len(self.names)
        if len(self.transforms) != len(self.names):
            raise ValueError(f"{len(self.transforms)} transforms for {len(self.names)} shapes")
        self.settings = dict(settings or {})
        self.history = history or {}
        self.eval()

    @property
    def latent_size(self) -> int:
        return self.codes.shape[1]

    def distribution(self, points: Any, count: int | None = None,
                     seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log-variance), each (latent_size,), of the latent of a point cloud (N, 3) in the
        normalised frame (NumPy or a tensor). ``count``: encode that many of the points, drawn at
        random with ``seed`` (default: the training clouds' size, ``settings["input_points"]``,
        where known, else all of them; 0: all)."""
        count = self.settings.get("input_points") if count is None else (integer(count, "count", 0) or None)
        cloud = input_cloud(points, count, seed)
        param = next(self.encoder.parameters())
        with torch.no_grad():
            mean, log_var = self.encoder(cloud.to(param.device, param.dtype)).reshape(2, -1)
        return mean, log_var

    def encode(self, points: Any, count: int | None = None, seed: int | None = None,
               sample: bool = False) -> torch.Tensor:
        """The latent (latent_size,) of a point cloud: the mean of its Gaussian or, with ``sample``,
        a draw from it (seeded by ``seed``; None: fresh). ``count`` and ``seed`` as ``distribution``."""
        mean, log_var = self.distribution(points, count, seed)
        if not sample:
            return mean
        generator = torch_generator(seed)
        noise = torch.randn(mean.shape, generator=generator).to(mean.device, mean.dtype)
        return reparameterise(mean, log_var, noise)

    def shape(self, code: str | int | torch.Tensor, transform: NormalizationTransform | None = None) -> FittedSDF:
        """A latent as a shape (``.sdf(points)``, ``extract_mesh``): a training shape by name or
        index (in its mesh's coordinates where its samples recorded the normalisation), or any
        latent (in the normalised frame, unless ``transform`` is given)."""
        if isinstance(code, (str, int)):
            index = shape_index(self.names, code)
            code, transform = self.codes[index], transform or self.transforms[index]
        code = torch.as_tensor(code, dtype=self.codes.dtype, device=self.codes.device).reshape(-1)
        if len(code) != self.latent_size or not bool(torch.isfinite(code).all()):
            raise ValueError(f"a latent must be {self.latent_size} finite values, got {len(code)}")
        identity = NormalizationTransform.identity(getattr(self.decoder, "in_features", 3))
        return FittedSDF(LatentShape(self.decoder, code), transform or identity)

    def partial_conditions(self, shapes: ShapeCollection | str | os.PathLike | Sequence[str | os.PathLike],
                           seed: int = 0) -> torch.Tensor:
        """(shapes, latent_size): for each training shape, the latent of its surface points on the
        side facing a random direction (``partial_cloud``), what one scan of it shows: the
        conditions ``train_diffusion`` trains on for generation from partial clouds. ``shapes``:
        the samples this model was trained on (the same names, in order; a ``ShapeSamples``, or
        the files, as ``load_shapes`` reads them); ``seed``: the directions and subsampling."""
        if not isinstance(shapes, ShapeCollection):
            shapes = load_shapes(shapes)
        if list(shapes.names) != self.names:
            raise ValueError(f"the samples' shapes ({len(shapes)}: {list(shapes.names)[:3]}...) are not the ones this "
                             f"model was trained on ({len(self.names)}: {self.names[:3]}...)")
        return cloud_latents(self, shapes, self.settings.get("input_points"), check_seed(seed, allow_none=False),
                             partial=True)

    def save(self, path: str | os.PathLike) -> Any:
        """Writes the networks, latents, names, transforms, settings and history to ``path`` (a file,
        or a folder that gets ``model.pt``), atomically; ``fastsdf.load_model`` reads it."""
        return write_state(path, FORMAT, self.state())

    def state(self) -> dict[str, Any]:
        """The fields ``save`` writes (and ``from_state`` reads): what a model holding this one saves of it."""
        return {"encoder": network_state(self.encoder), "decoder": network_state(self.decoder),
                "codes": self.codes.detach().cpu(), "names": self.names,
                "transforms": [t.to_dict() if t is not None else None for t in self.transforms],
                "settings": self.settings, "history": self.history}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "ShapeVAE":
        """The model ``save`` wrote, from its dict; ValueError saying which field is wrong otherwise."""
        codes, names, transforms = latent_table_from_state(state)
        settings, history = field(state, "settings", dict, "a dict"), field(state, "history", dict, "a dict")
        encoder = network_from_state(field(state, "encoder", dict, "a dict"))
        decoder = network_from_state(field(state, "decoder", dict, "a dict"))
        return cls(encoder, decoder, codes, names, transforms, settings, history)


def cloud_latents(model: ShapeVAE, shapes: ShapeCollection, count: int | None, seed: int,
                  partial: bool = False) -> torch.Tensor:
    """(shapes, latent_size) the latent means of ``count`` surface points of each shape (all of them:
    None), drawn by ``shape_generator(seed, 0, shape, 2)`` (the same on every process); with
    ``partial``, of the points facing a direction drawn first from the same generator."""
    latents = []
    for index in range(len(shapes)):
        generator = shape_generator(seed, 0, index, _LATENT_STREAM)
        surface = shapes.surface_rows(index, torch.arange(shapes.surface_size(index)))
        if partial:
            direction = torch.randn(3, generator=generator, dtype=torch.float64)
            surface = torch.from_numpy(partial_cloud(surface, direction.numpy()))
        if count is not None:
            surface = surface[torch.randint(0, len(surface), (count,), generator=generator)]
        latents.append(model.encode(surface, count=0))
    return torch.stack(latents).cpu() if latents else torch.zeros(0, model.latent_size)
