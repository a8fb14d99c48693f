"""``sincos``: (sin(omega z), omega cos(omega z)) elementwise, the fused sine of the composed path
(``fastsdf.ops.siren_composed``), by the range reduction and the MUFU of ``device.sincos_reduced``."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Bound under the name the kernel body calls it by.
from fastsdf.kernels.siren.device import sincos_reduced
from fastsdf.kernels.siren.launch import on_device

__all__ = ["SINCOS_BLOCK", "sincos", "sincos_kernel"]

SINCOS_BLOCK = 1024


@triton.jit
def sincos_kernel(z_ptr, s_ptr, c_ptr, n, omega, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offsets < n
    s, c = sincos_reduced(tl.load(z_ptr + offsets, mask=inside, other=0.0) * omega, True, True)
    tl.store(s_ptr + offsets, s, mask=inside)
    tl.store(c_ptr + offsets, omega * c, mask=inside)


def sincos(z: torch.Tensor, omega: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(sin(omega z), omega cos(omega z)), float32."""
    z = z.contiguous()
    s = torch.empty_like(z)
    c = torch.empty_like(z)
    n = z.numel()
    if n:
        with on_device(z):
            sincos_kernel[(triton.cdiv(n, SINCOS_BLOCK),)](z, s, c, n, float(omega), BLOCK=SINCOS_BLOCK,
                                                           enable_fp_fusion=True)  # as launch.Config.options
    return s, c
