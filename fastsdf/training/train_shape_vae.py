"""Training a point-cloud VAE of shapes (``fastsdf.training.shape_vae.ShapeVAE``), DiffusionSDF's first
stage (Chou et al. 2023): a PointNet encoder gives each shape's latent Gaussian from its surface
points, a latent is drawn from it (reparameterised) and an SDF decoder conditioned on that latent
is fitted to the shape's samples, jointly.

Per shape and step: ``cloud_points`` of its surface points (``fastsdf sample --n-surface``) as the
encoder's input, plus Gaussian noise of ``cloud_noise`` if asked; ``samples_per_shape`` rows of its
SDF samples, half inside and half outside (DeepSDF's draw); one standard normal draw for the
reparameterisation. All three come from ``shape_generator``'s streams, so they depend on the seed,
epoch and shape alone, never on the process. The loss of a shape is DeepSDF's clamped L1 averaged
over its samples plus ``kl_weight`` times its latent's KL to N(0, prior_std^2 I) averaged over the
latent's dimensions (DiffusionSDF's: ``kld_weight`` 1e-5, ``latent_std`` 0.25, the KL's mean over
dimensions); a batch's loss is the mean over its shapes. Adam at a constant rate.

Training runs in the epoch loop ``train_deepsdf`` and ``train_occupancy`` share
(``fastsdf.training.epochs``): checkpoints, resuming, and DistributedDataParallel under torchrun,
1 and N processes training the same model up to floating-point summation order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from fastsdf._validation import integer, real
from fastsdf.training.distributed import on_every_process
from fastsdf.training.epochs import read_shapes, train_epochs, training_device
from fastsdf.training.losses import clamped_l1, gaussian_kl
from fastsdf.training.occupancy import OccupancyDraw, check_cloud_settings, check_surfaces
from fastsdf.training.seeding import check_seed
from fastsdf.training.shape_collection import ShapeCollection, shape_generator
from fastsdf.training.shape_loader import DEFAULT_WORKERS
from fastsdf.training.shape_vae import ShapeVAE, cloud_latents, decoder_latent_size, reparameterise, shape_vae_encoder

__all__ = ["train_shape_vae"]

DEFAULT_EPOCHS = 1000
LEARNING_RATE = 1e-4  # DiffusionSDF's sdf_lr
KL_WEIGHT = 1e-5  # DiffusionSDF's kld_weight, on the KL's mean over the latent's dimensions
PRIOR_STD = 0.25  # DiffusionSDF's latent_std: the prior is N(0, 0.25^2 I)
SHAPES_PER_BATCH = 16
SAMPLES_PER_SHAPE = 4096
CLOUD_POINTS = 1024  # DiffusionSDF's PCsize
CLOUD_NOISE = 0.0
_NOISE_STREAM = 3  # shape_generator's stream of the reparameterisation's noise


class _Trainable(nn.Module):
    """Encoder and decoder as one module, so that DDP reduces both: (clouds, points, noise) ->
    (distances (S, P), mean (S, k), log-variance (S, k))."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(self, clouds: torch.Tensor, points: torch.Tensor,
                noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, log_var = self.encoder(clouds).chunk(2, dim=-1)
        latent = reparameterise(mean, log_var, noise)
        return self.decoder(points, latent[:, None, :])[..., 0], mean, log_var


@dataclass(frozen=True)
class _VaeDraw:
    """``OccupancyDraw``'s batch with the rows' distances, plus (S, latent_size) standard normal
    noise from each shape's own stream (picklable, for DataLoader workers)."""

    clouds: OccupancyDraw
    latent_size: int

    def __call__(self, indices: Sequence[int], epoch: int) -> tuple[torch.Tensor, ...]:
        noise = [torch.randn(self.latent_size, generator=shape_generator(self.clouds.seed, epoch, int(i), _NOISE_STREAM))
                 for i in indices]
        return (*self.clouds(indices, epoch), torch.stack(noise) if noise else torch.zeros(0, self.latent_size))


def train_shape_vae(data: ShapeCollection | str | os.PathLike | Sequence[str | os.PathLike],
                    encoder: nn.Module | None = None, decoder: nn.Module | None = None, *,
                    epochs: int = DEFAULT_EPOCHS, latent_size: int = 256, shapes_per_batch: int = SHAPES_PER_BATCH,
                    samples_per_shape: int = SAMPLES_PER_SHAPE, cloud_points: int = CLOUD_POINTS,
                    cloud_noise: float = CLOUD_NOISE, kl_weight: float = KL_WEIGHT, prior_std: float = PRIOR_STD,
                    learning_rate: float = LEARNING_RATE, seed: int = 0, device: Any = None,
                    checkpoint: str | os.PathLike | None = None, checkpoint_every: float = 60.0,
                    time_budget: float | None = None, progress: bool | None = None,
                    num_workers: int = DEFAULT_WORKERS) -> tuple[ShapeVAE, dict[str, Any]]:
    """Trains a point-cloud VAE of shapes: an encoder to latent Gaussians and an SDF decoder of latents.

    Args:
        data: a folder of DeepSDF ``.npz`` files with surface points (``fastsdf sample
            --n-surface N``) or a list of them, read from disk as batches draw them, or a
            ``ShapeSamples`` (3D, with surface points).
        encoder: a ``PointNetEncoder`` with ``2 * latent_size`` outputs (mean and log-variance);
            default ``shape_vae_encoder(latent_size, prior_std=prior_std)`` (DiffusionSDF's
            PointNet width, 128, the log-variances starting at the prior's).
        decoder: ``decoder(points, latent)`` -> (..., 1) taking ``latent_size`` values (its
            ``latent_size`` or ``latent_features``); default ``DeepSDFDecoder(latent_size)``. Both
            trained in place; their latent sizes must agree.
        epochs: passes over all shapes.
        shapes_per_batch, samples_per_shape: a batch's shapes and SDF samples per shape (half
            inside). Under DDP a batch's shapes are dealt out to the processes.
        cloud_points, cloud_noise: the encoder's input: surface points per shape (DiffusionSDF's
            1,024) and the std of the Gaussian noise added to them (default none).
        kl_weight, prior_std: the weight of the KL term (averaged over the latent's dimensions)
            and the prior's std (DiffusionSDF's 1e-5 and 0.25).
        learning_rate: Adam's rate, constant (DiffusionSDF's 1e-4).
        seed: an integer in [0, 2^63): the networks' initialisation (when built here), batches,
            clouds and the reparameterisation's noise: the same seed gives the same run.
        checkpoint, checkpoint_every: a file saved every so many seconds (at an epoch's end) and at
            the end; when it exists, training resumes from it (the same settings required). Only
            the first process reads and writes it; under DDP it sends the state to the others.
        time_budget: stop at the end of the first epoch after this many seconds of training.
        progress: a tqdm bar over epochs (default: when stderr is a terminal; first process only).
        num_workers: DataLoader worker processes drawing the batches; the result does not depend on it.

    Returns:
        The ``ShapeVAE`` (eval mode; its ``codes`` the training shapes' latent means, each from
        ``cloud_points`` of its surface points without noise) and the history: per epoch
        ``epoch``, ``seconds``, ``loss`` (mean clamped L1 per sample), ``kl`` (mean KL per latent
        dimension); ``training_seconds``, ``epochs``, ``settings``.

    Raises:
        ValueError: bad arguments or samples (shapes without surface points, 2D shapes), networks
            that do not fit together; under DDP, processes that see different shapes or were given
            different settings, or a checkpoint the first process cannot use.
    """
    shapes = read_shapes(data)
    epochs, shapes_per_batch = integer(epochs, "epochs", 1), integer(shapes_per_batch, "shapes_per_batch", 1)
    samples_per_shape = integer(samples_per_shape, "samples_per_shape", 1)
    cloud_points, cloud_noise = check_cloud_settings(cloud_points, cloud_noise)
    kl_weight = real(kl_weight, "kl_weight", 0)
    prior_std = real(prior_std, "prior_std", 0, low_open=True)
    learning_rate = real(learning_rate, "learning_rate", 0, low_open=True)
    if shapes.dim != 3:
        raise ValueError(f"a shape VAE encodes 3D point clouds, the shapes are {shapes.dim}D")
    on_every_process(lambda: check_surfaces(shapes), "checking the samples")  # so that all stop, or none
    device = training_device(device)

    seed = check_seed(seed, allow_none=False)
    torch.manual_seed(seed)
    from fastsdf.nn import DeepSDFDecoder

    if decoder is None:
        latent_size = integer(latent_size, "latent_size", 1)
        decoder = DeepSDFDecoder(latent_size=latent_size)
    latent_size = decoder_latent_size(decoder)
    if encoder is None and latent_size is not None:
        encoder = shape_vae_encoder(latent_size, prior_std=prior_std)
    ShapeVAE(encoder, decoder)  # checks that the two fit together
    settings = {"epochs": epochs, "shapes_per_batch": shapes_per_batch, "samples_per_shape": samples_per_shape,
                "input_points": cloud_points, "input_noise": cloud_noise, "kl_weight": kl_weight,
                "prior_std": prior_std, "learning_rate": learning_rate, "seed": seed, "shapes": shapes.names}
    trainable = _Trainable(encoder, decoder).to(device)
    optimiser = torch.optim.Adam(trainable.parameters(), lr=learning_rate)

    def step(engine: nn.Module, batch: tuple[torch.Tensor, ...], scale: float) -> tuple[torch.Tensor, list[float]]:
        clouds, points, sdf, noise = batch
        predicted, mean, log_var = engine(clouds, points, noise)
        errors = clamped_l1(predicted, sdf, reduction="none")
        kl = gaussian_kl(mean, log_var, prior_std).mean(dim=-1)
        loss = (errors.mean(dim=-1) + kl_weight * kl).sum() * scale
        return loss, [errors.detach().sum().item(), kl.detach().sum().item(), errors.numel(), len(kl)]

    def summary(totals: torch.Tensor, epoch: int) -> tuple[float, float]:
        # totals: clamped L1 sum, KL sum (per dimension, over shapes), samples, shapes
        return totals[0].item() / totals[2].item(), totals[1].item() / totals[3].item()

    draw = _VaeDraw(OccupancyDraw(shapes, samples_per_shape, cloud_points, cloud_noise, seed, balanced=True,
                                  distances=True), latent_size)
    history = train_epochs(shapes, trainable, optimiser, settings, label="fastsdf train-shape-vae",
                           columns=("loss", "kl"), step=step, summary=summary, draw=draw,
                           agree={"latent_size": latent_size}, device=device, checkpoint=checkpoint,
                           checkpoint_every=checkpoint_every, time_budget=time_budget, progress=progress,
                           num_workers=num_workers)
    model = ShapeVAE(encoder, decoder, settings=history["settings"], history=history)
    codes = cloud_latents(model, shapes, cloud_points, seed)
    model = ShapeVAE(encoder, decoder, codes, shapes.names, [shapes.transform(i) for i in range(len(shapes))],
                     history["settings"], history)
    return model, history

