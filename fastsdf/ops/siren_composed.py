"""The composed SIREN path: ``fastsdf.ops.siren_reference``'s algorithm, with a backend's fused sine
(``sine``) and the products at the call's precision (``linear``), where a fused kernel cannot serve
(autograd to any order, networks the kernels do not take)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from fastsdf.ops import siren_cpu, siren_reference

__all__ = ["SineFunction", "gemm_may_round", "linear", "round_tf32", "sine"]


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


def _triton_sincos(z: torch.Tensor, omega: float) -> tuple[torch.Tensor, torch.Tensor]:
    from fastsdf.kernels import siren as kernels

    return kernels.sincos(z, omega)


_SINCOS = {"cpu": siren_cpu.sincos, "triton": _triton_sincos}


def sine(name: str) -> siren_reference.SineFn:
    """The sine of backend ``name`` (``siren.BACKENDS``) for the reference algorithm."""
    if name == "reference":
        return siren_reference.reference_sine
    kernel = _SINCOS[name]

    def fused_sine(z: torch.Tensor, omega: float, with_derivative: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        return SineFunction.apply(z, omega, kernel)

    return fused_sine


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


def gemm_may_round(device: torch.device) -> bool:
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


def round_tf32(x: torch.Tensor) -> torch.Tensor:
    """float32 ``x`` rounded to TF32 (10 mantissa bits, float32's exponent range), to nearest with
    ties to even; NaN and Inf kept, values past TF32's largest go to Inf."""
    bits = x.contiguous().view(torch.int32)
    half = (1 << (_TF32_DROPPED_BITS - 1)) - 1 + ((bits >> _TF32_DROPPED_BITS) & 1)
    rounded = ((bits + half) & -(1 << _TF32_DROPPED_BITS)).view(torch.float32)
    # A NaN's payload can carry into the sign bit: NaN stays itself.
    return torch.where(torch.isnan(x), x, rounded)


def _as_tf32(t: torch.Tensor) -> torch.Tensor:
    """t rounded to TF32, with the gradient of t itself."""
    return t + (round_tf32(t.detach()) - t.detach())


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


def linear(precision: str, device: torch.device) -> Callable[..., torch.Tensor]:
    """F.linear at ``precision`` for the layers after the first, which stays exact fp32 (see above);
    "tf32" may round on CUDA only (on the CPU it is fp32, as in the fused CPU kernel)."""
    may_round = gemm_may_round(device)

    def rounded_linear(a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, layer: int) -> torch.Tensor:
        if a.dtype != torch.float32:
            return F.linear(a, weight, bias)
        if layer == 0 or precision == "fp32" or (precision == "tf32" and device.type != "cuda"):
            return _exact_linear(a, weight, bias, may_round, device)
        if precision == "tf32":
            return F.linear(a, weight, bias)
        z = F.linear(a.to(torch.bfloat16), weight.to(torch.bfloat16)).float()
        return z if bias is None else z + bias

    return rounded_linear
