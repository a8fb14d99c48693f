"""The maths of denoising diffusion (DDPM, Ho et al. 2020; DDIM, Song et al. 2021) over vectors.

Timesteps run 0 .. T-1: x_t ~ q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) with
abar_t = prod_{s <= t} (1 - beta_s), so x_0 is the data and step t = 0 already holds noise beta_0;
"t = -1" stands for the data itself (abar = 1). The schedule's coefficients are float64; every
function computes in the dtype of the vectors it is given (float64 for the tests' closed forms).

A model's output is read as the noise (``"epsilon"``) or the clean vector (``"x0"``);
``predictions`` turns either into both, which the samplers use.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from fastsdf._validation import integer, one_of, real

__all__ = ["PREDICTIONS", "SCHEDULES", "NoiseSchedule", "ddim_sample", "ddim_timesteps", "diffusion_loss",
           "predictions"]

SCHEDULES = ("cosine", "linear")
PREDICTIONS = ("epsilon", "x0")
COSINE_OFFSET = 0.008  # s of Nichol & Dhariwal's cosine schedule
MAX_BETA = 0.999  # their clipping of the cosine schedule's betas, which would reach 1 at t = T - 1


class NoiseSchedule:
    """The betas of a diffusion and what follows from them (float64 tensors of length T).

    Args:
        betas: (T,) noise variances of the steps, each in (0, 1).
    """

    def __init__(self, betas: torch.Tensor):
        betas = torch.as_tensor(betas, dtype=torch.float64).detach().cpu()
        if betas.ndim != 1 or len(betas) == 0 or not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError(f"betas must be a non-empty 1-D sequence of values in (0, 1), got {betas.shape} "
                             f"in [{betas.min().item() if betas.numel() else 'nan'}, "
                             f"{betas.max().item() if betas.numel() else 'nan'}]")
        self.betas = betas
        self.alphas = 1.0 - betas
        # 1 - abar_t through log1p and expm1: near t = 0 it is about beta_0, which 1 - prod(1 - beta)
        # would get only to within eps / beta_0.
        log_alpha_bars = torch.cumsum(torch.log1p(-betas), 0)
        self.alpha_bars = torch.exp(log_alpha_bars)
        self.noise_variances = -torch.expm1(log_alpha_bars)  # 1 - abar_t
        self.alpha_bars_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bars[:-1]])
        noise_variances_prev = torch.cat([torch.zeros(1, dtype=torch.float64), self.noise_variances[:-1]])
        # q(x_{t-1} | x_t, x_0): variance and the coefficients of x_0 and x_t in the mean (DDPM eq. 7).
        self.posterior_variance = betas * noise_variances_prev / self.noise_variances
        self.posterior_x0 = betas * torch.sqrt(self.alpha_bars_prev) / self.noise_variances
        self.posterior_xt = noise_variances_prev * torch.sqrt(self.alphas) / self.noise_variances

    @property
    def timesteps(self) -> int:
        return len(self.betas)

    @classmethod
    def linear(cls, timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> "NoiseSchedule":
        """DDPM's linear betas, from ``beta_start`` to ``beta_end`` at T = 1000 and scaled by 1000/T
        otherwise (Nichol & Dhariwal's rule, which keeps abar_{T-1} about the same for any T)."""
        timesteps = integer(timesteps, "timesteps", 2)
        scale = 1000.0 / timesteps
        start = real(beta_start, "beta_start", 0, 1, low_open=True, high_open=True) * scale
        end = real(beta_end, "beta_end", beta_start, 1, high_open=True) * scale
        if end >= 1:
            raise ValueError(f"a linear schedule of {timesteps} steps would reach beta {end:g} >= 1: take more timesteps")
        return cls(torch.linspace(start, end, timesteps, dtype=torch.float64))

    @classmethod
    def cosine(cls, timesteps: int, offset: float = COSINE_OFFSET, max_beta: float = MAX_BETA) -> "NoiseSchedule":
        """Nichol & Dhariwal's cosine schedule: abar_t = f(t + 1) / f(0) with
        f(u) = cos^2((u / T + s) / (1 + s) * pi / 2), its betas clipped to ``max_beta``."""
        timesteps = integer(timesteps, "timesteps", 2)
        offset = real(offset, "offset", 0, low_open=True)
        max_beta = real(max_beta, "max_beta", 0, 1, low_open=True, high_open=True)
        u = torch.arange(timesteps + 1, dtype=torch.float64)
        f = torch.cos((u / timesteps + offset) / (1 + offset) * math.pi / 2) ** 2
        alpha_bars = f / f[0]
        return cls(torch.clamp(1.0 - alpha_bars[1:] / alpha_bars[:-1], max=max_beta))

    @classmethod
    def named(cls, kind: str, timesteps: int) -> "NoiseSchedule":
        """``"cosine"`` or ``"linear"`` with its defaults."""
        return getattr(cls, one_of(kind, "schedule", SCHEDULES))(timesteps)

    def _at(self, values: torch.Tensor, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """values[t] in ``like``'s dtype and device, shaped to broadcast over its rows' features."""
        picked = values.to(like.device)[torch.as_tensor(t, device=like.device)]
        return picked.to(like.dtype).reshape(picked.shape + (1,) * (like.ndim - picked.ndim))

    def _alpha_bar(self, t: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(abar_t, 1 - abar_t), with (1, 0) for t = -1."""
        if t < 0:
            return torch.ones((), dtype=like.dtype, device=like.device), torch.zeros((), dtype=like.dtype, device=like.device)
        return self._at(self.alpha_bars, t, like), self._at(self.noise_variances, t, like)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor | int, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise: a draw of q(x_t | x_0) for standard ``noise``."""
        return torch.sqrt(self._at(self.alpha_bars, t, x0)) * x0 + torch.sqrt(self._at(self.noise_variances, t, x0)) * noise

    def posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_{t-1} | x_t, x_0) (the variance broadcastable; 0 at t = 0, where
        x_{t-1} is x_0)."""
        mean = self._at(self.posterior_x0, t, xt) * x0 + self._at(self.posterior_xt, t, xt) * xt
        return mean, self._at(self.posterior_variance, t, xt)

    def ddpm_step(self, xt: torch.Tensor, t: int, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """DDPM's ancestral step: a draw of q(x_{t-1} | x_t, x_0) with x_0 the model's estimate."""
        mean, variance = self.posterior(x0, xt, t)
        return mean + torch.sqrt(variance) * noise

    def ddim_step(self, xt: torch.Tensor, t: int, t_prev: int, x0: torch.Tensor, epsilon: torch.Tensor,
                  eta: float = 0.0, noise: torch.Tensor | None = None) -> torch.Tensor:
        """DDIM's step (Song et al. eq. 12) from x_t to x_{t_prev} (t_prev < t; -1 for the data)
        given the model's estimates of x_0 and of the noise:
        sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) epsilon + sigma noise, with
        sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev). eta = 0 is
        deterministic; eta = 1 with t_prev = t - 1 is DDPM's ancestral step."""
        if not -1 <= t_prev < t < self.timesteps:
            raise ValueError(f"a DDIM step needs -1 <= t_prev < t < {self.timesteps}, got t={t}, t_prev={t_prev}")
        (alpha_bar, spread), (alpha_bar_prev, spread_prev) = self._alpha_bar(t, xt), self._alpha_bar(t_prev, xt)
        sigma = eta * torch.sqrt(spread_prev / spread * (1 - alpha_bar / alpha_bar_prev))
        out = torch.sqrt(alpha_bar_prev) * x0 + torch.sqrt(torch.clamp(spread_prev - sigma**2, min=0)) * epsilon
        if eta > 0:
            if noise is None:
                raise ValueError("a stochastic DDIM step (eta > 0) needs noise")
            out = out + sigma * noise
        return out


def predictions(output: torch.Tensor, xt: torch.Tensor, t: torch.Tensor | int, schedule: NoiseSchedule,
                prediction: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_0, noise) implied by a model's ``output`` at x_t: one of them is the output, the other
    follows from x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise."""
    if one_of(prediction, "prediction", PREDICTIONS) == "epsilon":
        alpha_bar, noise = schedule._at(schedule.alpha_bars, t, xt), schedule._at(schedule.noise_variances, t, xt)
        return (xt - torch.sqrt(noise) * output) / torch.sqrt(alpha_bar), output
    return output, _epsilon(output, xt, t, schedule)


def _epsilon(x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor | int, schedule: NoiseSchedule) -> torch.Tensor:
    alpha_bar, noise = schedule._at(schedule.alpha_bars, t, xt), schedule._at(schedule.noise_variances, t, xt)
    return (xt - torch.sqrt(alpha_bar) * x0) / torch.sqrt(noise)


def diffusion_loss(model: Callable[..., torch.Tensor], schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor,
                   noise: torch.Tensor, prediction: str, condition: torch.Tensor | None = None,
                   drop_condition: torch.Tensor | None = None) -> torch.Tensor:
    """DDPM's simple loss: the mean squared error of the model's prediction (the noise or x_0) on
    x_t = q_sample(x0, t, noise). ``model(x_t, t)``, or with ``condition`` and ``drop_condition``
    (rows trained unconditionally, for classifier-free guidance)."""
    xt = schedule.q_sample(x0, t, noise)
    output = model(xt, t) if condition is None else model(xt, t, condition, drop_condition)
    target = noise if one_of(prediction, "prediction", PREDICTIONS) == "epsilon" else x0
    return torch.mean((output - target) ** 2)


def ddim_timesteps(timesteps: int, steps: int) -> list[int]:
    """``steps`` timesteps from T - 1 down to 0, evenly spaced (all of them for steps = T)."""
    steps = integer(steps, "steps", 1, timesteps)
    if steps == 1:
        return [timesteps - 1]
    return [round((timesteps - 1) * (1 - i / (steps - 1))) for i in range(steps)]


def ddim_sample(model: Callable[..., torch.Tensor], schedule: NoiseSchedule, noise: torch.Tensor, steps: int,
                prediction: str, eta: float = 0.0, condition: torch.Tensor | None = None, guidance: float = 1.0,
                generator: torch.Generator | None = None, clip: float | None = None) -> torch.Tensor:
    """x_0 from x_{T-1} = ``noise`` by DDIM over ``ddim_timesteps(T, steps)``.

    Args:
        model: ``model(x_t, t)``, or ``model(x_t, t, condition, drop_condition)`` with a condition.
        eta: 0 deterministic (DDIM), 1 with steps = T DDPM's ancestral sampling; the noise of the
            stochastic steps comes from ``generator`` (on the CPU).
        condition: (B, k) rows to condition on, or None (unconditional).
        guidance: classifier-free guidance scale w with a condition: the output is
            uncond + w (cond - uncond), so 1 is the conditional model and 0 the unconditional one.
        clip: the estimate of x_0 clamped to [-clip, clip] at every step, and the noise estimate
            made consistent with it (DDPM's ``clip_denoised``); None: no clamping. Where abar_t is
            tiny (the cosine schedule's last steps), a noise prediction's error is magnified
            1 / sqrt(abar_t) times in its x_0, which the clamp bounds.
    """
    eta = real(eta, "eta", 0)
    guidance = real(guidance, "guidance")
    clip = None if clip is None else real(clip, "clip", 0, low_open=True)
    times = ddim_timesteps(schedule.timesteps, steps)
    x = noise
    for i, t in enumerate(times):
        t_prev = times[i + 1] if i + 1 < len(times) else -1
        output = _guided(model, x, t, condition, guidance)
        x0, epsilon = predictions(output, x, t, schedule, prediction)
        if clip is not None:
            x0 = torch.clamp(x0, -clip, clip)
            epsilon = _epsilon(x0, x, t, schedule)
        z = None
        if eta > 0:
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        x = schedule.ddim_step(x, t, t_prev, x0, epsilon, eta, z)
    return x


def _guided(model: Callable[..., torch.Tensor], x: torch.Tensor, t: int, condition: torch.Tensor | None,
            guidance: float) -> torch.Tensor:
    step = torch.full((len(x),), t, dtype=torch.long, device=x.device)
    if condition is None:
        return model(x, step)
    if guidance == 1.0:
        return model(x, step, condition, None)
    both = model(torch.cat([x, x]), torch.cat([step, step]), torch.cat([condition, condition]),
                 torch.arange(2 * len(x), device=x.device) >= len(x))
    conditional, unconditional = both[:len(x)], both[len(x):]
    return unconditional + guidance * (conditional - unconditional)
