"""``ReluMLP``: the ReLU network the neural-implicit literature compares against, optionally behind a
``FourierFeatures`` encoding (NeRF's positional encoding, Tancik et al.'s Gaussian features) and with
the input fed again into middle layers (DeepSDF, NeRF).

Plain PyTorch: its products are GEMMs torch runs well, and its encoding is under 1% of a training
step (``fastsdf.nn.fourier_features`` has the measurement), so no fused kernel would pay.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fastsdf._validation import integer
from fastsdf.nn.fourier_features import FourierFeatures
from fastsdf.nn.inputs import check_tensor, network_inputs

__all__ = ["ReluMLP"]


class ReluMLP(nn.Module):
    """``in_features (+ latent_features) -> hidden_features`` ReLU layers ``hidden_layers + 1`` deep
    (``hidden_layers`` counts the hidden-to-hidden layers, as in ``SirenMLP``), then a linear layer
    ``-> out_features``.

    Args:
        in_features, hidden_features, hidden_layers, out_features: as ``SirenMLP``'s.
        skip: hidden layers (1 .. hidden_layers; layer 0 takes the input) whose input is the previous
            layer's output with the network's input (code and encoded point) concatenated again, so
            that they take ``hidden_features + inputs`` features: NeRF's layout (``skip=(5,)`` of 8
            layers). DeepSDF's decoder instead narrows the layer before; ``DeepSDFDecoder`` has that.
        latent_features: length of a code concatenated before the (encoded) point, as DeepSDF does
            (0: none).
        encoding: a ``FourierFeatures`` (or its ``config()``) applied to the point first; its
            ``in_features`` must be ``in_features``. None: the point as it is.

    Layers are ``nn.Linear`` with torch's initialisation. Any leading batch shape; parameters and
    inputs of one dtype on one device. ``forward_with_gradient`` gives the input Jacobian by autograd
    (differentiable again while grad mode is on, as an eikonal loss needs).

    DeepSDF (8 x 512, the input again at layer 4): ``ReluMLP(3, 512, 7, 1, skip=(4,))``; NeRF's
    geometry MLP with its positional encoding: ``ReluMLP(3, 256, 7, 1, skip=(5,),
    encoding=FourierFeatures(3, 10))``.
    """

    def __init__(self, in_features: int, hidden_features: int, hidden_layers: int, out_features: int, *,
                 skip: Sequence[int] = (), latent_features: int = 0,
                 encoding: FourierFeatures | Mapping[str, Any] | None = None):
        super().__init__()
        self.in_features = integer(in_features, "in_features", minimum=1)
        self.hidden_features = integer(hidden_features, "hidden_features", minimum=1)
        self.hidden_layers = integer(hidden_layers, "hidden_layers", minimum=0)
        self.out_features = integer(out_features, "out_features", minimum=1)
        self.latent_features = integer(latent_features, "latent_features", minimum=0)
        if isinstance(skip, (str, bytes)) or not isinstance(skip, Sequence):
            raise TypeError(f"skip must be a sequence of layer indices, got {skip!r}")
        self.skip = tuple(sorted({integer(i, "skip", 1, max(self.hidden_layers, 1)) for i in skip}))
        if self.skip and self.hidden_layers == 0:
            raise ValueError("skip needs hidden_layers >= 1: layer 0 already takes the input")
        if isinstance(encoding, Mapping):
            encoding = FourierFeatures(**encoding)
        if encoding is not None and not isinstance(encoding, FourierFeatures):
            raise TypeError(f"encoding must be a FourierFeatures, its config() or None, got {type(encoding).__name__}")
        if encoding is not None and encoding.in_features != self.in_features:
            raise ValueError(f"the encoding takes {encoding.in_features} coordinates, the network {self.in_features}")
        self.encoding = encoding
        inputs = self.latent_features + (encoding.out_features if encoding is not None else self.in_features)
        self.layers = nn.ModuleList(
            nn.Linear(inputs if i == 0 else self.hidden_features + (inputs if i in self.skip else 0),
                      self.hidden_features)
            for i in range(self.hidden_layers + 1))
        self.output = nn.Linear(self.hidden_features, self.out_features)

    def config(self) -> dict[str, Any]:
        """The constructor's arguments that make a network of this shape (``ReluMLP(**config())``)."""
        return {"in_features": self.in_features, "hidden_features": self.hidden_features,
                "hidden_layers": self.hidden_layers, "out_features": self.out_features, "skip": list(self.skip),
                "latent_features": self.latent_features,
                "encoding": None if self.encoding is None else self.encoding.config()}

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, hidden_features={self.hidden_features}, "
                f"hidden_layers={self.hidden_layers}, out_features={self.out_features}, skip={self.skip}, "
                f"latent_features={self.latent_features}")

    def forward(self, x: torch.Tensor, latent: torch.Tensor | None = None) -> torch.Tensor:
        """The network at ``x`` (..., in_features), with ``latent`` (..., latent_features), broadcast
        over the leading dimensions, when the network has a latent input: (..., out_features)."""
        points, code, lead = network_inputs(x, latent, self.in_features, self.latent_features, self.output.weight)
        inputs = points if self.encoding is None else self.encoding(points)
        if code is not None:
            inputs = torch.cat([code, inputs], dim=-1)
        h = inputs
        for i, layer in enumerate(self.layers):
            if i in self.skip:
                h = torch.cat([h, inputs], dim=-1)
            h = F.relu(layer(h))
        return self.output(h).reshape(*lead, self.out_features)

    def forward_with_gradient(self, x: torch.Tensor,
                              latent: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y, dy/dx)``: y (..., out_features) and its Jacobian with respect to x (not the latent
        code) (..., out_features, in_features). With grad mode on both stay in the graph (a loss on
        the gradient trains the parameters); with it off they come back detached."""
        x = check_tensor("x", x, self.in_features, self.output.weight)
        recording = torch.is_grad_enabled()
        with torch.enable_grad():
            points = x if x.requires_grad else x.detach().requires_grad_(True)
            y = self(points, latent)
            rows = [torch.autograd.grad(y[..., o].sum(), points, create_graph=recording, retain_graph=True)[0]
                    for o in range(self.out_features)]
        jacobian = torch.stack(rows, dim=-2)
        return (y, jacobian) if recording else (y.detach(), jacobian.detach())
