"""Plain PyTorch twin of the SIREN kernels: the truth the tests compare them with, and the path every
backend takes when autograd has to see the network (training).

A SIREN of L linear layers maps x through z_l = W_l a_{l-1} + b_l, a_l = sin(omega_l z_l), the last
layer without its sine when it is linear. Its input Jacobian comes by reverse mode inside the same
graph: with c_l = omega_l cos(omega_l z_l), G_{L-1} = W_L (times c_L for a sine output layer),
G_{l-1} = (G_l * c_l) W_l, J = G_0 (minus the latent columns). Written with differentiable ops, so
that autograd gives parameter and input gradients of any loss on (y, J): the eikonal loss's double
backward is a single backward here. In float64 it is the reference; the fast backends run the same
algorithm with a fused sine (``sine``: z, omega -> (sin(omega z), omega cos(omega z))).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["LinearFn", "SineFn", "forward", "forward_with_gradient", "plain_linear", "reference_sine"]

SineFn = Callable[[torch.Tensor, float, bool], tuple[torch.Tensor, torch.Tensor | None]]
# (input, weight, bias, layer index) -> W input + b; backends change how the product is rounded.
LinearFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None", int], torch.Tensor]


def plain_linear(a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, layer: int) -> torch.Tensor:
    """W a + b in the inputs' own precision."""
    return F.linear(a, weight, bias)


def reference_sine(z: torch.Tensor, omega: float, with_derivative: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(sin(omega z), omega cos(omega z) or None)."""
    phase = omega * z
    return torch.sin(phase), (omega * torch.cos(phase) if with_derivative else None)


def _layers(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None],
            omegas: Sequence[float | None], sine: SineFn, with_derivatives: bool,
            linear: LinearFn) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """The output and, per layer, omega cos(omega z) (None for a linear layer or when not asked)."""
    a = x
    derivatives: list[torch.Tensor | None] = []
    for layer, (weight, bias, omega) in enumerate(zip(weights, biases, omegas)):
        z = linear(a, weight, bias, layer)
        if omega is None:
            a, c = z, None
        else:
            a, c = sine(z, omega, with_derivatives)
        derivatives.append(c)
    return a, derivatives


def forward(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None],
            omegas: Sequence[float | None], sine: SineFn = reference_sine,
            linear: LinearFn = plain_linear) -> torch.Tensor:
    """The network at x (N, in) -> (N, out)."""
    return _layers(x, weights, biases, omegas, sine, False, linear)[0]


def forward_with_gradient(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None],
                          omegas: Sequence[float | None], grad_columns: int, sine: SineFn = reference_sine,
                          linear: LinearFn = plain_linear) -> tuple[torch.Tensor, torch.Tensor]:
    """(y (N, out), J (N, out, grad_columns)): J holds dy/dx for the last ``grad_columns`` inputs (the
    coordinates, after any latent code)."""
    y, derivatives = _layers(x, weights, biases, omegas, sine, True, linear)
    n, out = y.shape
    g = weights[-1].expand(n, *weights[-1].shape)  # dy/da_{L-1}: (N, out, hidden)
    if derivatives[-1] is not None:
        g = g * derivatives[-1][:, :, None]
    for weight, c in zip(reversed(weights[:-1]), reversed(derivatives[:-1])):  # hidden layers all have sines
        g = ((g * c[:, None, :]).reshape(n * out, -1) @ weight).reshape(n, out, -1)
    return y, g[..., x.shape[-1] - grad_columns:]
