"""``load_model``: a saved model file read back as the model its format names.

The table of readers sits above the model classes it dispatches to (``FittedSDF``, ``AutoDecoder``,
``OccupancyNetwork``, ``ShapeVAE``, ``LatentDiffusion``), which sit above the file format they share
(``fastsdf.training.saved``), so that imports run one way.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from fastsdf.training import autodecoder, fitted, latent_diffusion, occupancy, shape_vae
from fastsdf.training.saved import read_state

__all__ = ["READERS", "load_model"]

# A saved file's ``format`` -> the reader that rebuilds its model from the file's dict.
READERS = {fitted.FORMAT: fitted.FittedSDF.from_state, autodecoder.FORMAT: autodecoder.AutoDecoder.from_state,
           occupancy.FORMAT: occupancy.OccupancyNetwork.from_state, shape_vae.FORMAT: shape_vae.ShapeVAE.from_state,
           latent_diffusion.FORMAT: latent_diffusion.LatentDiffusion.from_state}


def load_model(path: str | os.PathLike, device: Any = "cpu") -> nn.Module:
    """A saved model: a file, or a folder holding ``model.pt``. ``fastsdf fit``'s models come back
    as ``FittedSDF`` (``.sdf(points)`` in the mesh's units), ``fastsdf train-deepsdf``'s as
    ``AutoDecoder``, ``fastsdf train-occupancy``'s as ``OccupancyNetwork``, ``fastsdf train-shape-vae``'s as
    ``ShapeVAE``, ``fastsdf train-diffusion``'s as ``LatentDiffusion``, in evaluation mode (``.eval()``: no dropout, batch norms on their running
    statistics; ``.train()`` to train on). Raises FileNotFoundError or ValueError (not a fastsdf
    model, damaged, or from a newer version) with the path in the message."""
    path, state = read_state(path)
    reader = READERS.get(state["format"])
    if reader is None:
        raise ValueError(f"{path} holds a {state['format']}, not a model")
    try:
        model = reader(state)
    except (TypeError, RuntimeError, ValueError) as exc:  # the readers check every field; this is their say
        raise ValueError(f"{path} holds a damaged model: {' '.join(str(exc).split())}") from None
    return model.to(device).eval()
