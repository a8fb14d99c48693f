"""The original DeepSDF decoder (networks/deep_sdf_decoder.py's ``Decoder``), re-implemented as
published, every option included, for the tests to load its state dicts into fastsdf and compare.

What it computes, per layer ``lin{i}`` of ``dims = [latent_size + 3, *dims, 1]``: the input
concatenated again before the layers in ``latent_in`` (xyz alone before the others with
``xyz_in_all``), the linear layer (weight-normalised when ``weight_norm`` and the layer is in
``norm_layers``), then on hidden layers a LayerNorm ``bn{i}`` (``norm_layers`` without
``weight_norm``), ReLU and dropout (``dropout``: the layers, ``dropout_prob``); tanh on the output
layer with ``use_tanh``, and tanh once more at the end, always (``self.th``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Decoder"]


def _weight_norm(linear: nn.Linear) -> nn.Linear:
    """torch.nn.utils.weight_norm, which the original uses (keys weight_g, weight_v)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return nn.utils.weight_norm(linear)


class Decoder(nn.Module):
    def __init__(self, latent_size: int, dims: Sequence[int], dropout: Sequence[int] | None = None,
                 dropout_prob: float = 0.0, norm_layers: Sequence[int] = (), latent_in: Sequence[int] = (),
                 weight_norm: bool = False, xyz_in_all: bool | None = None, use_tanh: bool = False,
                 latent_dropout: bool = False):
        super().__init__()
        dims = [latent_size + 3, *dims, 1]
        self.num_layers = len(dims)
        self.norm_layers = norm_layers
        self.latent_in = latent_in
        self.latent_dropout = latent_dropout
        if self.latent_dropout:
            self.lat_dp = nn.Dropout(0.2)
        self.xyz_in_all = xyz_in_all
        self.weight_norm = weight_norm
        for layer in range(self.num_layers - 1):
            if layer + 1 in latent_in:
                out_dim = dims[layer + 1] - dims[0]
            else:
                out_dim = dims[layer + 1]
                if self.xyz_in_all and layer != self.num_layers - 2:
                    out_dim -= 3
            linear = nn.Linear(dims[layer], out_dim)
            setattr(self, f"lin{layer}", _weight_norm(linear) if weight_norm and layer in norm_layers else linear)
            if not weight_norm and self.norm_layers is not None and layer in self.norm_layers:
                setattr(self, f"bn{layer}", nn.LayerNorm(out_dim))
        self.use_tanh = use_tanh
        if use_tanh:
            self.tanh = nn.Tanh()
        self.relu = nn.ReLU()
        self.dropout_prob = dropout_prob
        self.dropout = dropout
        self.th = nn.Tanh()

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """input: (N, latent_size + 3), the code before the point."""
        xyz = input[:, -3:]
        if input.shape[1] > 3 and self.latent_dropout:
            latent_vecs = F.dropout(input[:, :-3], p=0.2, training=self.training)
            x = torch.cat([latent_vecs, xyz], 1)
        else:
            x = input
        for layer in range(self.num_layers - 1):
            lin = getattr(self, f"lin{layer}")
            if layer in self.latent_in:
                x = torch.cat([x, input], 1)
            elif layer != 0 and self.xyz_in_all:
                x = torch.cat([x, xyz], 1)
            x = lin(x)
            if layer == self.num_layers - 2 and self.use_tanh:
                x = self.tanh(x)
            if layer < self.num_layers - 2:
                if self.norm_layers is not None and layer in self.norm_layers and not self.weight_norm:
                    x = getattr(self, f"bn{layer}")(x)
                x = self.relu(x)
                if self.dropout is not None and layer in self.dropout:
                    x = F.dropout(x, p=self.dropout_prob, training=self.training)
        if hasattr(self, "th"):
            x = self.th(x)
        return x
