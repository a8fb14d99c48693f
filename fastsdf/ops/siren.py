"""The arithmetic behind ``fastsdf.SirenMLP``: a backend per call, fused kernels where they can serve.

Backends (``backend``): ``"cpu"`` (``fastsdf._C``: the fused C++ kernel and a vectorised sine),
``"triton"`` (``fastsdf.kernels.siren``: fused Triton kernels for CUDA tensors) and ``"reference"``
(``fastsdf.ops.siren_reference``, plain PyTorch: any device, float64). Chosen from the input: float32
CPU tensors go to ``"cpu"``, float32 CUDA tensors to ``"triton"`` when Triton is installed,
anything else to ``"reference"``; FASTSDF_BACKEND=reference|triton|cpu forces one (an error if it
cannot run the call).

Where autograd records the call (grad mode on and a parameter or input that requires grad), the
backends run the reference algorithm with their own fused sine (``SineFunction``: sin and omega cos
in one pass, a backward written in differentiable ops, so gradients of gradients work), except for
``forward_with_gradient`` on the CPU, which runs the fused kernel forward and backward
(``siren_cpu.FusedSiren``: first-order gradients of y and of the Jacobian, which is what an eikonal
loss needs; FASTSDF_BACKEND=reference for more), and Triton's ``forward`` and (where it runs
fused, below) ``forward_with_gradient``, which run the fused kernels forward and backward
(``siren_triton.FusedSiren``: first-order gradients of y and of the Jacobian; the composed path
where its tape would take more than a quarter of the free memory) and, for a backward that must
itself be differentiable (create_graph), the composed path's backward on the saved inputs.
Elsewhere the fused kernels run the whole network in one go, except Triton's
``forward_with_gradient`` in the precisions where it was measured slower than the composed path
(``kernels.siren.jacobian_pays``), unless FASTSDF_BACKEND=triton asks for it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from fastsdf import _backend
from fastsdf.ops import siren_reference

__all__ = ["BACKENDS", "PRECISIONS", "KernelCache", "backend", "forward", "forward_with_gradient"]

PRECISIONS = ("fp32", "tf32", "bf16")
BACKENDS = ("reference", "triton", "cpu")
_ENV = "FASTSDF_BACKEND"


class KernelCache:
    """What a backend prepares from a network's parameters (the CPU kernel's packed weights), kept
    while ``holds(prepared)`` says it still matches them. That check must look at the values:
    edits through ``.data`` (``p.data.add_(...)``, ``p.data.copy_(...)``, ``p.data = new``) or
    through a NumPy view bump no version counter and may keep the storage. Owned by a module; copies
    and pickles of it start empty."""

    def __init__(self) -> None:
        self._entries: dict[str, Any] = {}

    def get(self, name: str, make: Callable[[], Any], holds: Callable[[Any], bool]) -> Any:
        entry = self._entries.get(name)
        if entry is None or not holds(entry):
            entry = self._entries[name] = make()
        return entry

    def __reduce__(self) -> tuple:
        return (KernelCache, ())


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
        if forced not in BACKENDS:
            raise ValueError(f"{_ENV} must be one of {BACKENDS}, got {forced!r}")
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


def _records_graph(tensors: Sequence[torch.Tensor | None]) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


# --- the composed path ---------------------------------------------------------------------------


class SineFunction(torch.autograd.Function):
    """(sin(omega z), omega cos(omega z)) from a fused kernel; the backward is written in
    differentiable ops on the saved outputs (dz = ds c - omega^2 dc s), so it can be
    differentiated again."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, omega: float, kernel: Callable) -> tuple[torch.Tensor, torch.Tensor]:
        s, c = kernel(z, omega)
        ctx.save_for_backward(s, c)
        ctx.omega = omega
        return s, c

    @staticmethod
    def backward(ctx: Any, ds: torch.Tensor | None, dc: torch.Tensor | None) -> tuple:
        s, c = ctx.saved_tensors
        dz = None
        if ds is not None:
            dz = ds * c
        if dc is not None:
            term = dc * s * (-ctx.omega * ctx.omega)
            dz = term if dz is None else dz + term
        return dz, None, None


def _cpu_sincos(z: torch.Tensor, omega: float) -> tuple[torch.Tensor, torch.Tensor]:
    z = z.contiguous()
    s = torch.empty_like(z)
    c = torch.empty_like(z)
    _backend.cpu().siren_sincos(z.detach().reshape(-1).numpy(), float(omega), s.reshape(-1, 1).numpy(),
                                c.reshape(-1, 1).numpy())
    return s, c


def _triton_sincos(z: torch.Tensor, omega: float) -> tuple[torch.Tensor, torch.Tensor]:
    from fastsdf.kernels import siren as kernels

    return kernels.sincos(z, omega)


_SINCOS = {"cpu": _cpu_sincos, "triton": _triton_sincos}


def _sine(name: str) -> siren_reference.SineFn:
    if name == "reference":
        return siren_reference.reference_sine
    kernel = _SINCOS[name]

    def sine(z: torch.Tensor, omega: float, with_derivative: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        return SineFunction.apply(z, omega, kernel)

    return sine


# --- precision of the composed path's products ---------------------------------------------------
# torch rounds float32 GEMMs as process-wide settings say (allow_tf32, set_float32_matmul_precision,
# and the fp32_precision settings that replace them from torch 2.9): they are the user's, and other
# threads read them, so fastsdf never writes them:
# - "tf32" (CUDA): a plain GEMM, TF32 where the user's settings allow it and fp32 where they do not
#   (the fused kernels use TF32 regardless). Rounding the operands to TF32 here instead, so as to get
#   TF32's numerics on fp32 cores, cost more than the products: the composed forward ran at 30M
#   points/s against fp32's 77M on an H200 (2026-11-29).
# - "fp32", and the first layer in every mode (omega_0 magnifies its errors): a plain GEMM where the
#   settings keep it IEEE; where they may round, on CUDA three products of TF32 parts (a = hi + lo,
#   a W ~ lo W_hi + hi W_lo + hi W_hi, each exact under TF32 but for lo's last bits: errors ~2^-22
#   of |a||W|, float32's class), and on the CPU, whose oneDNN may round to bf16, float64.
# The backward's products, which autograd makes, follow the settings.

_TF32_DROPPED_BITS = 13  # float32's 23 stored mantissa bits less TF32's 10
_ROUNDING = ("tf32", "bf16")


def _setting(read: Callable[[], Any]) -> str:
    """A precision setting as text; "unreadable" where torch lacks it or refuses to say (it raises
    when the old and the new API were both used)."""
    try:
        return str(read()).lower()
    except (AttributeError, RuntimeError):
        return "unreadable"


def _gemm_may_round(device: torch.device) -> bool:
    """Whether float32 GEMMs on ``device`` may round their operands under the process-wide settings:
    to TF32 on CUDA, to TF32 or bf16 in oneDNN on the CPU. The old API's flag (which torch may refuse
    to read) or any of the new settings (absent before torch 2.9) can ask for it."""
    backends = torch.backends
    if device.type == "cuda":
        old_api_ieee = _setting(lambda: backends.cuda.matmul.allow_tf32) == "false"
        new_api = (lambda: backends.cuda.matmul.fp32_precision,)
    elif device.type == "cpu":
        old_api_ieee = _setting(torch.get_float32_matmul_precision) == "highest"
        new_api = (lambda: backends.mkldnn.matmul.fp32_precision, lambda: backends.mkldnn.fp32_precision)
    else:
        return False
    settings = [_setting(read) for read in (*new_api, lambda: backends.fp32_precision)]
    return not old_api_ieee or any(value in _ROUNDING for value in settings)


def _round_tf32(x: torch.Tensor) -> torch.Tensor:
    """float32 ``x`` rounded to TF32 (10 mantissa bits, float32's exponent range), to nearest with
    ties to even; NaN and Inf kept, values past TF32's largest go to Inf."""
    bits = x.contiguous().view(torch.int32)
    half = (1 << (_TF32_DROPPED_BITS - 1)) - 1 + ((bits >> _TF32_DROPPED_BITS) & 1)
    rounded = ((bits + half) & -(1 << _TF32_DROPPED_BITS)).view(torch.float32)
    # A NaN's payload can carry into the sign bit: NaN stays itself.
    return torch.where(torch.isnan(x), x, rounded)


def _as_tf32(t: torch.Tensor) -> torch.Tensor:
    """t rounded to TF32, with the gradient of t itself."""
    return t + (_round_tf32(t.detach()) - t.detach())


def _tf32_parts(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo): t rounded to TF32 and the exact rest, the gradient flowing through hi, so that the
    parts' products have the gradients of t's."""
    hi = _as_tf32(t)
    return hi, (t - hi).detach()


def _exact_linear(a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, may_round: bool,
                  device: torch.device) -> torch.Tensor:
    if not may_round:
        return F.linear(a, weight, bias)
    if device.type != "cuda":
        return F.linear(a.double(), weight.double(), None if bias is None else bias.double()).float()
    (a_hi, a_lo), (w_hi, w_lo) = _tf32_parts(a), _tf32_parts(weight)
    return (F.linear(a_lo, w_hi) + F.linear(a_hi, w_lo)) + F.linear(a_hi, w_hi, bias)


def _linear(precision: str, device: torch.device) -> Callable[..., torch.Tensor]:
    """F.linear at ``precision`` for the layers after the first, which stays exact fp32 (see above);
    "tf32" may round on CUDA only (on the CPU it is fp32, as in the fused CPU kernel)."""
    may_round = _gemm_may_round(device)

    def linear(a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, layer: int) -> torch.Tensor:
        if a.dtype != torch.float32:
            return F.linear(a, weight, bias)
        if layer == 0 or precision == "fp32" or (precision == "tf32" and device.type != "cuda"):
            return _exact_linear(a, weight, bias, may_round, device)
        if precision == "tf32":
            return F.linear(a, weight, bias)
        z = F.linear(a.to(torch.bfloat16), weight.to(torch.bfloat16)).float()
        return z if bias is None else z + bias

    return linear


# --- entry points ----------------------------------------------------------------------------------


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def forward(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None],
            omegas: Sequence[float | None], precision: str = "fp32", cache: KernelCache | None = None,
            double_backward: bool = True) -> torch.Tensor:
    """The SIREN (weights (out, in) per layer, biases or None, omegas or None for a linear last
    layer) at x (N, in): (N, out). ``double_backward=False`` lets a recorded call on the CPU run on
    the fused kernel, whose gradients cannot be differentiated again."""
    _check_precision(precision)
    name = backend(x)
    fused = _fused(name, weights, omegas)
    first_order_cpu = name == "cpu" and not double_backward
    recorded = _records_graph([x, *weights, *biases])
    if name == "triton" and fused is not None and recorded:
        from fastsdf.ops import siren_triton

        if siren_triton.tape_fits(x, weights, None):
            return siren_triton.forward(x, weights, biases, omegas, precision)
    if fused is None or (not first_order_cpu and recorded):
        return siren_reference.forward(x, weights, biases, omegas, _sine(name), _linear(precision, x.device))
    return fused.forward(x, weights, biases, omegas, precision, cache or KernelCache())


def forward_with_gradient(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None],
                          omegas: Sequence[float | None], precision: str, grad_columns: int,
                          cache: KernelCache | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(y (N, out), dy/dx (N, out, grad_columns)) for the last ``grad_columns`` inputs."""
    _check_precision(precision)
    name = backend(x)
    fused = _fused(name, weights, omegas)
    if name == "triton" and fused is not None and not (os.environ.get(_ENV) or fused.jacobian_pays(precision)):
        fused = None
    recorded = _records_graph([x, *weights, *biases])
    if name == "triton" and fused is not None and recorded:
        from fastsdf.ops import siren_triton

        if siren_triton.tape_fits(x, weights, grad_columns):
            return siren_triton.forward_with_gradient(x, weights, biases, omegas, precision, grad_columns)
    if fused is None or (name != "cpu" and recorded):
        return siren_reference.forward_with_gradient(x, weights, biases, omegas, grad_columns, _sine(name),
                                                     _linear(precision, x.device))
    return fused.forward_with_gradient(x, weights, biases, omegas, precision, grad_columns, cache or KernelCache())


def _fused(name: str, weights: Sequence[torch.Tensor], omegas: Sequence[float | None]) -> Any:
    """The module with the backend's fused forward and forward_with_gradient, None where it has none
    for this network (the reference backend; Triton's kernels take square power-of-two widths of
    16-512, at most 16 outputs and one omega for the hidden layers: ``kernels.supports``)."""
    if name == "cpu":
        from fastsdf.ops import siren_cpu

        return siren_cpu
    if name == "triton":
        from fastsdf.kernels import siren as kernels

        if len(set(omegas[1:-1])) > 1:
            return None
        return kernels if kernels.supports(weights) else None
    return None
