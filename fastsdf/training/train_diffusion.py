"""Training latent diffusion on the latents of a trained latent model (``train_diffusion``): a DeepSDF
auto-decoder's codes or a shape VAE's latent means (``fastsdf.training.latent_model``), one per
training shape; "codes" below.

The codes are normalised per dimension (their mean and standard deviation
are kept with the model), then a ``LatentDenoiser`` learns DDPM's simple loss on them: each step
draws a batch of codes with replacement, a timestep for each (uniform over 0 .. T-1) and standard
noise, and regresses the noise (or the code) from the noisy code. Adam, its rate decayed along a
half cosine to zero; an exponential moving average of the weights (``fastsdf.training.ema``), which
sampling uses. A share of the codes (``held_out``) is kept out of training: at every history entry
the network sampling uses is scored by its loss on them (the same timesteps and noise each time),
and the run returns the weights of the entry where that was lowest (``fastsdf.training.selection``:
past it the model starts to learn its training codes by heart, and its samples become copies of
them). With ``conditions`` (one vector per shape: a shape VAE's encodings of partial
clouds, ``ShapeVAE.partial_conditions``, say), a ``condition_dropout`` share of the rows is trained
unconditionally (the null embedding), for classifier-free guidance.

A step's draws come from a generator seeded by (seed, step) alone, so a resumed run draws what the
uninterrupted one would have. Under torchrun (``torch.distributed`` initialised) the processes
train one model with DistributedDataParallel, in the loop ``fit`` shares (``train_steps``): every
process draws the whole batch from that generator and trains on its own share of the rows (the
processes' shares are different rows, timesteps and noise), its loss scaled so that DDP's average
of the gradients is the whole batch's: 1 and N processes train the same model (up to
floating-point summation order and dropout, whose masks each process draws from a generator seeded
by (seed, step, rank)). The first process alone reads and writes the checkpoint; the processes
check that they hold the same codes and settings. The batches are small (a few hundred codes), so
drawing all of a batch on every process costs little.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fastsdf._validation import integer, one_of, real
from fastsdf.training.diffusion import PREDICTIONS, SCHEDULES, diffusion_loss
from fastsdf.training.distributed import data_parallel
from fastsdf.training.distributed import world as process_world
from fastsdf.training.ema import EMA_DECAY, moving_average
from fastsdf.training.epochs import training_device
from fastsdf.training.latent_diffusion import LatentDiffusion
from fastsdf.training.latent_model import LATENT_MODELS, LatentModel
from fastsdf.training.seeding import check_seed, mixed_seed
from fastsdf.training.selection import BestWeights
from fastsdf.training.steps import train_steps

__all__ = ["train_diffusion"]

DEFAULT_STEPS = 10_000
BATCH_SIZE = 256
LEARNING_RATE = 1e-3
TIMESTEPS = 1000
HELD_OUT = 0.1  # share of the codes kept out of training to choose the weights by
VALIDATION_ROWS = 1024  # (code, timestep, noise) rows the held-out loss is taken over, spread over the held-out codes
PREDICTION = "x0"  # DiffusionSDF's and DALL-E 2's prior's: noise prediction needs far more steps on few codes
CONDITION_DROPOUT = 0.1
HISTORY_POINTS = 200  # entries of the loss history, whatever the number of steps
MIN_STD = 1e-6  # a code dimension that varies less than this (relative to the largest) is not scaled up


def train_diffusion(model: LatentModel | str | os.PathLike, denoiser: nn.Module | None = None, *,
                    steps: int = DEFAULT_STEPS, batch_size: int = BATCH_SIZE, learning_rate: float = LEARNING_RATE,
                    schedule: str = "cosine", timesteps: int = TIMESTEPS, prediction: str = PREDICTION,
                    conditions: torch.Tensor | None = None, condition_dropout: float = CONDITION_DROPOUT,
                    ema_decay: float = EMA_DECAY, held_out: float = HELD_OUT, seed: int = 0, device: Any = None,
                    checkpoint: str | os.PathLike | None = None, checkpoint_every: float = 60.0,
                    progress: bool | None = None) -> tuple[LatentDiffusion, dict[str, Any]]:
    """Trains a denoiser on the latents of a trained latent model.

    Args:
        model: an ``AutoDecoder`` (``fastsdf.train_deepsdf``'s) or a ``ShapeVAE``
            (``fastsdf.train_shape_vae``'s), or the path of a saved one (the training command's
            output folder or its ``model.pt``). At least two shapes.
        denoiser: a ``fastsdf.nn.LatentDenoiser`` of the codes' length (with ``condition_size``
            matching ``conditions``); default ``LatentDenoiser(latent_size)``. Trained in place.
        steps, batch_size, learning_rate: Adam steps, codes per step (drawn with replacement; under
            torchrun, the processes' together), and the initial rate (decayed along a half cosine
            to 0 at the last step).
        schedule, timesteps: ``"cosine"`` (Nichol & Dhariwal) or ``"linear"`` (DDPM) noise, T steps.
        prediction: the denoiser's target, ``"x0"`` (the code) or ``"epsilon"`` (the noise).
        conditions: (shapes, k) one vector per shape to condition on, or None; for generation from
            point clouds, a shape VAE's ``partial_conditions(samples)`` (k = its latent size).
        condition_dropout: with conditions, the share of rows trained without them (the null
            embedding), which classifier-free guidance needs.
        ema_decay: the decay of the moving average of the weights, in [0, 1) (DDPM's 0.9999, with
            ``fastsdf.training.ema``'s warm-up), which the model samples with; 0: none, sampling
            uses the last step's weights.
        held_out: the share of the codes (rounded down; drawn by ``seed``) kept out of training to
            choose the weights by: the network sampling uses (the moving average, or the denoiser)
            gets the weights of the history entry where its loss on those codes was lowest. 0 (or
            fewer than 1 / held_out codes): every code is trained on and the last weights kept.
        seed: an integer in [0, 2^63): the denoiser (when built here), the held-out codes, batches,
            timesteps and noise.
        checkpoint: a file to save to every ``checkpoint_every`` seconds and at the end; when it
            exists, training resumes from it (the same settings required; a file written before
            checkpoints kept the moving average resumes with ``ema_decay=0`` only). Under
            torchrun, the first process's alone.
        progress: a tqdm bar over steps (default: when stderr is a terminal; first process only).

    Returns:
        The ``LatentDiffusion`` (holding the latent model and, with ``ema_decay``, the averaged
        denoiser as ``ema``) and the history: ``step``, ``seconds``,
        ``loss`` (mean over the steps since the previous entry), ``learning_rate``, with held-out
        codes ``validation_loss``, at most ``HISTORY_POINTS`` entries; ``training_seconds``,
        ``steps``, ``settings``, with held-out codes ``held_out_shapes`` (their names) and
        ``best_step`` (the entry whose weights were kept).

    Raises:
        ValueError: bad arguments; under torchrun, processes that hold other codes or were given
            other settings, a ``batch_size`` smaller than the number of processes, or a checkpoint
            the first process cannot use.
    """
    latent_model = _latent_model(model)
    steps, batch_size = integer(steps, "steps", 1), integer(batch_size, "batch_size", 1)
    learning_rate = real(learning_rate, "learning_rate", 0, low_open=True)
    schedule, prediction = one_of(schedule, "schedule", SCHEDULES), one_of(prediction, "prediction", PREDICTIONS)
    timesteps = integer(timesteps, "timesteps", 2)
    condition_dropout = real(condition_dropout, "condition_dropout", 0, 1)
    ema_decay = real(ema_decay, "ema_decay", 0, 1, high_open=True)
    held_out = real(held_out, "held_out", 0, 1, high_open=True)
    seed = check_seed(seed, allow_none=False)
    checkpoint_every = real(checkpoint_every, "checkpoint_every", 0)
    device = training_device(device)
    world, rank = process_world()
    if batch_size < world:
        raise ValueError(f"batch_size ({batch_size}) must be at least the number of processes ({world}): each trains "
                         f"on its share of every batch")

    codes = latent_model.codes.detach().to(torch.float32).cpu()
    conditions = _conditions(conditions, len(codes))
    digest = _digest(codes, conditions)
    order = torch.randperm(len(codes), generator=torch.Generator().manual_seed(mixed_seed(seed, -1)))
    validation, trained_on = order[:int(held_out * len(codes))], order[int(held_out * len(codes)):].sort().values
    if len(trained_on) < 2:
        raise ValueError(f"diffusion needs the latents of at least 2 shapes, the model has {len(codes)}"
                         + (f" ({len(validation)} held out)" if len(validation) else ""))
    mean, std = codes[trained_on].mean(0), codes[trained_on].std(0, unbiased=False)
    if float(std.max()) == 0:
        raise ValueError("the model's latents are all the same: there is no distribution to learn")
    std = torch.where(std > MIN_STD * std.max(), std, torch.ones_like(std))
    torch.manual_seed(seed)
    if denoiser is None:
        from fastsdf.nn import LatentDenoiser

        denoiser = LatentDenoiser(latent_model.latent_size,
                                  condition_size=0 if conditions is None else conditions.shape[1])
    if getattr(denoiser, "latent_size", None) != latent_model.latent_size:
        raise ValueError(f"the denoiser takes latents of {getattr(denoiser, 'latent_size', None)} values, the codes "
                         f"have {latent_model.latent_size}")
    if getattr(denoiser, "condition_size", 0) != (0 if conditions is None else conditions.shape[1]):
        raise ValueError(f"the denoiser takes conditions of {getattr(denoiser, 'condition_size', 0)} values, got "
                         f"{'none' if conditions is None else conditions.shape[1]}")
    normalised = (codes - mean) / std
    held, normalised = normalised[validation], normalised[trained_on]
    held_conditions = None if conditions is None else conditions[validation]
    if conditions is not None:
        conditions = conditions[trained_on]
    denoiser.to(device)
    engine = data_parallel(denoiser, device)
    average = moving_average(denoiser, ema_decay) if ema_decay > 0 else None  # of the weights DDP gave everyone
    result = LatentDiffusion(denoiser, mean, std, schedule, timesteps, prediction, latent_model,
                             float(normalised.abs().max()), ema=None if average is None else average.module).to(device)
    data = normalised.to(device)
    if conditions is not None:
        conditions = conditions.to(device)

    optimiser = torch.optim.Adam(denoiser.parameters(), lr=learning_rate)
    settings = {"steps": steps, "batch_size": batch_size, "learning_rate": learning_rate, "schedule": schedule,
                "timesteps": timesteps, "prediction": prediction, "condition_dropout": condition_dropout,
                "condition_size": 0 if conditions is None else conditions.shape[1], "ema_decay": ema_decay,
                "held_out": held_out, "seed": seed, "shapes": latent_model.names, "latents": digest}
    generator = torch.Generator()
    share = slice(batch_size * rank // world, batch_size * (rank + 1) // world)  # this process's rows of a batch

    def step(done: int) -> torch.Tensor:
        generator.manual_seed(mixed_seed(seed, done))
        rows = torch.randint(len(data), (batch_size,), generator=generator)[share]
        t = torch.randint(timesteps, (batch_size,), generator=generator)[share]
        noise = torch.randn(batch_size, latent_model.latent_size, generator=generator)[share]
        drop = (torch.rand(batch_size, generator=generator) < condition_dropout)[share] if conditions is not None \
            else None
        torch.manual_seed(mixed_seed(seed, done, 1 + rank))  # this process's dropout masks
        rows, t, noise = rows.to(device), t.to(device), noise.to(device)
        loss = diffusion_loss(engine, result.schedule, data[rows], t, noise, prediction,
                              None if conditions is None else conditions[rows],
                              None if drop is None else drop.to(device))
        return loss * (len(rows) * world / batch_size)  # the processes' mean: the batch's mean

    sampler = denoiser if average is None else average.module  # the network ``sample`` uses
    best = None if not len(held) else BestWeights(sampler, _held_out_loss(
        sampler, result.schedule, prediction, held.to(device), None if held_conditions is None else
        held_conditions.to(device), mixed_seed(seed, -2), world))
    history = train_steps(denoiser, optimiser, None, settings, step=step, steps=steps, time_budget=None,
                          rate=lambda done, _: learning_rate * 0.5 * (1 + math.cos(math.pi * done / steps)),
                          record_every=max(1, math.ceil(steps / HISTORY_POINTS)), label="fastsdf train-diffusion",
                          checkpoint=checkpoint, checkpoint_every=checkpoint_every, progress=progress,
                          average=average, best=best, parallel=True)
    if best is not None:
        sampler.load_state_dict(best.module.state_dict())
        history.update(held_out_shapes=[latent_model.names[i] for i in validation.tolist()])
    history.update(settings={k: v for k, v in settings.items() if k not in ("shapes", "latents")})
    result.history = history
    return result, history


def _held_out_loss(network: nn.Module, schedule: Any, prediction: str, codes: torch.Tensor,
                   conditions: torch.Tensor | None, seed: int, world: int) -> Callable[[], float]:
    """The loss of ``network`` on the held-out ``codes`` (normalised), over ``VALIDATION_ROWS`` rows
    of them with timesteps and noise drawn once (so that entries differ by the weights alone),
    conditioned where the codes have conditions; the processes' mean under torchrun."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.arange(len(codes)).repeat_interleave(max(1, VALIDATION_ROWS // len(codes)))
    t = torch.randint(schedule.timesteps, (len(rows),), generator=generator).to(codes.device)
    noise = torch.randn(len(rows), codes.shape[1], generator=generator).to(codes.device)
    rows = rows.to(codes.device)

    def score() -> float:
        was_training = network.training
        network.eval()
        try:
            with torch.no_grad():
                loss = diffusion_loss(network, schedule, codes[rows], t, noise, prediction,
                                      None if conditions is None else conditions[rows])
        finally:
            network.train(was_training)
        if world > 1:  # the same weights everywhere, but a GPU's sums may differ in the last bit
            torch.distributed.all_reduce(loss)
            loss = loss / world
        return loss.item()

    return score


def _digest(codes: torch.Tensor, conditions: torch.Tensor | None) -> str:
    """A digest of the codes and conditions (float32, on the CPU): every process must train on the
    same ones, and a resumed run on the ones its checkpoint was trained on."""
    digest = hashlib.sha256(codes.numpy().tobytes())
    if conditions is not None:
        digest.update(conditions.numpy().tobytes())
    return digest.hexdigest()[:16]


def _latent_model(model: Any) -> LatentModel:
    """``model`` itself if it is one of ``LATENT_MODELS``, or the one saved at a path."""
    kinds = tuple(LATENT_MODELS.values())
    if isinstance(model, kinds):
        return model
    if isinstance(model, (str, os.PathLike)):
        from fastsdf.training.loading import load_model

        loaded = load_model(model)
        if isinstance(loaded, kinds):
            return loaded
        raise ValueError(f"{model} holds no latent model: a DeepSDF auto-decoder (fastsdf train-deepsdf's output) or "
                         "a shape VAE (fastsdf train-shape-vae's)")
    raise TypeError(f"model must be an AutoDecoder or a ShapeVAE, or the path of a saved one, got {type(model).__name__}")


def _conditions(conditions: Any, shapes: int) -> torch.Tensor | None:
    if conditions is None:
        return None
    conditions = torch.as_tensor(conditions).detach()
    if conditions.ndim != 2 or len(conditions) != shapes or not conditions.is_floating_point() or \
            not bool(torch.isfinite(conditions).all()):
        raise ValueError(f"conditions must be a finite floating ({shapes}, k) tensor, one row per shape, got "
                         f"{conditions.dtype} {tuple(conditions.shape)}")
    return conditions.to(torch.float32).cpu()
