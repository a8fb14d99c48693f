"""``SirenMLP``: the SIREN of Sitzmann et al. (2020), with fused kernels behind it.

Each sine layer computes sin(omega_0 (W x + b)); the first layer's weights start uniform in
+-1/fan_in, the others' in +-sqrt(6/fan_in)/omega_0, and biases as ``nn.Linear``'s (the official
code's initialisation, which keeps activations arcsine-distributed through depth). The network's
arithmetic runs in ``fastsdf.ops.siren``: fused kernels where no gradient is recorded (C++ on the
CPU, Triton on CUDA), and a composed path, autograd-ready to any order, where one is.

``Siren`` is the official ``Siren`` class's interface (its defaults, ``forward`` returning
``(output, coords)``, its state-dict keys), so code written for it switches by changing the import.
The state dicts of other implementations are read by ``fastsdf.nn.siren_layouts``.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fastsdf._validation import integer, one_of, real
from fastsdf.nn.inputs import network_inputs
from fastsdf.nn.siren_layouts import check_bvp_omegas, official_layers, siren_pytorch_layers
from fastsdf.ops import siren as siren_ops

__all__ = ["PRECISIONS", "SineLayer", "Siren", "SirenMLP"]

PRECISIONS = siren_ops.PRECISIONS


class SirenMLP(nn.Module):
    """A SIREN: ``in_features (+ latent_features) -> hidden_features`` sine layers ``hidden_layers + 1``
    deep, then ``-> out_features``, linear when ``outermost_linear`` (else a sine layer too).

    Args:
        in_features, hidden_features, hidden_layers, out_features, outermost_linear, first_omega_0,
            hidden_omega_0, bias: as the official ``Siren`` (``hidden_layers`` counts the
            hidden-to-hidden layers); ``bias=False`` drops every bias.
        latent_features: length of a code concatenated before the input, as DeepSDF does (0: none).
        precision: ``"fp32"`` (default), ``"tf32"`` or ``"bf16"`` (fp32 accumulation) for the
            hidden layers' products; the first layer is always computed in fp32 (omega_0 = 30
            magnifies its errors). ``"tf32"`` only changes anything on CUDA.
        double_backward: whether ``forward``'s gradients can themselves be differentiated (code
            that takes ``torch.autograd.grad(y, x, create_graph=True)``). ``False`` lets training on
            the CPU run on the fused kernel's backward. ``forward_with_gradient`` gives first-order
            gradients of y and of the Jacobian on the CPU either way.

    Any leading batch shape; float32 (or float64: the plain PyTorch path) parameters and inputs on
    one device. The backend is chosen per call (``fastsdf.ops.siren.backend``); FASTSDF_BACKEND
    forces one. NaN or Inf inputs give NaN for those points only; finite ones give finite values on
    the CPU (the sines stay in [-1, 1] for any argument) unless float32 itself overflows.
    """

    def __init__(self, in_features: int, hidden_features: int, hidden_layers: int, out_features: int,
                 outermost_linear: bool = True, first_omega_0: float = 30.0, hidden_omega_0: float = 30.0,
                 bias: bool = True, latent_features: int = 0, precision: str = "fp32",
                 double_backward: bool = True):
        super().__init__()
        self.in_features = integer(in_features, "in_features", minimum=1)
        self.hidden_features = integer(hidden_features, "hidden_features", minimum=1)
        self.hidden_layers = integer(hidden_layers, "hidden_layers", minimum=0)
        self.out_features = integer(out_features, "out_features", minimum=1)
        self.latent_features = integer(latent_features, "latent_features", minimum=0)
        self.outermost_linear = bool(outermost_linear)
        self.first_omega_0 = real(first_omega_0, "first_omega_0", 0, low_open=True)
        self.hidden_omega_0 = real(hidden_omega_0, "hidden_omega_0", 0, low_open=True)
        self.precision = precision
        self.double_backward = bool(double_backward)
        self._kernels = siren_ops.KernelCache()
        sizes = [self.in_features + self.latent_features, *[self.hidden_features] * (self.hidden_layers + 1),
                 self.out_features]
        self._make_layers(sizes, bias)

    def _make_layers(self, sizes: list[int], bias: bool) -> None:
        """The parameters, drawn layer by layer in the official classes' order (so that one seed
        gives the official network's weights)."""
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            linear = nn.Linear(fan_in, fan_out, bias=bias)  # its bias initialisation, as the official code
            _init_weight(linear.weight, layer == 0, self.hidden_omega_0)
            self.weights.append(linear.weight)
            if bias:
                self.biases.append(linear.bias)

    @property
    def precision(self) -> str:
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        self._precision = one_of(value, "precision", PRECISIONS)

    def config(self) -> dict[str, Any]:
        """The constructor's arguments that make a network of this shape (``cls(**config())``)."""
        return {"in_features": self.in_features, "hidden_features": self.hidden_features,
                "hidden_layers": self.hidden_layers, "out_features": self.out_features,
                "outermost_linear": self.outermost_linear, "first_omega_0": self.first_omega_0,
                "hidden_omega_0": self.hidden_omega_0, "bias": len(self.biases) > 0,
                "latent_features": self.latent_features, "precision": self.precision,
                "double_backward": self.double_backward}

    @property
    def omegas(self) -> tuple[float | None, ...]:
        """omega_0 of each linear layer, None for a linear output layer."""
        last = None if self.outermost_linear else self.hidden_omega_0
        return (self.first_omega_0, *[self.hidden_omega_0] * self.hidden_layers, last)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, hidden_features={self.hidden_features}, "
                f"hidden_layers={self.hidden_layers}, out_features={self.out_features}, "
                f"outermost_linear={self.outermost_linear}, first_omega_0={self.first_omega_0:g}, "
                f"hidden_omega_0={self.hidden_omega_0:g}, bias={len(self.biases) > 0}, "
                f"latent_features={self.latent_features}, precision={self.precision!r}")

    def forward(self, x: torch.Tensor, latent: torch.Tensor | None = None) -> torch.Tensor:
        """The network at ``x`` (..., in_features), with ``latent`` (..., latent_features), broadcast
        over the leading dimensions, when the network has a latent input: (..., out_features)."""
        points, lead = self._points(x, latent)
        y = siren_ops.forward(points, list(self.weights), self._bias_list(), self.omegas, self.precision,
                              self._kernels, self.double_backward)
        return y.reshape(*lead, self.out_features)

    def forward_with_gradient(self, x: torch.Tensor,
                              latent: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y, dy/dx)`` in one pass: y (..., out_features) and the Jacobian with respect to x (not the
        latent code) (..., out_features, in_features); for an SDF, ``dy/dx[..., 0, :]`` is the
        gradient (normals, eikonal loss, sphere tracing). Differentiable with respect to the
        parameters, x and the latent code."""
        points, lead = self._points(x, latent)
        y, jacobian = siren_ops.forward_with_gradient(points, list(self.weights), self._bias_list(), self.omegas,
                                                      self.precision, self.in_features, self._kernels)
        return y.reshape(*lead, self.out_features), jacobian.reshape(*lead, self.out_features, self.in_features)

    def _bias_list(self) -> list[torch.Tensor | None]:
        return list(self.biases) if len(self.biases) else [None] * len(self.weights)

    def _points(self, x: Any, latent: Any) -> tuple[torch.Tensor, tuple[int, ...]]:
        """The network's (N, latent + in) input and x's leading shape, after checking both."""
        points, code, lead = network_inputs(x, latent, self.in_features, self.latent_features, self.weights[0])
        return (points if code is None else torch.cat([code, points], dim=-1)), lead

    # --- the official layout -------------------------------------------------------------------

    @classmethod
    def from_official_state_dict(cls, state_dict: Mapping[str, torch.Tensor], first_omega_0: float = 30.0,
                                 hidden_omega_0: float = 30.0, outermost_linear: bool | None = None,
                                 **kwargs: Any) -> "SirenMLP":
        """A network with the weights of a state dict of the official SIREN code, either layout (a
        ``module.`` prefix allowed):

        - the notebook's ``Siren`` class: keys ``net.{i}.linear.weight/bias`` for its sine layers,
          ``net.{L}.weight/bias`` for a linear output layer;
        - the repository's ``SingleBVPNet`` (modules.py; what experiment_scripts/train_sdf.py
          saves): keys ``net.net.{i}.0.weight/bias``. Its layers are sin(30 (W x + b)) (its
          ``Sine`` writes omega_0 = 30 in), the last one linear, so both omegas must be 30. Its
          keys are the same whatever activation it was built with: load only ``type='sine'``
          networks (train_sdf.py's default), not ``--model_type relu`` or ``nerf`` ones.

        Sizes, biases and whether the output layer is linear come from the keys; ``outermost_linear``,
        when given, must agree. ``kwargs`` go to the constructor (e.g. ``precision``). Any other key
        raises ValueError."""
        layers, sine_last, layout = official_layers(state_dict)
        if outermost_linear is not None and bool(outermost_linear) == sine_last:
            raise ValueError(f"outermost_linear={outermost_linear} but the state dict's last layer is "
                             f"{'a sine layer' if sine_last else 'linear'}")
        if layout == "SingleBVPNet":
            check_bvp_omegas(real(first_omega_0, "first_omega_0", 0, low_open=True),
                             real(hidden_omega_0, "hidden_omega_0", 0, low_open=True))
        return cls._from_layers(layers, outermost_linear=not sine_last, first_omega_0=first_omega_0,
                                hidden_omega_0=hidden_omega_0, **kwargs)

    def to_official_state_dict(self) -> "OrderedDict[str, torch.Tensor]":
        """This network's parameters under the official ``Siren`` class's keys (detached copies)."""
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for layer, (weight, bias) in enumerate(zip(self.weights, self._bias_list())):
            sine = layer < len(self.weights) - 1 or not self.outermost_linear
            prefix = f"net.{layer}.linear." if sine else f"net.{layer}."
            out[prefix + "weight"] = weight.detach().clone()
            if bias is not None:
                out[prefix + "bias"] = bias.detach().clone()
        return out

    @classmethod
    def from_siren_pytorch_state_dict(cls, state_dict: Mapping[str, torch.Tensor], *, w0: float, w0_initial: float,
                                      final_sine: bool, **kwargs: Any) -> "SirenMLP":
        """A network with the weights of lucidrains' siren-pytorch ``SirenNet``: keys ``net.{i}`` or
        ``layers.{i}`` (``.weight``, ``.bias``) and ``last_layer``. Its omegas are ``w0_initial``
        (first layer) and ``w0``, and its last layer is a sine unless it was given a final activation
        (``final_sine``): the state dict does not say, and the package's defaults changed between
        versions, so all three are asked for. Other activations than the identity have no
        counterpart here."""
        return cls._from_layers(siren_pytorch_layers(state_dict), outermost_linear=not final_sine,
                                first_omega_0=w0_initial, hidden_omega_0=w0, **kwargs)

    @classmethod
    def _from_layers(cls, layers: list[tuple[torch.Tensor, Any]], **kwargs: Any) -> "SirenMLP":
        """A network sized after checked (weight, bias) layers, holding copies of them (float64 for
        float64 layers, float32 otherwise)."""
        first, last = layers[0][0], layers[-1][0]
        model = cls(first.shape[1], first.shape[0], len(layers) - 2, last.shape[0], bias=layers[0][1] is not None,
                    **kwargs)
        if first.dtype == torch.float64:  # float64 stays float64 (the reference path); others become float32
            model.double()
        with torch.no_grad():
            for target, (source, _) in zip(model.weights, layers):
                target.copy_(source)
            for target, (_, source) in zip(model.biases, layers):
                target.copy_(source)
        return model


class SineLayer(nn.Module):
    """The official ``SineLayer``: sin(omega_0 (W x + b)) through ``linear`` (an ``nn.Linear``), its
    weights drawn by ``init_weights`` in U(+-1/in_features) when ``is_first``, else in
    U(+-sqrt(6/in_features)/omega_0). ``Siren.net`` is made of these (and runs them only in
    ``forward_with_activations`` and code that calls ``net`` itself: ``Siren``'s own forward
    runs the fused kernels on the same parameters)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, is_first: bool = False,
                 omega_0: float = 30):
        super().__init__()
        self.omega_0 = omega_0
        self.is_first = is_first
        self.in_features = in_features
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.init_weights()

    def init_weights(self) -> None:
        _init_weight(self.linear.weight, self.is_first, self.omega_0)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.omega_0 * self.linear(input))

    def forward_with_intermediate(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sin(omega_0 (W x + b)), omega_0 (W x + b))."""
        intermediate = self.omega_0 * self.linear(input)
        return torch.sin(intermediate), intermediate


class Siren(SirenMLP):
    """The official SIREN ``Siren`` class (the notebook's) on top of ``SirenMLP``: the same
    constructor and defaults (``outermost_linear=False``) and the same modules, ``net`` an
    ``nn.Sequential`` of ``SineLayer``s (``.linear``, ``.omega_0``, ``.is_first``,
    ``.in_features``) and a final ``nn.Linear`` when ``outermost_linear``, so its parameters,
    their order and its state-dict keys are the official ones and one seed draws the same weights.
    ``forward(coords)`` returns ``(output, coords)`` with coords a detached copy that requires grad
    (for ``torch.autograd.grad``), computed by the fused kernels; ``forward_with_activations`` as
    the official one. The omegas are the layers' ``omega_0``.

    ``load_state_dict`` also takes a ``SirenMLP``'s state dict and one of modules.py's
    ``SingleBVPNet`` (``net.net.{i}.0.weight``; see ``SirenMLP.from_official_state_dict``: the
    network must have a linear output layer and omegas of 30)."""

    def __init__(self, in_features: int, hidden_features: int, hidden_layers: int, out_features: int,
                 outermost_linear: bool = False, first_omega_0: float = 30.0, hidden_omega_0: float = 30.0,
                 **kwargs: Any):
        super().__init__(in_features, hidden_features, hidden_layers, out_features, outermost_linear,
                         first_omega_0, hidden_omega_0, **kwargs)
        self._register_load_state_dict_pre_hook(self._from_other_layouts)

    def _make_layers(self, sizes: list[int], bias: bool) -> None:
        layers: list[nn.Module] = [SineLayer(sizes[0], sizes[1], bias, is_first=True, omega_0=self.first_omega_0)]
        for fan_in, fan_out in zip(sizes[1:-2], sizes[2:-1]):
            layers.append(SineLayer(fan_in, fan_out, bias, omega_0=self.hidden_omega_0))
        if self.outermost_linear:
            final = nn.Linear(sizes[-2], sizes[-1], bias=bias)
            _init_weight(final.weight, False, self.hidden_omega_0)
            layers.append(final)
        else:
            layers.append(SineLayer(sizes[-2], sizes[-1], bias, omega_0=self.hidden_omega_0))
        self.net = nn.Sequential(*layers)

    @property  # type: ignore[override]
    def weights(self) -> list[nn.Parameter]:
        return [_linear_of(layer).weight for layer in self.net]

    @property  # type: ignore[override]
    def biases(self) -> list[nn.Parameter]:
        return [linear.bias for linear in map(_linear_of, self.net) if linear.bias is not None]

    @property
    def omegas(self) -> tuple[float | None, ...]:
        return tuple(real(layer.omega_0, f"net[{i}].omega_0", 0, low_open=True)
                     if isinstance(layer, SineLayer) else None for i, layer in enumerate(self.net))

    def forward(self, coords: torch.Tensor, latent: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        coords = coords.clone().detach().requires_grad_(True)
        return super().forward(coords, latent), coords

    def forward_with_activations(self, coords: torch.Tensor, retain_grad: bool = False,
                                 latent: torch.Tensor | None = None) -> "OrderedDict[str, torch.Tensor]":
        """The official method (for plotting activations): layer by layer in plain PyTorch, an
        ``OrderedDict`` of the input (a detached copy of ``coords`` that requires grad) under
        ``"input"``, then for each sine layer omega_0 (W x + b) and its sine, for a linear layer
        its output, each keyed ``str(layer.__class__) + "_" + running count`` as the official
        code does (``"<class 'fastsdf.nn.siren.SineLayer'>_0"``, ...); the last entry is the
        output. ``retain_grad``: every entry but the input keeps its ``.grad`` after a backward.
        ``latent``: the code of a network with a latent input, placed before the coordinates."""
        self._points(coords, latent)  # the checks forward makes
        activations: OrderedDict[str, torch.Tensor] = OrderedDict()
        x = coords.clone().detach().requires_grad_(True)
        activations["input"] = x
        if latent is not None:
            x = torch.cat([latent.expand(*x.shape[:-1], self.latent_features), x], dim=-1)
        count = 0
        for layer in self.net:
            if isinstance(layer, SineLayer):
                x, intermediate = layer.forward_with_intermediate(x)
                if retain_grad:
                    intermediate.retain_grad()
                activations[f"{layer.__class__}_{count}"] = intermediate
                count += 1
            else:
                x = layer(x)
            if retain_grad:
                x.retain_grad()
            activations[f"{layer.__class__}_{count}"] = x
            count += 1
        return activations

    def _from_other_layouts(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """Renames a SirenMLP's or a SingleBVPNet's keys to this class's, in place; keys of no
        layout are left for load_state_dict to report."""
        patterns = {"Siren": re.compile(r"net\.(\d+)\.(?:linear\.)?(?P<kind>weight|bias)"),
                    "SingleBVPNet": re.compile(r"net\.net\.(\d+)\.0\.(?P<kind>weight|bias)"),
                    "SirenMLP": re.compile(r"(?P<kind>weight|bias)e?s\.(\d+)")}
        found: dict[str, dict[str, str]] = {}
        for key in state_dict:
            if not key.startswith(prefix):
                continue
            for layout, pattern in patterns.items():
                if match := pattern.fullmatch(key[len(prefix):]):
                    layer = int(match[2] if layout == "SirenMLP" else match[1])
                    found.setdefault(layout, {})[key] = self._layer_key(prefix, layer, match["kind"])
        if len(found) > 1:
            raise ValueError(f"the state dict mixes the keys of several layouts: {sorted(found)}")
        if "SingleBVPNet" in found:
            if not isinstance(self.net[-1], nn.Linear):
                raise ValueError("a SingleBVPNet's output layer is linear: load it into Siren(..., outermost_linear=True)")
            check_bvp_omegas(*self.omegas)
        for old, new in found.get("SingleBVPNet", found.get("SirenMLP", {})).items():
            state_dict[new] = state_dict.pop(old)

    def _layer_key(self, prefix: str, layer: int, kind: str) -> str:
        if layer < len(self.net) and isinstance(self.net[layer], SineLayer):
            return f"{prefix}net.{layer}.linear.{kind}"
        return f"{prefix}net.{layer}.{kind}"


def _linear_of(layer: nn.Module) -> nn.Linear:
    return layer.linear if isinstance(layer, SineLayer) else layer


def _init_weight(weight: torch.Tensor, is_first: bool, omega_0: float) -> None:
    """The official initialisation: U(+-1/fan_in) for the first layer, U(+-sqrt(6/fan_in)/omega_0)
    for the others (activations arcsine-distributed through depth)."""
    fan_in = weight.shape[1]
    bound = 1.0 / fan_in if is_first else math.sqrt(6.0 / fan_in) / omega_0
    with torch.no_grad():
        weight.uniform_(-bound, bound)
