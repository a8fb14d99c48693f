"""A trained latent diffusion model (``LatentDiffusion``): a denoiser over the latents of a latent
model (an auto-decoder's codes or a shape VAE's latents, ``fastsdf.training.latent_model``), the
latents' per-dimension statistics it was trained in, and the latent model that turns a generated
latent into a shape (and, a shape VAE, a point cloud into a condition). ``fastsdf.train_diffusion``
trains one; saved and loaded as one file.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from fastsdf._validation import integer, one_of, real
from fastsdf.training.diffusion import PREDICTIONS, SCHEDULES, NoiseSchedule, ddim_sample
from fastsdf.training.fitted import FittedSDF
from fastsdf.training.latent_model import LATENT_MODELS, LatentModel
from fastsdf.training.saved import describe, field, network_from_state, network_state, write_state
from fastsdf.training.seeding import torch_generator

__all__ = ["LatentDiffusion"]

FORMAT = "fastsdf.latent_diffusion"
SAMPLE_BATCH = 4096  # rows the denoiser sees at once while sampling


class LatentDiffusion(nn.Module):
    """A denoiser over normalised latent codes, with what it needs to generate shapes.

    Args:
        denoiser: a ``fastsdf.nn.LatentDenoiser`` trained on (code - mean) / std.
        mean, std: (latent_size,) per-dimension statistics of the training codes (std > 0).
        schedule, timesteps: the noise schedule (``"cosine"`` or ``"linear"``) and its length T.
        prediction: what the denoiser predicts, ``"epsilon"`` (the noise) or ``"x0"`` (the code).
        latent_model: the model whose latents these are (an ``AutoDecoder`` or a ``ShapeVAE``:
            decodes generated codes; a ``ShapeVAE`` also encodes conditions), or None.
        clip: the largest |value| of the normalised training codes: sampling clamps its estimates
            of the code to [-clip, clip] (``ddim_sample``'s ``clip``); None: no clamping.
        history: what training recorded.
        ema: the denoiser with the exponential moving average of the trained weights
            (``fastsdf.training.ema``), the same network as ``denoiser``, which ``sample`` uses by
            default; None: sampling uses ``denoiser``.
    """

    def __init__(self, denoiser: nn.Module, mean: torch.Tensor, std: torch.Tensor, schedule: str = "cosine",
                 timesteps: int = 1000, prediction: str = "x0", latent_model: LatentModel | None = None,
                 clip: float | None = None, history: dict[str, Any] | None = None, ema: nn.Module | None = None):
        super().__init__()
        latent_size = getattr(denoiser, "latent_size", None)
        mean, std = (torch.as_tensor(v, dtype=torch.float32).detach().reshape(-1) for v in (mean, std))
        if mean.shape != (latent_size,) or std.shape != (latent_size,):
            raise ValueError(f"mean and std must have the denoiser's {latent_size} values, got {len(mean)} and {len(std)}")
        if not bool(torch.isfinite(mean).all()) or not bool((torch.isfinite(std) & (std > 0)).all()):
            raise ValueError("mean must be finite and std finite and positive")
        if latent_model is not None and not isinstance(latent_model, tuple(LATENT_MODELS.values())):
            raise TypeError(f"latent_model must be an AutoDecoder or a ShapeVAE, got {type(latent_model).__name__}")
        if latent_model is not None and latent_model.latent_size != latent_size:
            raise ValueError(f"the latent model's codes have {latent_model.latent_size} values, the denoiser's "
                             f"{latent_size}")
        if ema is not None and (type(ema) is not type(denoiser) or _shapes(ema) != _shapes(denoiser)):
            raise ValueError(f"ema must be the denoiser's network, got a {type(ema).__name__} with other weights")
        self.denoiser = denoiser
        self.ema = ema
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())
        self.schedule_name = one_of(schedule, "schedule", SCHEDULES)
        self.schedule = NoiseSchedule.named(schedule, timesteps)
        self.prediction = one_of(prediction, "prediction", PREDICTIONS)
        self.latent_model = latent_model
        self.clip = None if clip is None else real(clip, "clip", 0, low_open=True)
        self.history = history or {}

    @property
    def latent_size(self) -> int:
        return len(self.mean)

    @property
    def condition_size(self) -> int:
        return getattr(self.denoiser, "condition_size", 0)

    @property
    def autodecoder(self) -> Any:
        """The latent model where it is an ``AutoDecoder`` (None otherwise)."""
        return self.latent_model if isinstance(self.latent_model, LATENT_MODELS["autodecoder"]) else None

    def encode_condition(self, points: Any, count: int | None = None, seed: int | None = None) -> torch.Tensor:
        """The condition (condition_size,) of a point cloud (N, 3) in the normalised frame, full or
        partial: its latent under the shape VAE's encoder (``ShapeVAE.encode``; ``count`` and
        ``seed`` as there), for a model trained on such conditions (``ShapeVAE.partial_conditions``)."""
        if not self.condition_size:
            raise ValueError("this model was trained without conditions: it cannot be conditioned on a point cloud")
        encode = getattr(self.latent_model, "encode", None)
        if encode is None:
            raise ValueError("this model's latent model has no point-cloud encoder (a shape VAE, fastsdf "
                             "train-shape-vae's output, has one)")
        if self.latent_model.latent_size != self.condition_size:
            raise ValueError(f"the denoiser takes conditions of {self.condition_size} values, the encoder gives "
                             f"{self.latent_model.latent_size}: it was trained on other conditions")
        return encode(points, count, seed).to(self.mean.device, self.mean.dtype)

    def normalise(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes in the denoiser's units: (codes - mean) / std."""
        return (codes - self.mean) / self.std

    def denormalise(self, latents: torch.Tensor) -> torch.Tensor:
        """The inverse of ``normalise``."""
        return latents * self.std + self.mean

    def sample(self, count: int, steps: int = 50, eta: float = 0.0, seed: int | None = None,
               condition: torch.Tensor | None = None, guidance: float = 1.0, clip: bool = True,
               ema: bool = True) -> torch.Tensor:
        """``count`` new codes (count, latent_size), in the auto-decoder's units, by DDIM.

        Args:
            steps: denoising steps, 1 .. T (T with eta = 1 is DDPM's ancestral sampling).
            eta: 0 deterministic (the same starting noise gives the same code), > 0 adds noise at
                every step.
            seed: the starting noise and the steps' noise (None: a fresh one each call); drawn on
                the CPU, so a seed gives the same codes on any device, up to its arithmetic.
            condition: (k,) for every code or (count, k) per code, for a denoiser trained with
                conditions; None samples unconditionally.
            guidance: classifier-free guidance scale with a condition (1: the conditional model).
            clip: clamp the estimates of the code to the training codes' range (``self.clip``).
            ema: denoise with the moving average of the weights (``self.ema``) where the model has
                one, rather than the last step's weights (``self.denoiser``).
        """
        count = integer(count, "count", 1)
        steps = integer(steps, "steps", 1, self.schedule.timesteps)
        eta, guidance = real(eta, "eta", 0), real(guidance, "guidance")
        if not isinstance(ema, bool):  # a truthy string or tensor would silently pick a network
            raise ValueError(f"ema must be True or False, got {ema!r}")
        generator = torch_generator(seed)
        condition = self._condition(condition, count)
        denoiser = self.ema if ema and self.ema is not None else self.denoiser
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                parts = []
                for start in range(0, count, SAMPLE_BATCH):
                    rows = min(SAMPLE_BATCH, count - start)
                    noise = torch.randn(rows, self.latent_size, generator=generator).to(self.mean.device)
                    part = None if condition is None else condition[start:start + rows]
                    parts.append(ddim_sample(denoiser, self.schedule, noise, steps, self.prediction, eta, part,
                                             guidance, generator, self.clip if clip else None))
        finally:
            self.train(was_training)
        return self.denormalise(torch.cat(parts))

    def _condition(self, condition: torch.Tensor | None, count: int) -> torch.Tensor | None:
        if condition is None:
            return None
        if not self.condition_size:
            raise ValueError("this model was trained without conditions; sample it with condition=None")
        condition = torch.as_tensor(condition, dtype=self.mean.dtype, device=self.mean.device)
        if condition.ndim == 1:
            condition = condition.expand(count, -1)
        if condition.shape != (count, self.condition_size) or not bool(torch.isfinite(condition).all()):
            raise ValueError(f"condition must be finite, ({self.condition_size},) or ({count}, {self.condition_size}), "
                             f"got {tuple(condition.shape)}")
        return condition

    def shape(self, code: torch.Tensor) -> FittedSDF:
        """A generated code as a shape (``.sdf``, ``extract_mesh``), decoded by the latent model."""
        if self.latent_model is None:
            raise ValueError("this model holds no latent model to decode its codes")
        return self.latent_model.shape(code)

    def save(self, path: str | os.PathLike) -> Any:
        """Writes the denoiser (and its average), statistics, schedule, latent model and history to
        ``path`` (a file, or a folder that gets ``model.pt``), atomically; ``fastsdf.load_model``
        reads it. The latent model's state goes under its kind's key (``LATENT_MODELS``), the
        others' are None."""
        latent = {key: self.latent_model.state() if isinstance(self.latent_model, kind) else None
                  for key, kind in LATENT_MODELS.items()}
        return write_state(path, FORMAT, {
            "network": network_state(self.denoiser), "mean": self.mean.detach().cpu(), "std": self.std.detach().cpu(),
            "schedule": self.schedule_name, "timesteps": self.schedule.timesteps, "prediction": self.prediction,
            **latent, "clip": self.clip, "history": self.history,
            "ema": None if self.ema is None else network_state(self.ema)})

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "LatentDiffusion":
        """The model ``save`` wrote, from its dict; ValueError saying which field is wrong otherwise."""
        from fastsdf.nn import LatentDenoiser

        denoiser = network_from_state(field(state, "network", dict, "a dict"))
        if not isinstance(denoiser, LatentDenoiser):
            raise ValueError(f"'network' must be a LatentDenoiser, got a {type(denoiser).__name__}")
        stats = [field(state, key, torch.Tensor, "a tensor") for key in ("mean", "std")]
        if any(s.shape != (denoiser.latent_size,) or not s.is_floating_point() for s in stats):
            raise ValueError(f"'mean' and 'std' must be floating tensors of {denoiser.latent_size} values, got "
                             f"{[(s.dtype, tuple(s.shape)) for s in stats]}")
        schedule = field(state, "schedule", str, "a schedule name")
        if schedule not in SCHEDULES:
            raise ValueError(f"'schedule' must be one of {SCHEDULES}, got {schedule!r}")
        timesteps = field(state, "timesteps", int, "an integer")
        prediction = field(state, "prediction", str, "a prediction name")
        if prediction not in PREDICTIONS:
            raise ValueError(f"'prediction' must be one of {PREDICTIONS}, got {prediction!r}")
        history = field(state, "history", dict, "a dict")
        clip = field(state, "clip", (float, type(None)), "a number or None")
        # Files from before the moving average have no 'ema'.
        ema = field({"ema": None, **state}, "ema", (dict, type(None)), "a network's state or None")
        if ema is not None:
            try:
                ema = network_from_state(ema)
            except ValueError as exc:
                raise ValueError(f"'ema': {exc}") from None
        if "autodecoder" not in state:
            raise ValueError("'autodecoder' is missing")
        # Files from before shape VAEs have only the auto-decoder's key.
        nested = {key: field({key: None, **state}, key, (dict, type(None)), f"the state of a {kind.__name__} or None")
                  for key, kind in LATENT_MODELS.items()}
        held = [key for key, value in nested.items() if value is not None]
        if len(held) > 1:
            raise ValueError(f"the file holds two latent models ({' and '.join(map(repr, held))}); a model decodes with one")
        latent_model = None
        for key in held:
            try:
                latent_model = LATENT_MODELS[key].from_state(nested[key])
            except ValueError as exc:
                raise ValueError(f"{key!r}: {exc}") from None
        try:
            return cls(denoiser, stats[0], stats[1], schedule, timesteps, prediction, latent_model, clip, history, ema)
        except ValueError as exc:
            raise ValueError(f"the fields do not make a model: {exc} ({describe(timesteps)} timesteps)") from None


def _shapes(network: nn.Module) -> list[tuple[str, torch.Size]]:
    return [(name, value.shape) for name, value in network.state_dict().items()]
