"""The weights as the kernels' products read them (``device.products``), prepared on the host once per
call: in the products' operand type (bfloat16 for ``"bf16"``), or for ``"fp32"``, whose kernels
multiply by fp16 big and small parts (``device.FP16X3``), split by ``split_fp16`` after a scale by
a power of two per matrix, whose inverse the kernels apply to the sums."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastsdf.kernels.siren.device import FP16X3, fp16_parts, fp16_scale
from fastsdf.kernels.siren.launch import PRECISION_CODES, on_device

__all__ = ["SPLIT_BLOCK", "SPLIT_OPTIONS", "kernel_precision", "layer_operands", "split_fp16",
           "split_kernel"]

# A program walks its matrix twice (its largest value, then the parts) in blocks of SPLIT_BLOCK: at
# width 256, 16 blocks a pass, so a call's split costs little next to a batch's forward.
SPLIT_BLOCK = 4096
SPLIT_OPTIONS = dict(num_warps=8, enable_fp_fusion=True)  # as launch.Config.options


def kernel_precision(precision: str) -> int:
    """The kernels' PRECISION constant for a precision of ``fastsdf.ops.siren.PRECISIONS``."""
    return FP16X3.value if precision == "fp32" else PRECISION_CODES[precision]


@triton.jit
def split_kernel(w_ptr, parts_ptr, inverse_ptr, SIZE: tl.constexpr, COLUMNS: tl.constexpr, BLOCK: tl.constexpr):
    """One matrix (SIZE values, rows of COLUMNS) per program: its largest |value|, then its values
    times 2^p (``device.fp16_scale`` of the largest) as fp16 big and small parts, each row's big ones
    then its small ones, and 2^-p."""
    matrix = tl.program_id(0).to(tl.int64)
    w_ptr += matrix * SIZE
    parts_ptr += matrix * 2 * SIZE
    largest = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, SIZE, BLOCK):
        at = start + tl.arange(0, BLOCK)
        largest = tl.maximum(largest, tl.abs(tl.load(w_ptr + at, mask=at < SIZE, other=0.0)))
    scale, inverse = fp16_scale(tl.max(largest, axis=0))
    tl.store(inverse_ptr + matrix, inverse)
    for start in range(0, SIZE, BLOCK):
        at = start + tl.arange(0, BLOCK)
        inside = at < SIZE
        scaled = tl.load(w_ptr + at, mask=inside, other=0.0) * scale
        big, small = fp16_parts(scaled)
        out = parts_ptr + (at // COLUMNS) * (2 * COLUMNS) + at % COLUMNS
        tl.store(out, big, mask=inside)
        tl.store(out + COLUMNS, small, mask=inside)


def split_fp16(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Matrices (..., rows, columns) as FP16X3's products read them: (..., rows, 2, columns) fp16,
    each row's big parts, then its small ones, of the matrix times the power of two that puts its
    largest |value| in fp16's top binade (``device.fp16_scale``: a matrix of zeros takes 2^126, one
    with an infinity or a NaN 2^-114 and stays not finite), and the inverse powers (...,) fp32. One
    launch (``split_kernel``), no synchronisation."""
    w = w.detach().float().contiguous()
    rows, columns = w.shape[-2:]
    parts = torch.empty((*w.shape[:-1], 2, columns), dtype=torch.float16, device=w.device)
    inverse = torch.empty(w.shape[:-2], dtype=torch.float32, device=w.device)
    if w.numel():
        with on_device(w):
            split_kernel[(inverse.numel(),)](w, parts, inverse, SIZE=rows * columns, COLUMNS=columns,
                                             BLOCK=SPLIT_BLOCK, **SPLIT_OPTIONS)
    return parts, inverse


def layer_operands(hidden: torch.Tensor | None, last: torch.Tensor,
                   precision: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(the hidden layers' matrices stacked, the output layer's, the inverse scales: the hidden
    layers' then the output layer's, ones but for fp32) from ``hidden`` (layers, K, N) or None and
    ``last`` (K, N), each as a layer's products contract it (K rows of N)."""
    device = last.device
    if kernel_precision(precision) == FP16X3.value:
        w_last, last_scale = split_fp16(last)
        if hidden is None:
            return torch.zeros(1, dtype=torch.float16, device=device), w_last, last_scale[None]
        w_hidden, hidden_scales = split_fp16(hidden)
        return w_hidden, w_last, torch.cat([hidden_scales, last_scale[None]])
    operand = torch.bfloat16 if precision == "bf16" else torch.float32
    w_hidden = (hidden.detach().to(operand).contiguous() if hidden is not None
                else torch.zeros(1, dtype=operand, device=device))
    layers = 0 if hidden is None else hidden.shape[0]
    return w_hidden, last.detach().to(operand).contiguous(), torch.ones(layers + 1, dtype=torch.float32,
                                                                          device=device)
