"""The fused CPU kernel (``fastsdf._C.SirenNet``, csrc/siren) behind ``fastsdf.ops.siren``.

``forward`` and ``forward_with_gradient`` run it through ``FusedSiren``, whose backward is the
kernel's fused backward (parameter and input gradients, the Jacobian's included, recomputing the
network tile by tile): first-order gradients, which is what training with an eikonal loss needs.

It computes in float32 whatever the precision: on the CPU neither tf32 nor a bf16 product is there
to make it faster (the fused fp32 kernel already outruns bf16 PyTorch).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from fastsdf import _backend
from fastsdf.ops.siren import KernelCache

__all__ = ["FusedSiren", "forward", "forward_with_gradient", "packed"]


def packed(weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None], omegas: Sequence[float | None],
           cache: KernelCache, width: int = 0) -> Any:
    """The network packed for the kernel (``width``: floats per vector, 0 for the CPU's widest)."""

    def make() -> Any:
        arrays = [w.detach().contiguous().numpy() for w in weights]
        bias_arrays = [None if b is None else b.detach().contiguous().numpy() for b in biases]
        return _backend.cpu().SirenNet(arrays, bias_arrays, list(omegas), width)

    return cache.get("cpu", [*weights, *biases], (tuple(omegas), width), make)


class FusedSiren(torch.autograd.Function):
    """(y, Jacobian or None) = network(x) on the fused kernel; ``params`` are the weights, then the
    biases that exist. Its backward is first order only (``once_differentiable``)."""

    @staticmethod
    def forward(ctx: Any, net: Any, layers: int, grad_columns: int | None, x: torch.Tensor,
                *params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        points = x.detach().contiguous()
        y = torch.empty((len(points), net.out_features), dtype=torch.float32)
        jacobian = None
        if grad_columns is not None:
            jacobian = torch.empty((len(points), net.out_features, grad_columns), dtype=torch.float32)
        net.forward(points.numpy(), y.numpy(), None if jacobian is None else jacobian.numpy(), grad_columns or 1)
        ctx.net, ctx.layers, ctx.grad_columns = net, layers, grad_columns
        ctx.param_shapes = [p.shape for p in params]
        ctx.save_for_backward(points)
        return y, jacobian

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dy: torch.Tensor | None, dj: torch.Tensor | None) -> tuple:
        (points,) = ctx.saved_tensors
        layers = ctx.layers
        weight_grads = [torch.empty(shape, dtype=torch.float32) for shape in ctx.param_shapes[:layers]]
        bias_grads = [torch.empty(shape, dtype=torch.float32) for shape in ctx.param_shapes[layers:]]
        dx = torch.empty_like(points) if ctx.needs_input_grad[3] else None
        ctx.net.backward(points.numpy(), None if dy is None else dy.contiguous().numpy(),
                         None if dj is None else dj.contiguous().numpy(), ctx.grad_columns or 1,
                         [g.numpy() for g in weight_grads],
                         [g.numpy() for g in bias_grads] + [None] * (layers - len(bias_grads)),
                         None if dx is None else dx.numpy())
        return (None, None, None, dx, *weight_grads, *bias_grads)


def _run(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None],
         omegas: Sequence[float | None], cache: KernelCache, grad_columns: int | None) -> tuple[torch.Tensor, Any]:
    net = packed(weights, biases, omegas, cache)
    params = [*weights, *(b for b in biases if b is not None)]
    return FusedSiren.apply(net, len(weights), grad_columns, x, *params)


def forward(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None],
            omegas: Sequence[float | None], precision: str, cache: KernelCache) -> torch.Tensor:
    return _run(x, weights, biases, omegas, cache, None)[0]


def forward_with_gradient(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None],
                          omegas: Sequence[float | None], precision: str, grad_columns: int,
                          cache: KernelCache) -> tuple[torch.Tensor, torch.Tensor]:
    return _run(x, weights, biases, omegas, cache, grad_columns)
