"""The denoiser of latent diffusion (``LatentDenoiser``): an MLP of residual blocks over a latent
vector, told the diffusion timestep by a sinusoidal embedding and, optionally, a conditioning
vector, with a learned "no condition" embedding for classifier-free guidance.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from fastsdf._validation import integer, real

__all__ = ["LatentDenoiser", "timestep_embedding"]

MAX_PERIOD = 10_000.0  # the longest wavelength of the timestep embedding, in timesteps (Vaswani et al., DDPM)


def timestep_embedding(t: torch.Tensor, features: int, max_period: float = MAX_PERIOD) -> torch.Tensor:
    """Sinusoidal embedding (..., features) of timesteps t (...): cosines then sines of t at
    frequencies from 1 down to 1/max_period, geometrically spaced (an odd ``features`` gets a
    zero column)."""
    half = features // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64, device=t.device) / max(half, 1))
    angles = t.to(torch.float64)[..., None] * frequencies
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if features % 2:
        embedding = torch.nn.functional.pad(embedding, (0, 1))
    return embedding


class _Block(nn.Module):
    """x + W2 silu(W1 norm(x) + embedding), with W2 zero at the start so each block starts as the identity."""

    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.first = nn.Linear(width, width)
        self.second = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)
        nn.init.zeros_(self.second.weight)
        nn.init.zeros_(self.second.bias)

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.silu(self.first(torch.nn.functional.silu(self.norm(x))) + embedding)
        return x + self.second(self.dropout(h))


class LatentDenoiser(nn.Module):
    """An MLP with residual blocks that predicts the noise (or the clean latent) of a noisy latent.

    Args:
        latent_size: length of the latent vector.
        hidden_features: width of the blocks.
        blocks: residual blocks (each LayerNorm, SiLU, linear, + embedding, SiLU, linear).
        time_features: length of the sinusoidal timestep embedding (turned into the blocks' width by
            a two-layer MLP).
        condition_size: length of a conditioning vector (0: unconditional). A condition enters
            through a linear layer; a learned null embedding stands for "no condition", which
            classifier-free guidance needs.
        dropout: dropout inside the blocks while training.

    ``forward(x, t, condition=None, drop_condition=None)``: x (B, latent_size), t (B,) timesteps (or
    one for all), condition (B, condition_size) or None (every row unconditional), drop_condition
    (B,) booleans: rows that get the null embedding instead of their condition. Returns (B, latent_size).
    """

    def __init__(self, latent_size: int, hidden_features: int = 256, blocks: int = 4, time_features: int = 128,
                 condition_size: int = 0, dropout: float = 0.0):
        super().__init__()
        self.latent_size = integer(latent_size, "latent_size", 1)
        self.hidden_features = integer(hidden_features, "hidden_features", 1)
        self.blocks = integer(blocks, "blocks", 1)
        self.time_features = integer(time_features, "time_features", 2)
        self.condition_size = integer(condition_size, "condition_size", 0)
        self.dropout = real(dropout, "dropout", 0, 1, high_open=True)
        width = self.hidden_features
        self.input = nn.Linear(self.latent_size, width)
        self.time = nn.Sequential(nn.Linear(self.time_features, width), nn.SiLU(), nn.Linear(width, width))
        if self.condition_size:
            self.condition = nn.Linear(self.condition_size, width)
            self.null_condition = nn.Parameter(torch.zeros(width))
        self.layers = nn.ModuleList(_Block(width, self.dropout) for _ in range(self.blocks))
        self.embed = nn.ModuleList(nn.Linear(width, width) for _ in range(self.blocks))
        self.norm = nn.LayerNorm(width)
        self.output = nn.Linear(width, self.latent_size)

    def config(self) -> dict[str, Any]:
        """The constructor's arguments (``LatentDenoiser(**config())`` makes the same network)."""
        return {"latent_size": self.latent_size, "hidden_features": self.hidden_features, "blocks": self.blocks,
                "time_features": self.time_features, "condition_size": self.condition_size, "dropout": self.dropout}

    def forward(self, x: torch.Tensor, t: torch.Tensor | int, condition: torch.Tensor | None = None,
                drop_condition: torch.Tensor | None = None) -> torch.Tensor:
        weight = self.input.weight
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != self.latent_size:
            raise ValueError(f"x must be a (batch, {self.latent_size}) tensor, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        if x.dtype != weight.dtype or x.device != weight.device:
            raise ValueError(f"x is {x.dtype} on {x.device}, the denoiser {weight.dtype} on {weight.device}")
        t = torch.as_tensor(t, device=x.device)
        if t.ndim > 1 or (t.ndim == 1 and len(t) != len(x)) or t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"t must be one timestep or one per row ({len(x)}), got {t.dtype} {tuple(t.shape)}")
        embedding = self.time(timestep_embedding(t.expand(len(x)), self.time_features).to(x.dtype))
        if self.condition_size:
            embedding = embedding + self._condition(condition, drop_condition, x)
        elif condition is not None:
            raise ValueError("this denoiser is unconditional (condition_size=0) but got a condition")
        h = self.input(x)
        for block, embed in zip(self.layers, self.embed):
            h = block(h, embed(torch.nn.functional.silu(embedding)))
        return self.output(torch.nn.functional.silu(self.norm(h)))

    def _condition(self, condition: torch.Tensor | None, drop: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        null = self.null_condition.expand(len(x), -1)
        if condition is None:
            return null
        if condition.shape != (len(x), self.condition_size) or condition.dtype != x.dtype:
            raise ValueError(f"condition must be a {x.dtype} ({len(x)}, {self.condition_size}) tensor, got "
                             f"{condition.dtype} {tuple(condition.shape)}")
        embedded = self.condition(condition)
        if drop is None:
            return embedded
        if drop.shape != (len(x),) or drop.dtype != torch.bool:
            raise ValueError(f"drop_condition must be a bool ({len(x)},) tensor, got {drop.dtype} {tuple(drop.shape)}")
        return torch.where(drop[:, None], null, embedded)
