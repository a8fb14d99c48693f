"""What latent diffusion asks of the model whose latents it learns (``LatentModel``), and the models
that are one: DeepSDF's ``AutoDecoder`` (its codes, learned per shape) and the point-cloud
``ShapeVAE`` (its encoder's means of the shapes' clouds, DiffusionSDF's). ``train_diffusion`` and
``LatentDiffusion`` treat both alike, by this protocol alone.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from fastsdf.training.autodecoder import AutoDecoder
from fastsdf.training.fitted import FittedSDF
from fastsdf.training.shape_vae import ShapeVAE

__all__ = ["LATENT_MODELS", "LatentModel"]

# The latent models, by the key a LatentDiffusion's file stores each one's ``state()`` under.
LATENT_MODELS: dict[str, type] = {"autodecoder": AutoDecoder, "shape_vae": ShapeVAE}


class LatentModel(Protocol):
    """A model of shapes as latents: ``codes`` (shapes, latent_size), the training shapes' latents,
    named by ``names``; ``shape(latent)`` the shape of any latent (a ``FittedSDF``); ``state()``
    the dict its class's ``from_state`` reads back."""

    codes: torch.Tensor
    names: list[str]

    @property
    def latent_size(self) -> int: ...

    def shape(self, code: Any) -> FittedSDF: ...

    def state(self) -> dict[str, Any]: ...

