"""The fused Triton kernels (``fastsdf.kernels.siren``) as ``fastsdf.ops.siren``'s ``"triton"`` backend
(this module is its ``fastsdf.ops.siren_fused.FusedBackend``): which networks and calls they serve,
and their autograd, with which training on CUDA runs the fused forward (or forward with the
Jacobian) and a fused backward.

A call that autograd does not record runs the kernels' launchers alone. Their operands are prepared
from the weights at every call (a few weight-sized copies), where checking cached ones against edits
through .data would cost a synchronisation: the ``KernelCache`` stays unused.

``FusedSiren``'s forward is the fused forward kernel, which also writes a tape (each sine layer's
pre-activations z = W a + b, 4 bytes per neuron and point), and with the Jacobian one backward sweep
per output over that tape (reverse mode, ``kernels.siren.jacobian_from_tape``). A loss on J enters
the backward as <dL/dJ, J>, which is, per point and output o, the derivative of y_o along the
direction v_o = dL/dJ[o] (a vector over the Jacobian's columns). So the backward first runs forward
mode with one tangent per output whose first layer's tangent is W v_o (``forward_directional``:
tangents alone, omega cos(omega z) from the tape's z), storing the tangent each layer receives (u
= W t of the layer below, 4 bytes per neuron, point and output), then one launch per group of
tangents walks the layers down from dL/dy and dL/d(y_o's derivative) = 1 with dL/da and dL/dt in
registers: per layer it reads z (and u) from the tape,
applies omega cos(omega z) and its derivative (the MUFU), writes dL/dz and dL/du and multiplies by W
on the tensor cores; then dL/dx. For an SDF and its xyz gradient at width 256 that is 5 passes of
products per step (forward 1, the Jacobian's sweep 1, the tangent's forward mode 1, the sweep of y
and the tangent 2), where a tangent per column took 12 (three launches of y and a tangent, forward
and backward). The parameter gradients are whole-batch products after it, dL/dW_l = dL/dz_l^T
a_{l-1} + sum_o dL/du_{l,o}^T t_{l-1,o} (a = sin(omega z), t = omega cos(omega z) u, which the sweep
writes over z and u in the tape once it has read them, so a second backward through the same call
runs the taped forward again; the first layer's tangents W v add dL/du_1^T v to W's last columns) and
dL/db_l = sum dL/dz_l, one GEMM kernel per layer (``kernels.siren.parameters``, dL/db summed on the
way): deterministic (partial sums over chunks of the batch, added in a fixed order) and on the
tensor cores at the call's precision (PyTorch's float32 products ran them on the CUDA cores), the
split tiny-cuda-nn's fully fused MLPs use too.

Why a tape and not recomputation on chip: with the register tiles of the forward (16-32 points a
program at width 256), every layer a tile recomputes re-reads that layer's weights from L2, 8-16 KB a
point at width 256 (benchmarks/gpu_model.py), where the tape costs 1 KB written and 1 KB read per
layer and point (times 1 + outputs with the Jacobian); recomputing in the backward would also cost
L(L-1)/2 layers of products for the L layers' inputs. Why GEMMs for dL/dW and not per-tile partial
sums in the kernel: a tile's share of one layer's dL/dW is width^2 floats, 256 KB at width 256,
written (or added atomically) for every 16-32 points, 8-16 KB a point a layer; the GEMM reads each
operand once per 128 columns of the other, 4 KB a point a width-256 layer (times 1 + outputs), the
second read from L2 (the tiles of a chunk of points run side by side).

Gradients of gradients (``torch.autograd.grad(..., create_graph=True)`` through this call): the
backward then runs the composed path (``fastsdf.ops.siren_composed``: the reference with the Triton
sine) on the saved inputs and parameters and returns its gradients, which autograd can
differentiate again; only first-order backwards run on the kernels. The eikonal loss on
``forward_with_gradient``'s Jacobian needs only those.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from fastsdf import _memory
from fastsdf.kernels import siren as kernels
from fastsdf.ops import siren_composed, siren_reference
from fastsdf.ops.siren_fused import KernelCache, records_graph

__all__ = ["FusedSiren", "forward", "forward_with_gradient", "jacobian_pays", "serves_recorded", "supports"]

# The fused Jacobian against the composed path (plain PyTorch), on one H200 (2026-11-29,
# 3->256x3->1, 2^20 points, medians of CUDA-event timings), by forward mode (three launches of y and
# one tangent): fp32 19.0 against 35.1 M points/s, tf32 25.8 against 20.4, bf16 34.2 against 37.8.
# Until the kernels win, the dispatcher runs them only in the precisions where they do
# (FASTSDF_BACKEND=triton runs them in all). Reverse mode (kernels.siren.gradient: a third of the
# products at this width), which calls that autograd does not record now take, is not yet measured.
_JACOBIAN_PRECISIONS = ("tf32",)


def supports(weights: Sequence[torch.Tensor], omegas: Sequence[float | None]) -> bool:
    """Whether the kernels take this network: ``kernels.siren.supports``'s sizes, and one omega for
    the hidden layers."""
    return len(set(omegas[1:-1])) <= 1 and kernels.supports(weights)


def jacobian_pays(precision: str) -> bool:
    """Whether ``forward_with_gradient`` at ``precision`` was measured faster fused than composed."""
    return precision in _JACOBIAN_PRECISIONS


def serves_recorded(x: torch.Tensor, weights: Sequence[torch.Tensor], grad_columns: int | None,
                    double_backward: bool) -> bool:
    """Whether what the fused backward holds at once (the tape of pre-activations, with the Jacobian
    the tangents of one per output, and the gradients of both) takes at most half of the device's
    free memory; else the dispatcher takes the composed path, which keeps less (as the CPU kernel
    runs the network again). A double backward runs the composed path's on the saved inputs
    (``FusedSiren``)."""
    neurons = sum(w.shape[0] for w in weights)
    tapes = 2 * (1 + (weights[-1].shape[0] if grad_columns else 0))
    return 4 * x.shape[0] * neurons * tapes <= _memory.available_bytes(x.device) // 2


class FusedSiren(torch.autograd.Function):
    """(y, Jacobian of the last ``grad_columns`` inputs or None) = network(x) on the fused kernels;
    ``params`` are the ``layers`` weights, then the biases that exist."""

    @staticmethod
    def forward(ctx: Any, layers: int, omegas: tuple, precision: str, grad_columns: int | None, x: torch.Tensor,
                *params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        weights, biases = _split(layers, params)
        y, tape = kernels.forward_taped(x, weights, biases, omegas, precision)
        jacobian = None
        if grad_columns is not None:
            jacobian = torch.empty((x.shape[0], y.shape[1], grad_columns), dtype=torch.float32, device=x.device)
            kernels.jacobian_from_tape(tape, weights, omegas, precision, jacobian)
        ctx.layers, ctx.omegas, ctx.precision = layers, omegas, precision
        ctx.grad_columns, ctx.tape = grad_columns, tape
        ctx.save_for_backward(x, *params)
        ctx.set_materialize_grads(False)  # a Jacobian the loss leaves out: None, and no tangent swept
        return y, jacobian

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor | None, dj: torch.Tensor | None) -> tuple:
        x, *params = ctx.saved_tensors
        needs = ctx.needs_input_grad[4:]
        if torch.is_grad_enabled():
            return (None, None, None, None, *_composed_gradients(ctx, dy, dj, x, params, needs))
        layers, omegas, tape = ctx.layers, ctx.omegas, ctx.tape
        weights, biases = _split(layers, params)
        if tape is None:  # spent by an earlier backward of this graph (retain_graph): taped again
            _, tape = kernels.forward_taped(x, weights, biases, omegas, ctx.precision)
        ctx.tape = None  # the sweep below overwrites it with the weight gradients' operands
        seeds = None
        if dj is not None:
            # <dL/dJ, J> is, per point and output o, y_o's derivative along the direction dL/dJ[o]:
            # forward mode with one tangent per output, seeded with dL/d(that derivative) = 1.
            dj = dj.detach().contiguous().float()
            _, tape = kernels.forward_directional(weights, omegas, ctx.precision, dj, tape)
            outputs = dj.shape[1]
            seeds = torch.eye(outputs, device=x.device).expand(x.shape[0], outputs, outputs).contiguous()
        deltas = kernels.backward(dy, seeds, x, tape, weights, omegas, ctx.precision, needs[0])
        weight_grads, bias_grads = kernels.parameter_gradients(x, deltas, dj, ctx.precision,
                                                               needs[1:1 + layers], needs[1 + layers:])
        return (None, None, None, None, deltas.dx, *weight_grads, *bias_grads)


def _split(layers: int, params: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    weights = list(params[:layers])
    biases = list(params[layers:]) or [None] * layers
    return weights, biases


def _composed_gradients(ctx: Any, dy: torch.Tensor | None, dj: torch.Tensor | None, x: torch.Tensor,
                        params: Sequence[torch.Tensor], needs: Sequence[bool]) -> list[torch.Tensor | None]:
    """The gradients of <dy, y> + <dj, J> by the composed path, themselves differentiable."""
    weights, biases = _split(ctx.layers, params)
    wanted = [t for t, need in zip((x, *params), needs) if need]
    sine, linear = siren_composed.sine("triton"), siren_composed.linear(ctx.precision, x.device)
    if ctx.grad_columns is None:
        outputs = [siren_reference.forward(x, weights, biases, ctx.omegas, sine, linear)]
    else:
        outputs = list(siren_reference.forward_with_gradient(x, weights, biases, ctx.omegas, ctx.grad_columns, sine,
                                                             linear))
    pairs = [(out, g) for out, g in zip(outputs, (dy, dj)) if g is not None]
    grads = iter(torch.autograd.grad([p[0] for p in pairs], wanted, [p[1] for p in pairs], create_graph=True,
                                     allow_unused=True))
    return [next(grads) if need else None for need in needs]


def _apply(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None],
           omegas: Sequence[float | None], precision: str,
           grad_columns: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    params = [*weights, *(b for b in biases if b is not None)]
    return FusedSiren.apply(len(weights), tuple(omegas), precision, grad_columns, x, *params)


def forward(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None],
            omegas: Sequence[float | None], precision: str, cache: KernelCache) -> torch.Tensor:
    """The network at x (N, in) -> (N, out); recorded for autograd (``FusedSiren``) where autograd
    records the call."""
    if records_graph([x, *weights, *biases]):
        return _apply(x, weights, biases, omegas, precision, None)[0]
    return kernels.forward(x, weights, biases, omegas, precision)


def forward_with_gradient(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None],
                          omegas: Sequence[float | None], precision: str, grad_columns: int,
                          cache: KernelCache) -> tuple[torch.Tensor, torch.Tensor]:
    """(y (N, out), dy/dx (N, out, grad_columns)) for the last ``grad_columns`` inputs; recorded for
    autograd (``FusedSiren``: reverse mode from the taped forward, and in the backward forward mode
    along dL/dJ) where autograd records the call, else by forward or reverse mode, whichever runs
    fewer products (``kernels.siren.forward_with_gradient``)."""
    if not records_graph([x, *weights, *biases]):
        return kernels.forward_with_gradient(x, weights, biases, omegas, precision, grad_columns)
    y, jacobian = _apply(x, weights, biases, omegas, precision, grad_columns)
    assert jacobian is not None
    return y, jacobian
