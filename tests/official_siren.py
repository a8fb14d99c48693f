"""The official SIREN code as published, for tests and benchmarks to compare fastsdf with.

- ``SineLayer`` and ``Siren``: the classes of the official notebook (explore_siren.ipynb), their
  initialisation included (first layer U(+-1/in), the others and a linear output layer
  U(+-sqrt(6/in)/omega_0), biases as ``nn.Linear``'s), ``forward`` returning ``(output, coords)``
  and ``forward_with_activations``.
- ``SingleBVPNet``, ``FCBlock``, ``BatchLinear`` and ``Sine``: the network of the official
  repository's modules.py that its experiment_scripts/train_sdf.py trains and saves, for its
  ``type="sine"``, ``mode="mlp"`` configuration (the only one here), without torchmeta (whose
  ``MetaModule`` only adds the ``params=`` override, unused when loading checkpoints).

Import with the tests folder on ``sys.path`` (pytest puts it there for the tests; the benchmarks
insert it): ``from official_siren import Siren as OfficialSiren``.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn

__all__ = ["BatchLinear", "FCBlock", "Sine", "SineLayer", "SingleBVPNet", "Siren", "first_layer_sine_init",
           "sine_init"]


class SineLayer(nn.Module):
    """sin(omega_0 (W x + b)); weights U(+-1/in) for the first layer, U(+-sqrt(6/in)/omega_0) else."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, is_first: bool = False,
                 omega_0: float = 30):
        super().__init__()
        self.omega_0 = omega_0
        self.is_first = is_first
        self.in_features = in_features
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.init_weights()

    def init_weights(self) -> None:
        with torch.no_grad():
            if self.is_first:
                self.linear.weight.uniform_(-1 / self.in_features, 1 / self.in_features)
            else:
                bound = np.sqrt(6 / self.in_features) / self.omega_0
                self.linear.weight.uniform_(-bound, bound)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.omega_0 * self.linear(input))

    def forward_with_intermediate(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        intermediate = self.omega_0 * self.linear(input)
        return torch.sin(intermediate), intermediate


class Siren(nn.Module):
    """The notebook's ``Siren``: ``net`` is an ``nn.Sequential`` of ``SineLayer``s and, with
    ``outermost_linear``, a last ``nn.Linear`` initialised like the hidden layers."""

    def __init__(self, in_features: int, hidden_features: int, hidden_layers: int, out_features: int,
                 outermost_linear: bool = False, first_omega_0: float = 30, hidden_omega_0: float = 30.0):
        super().__init__()
        layers: list[nn.Module] = [SineLayer(in_features, hidden_features, is_first=True, omega_0=first_omega_0)]
        for _ in range(hidden_layers):
            layers.append(SineLayer(hidden_features, hidden_features, is_first=False, omega_0=hidden_omega_0))
        if outermost_linear:
            final_linear = nn.Linear(hidden_features, out_features)
            with torch.no_grad():
                bound = np.sqrt(6 / hidden_features) / hidden_omega_0
                final_linear.weight.uniform_(-bound, bound)
            layers.append(final_linear)
        else:
            layers.append(SineLayer(hidden_features, out_features, is_first=False, omega_0=hidden_omega_0))
        self.net = nn.Sequential(*layers)

    def forward(self, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        coords = coords.clone().detach().requires_grad_(True)
        output = self.net(coords)
        return output, coords

    def forward_with_activations(self, coords: torch.Tensor,
                                 retain_grad: bool = False) -> "OrderedDict[str, torch.Tensor]":
        """The input copy, then per sine layer omega_0 (W x + b) and its sine, per linear layer its
        output, keyed '<class ...>_<running count>'."""
        activations: OrderedDict[str, torch.Tensor] = OrderedDict()
        count = 0
        x = coords.clone().detach().requires_grad_(True)
        activations["input"] = x
        for layer in self.net:
            if isinstance(layer, SineLayer):
                x, intermediate = layer.forward_with_intermediate(x)
                if retain_grad:
                    x.retain_grad()
                    intermediate.retain_grad()
                activations["_".join((str(layer.__class__), "%d" % count))] = intermediate
                count += 1
            else:
                x = layer(x)
                if retain_grad:
                    x.retain_grad()
            activations["_".join((str(layer.__class__), "%d" % count))] = x
            count += 1
        return activations


# --- modules.py: the SDF experiments' network -----------------------------------------------------


class BatchLinear(nn.Linear):
    """x W^T + b through matmul, as modules.py's (it also takes batched weights from hypernetworks)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        weight, bias = self.weight, self.bias
        output = input.matmul(weight.permute(*range(weight.ndim - 2), -1, -2))
        output += bias.unsqueeze(-2)
        return output


class Sine(nn.Module):
    """sin(30 x): modules.py's sine, with omega_0 = 30 written into it."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return torch.sin(30 * input)


def sine_init(m: nn.Module) -> None:
    with torch.no_grad():
        if hasattr(m, "weight"):
            num_input = m.weight.size(-1)
            m.weight.uniform_(-np.sqrt(6 / num_input) / 30, np.sqrt(6 / num_input) / 30)


def first_layer_sine_init(m: nn.Module) -> None:
    with torch.no_grad():
        if hasattr(m, "weight"):
            num_input = m.weight.size(-1)
            m.weight.uniform_(-1 / num_input, 1 / num_input)


class FCBlock(nn.Module):
    """modules.py's FCBlock with nonlinearity='sine': each layer Sequential(BatchLinear, Sine), the
    last Sequential(BatchLinear) when ``outermost_linear``; ``sine_init`` on every layer (the output
    layer too), then ``first_layer_sine_init`` on the first."""

    def __init__(self, in_features: int, out_features: int, num_hidden_layers: int, hidden_features: int,
                 outermost_linear: bool = False):
        super().__init__()
        layers = [nn.Sequential(BatchLinear(in_features, hidden_features), Sine())]
        for _ in range(num_hidden_layers):
            layers.append(nn.Sequential(BatchLinear(hidden_features, hidden_features), Sine()))
        if outermost_linear:
            layers.append(nn.Sequential(BatchLinear(hidden_features, out_features)))
        else:
            layers.append(nn.Sequential(BatchLinear(hidden_features, out_features), Sine()))
        self.net = nn.Sequential(*layers)
        self.net.apply(sine_init)
        self.net[0].apply(first_layer_sine_init)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return self.net(coords)


class SingleBVPNet(nn.Module):
    """modules.py's SingleBVPNet(type='sine', mode='mlp'): an FCBlock with a linear output layer;
    ``forward({'coords': x})`` returns ``{'model_in': coords copy, 'model_out': output}``."""

    def __init__(self, out_features: int = 1, in_features: int = 2, hidden_features: int = 256,
                 num_hidden_layers: int = 3):
        super().__init__()
        self.net = FCBlock(in_features=in_features, out_features=out_features, num_hidden_layers=num_hidden_layers,
                           hidden_features=hidden_features, outermost_linear=True)

    def forward(self, model_input: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        coords_org = model_input["coords"].clone().detach().requires_grad_(True)
        output = self.net(coords_org)
        return {"model_in": coords_org, "model_out": output}
