"""The arithmetic behind ``fastsdf.SirenMLP``: a backend per call, fused kernels where they can serve.

Backends (``backend``): ``"cpu"`` (``fastsdf._C``: the fused C++ kernel and a vectorised sine, through
``fastsdf.ops.siren_cpu``), ``"triton"`` (``fastsdf.kernels.siren``: fused Triton kernels for CUDA
tensors, through ``fastsdf.ops.siren_triton``) and ``"reference"`` (``fastsdf.ops.siren_reference``,
plain PyTorch: any device, float64). Chosen from the input: float32
CPU tensors go to ``"cpu"``, float32 CUDA tensors to ``"triton"`` when Triton is installed,
anything else to ``"reference"``; FASTSDF_BACKEND=reference|triton|cpu forces one (an error if it
cannot run the call). The fused backends answer the dispatcher's questions below through one
interface, ``fastsdf.ops.siren_fused.FusedBackend``.

Where autograd records the call (grad mode on and a parameter or input that requires grad), the
backends run the reference algorithm with their own fused sine (``siren_composed``: the composed
path; ``SineFunction``: sin and omega cos in one pass, a backward written in differentiable ops, so
gradients of gradients work), except for
``forward_with_gradient`` on the CPU, which runs the fused kernel forward and backward
(``siren_cpu.FusedSiren``: first-order gradients of y and of the Jacobian, which is what an eikonal
loss needs; FASTSDF_BACKEND=reference for more), and Triton's ``forward`` and (where it runs
fused, below) ``forward_with_gradient``, which run the fused kernels forward and backward
(``siren_triton.FusedSiren``: first-order gradients of y and of the Jacobian; the composed path
where its tape would take more than a quarter of the free memory) and, for a backward that must
itself be differentiable (create_graph), the composed path's backward on the saved inputs.
Elsewhere the fused kernels run the whole network in one go, except Triton's
``forward_with_gradient`` in the precisions where it was measured slower than the composed path
(``siren_triton.jacobian_pays``), unless FASTSDF_BACKEND=triton asks for it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from fastsdf import _backend
from fastsdf._validation import one_of
from fastsdf.ops import siren_composed, siren_cpu, siren_reference
from fastsdf.ops.siren_fused import FusedBackend, KernelCache, records_graph

__all__ = ["BACKENDS", "PRECISIONS", "KernelCache", "backend", "forward", "forward_with_gradient"]

PRECISIONS = ("fp32", "tf32", "bf16")
BACKENDS = ("reference", "triton", "cpu")
_ENV = "FASTSDF_BACKEND"


def _triton_ready() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def backend(x: torch.Tensor) -> str:
    """The backend a call on ``x`` (N, features) runs on."""
    forced = os.environ.get(_ENV, "").strip()
    if forced:
        one_of(forced, _ENV, BACKENDS)
        if forced != "reference" and x.dtype != torch.float32:
            raise _backend.BackendUnavailableError(f"{_ENV}={forced} runs float32 only, got {x.dtype}")
        if forced == "cpu" and x.device.type != "cpu":
            raise _backend.BackendUnavailableError(f"{_ENV}=cpu needs CPU tensors, got {x.device}")
        if forced == "cpu":
            _backend.cpu()  # raises with a build hint when missing
        if forced == "triton" and not _triton_ready():
            raise _backend.BackendUnavailableError(f"{_ENV}=triton but Triton is not installed (pip install triton)")
        if forced == "triton" and x.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise _backend.BackendUnavailableError(
                f"{_ENV}=triton needs CUDA tensors (or TRITON_INTERPRET=1 for Triton's CPU interpreter), got {x.device}")
        return forced
    if x.dtype != torch.float32:
        return "reference"
    if x.device.type == "cuda":
        return "triton" if _triton_ready() else "reference"
    if x.device.type == "cpu" and _backend.has_cpu():
        return "cpu"
    return "reference"


def forward(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None],
            omegas: Sequence[float | None], precision: str = "fp32", cache: KernelCache | None = None,
            double_backward: bool = True) -> torch.Tensor:
    """The SIREN (weights (out, in) per layer, biases or None, omegas or None for a linear last
    layer) at x (N, in): (N, out). ``double_backward=False`` lets a recorded call on the CPU run on
    the fused kernel, whose gradients cannot be differentiated again."""
    one_of(precision, "precision", PRECISIONS)
    name = backend(x)
    fused = _fused(name, weights, omegas)
    if fused is None or (records_graph([x, *weights, *biases])
                         and not fused.serves_recorded(x, weights, None, double_backward)):
        return siren_reference.forward(x, weights, biases, omegas, siren_composed.sine(name),
                                       siren_composed.linear(precision, x.device))
    return fused.forward(x, weights, biases, omegas, precision, cache or KernelCache())


def forward_with_gradient(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None],
                          omegas: Sequence[float | None], precision: str, grad_columns: int,
                          cache: KernelCache | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(y (N, out), dy/dx (N, out, grad_columns)) for the last ``grad_columns`` inputs."""
    one_of(precision, "precision", PRECISIONS)
    name = backend(x)
    fused = _fused(name, weights, omegas)
    if fused is not None and not (os.environ.get(_ENV) or fused.jacobian_pays(precision)):
        fused = None
    # forward_with_gradient promises first-order gradients of y and of the Jacobian (more where the
    # backend gives them): double_backward False.
    if fused is None or (records_graph([x, *weights, *biases])
                         and not fused.serves_recorded(x, weights, grad_columns, False)):
        return siren_reference.forward_with_gradient(x, weights, biases, omegas, grad_columns,
                                                     siren_composed.sine(name),
                                                     siren_composed.linear(precision, x.device))
    return fused.forward_with_gradient(x, weights, biases, omegas, precision, grad_columns, cache or KernelCache())


def _fused(name: str, weights: Sequence[torch.Tensor], omegas: Sequence[float | None]) -> FusedBackend | None:
    """The backend's fused kernels, None where it has none for this network (the reference backend;
    Triton's kernels take square power-of-two widths of 16-512, at most 16 outputs and one omega for
    the hidden layers: ``siren_triton.supports``)."""
    fused: FusedBackend
    if name == "cpu":
        fused = siren_cpu
    elif name == "triton":
        from fastsdf.ops import siren_triton  # imports Triton

        fused = siren_triton
    else:
        return None
    return fused if fused.supports(weights, omegas) else None
