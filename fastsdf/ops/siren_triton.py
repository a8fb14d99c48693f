"""The fused Triton kernels' autograd (``fastsdf.kernels.siren``) behind ``fastsdf.ops.siren``: training
on CUDA runs the fused forward and a fused backward.

``FusedSiren``'s forward is the fused forward kernel, which also writes each sine layer's
pre-activations z = W a + b (the tape: 4 bytes per neuron and point). Its backward is one launch
over tiles of points that walks the layers down from dL/dy, keeping dL/da in registers: per layer it
reads z from the tape, multiplies by omega cos(omega z) (the MUFU), writes dL/dz (delta) and
multiplies by W on the tensor cores; then dL/dx. The parameter gradients are whole-batch products
afterwards, dL/dW_l = delta_l^T a_{l-1} (a = sin(omega z) from the tape) and dL/db_l = sum delta_l,
as cuBLAS GEMMs and reductions: deterministic (no atomics) and on the tensor cores at full tile
sizes, the split tiny-cuda-nn's fully fused MLPs use too.

Why a tape and not recomputation on chip: with the register tiles of the forward (16-32 points a
program at width 256), every layer a tile recomputes re-reads that layer's weights from L2, 8-16 KB a
point at width 256 (benchmarks/gpu_model.py), where the tape costs 1 KB written and 1 KB read per
layer and point; recomputing in the backward would also cost L(L-1)/2 layers of products for the
L layers' inputs. Why GEMMs for dL/dW and not per-tile partial sums in the kernel: a tile's share of
one layer's dL/dW is width^2 floats, 256 KB at width 256, written (or added atomically) for every
16-32 points, 8-16 KB a point a layer; the GEMMs read delta and a once, 2 KB a point a layer.

Gradients of gradients (``torch.autograd.grad(..., create_graph=True)`` through this call): the
backward then runs the composed path (``fastsdf.ops.siren_reference`` with the Triton sine) on the
saved inputs and parameters and returns its gradients, which autograd can differentiate again; only
first-order backwards run on the kernels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from fastsdf.ops import siren_reference
from fastsdf.ops.siren import KernelCache, _linear, _sine

__all__ = ["FusedSiren", "forward"]


class FusedSiren(torch.autograd.Function):
    """y = network(x) on the fused kernels; ``params`` are the ``layers`` weights, then the biases
    that exist."""

    @staticmethod
    def forward(ctx: Any, layers: int, omegas: tuple, precision: str, x: torch.Tensor,
                *params: torch.Tensor) -> torch.Tensor:
        from fastsdf.kernels import siren as kernels

        weights, biases = _split(layers, params)
        y, tape = kernels.forward_taped(x, weights, biases, omegas, precision)
        ctx.layers, ctx.omegas, ctx.precision, ctx.tape = layers, omegas, precision, tape
        ctx.save_for_backward(x, *params)
        return y

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple:
        x, *params = ctx.saved_tensors
        needs = ctx.needs_input_grad[3:]
        if torch.is_grad_enabled():
            return (None, None, None, *_composed_gradients(ctx, dy, x, params, needs))
        from fastsdf.kernels import siren as kernels

        layers, omegas, tape = ctx.layers, ctx.omegas, ctx.tape
        weights = params[:layers]
        dx, delta, delta_last = kernels.backward(dy, x, tape, weights, omegas, ctx.precision, needs[0])
        inputs = [x.detach().float()] + [torch.sin(omegas[layer] * tape.pre[layer]) for layer in range(layers - 1)]
        deltas = [*delta, delta_last]
        weight_grads = [d.T @ a if need else None for d, a, need in zip(deltas, inputs, needs[1:])]
        bias_grads = [d.sum(0) if need else None for d, need in zip(deltas, needs[1 + layers:])]
        return (None, None, None, dx, *weight_grads, *bias_grads)


def _split(layers: int, params: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    weights = list(params[:layers])
    biases = list(params[layers:]) or [None] * layers
    return weights, biases


def _composed_gradients(ctx: Any, dy: torch.Tensor, x: torch.Tensor, params: Sequence[torch.Tensor],
                        needs: Sequence[bool]) -> list[torch.Tensor | None]:
    """The gradients of <dy, y> by the composed path, themselves differentiable."""
    weights, biases = _split(ctx.layers, params)
    wanted = [t for t, need in zip((x, *params), needs) if need]
    y = siren_reference.forward(x, weights, biases, ctx.omegas, _sine("triton"), _linear(ctx.precision, x.device))
    grads = iter(torch.autograd.grad(y, wanted, dy, create_graph=True, allow_unused=True))
    return [next(grads) if need else None for need in needs]


def forward(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None],
            omegas: Sequence[float | None], precision: str, cache: KernelCache) -> torch.Tensor:
    """The network at x (N, in) -> (N, out), recorded for autograd (``FusedSiren``)."""
    params = [*weights, *(b for b in biases if b is not None)]
    return FusedSiren.apply(len(weights), tuple(omegas), precision, x, *params)
