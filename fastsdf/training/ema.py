"""An exponential moving average of a network's weights (``moving_average``), which diffusion models
sample with (DDPM, Ho et al. 2020, and the latent diffusion models after it): the averaged weights
give cleaner samples than the last step's, whose noise the average smooths out.

After the optimiser's k-th step (k = 1, 2, ...) the average moves towards the weights by
1 - d_k, where d_k = min(decay, (1 + k) / (10 + k)): the warm-up of TensorFlow's
``ExponentialMovingAverage(num_updates=k)``, which latent diffusion's ``LitEma`` uses. Without it an
average with decay 0.9999 would remember the random initial weights for tens of thousands of steps;
with it the average spans about the last tenth of the steps until the decay takes over (after about
9 / (1 - decay) steps: 90,000 for 0.9999), so short runs average their recent weights too.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

__all__ = ["EMA_DECAY", "moving_average", "warmed_decay"]

EMA_DECAY = 0.9999  # DDPM's and latent diffusion's
WARM_UP = 10  # d_k = (1 + k) / (WARM_UP + k) while that is below the decay


def warmed_decay(decay: float, step: int) -> float:
    """d_k: the share of the average kept at the optimiser's ``step``-th step (counted from 1)."""
    return min(decay, (1 + step) / (WARM_UP + step))


def moving_average(network: nn.Module, decay: float) -> AveragedModel:
    """A copy of ``network`` (its ``module``) that ``update_parameters(network)`` moves towards
    ``network``'s weights after each optimiser step, by ``warmed_decay``; its state (``n_averaged``,
    the steps so far plus one, included) is what a checkpoint keeps. Buffers are copied, not averaged."""

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], count: torch.Tensor) -> None:
        # count: the updates so far, the initial copy included: k for the k-th step's.
        weight = 1.0 - warmed_decay(decay, int(count))
        for mean, value in zip(averaged, current):
            mean.lerp_(value, weight)

    average = AveragedModel(network, multi_avg_fn=update)
    average.requires_grad_(False)
    average.update_parameters(network)  # the initial weights: the first update copies them
    return average
