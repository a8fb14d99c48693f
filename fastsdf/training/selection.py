"""Choosing the weights a run returns by a held-out score (``BestWeights``).

A diffusion model trained long enough on a few hundred codes learns them by heart: its samples are
copies of training codes. The sign is on codes it never saw: their denoising loss falls while the
model learns the codes' distribution, then rises while it learns the codes themselves, though the
training loss keeps falling. ``train_diffusion`` keeps a share of the codes out of training, scores
the network it samples with on them at every history entry, and returns the weights of the entry
where that loss was lowest.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable

from torch import nn

__all__ = ["BestWeights"]


class BestWeights:
    """The weights of ``network`` at the history entry where ``score()`` was lowest.

    Args:
        network: the module whose weights are scored and kept (a moving average's module, say).
        score: the held-out loss of ``network`` as it is now (lower is better).

    ``module`` holds the kept weights (a copy of ``network``: a checkpoint saves and restores its
    state); ``update(step)`` scores the current weights and keeps them where they beat the best so
    far (a score that is not finite, a diverged run's, never counts as the best); ``restore(history)``
    takes the best score and step back from a resumed run's history.
    """

    def __init__(self, network: nn.Module, score: Callable[[], float]):
        if not isinstance(network, nn.Module):
            raise TypeError(f"network must be a torch module, got {type(network).__name__}")
        if not callable(score):
            raise TypeError(f"score must be callable, got {type(score).__name__}")
        self.network, self.score = network, score
        self.module = copy.deepcopy(network).requires_grad_(False)
        self.loss, self.step = math.inf, 0

    def update(self, step: int) -> float:
        """Scores the current weights (after ``step`` steps) and keeps them if they are the best; the score."""
        loss = float(self.score())
        if loss < self.loss:
            self.loss, self.step = loss, step
            self.module.load_state_dict(self.network.state_dict())
        return loss

    def restore(self, history: dict[str, Any]) -> None:
        """The best score and its step from a resumed run's history (``module`` comes from its checkpoint)."""
        losses = history.get("validation_loss") or []
        if losses:
            best = min(range(len(losses)), key=losses.__getitem__)
            self.loss, self.step = losses[best], history["step"][best]
