"""The fused CPU kernel (``fastsdf._C.SirenNet``, csrc/siren) behind ``fastsdf.ops.siren``.

``forward`` and ``forward_with_gradient`` run it through ``FusedSiren``, whose backward is the
kernel's fused backward (parameter and input gradients, the Jacobian's included): first-order
gradients, which is what training with an eikonal loss needs. When autograd will want that backward,
the forward keeps each layer's pre-activations and Jacobian rows (a tape, about 8 KB a point for the
SIREN SDF network) so that the backward need not run the network again: a quarter fewer products.
Where the tape would take more than a quarter of the free memory, the backward runs the network again
instead.

It computes in float32 whatever the precision: on the CPU neither tf32 nor a bf16 product is there
to make it faster (the fused fp32 kernel already outruns bf16 PyTorch).

This module is the CPU's ``fastsdf.ops.siren_fused.FusedBackend``; ``sincos`` is the CPU's fused
sine for the composed path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from fastsdf import _backend, _memory
from fastsdf.ops.siren_fused import KernelCache, records_graph

__all__ = ["FusedSiren", "forward", "forward_with_gradient", "jacobian_pays", "packed", "serves_recorded", "sincos",
           "supports"]


def supports(weights: Sequence[torch.Tensor], omegas: Sequence[float | None]) -> bool:
    """The kernel takes any SIREN."""
    return True


def jacobian_pays(precision: str) -> bool:
    """The fused Jacobian runs in every precision (all are fp32 here)."""
    return True


def serves_recorded(x: torch.Tensor, weights: Sequence[torch.Tensor], grad_columns: int | None,
                    double_backward: bool) -> bool:
    """Whether the kernel's first-order backward may serve a recorded call: where its gradients need
    not be differentiated again (``double_backward`` False)."""
    return not double_backward


def sincos(z: torch.Tensor, omega: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(sin(omega z), omega cos(omega z)) of float32 CPU ``z`` by the vectorised kernel."""
    z = z.contiguous()
    s = torch.empty_like(z)
    c = torch.empty_like(z)
    _backend.cpu().siren_sincos(z.detach().reshape(-1).numpy(), float(omega), s.reshape(-1, 1).numpy(),
                                c.reshape(-1, 1).numpy())
    return s, c


def packed(weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None], omegas: Sequence[float | None],
           cache: KernelCache, width: int = 0) -> Any:
    """The network packed for the kernel (``width``: floats per vector, 0 for the CPU's widest).

    Reused from ``cache`` while the kernel's copy of the weights equals them bit for bit (edits
    through ``.data`` included): for SirenMLP(3, 256, 3, 1) comparing takes 0.02 ms, packing again
    1.7-2.1 ms, where the kernel's forward of one point (one tile) takes 0.36 ms and of 1,024 points
    about 35 ms (one core)."""
    arrays = [w.detach().contiguous().numpy() for w in weights]
    bias_arrays = [None if b is None else b.detach().contiguous().numpy() for b in biases]
    omega_list = list(omegas)

    def make() -> Any:
        return _backend.cpu().SirenNet(arrays, bias_arrays, omega_list, width)

    return cache.get(f"cpu/{width}", make, lambda net: net.holds(arrays, bias_arrays, omega_list))


class _TapePool:
    """Float32 buffers handed back by finished backwards, for the next forwards to reuse."""

    def __init__(self, keep: int = 2) -> None:
        self._free: list[torch.Tensor] = []
        self._keep = keep

    def take(self, floats: int) -> torch.Tensor:
        for i, buffer in enumerate(self._free):
            if buffer.numel() >= floats:
                return self._free.pop(i)[:floats]
        return torch.empty(floats, dtype=torch.float32)

    def give(self, buffer: torch.Tensor) -> None:
        whole = buffer._base if buffer._base is not None else buffer
        self._free = [whole, *self._free][: self._keep]


_TAPES = _TapePool()


class FusedSiren(torch.autograd.Function):
    """(y, Jacobian or None) = network(x) on the fused kernel; ``params`` are the weights, then the
    biases that exist; ``recorded``: whether autograd records the call (the forward cannot tell:
    it runs with grad mode off). Its backward is first order only (``once_differentiable``)."""

    @staticmethod
    def forward(ctx: Any, net: Any, layers: int, grad_columns: int | None, recorded: bool, x: torch.Tensor,
                *params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        points = x.detach().contiguous()
        y = torch.empty((len(points), net.out_features), dtype=torch.float32)
        jacobian = None
        if grad_columns is not None:
            jacobian = torch.empty((len(points), net.out_features, grad_columns), dtype=torch.float32)
        tape = None
        if recorded:
            floats = net.tape_floats(len(points), grad_columns is not None)
            if 4 * floats <= _memory.available_bytes() // 4:
                tape = _TAPES.take(floats)
        net.forward(points.numpy(), y.numpy(), None if jacobian is None else jacobian.numpy(), grad_columns or 1,
                    None if tape is None else tape.numpy())
        ctx.net, ctx.layers, ctx.grad_columns, ctx.tape = net, layers, grad_columns, tape
        ctx.param_shapes = [p.shape for p in params]
        ctx.save_for_backward(points)
        return y, jacobian

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dy: torch.Tensor | None, dj: torch.Tensor | None) -> tuple:
        (points,) = ctx.saved_tensors
        layers = ctx.layers
        # Where the forward computed the Jacobian (and its tape holds its rows) but the loss did not
        # use it, autograd passes no gradient for it: zeros keep the tape's layout.
        if ctx.grad_columns is not None and dj is None:
            dj = torch.zeros((len(points), ctx.net.out_features, ctx.grad_columns), dtype=torch.float32)
        weight_grads = [torch.empty(shape, dtype=torch.float32) for shape in ctx.param_shapes[:layers]]
        bias_grads = [torch.empty(shape, dtype=torch.float32) for shape in ctx.param_shapes[layers:]]
        dx = torch.empty_like(points) if ctx.needs_input_grad[4] else None
        ctx.net.backward(points.numpy(), None if dy is None else dy.contiguous().numpy(),
                         None if dj is None else dj.contiguous().numpy(), ctx.grad_columns or 1,
                         [g.numpy() for g in weight_grads],
                         [g.numpy() for g in bias_grads] + [None] * (layers - len(bias_grads)),
                         None if dx is None else dx.numpy(), None if ctx.tape is None else ctx.tape.numpy())
        if ctx.tape is not None:
            _TAPES.give(ctx.tape)
            ctx.tape = None
        return (None, None, None, None, dx, *weight_grads, *bias_grads)


def _run(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None],
         omegas: Sequence[float | None], cache: KernelCache, grad_columns: int | None) -> tuple[torch.Tensor, Any]:
    net = packed(weights, biases, omegas, cache)
    params = [*weights, *(b for b in biases if b is not None)]
    # Whether autograd records the call, and so whether a tape is worth keeping for its backward.
    recorded = records_graph([x, *params])
    return FusedSiren.apply(net, len(weights), grad_columns, recorded, x, *params)


def forward(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None],
            omegas: Sequence[float | None], precision: str, cache: KernelCache) -> torch.Tensor:
    return _run(x, weights, biases, omegas, cache, None)[0]


def forward_with_gradient(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None],
                          omegas: Sequence[float | None], precision: str, grad_columns: int,
                          cache: KernelCache) -> tuple[torch.Tensor, torch.Tensor]:
    return _run(x, weights, biases, omegas, cache, grad_columns)
