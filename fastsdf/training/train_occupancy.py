"""Training an occupancy network (Mescheder et al. 2019) on a collection of shapes' samples.

ONet's point-cloud completion recipe: per shape and step, ``CLOUD_POINTS`` (300) of its surface
points with Gaussian noise as the encoder's input and 2,048 points of its padded box whose
occupancy is known; BCE with logits summed over a shape's points and averaged over the batch's
shapes (ONet's loss); Adam at 1e-4; 64 shapes per batch. The occupancy samples are the rows of
``fastsdf sample``'s DeepSDF files (the sign of the distance says inside: sdf <= 0), drawn uniformly
from all of a shape's rows: with ``--n-near 0`` the rows are uniform in [-1, 1]^3, ONet's
sampling; DeepSDF's default files give mostly points near the surface. The input points are the
files' ``surface_points`` (``fastsdf sample --n-surface N``). One preprocessing serves both models.

Under torchrun (``torch.distributed`` initialised) training runs on DistributedDataParallel in the
loop ``train_deepsdf`` shares (``fastsdf.training.epochs``), on one node or several, with its
agreement and checkpoint rules: each batch's shapes are dealt out, the conditional batch norms take
their statistics over every process's points (``ConditionalBatchNorm.sync``), and each process's
loss is scaled so that DDP's gradient average is the whole batch's: 1 and N processes train the
same model up to floating-point summation order.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fastsdf._validation import integer, real
from fastsdf.training.distributed import on_every_process
from fastsdf.training.distributed import world as process_world
from fastsdf.training.epochs import read_shapes, train_epochs, training_device
from fastsdf.training.occupancy import (CLOUD_NOISE, CLOUD_POINTS, OccupancyDraw, OccupancyNetwork, check_cloud_settings,
                                        check_surfaces)
from fastsdf.training.seeding import check_seed
from fastsdf.training.shape_collection import ShapeCollection
from fastsdf.training.shape_loader import DEFAULT_WORKERS

__all__ = ["train_occupancy"]

DEFAULT_EPOCHS = 1000
LEARNING_RATE = 1e-4
SHAPES_PER_BATCH = 64
SAMPLES_PER_SHAPE = 2048


class _Trainable(nn.Module):
    """Encoder and decoder as one module, so that DDP reduces both: clouds and points -> logits."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(self, clouds: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        code = self.encoder(clouds)
        return self.decoder(points, code[:, None, :])[..., 0]


def train_occupancy(data: ShapeCollection | str | os.PathLike | Sequence[str | os.PathLike],
                    encoder: nn.Module | None = None, decoder: nn.Module | None = None, *,
                    epochs: int = DEFAULT_EPOCHS, latent_size: int = 256, shapes_per_batch: int = SHAPES_PER_BATCH,
                    samples_per_shape: int = SAMPLES_PER_SHAPE, cloud_points: int = CLOUD_POINTS,
                    cloud_noise: float = CLOUD_NOISE, balanced: bool = False, learning_rate: float = LEARNING_RATE,
                    seed: int = 0, device: Any = None, checkpoint: str | os.PathLike | None = None,
                    checkpoint_every: float = 60.0, time_budget: float | None = None, progress: bool | None = None,
                    num_workers: int = DEFAULT_WORKERS) -> tuple[OccupancyNetwork, dict[str, Any]]:
    """Trains an occupancy network: a point-cloud encoder and an occupancy decoder.

    Args:
        data: a folder of DeepSDF ``.npz`` files with surface points (``fastsdf sample --n-surface``)
            or a list of them, read from disk as batches draw them, or a ``ShapeSamples``.
        encoder: default ``PointNetEncoder(latent_size)`` (ONet's ResNet-PointNet, 5 blocks of 512).
        decoder: default ``OccupancyDecoder(latent_size)`` (conditional batch norm, 5 blocks of 256).
            Both trained in place.
        epochs: passes over all shapes.
        shapes_per_batch, samples_per_shape: a batch's shapes (ONet's 64) and occupancy points per
            shape (ONet's 2,048). Under DDP a batch's shapes are dealt out to the processes.
        cloud_points, cloud_noise: the input cloud: points per shape (ONet's 300) and the std of
            the noise added to them (ONet's 0.005 in its unit cube: 0.01 in this frame).
        balanced: draw the occupancy points half inside, half outside (DeepSDF's draw) rather than
            uniformly from all rows (ONet's).
        learning_rate: Adam's rate (ONet's 1e-4), constant.
        seed: an integer in [0, 2^63): the networks' initialisation (when built here), batches and
            clouds: the same seed gives the same run.
        checkpoint, checkpoint_every: a file saved every so many seconds (at an epoch's end) and at
            the end; when it exists, training resumes from it (the same settings required). Only
            the first process reads and writes it; under DDP it sends the state to the others.
        time_budget: stop at the end of the first epoch after this many seconds of training (the
            checkpoint, if any, then lets a later call go on).
        progress: a tqdm bar over epochs (default: when stderr is a terminal; first process only).
        num_workers: DataLoader worker processes drawing the batches; the result does not depend on it.

    Returns:
        The ``OccupancyNetwork`` (eval mode) and the history: per epoch ``epoch``, ``seconds``,
        ``loss`` (mean BCE per occupancy point), ``accuracy`` (of the occupancy signs);
        ``training_seconds``, ``epochs``, ``settings``.

    Raises:
        ValueError: bad arguments or samples (shapes without surface points); under DDP, processes
            that see different shapes or were given different settings, or a checkpoint the first
            process cannot use. Reading the samples or the checkpoint, where it fails on one
            process, fails on every one (RuntimeError on the others, naming it).
    """
    shapes = read_shapes(data)
    epochs, shapes_per_batch = integer(epochs, "epochs", 1), integer(shapes_per_batch, "shapes_per_batch", 1)
    samples_per_shape = integer(samples_per_shape, "samples_per_shape", 2)
    cloud_points, cloud_noise = check_cloud_settings(cloud_points, cloud_noise)
    learning_rate = real(learning_rate, "learning_rate", 0, low_open=True)
    on_every_process(lambda: check_surfaces(shapes), "checking the samples")  # so that all stop, or none
    device = training_device(device)

    seed = check_seed(seed, allow_none=False)
    torch.manual_seed(seed)
    from fastsdf.nn import OccupancyDecoder, PointNetEncoder

    encoder = encoder if encoder is not None else PointNetEncoder(latent_size=integer(latent_size, "latent_size", 1))
    decoder = decoder if decoder is not None else OccupancyDecoder(latent_size=encoder.latent_size)
    settings = {"epochs": epochs, "shapes_per_batch": shapes_per_batch, "samples_per_shape": samples_per_shape,
                "input_points": cloud_points, "input_noise": cloud_noise, "balanced": bool(balanced),
                "learning_rate": learning_rate, "seed": seed, "shapes": shapes.names}
    OccupancyNetwork(encoder, decoder)  # checks that the two fit together
    trainable = _Trainable(encoder, decoder).to(device)
    optimiser = torch.optim.Adam(trainable.parameters(), lr=learning_rate)

    def step(engine: nn.Module, batch: tuple[torch.Tensor, ...], scale: float) -> tuple[torch.Tensor, list[float]]:
        clouds, points, inside = batch
        logits = engine(clouds, points)
        # Logits are negative inside: BCE of -logit against "inside" (losses.occupancy_bce).
        errors = F.binary_cross_entropy_with_logits(-logits, inside, reduction="none")
        right = ((logits.detach() <= 0) == (inside > 0.5)).sum().item()
        # ONet's loss: each shape's sum over its points, averaged over the batch's shapes.
        return errors.sum() * scale, [errors.detach().sum().item(), right, errors.numel()]

    def summary(totals: torch.Tensor, epoch: int) -> tuple[float, float]:
        # totals: BCE sum, right signs, points
        return totals[0].item() / totals[2].item(), totals[1].item() / totals[2].item()

    draw = OccupancyDraw(shapes, samples_per_shape, cloud_points, cloud_noise, seed, bool(balanced))
    with _synced_batch_norms(decoder, process_world()[0] > 1):
        history = train_epochs(shapes, trainable, optimiser, settings, label="fastsdf train-occupancy",
                               columns=("loss", "accuracy"), step=step, summary=summary, draw=draw,
                               agree={"latent_size": encoder.latent_size}, device=device, checkpoint=checkpoint,
                               checkpoint_every=checkpoint_every, time_budget=time_budget, progress=progress,
                               num_workers=num_workers)
    model = OccupancyNetwork(encoder, decoder, history["settings"], history)
    return model, history


@contextlib.contextmanager
def _synced_batch_norms(decoder: nn.Module, sync: bool) -> Iterator[None]:
    """The decoder's conditional batch norms take their statistics over every process while it lasts."""
    norms = [m for m in decoder.modules() if hasattr(m, "sync")]
    for norm in norms:
        norm.sync = sync
    try:
        yield
    finally:
        for norm in norms:
            norm.sync = False

