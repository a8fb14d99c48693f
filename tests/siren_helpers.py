"""Helpers the SIREN tests share (test_siren.py, test_siren_triton.py): the float64 reference on a
model's own float32 weights, and errors measured against the magnitudes float32 works at.

Tolerances are relative to the magnitude each float32 computation works at, not to its result, which
may cancel to almost nothing: the largest sum of absolute terms of the product that makes it
(|W| |a| + |b| for an output, the first layer's |G c| |W| for the Jacobian, the points' absolute
contributions for a gradient summed over points). Outputs the kernels write are first filled with
NaN (``poisoned``) so that any element they miss shows.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import pytest
import torch

from fastsdf.nn import SirenMLP
from fastsdf.ops import siren_reference

# Tolerances relative to the magnitudes above, for float32 fast paths against float64 and between two
# float32 computations (each its own rounding, magnified by the omegas).
RTOL_Y = 2e-5
RTOL_GRAD = 2e-4


@pytest.fixture
def poisoned(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.empty returns NaN-filled float tensors, so unwritten kernel outputs show."""
    real_empty = torch.empty

    def empty(*args: Any, **kwargs: Any) -> torch.Tensor:
        out = real_empty(*args, **kwargs)
        if out.is_floating_point():
            out.fill_(float("nan"))
        return out

    monkeypatch.setattr(torch, "empty", empty)


def scaled_error(got: torch.Tensor, want: torch.Tensor, scale: float) -> float:
    """The largest error relative to ``scale``."""
    got, want = got.double(), want.double()
    assert got.shape == want.shape, (got.shape, want.shape)
    if want.numel() == 0:
        return 0.0
    return float((got - want).abs().max()) / max(scale, 1e-300)


def network_points(model: SirenMLP, x: torch.Tensor, latent: torch.Tensor | None = None) -> torch.Tensor:
    """The network's float64 inputs (N, latent + in) for points x (..., in)."""
    points = x.double().reshape(-1, model.in_features)
    if latent is not None:
        latent = latent.double().expand(*x.shape[:-1], model.latent_features).reshape(-1, model.latent_features)
        points = torch.cat([latent, points], dim=-1)
    return points


def reference_outputs(model: SirenMLP, x: torch.Tensor, latent: torch.Tensor | None = None,
                      with_gradient: bool = False) -> Any:
    """The float64 reference on the model's own (float32) weights."""
    weights = [w.detach().double() for w in model.weights]
    biases = [b.detach().double() for b in model.biases] or [None] * len(weights)
    points = network_points(model, x, latent)
    lead = tuple(x.shape[:-1])
    if not with_gradient:
        return siren_reference.forward(points, weights, biases, model.omegas).reshape(*lead, model.out_features)
    y, j = siren_reference.forward_with_gradient(points, weights, biases, model.omegas, model.in_features)
    return y.reshape(*lead, model.out_features), j.reshape(*lead, model.out_features, model.in_features)


def magnitudes(model: SirenMLP, x: torch.Tensor, latent: torch.Tensor | None = None) -> tuple[float, float]:
    """What float32 works at for the outputs and the Jacobian at x (float64, the model's weights): the
    largest sum of absolute terms of the product that makes them, |W| |a| + |b| of the last layer
    (times omega for a sine one: its phase) and |G c| |W| of the first layer in the Jacobian's chain
    G_{l-1} = (G_l c_l) W_l."""
    a = network_points(model, x, latent)
    factors = []
    for weight, bias, omega in zip(model.weights, [*model.biases] or [None] * len(model.weights), model.omegas):
        weight = weight.detach().double()
        terms = a.abs() @ weight.abs().T
        z = a @ weight.T
        if bias is not None:
            terms = terms + bias.detach().double().abs()
            z = z + bias.detach().double()
        a = z if omega is None else torch.sin(omega * z)
        factors.append(None if omega is None else omega * torch.cos(omega * z))
    if a.numel() == 0:
        return 1.0, 1.0
    y_scale = float(terms.max()) * (model.omegas[-1] or 1.0)
    g = model.weights[-1].detach().double().expand(len(a), -1, -1)
    if factors[-1] is not None:
        g = g * factors[-1][:, :, None]
    for weight, c in zip(reversed(list(model.weights)[:-1]), reversed(factors[:-1])):
        weight = weight.detach().double()
        terms = (g * c[:, None, :]).abs() @ weight.abs()
        g = (g * c[:, None, :]) @ weight
    return y_scale, float(terms[..., -model.in_features:].max())


def output_errors(model: SirenMLP, x: torch.Tensor, y: torch.Tensor, j: torch.Tensor | None = None,
                  latent: torch.Tensor | None = None) -> tuple[float, float]:
    """Errors of y and of the Jacobian j (or 0 without it) against the float64 reference, relative to
    ``magnitudes``."""
    want_y, want_j = reference_outputs(model, x, latent, with_gradient=True)
    y_scale, j_scale = magnitudes(model, x, latent)
    return scaled_error(y, want_y, y_scale), 0.0 if j is None else scaled_error(j, want_j, j_scale)


def gradient_errors(got: list[torch.Tensor], grads: Callable[[slice], list[torch.Tensor]], points: int) -> list[float]:
    """Errors of the gradients ``got`` of a loss summed over points against float64 ``grads(rows)``,
    the gradients of the terms of those rows: relative, per gradient, to the largest sum over the
    points of their terms' absolute values (what float32 adds up, however much it cancels)."""
    want = grads(slice(None))
    sums = [torch.zeros_like(w) for w in want]
    for row in range(points):
        for total, g in zip(sums, grads(slice(row, row + 1))):
            total += g.abs()
    return [scaled_error(g, w, float(total.max())) for g, w, total in zip(got, want, sums)]


def double_copy(model: SirenMLP) -> SirenMLP:
    twin = copy.deepcopy(model).double()
    return twin


def training_loss(y: torch.Tensor, j: torch.Tensor | None, points: int) -> torch.Tensor:
    """A term on y and an eikonal term on the Jacobian, as SDF training uses, summed over the points
    given and divided by ``points``. Squares rather than SDF training's absolute values, whose kinks
    would let float32 and float64 disagree on a sign."""
    loss = y.pow(2).sum()
    if j is not None:
        loss = loss + (j[..., 0, :].norm(dim=-1) - 1).pow(2).sum()
    return loss / points
