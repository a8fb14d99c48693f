"""DeepSDF's decoder (Park et al. 2019): an MLP from a latent code and a point to a signed distance."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm as _weight_norm

__all__ = ["DeepSDFDecoder"]


def _count(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


class DeepSDFDecoder(nn.Module):
    """The DeepSDF decoder with the paper's defaults: 8 fully connected layers of 512 with ReLU,
    weight normalisation and dropout 0.2 on each, the input (code and point) concatenated again
    at layer 4, a linear output through tanh; codes of 256.

    Args:
        latent_size: length of the shape code.
        hidden_features, hidden_layers: width and count of the hidden layers.
        dropout: dropout probability after each hidden layer while training (0 for none).
        latent_in: hidden layers whose input gets the code and point concatenated again (the
            layer before each is narrowed so that the width stays ``hidden_features``).
        weight_norm: weight normalisation on the hidden layers.
        tanh_output: squash the output with tanh (DeepSDF's decoders are trained on distances
            clamped to 0.1, well inside tanh's range).
        in_features: coordinates per point.

    ``forward(points, latent)``: points (..., in_features) and codes (..., latent_size), or one
    code (latent_size,) for every point; returns (..., 1).
    """

    def __init__(self, latent_size: int = 256, hidden_features: int = 512, hidden_layers: int = 8,
                 dropout: float = 0.2, latent_in: Sequence[int] = (4,), weight_norm: bool = True,
                 tanh_output: bool = True, in_features: int = 3):
        super().__init__()
        self.latent_size = _count("latent_size", latent_size, minimum=0)
        self.hidden_features = _count("hidden_features", hidden_features)
        self.hidden_layers = _count("hidden_layers", hidden_layers)
        self.in_features = _count("in_features", in_features)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        self.latent_in = tuple(sorted({int(i) for i in latent_in}))
        if any(not 0 < i < self.hidden_layers for i in self.latent_in):
            raise ValueError(f"latent_in must name hidden layers 1 .. {self.hidden_layers - 1}, got {latent_in!r}")
        self.weight_norm = bool(weight_norm)
        self.tanh_output = bool(tanh_output)
        inputs = self.latent_size + self.in_features
        if self.latent_in and self.hidden_features <= inputs:
            raise ValueError(f"hidden_features ({hidden_features}) must exceed latent_size + in_features ({inputs}) "
                             "to concatenate the input again")
        self.layers = nn.ModuleList()
        for i in range(self.hidden_layers):
            fan_in = inputs if i == 0 else self.hidden_features
            fan_out = self.hidden_features - inputs if i + 1 in self.latent_in else self.hidden_features
            linear = nn.Linear(fan_in, fan_out)
            self.layers.append(_weight_norm(linear) if self.weight_norm else linear)
        self.output = nn.Linear(self.hidden_features, 1)

    def config(self) -> dict[str, Any]:
        """The constructor's arguments (``DeepSDFDecoder(**config())`` makes the same shape)."""
        return {"latent_size": self.latent_size, "hidden_features": self.hidden_features,
                "hidden_layers": self.hidden_layers, "dropout": self.dropout, "latent_in": list(self.latent_in),
                "weight_norm": self.weight_norm, "tanh_output": self.tanh_output, "in_features": self.in_features}

    def forward(self, points: torch.Tensor, latent: torch.Tensor | None = None) -> torch.Tensor:
        if points.shape[-1] != self.in_features:
            raise ValueError(f"points must have shape (..., {self.in_features}), got {tuple(points.shape)}")
        if self.latent_size:
            if latent is None:
                raise ValueError(f"this decoder takes a latent code of {self.latent_size} features: pass latent=")
            if latent.shape[-1] != self.latent_size:
                raise ValueError(f"latent must have shape (..., {self.latent_size}), got {tuple(latent.shape)}")
            lead = torch.broadcast_shapes(points.shape[:-1], latent.shape[:-1])
            inputs = torch.cat([latent.expand(*lead, -1), points.expand(*lead, -1)], dim=-1)
        elif latent is not None and latent.shape[-1] != 0:
            raise ValueError("this decoder has no latent input (latent_size=0), but a latent code was given")
        else:
            inputs = points
        x = inputs
        for i, layer in enumerate(self.layers):
            if i in self.latent_in:
                x = torch.cat([x, inputs], dim=-1)
            x = F.relu(layer(x))
            if self.dropout:
                x = F.dropout(x, self.dropout, self.training)
        x = self.output(x)
        return torch.tanh(x) if self.tanh_output else x

    @classmethod
    def from_deepsdf_state_dict(cls, state_dict: dict[str, torch.Tensor], **kwargs: Any) -> "DeepSDFDecoder":
        """A decoder from a checkpoint of the original DeepSDF code (``ModelParameters/*.pth``'s
        ``model_state_dict``, keys ``[module.]lin{i}.weight_g/_v/bias``). The layer count, width and
        code length are read from it; ``latent_in`` (default (4,)), ``dropout`` and ``tanh_output``
        come from ``kwargs`` as in the experiment's specs.json."""
        state = {re.sub(r"^module\.", "", k): v for k, v in state_dict.items()}
        indices = sorted({int(m.group(1)) for k in state if (m := re.match(r"lin(\d+)\.", k))})
        if not indices or indices != list(range(len(indices))):
            raise ValueError("not a DeepSDF decoder state dict (expected keys lin0.* .. linN.*)")
        last = indices[-1]
        normed = "lin0.weight_g" in state

        def weight(i: int) -> torch.Tensor:
            """Layer i's weight as used: weight_g * weight_v / ||weight_v|| (per row) where normalised."""
            if f"lin{i}.weight_v" not in state:
                return state[f"lin{i}.weight"]
            v = state[f"lin{i}.weight_v"]
            return state[f"lin{i}.weight_g"] * v / v.norm(dim=1, keepdim=True)

        inputs = weight(0).shape[1]
        in_features = kwargs.pop("in_features", 3)
        decoder = cls(latent_size=inputs - in_features, hidden_features=weight(last).shape[1], hidden_layers=last,
                      weight_norm=normed, in_features=in_features, **kwargs).to(weight(0).dtype)
        ours: dict[str, torch.Tensor] = {}
        for i in range(last):
            prefix = f"layers.{i}."
            if normed:
                ours[prefix + "parametrizations.weight.original0"] = state[f"lin{i}.weight_g"]
                ours[prefix + "parametrizations.weight.original1"] = state[f"lin{i}.weight_v"]
            else:
                ours[prefix + "weight"] = state[f"lin{i}.weight"]
            ours[prefix + "bias"] = state[f"lin{i}.bias"]
        ours["output.weight"], ours["output.bias"] = weight(last), state[f"lin{last}.bias"]
        decoder.load_state_dict(ours)
        return decoder
