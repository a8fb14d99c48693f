"""The parameter gradients of the training backward (``training.backward``): a layer's dL/dW = dL/dz^T a
+ sum_c dL/du_c^T t_c (a: its input, each sine layer's sin(omega z) the sweep leaves in the tape;
u_c, t_c: the Jacobian's tangents, with one plane per tangent) and dL/db = sum dL/dz over the points.

One GEMM kernel, ``weight_gradient_kernel``, at the call's precision on the tensor cores, where
PyTorch's float32 products (``allow_tf32`` off, its default) ran them on the CUDA cores: a
width-256 layer's dL/dW costs 131 kFLOP a point, 2 ns a point on an H200 at FP32's 67 TFLOP/s,
0.4 ns at fp16's rate by three products (benchmarks/gpu_model.py). A program takes a BLOCK_O x
BLOCK_I tile of dL/dW over a chunk of the points (split-K: the reduction runs over the batch, the
tiles are few) and writes its partial sum; the chunks' sums are added after, in a fixed order
(deterministic, no atomics). The operands stream from global memory, BLOCK_P points a step, each
read once per tile of the other's columns; the tiles of a chunk are neighbours in the launch order,
so the second read should come from L2 (the cost model counts every read as HBM's). dL/dz's tile is
the product's first operand, transposed, and dL/db is summed from it on the way. The operands are
float32 or bfloat16, their rows and planes at any stride: in bf16 the sweep leaves them in
bfloat16, half the bytes, where the products would round them anyway (``training.Deltas``).

Precision: ``"fp32"`` is three fp16 products of big and small parts (``device.FP16X3``), each
step's operands scaled first by powers of two into fp16's top binade (``device.scale_rows`` for
dL/dz^T's rows, one per output neuron; ``device.scale_columns`` for the input's columns, except a
sine's, bounded, taken as it is) and the step's products scaled back before they are added: each
term within 2^-20 of itself, its values below 2^-18 of their step's largest within 2^-39 of that
largest, a sine's within 2^-25 (tests/test_siren_parameters.py's bound); ``"tf32"`` one TF32
product, ``"bf16"`` bfloat16 operands; all accumulate in fp32. The interpreter rounds the
operands itself (``device.dot``).

Chunks: at least MIN_CHUNK points each and at most MAX_SPLITS of them (``chunking``); their partial
sums are MAX_SPLITS x out x in floats, written and read once: 32 bytes a point per width-256 layer
at 2^20 points (the cost model's batches take one chunk, and do not count them).
Tilings and their registers: ``launch.gradient_tiling``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from fastsdf.kernels.siren.device import FP16X3, dot, dot_fp16x3, fp16_parts, operand, scale_columns, scale_rows
from fastsdf.kernels.siren.launch import arch, gradient_tiling, on_device
from fastsdf.kernels.siren.operands import kernel_precision
from fastsdf.kernels.siren.training import Deltas

__all__ = ["MAX_SPLITS", "MIN_CHUNK", "chunking", "parameter_gradients", "weight_gradient", "weight_gradient_kernel"]

MIN_CHUNK = 4096
MAX_SPLITS = 64


@triton.jit
def _product(dt, a, acc, BOUNDED: tl.constexpr, PRECISION: tl.constexpr):
    """acc + dt a at PRECISION (``dt``: dL/dz^T, (BLOCK_O, BLOCK_P); ``a``: (BLOCK_P, BLOCK_I), in
    [-1, 1] if BOUNDED)."""
    if PRECISION == FP16X3:
        dt, rows = scale_rows(dt)
        if not BOUNDED:
            a, columns = scale_columns(a)
        a_big, a_small = fp16_parts(a)
        step = dot_fp16x3(dt, a_big, a_small, tl.zeros(acc.shape, dtype=tl.float32)) * rows[:, None]
        if not BOUNDED:
            step = step * columns[None, :]
        return acc + step
    else:
        return dot(dt, operand(a, PRECISION), acc, PRECISION)


@triton.jit
def _accumulate(acc, bias, d_ptr, a_ptr, start, end, o0, i0, OUT: tl.constexpr, IN: tl.constexpr,
                D_ROW: tl.constexpr, A_ROW: tl.constexpr, BOUNDED: tl.constexpr, BIAS: tl.constexpr,
                PRECISION: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_P: tl.constexpr):
    """acc + d[start:end, o0:o0 + BLOCK_O]^T a[start:end, i0:i0 + BLOCK_I] (d: (points, OUT), a:
    (points, IN), float32 or bfloat16, rows D_ROW and A_ROW elements apart), and with BIAS, bias +
    d's column sums."""
    ro = o0 + tl.arange(0, BLOCK_O)
    ri = i0 + tl.arange(0, BLOCK_I)
    for p0 in range(start, end, BLOCK_P):
        rp = p0 + tl.arange(0, BLOCK_P)
        inside = rp < end
        d = tl.load(d_ptr + rp[:, None] * D_ROW + ro[None, :], mask=inside[:, None] & (ro < OUT)[None, :],
                    other=0.0).to(tl.float32)
        a = tl.load(a_ptr + rp[:, None] * A_ROW + ri[None, :], mask=inside[:, None] & (ri < IN)[None, :],
                    other=0.0).to(tl.float32)
        if BIAS:
            bias += tl.sum(d, axis=0)
        acc = _product(tl.trans(d), a, acc, BOUNDED, PRECISION)
    return acc, bias


@triton.jit
def weight_gradient_kernel(d_ptr, a_ptr, du_ptr, t_ptr, partial_ptr, bias_ptr, n_points, chunk, planes, du_plane,
                           t_plane, OUT: tl.constexpr, IN: tl.constexpr, D_ROW: tl.constexpr, A_ROW: tl.constexpr,
                           DU_ROW: tl.constexpr, T_ROW: tl.constexpr, BOUNDED: tl.constexpr, BIAS: tl.constexpr,
                           PRECISION: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_I: tl.constexpr,
                           BLOCK_P: tl.constexpr):
    """Program (tile, split): the tile's partial dL/dW over points [split chunk, (split + 1) chunk),
    d^T a + sum over ``planes`` c of du[c]^T t[c] (d, du[c]: (n_points, OUT); a, t[c]: (n_points,
    IN); a in [-1, 1] if BOUNDED; float32 or bfloat16, rows *_ROW and planes *_plane elements apart,
    the row strides constants: as runtime values they cost the fp32 tile 284 B of spills), stored at
    partial_ptr + split OUT IN; with BIAS, the tiles of the first columns store d's column sums at
    bias_ptr + split OUT."""
    tiles_in = tl.cdiv(IN, BLOCK_I)
    tile = tl.program_id(0)
    split = tl.program_id(1).to(tl.int64)
    o0 = (tile // tiles_in) * BLOCK_O
    i0 = (tile % tiles_in) * BLOCK_I
    start = split * chunk
    end = tl.minimum(start + chunk, n_points)
    acc = tl.zeros((BLOCK_O, BLOCK_I), dtype=tl.float32)
    bias = tl.zeros((BLOCK_O,), dtype=tl.float32)
    acc, bias = _accumulate(acc, bias, d_ptr, a_ptr, start, end, o0, i0, OUT, IN, D_ROW, A_ROW, BOUNDED, BIAS,
                            PRECISION, BLOCK_O, BLOCK_I, BLOCK_P)
    for c in range(planes):
        plane = tl.cast(c, tl.int64)
        acc, bias = _accumulate(acc, bias, du_ptr + plane * du_plane, t_ptr + plane * t_plane, start, end, o0, i0,
                                OUT, IN, DU_ROW, T_ROW, False, False, PRECISION, BLOCK_O, BLOCK_I, BLOCK_P)
    ro = o0 + tl.arange(0, BLOCK_O)
    ri = i0 + tl.arange(0, BLOCK_I)
    tl.store(partial_ptr + split * (OUT * IN) + ro[:, None] * IN + ri[None, :], acc,
             mask=(ro < OUT)[:, None] & (ri < IN)[None, :])
    if BIAS:
        if i0 == 0:
            tl.store(bias_ptr + split * OUT + ro, bias, mask=ro < OUT)


def chunking(n: int, block_p: int) -> tuple[int, int]:
    """(chunks, points in each but the last: a multiple of block_p) of a batch of n >= 1 points."""
    splits = max(1, min(MAX_SPLITS, triton.cdiv(n, MIN_CHUNK)))
    chunk = triton.cdiv(triton.cdiv(n, splits), block_p) * block_p
    return triton.cdiv(n, chunk), chunk


_OPERAND_TYPES = (torch.float32, torch.bfloat16)


def _check_operands(d: torch.Tensor, a: torch.Tensor, du: torch.Tensor | None, t: torch.Tensor | None) -> None:
    tensors = [x for x in (d, a, du, t) if x is not None]
    if (du is None) != (t is None):
        raise ValueError("weight_gradient: du and t go together (tangent planes), or neither")
    if d.dim() != 2 or a.dim() != 2 or d.shape[0] != a.shape[0]:
        raise ValueError(f"weight_gradient: d (N, out) and a (N, in) expected, got {tuple(d.shape)} and "
                         f"{tuple(a.shape)}")
    if du is not None and (du.dim() != 3 or t.dim() != 3 or du.shape[:2] != t.shape[:2]
                           or du.shape[1:] != d.shape or t.shape[1:] != a.shape):
        raise ValueError(f"weight_gradient: du (C, N, out) and t (C, N, in) as d {tuple(d.shape)} and a "
                         f"{tuple(a.shape)} expected, got {tuple(du.shape)} and {tuple(t.shape)}")
    if any(x.dtype not in _OPERAND_TYPES for x in tensors) or len({x.device for x in tensors}) > 1:
        raise ValueError("weight_gradient: float32 or bfloat16 operands on one device expected, got "
                         + ", ".join(f"{x.dtype} on {x.device}" for x in tensors))


def _rows(x: torch.Tensor) -> torch.Tensor:
    """x, or a copy of it, whose rows are contiguous (the kernel takes any row and plane strides)."""
    return x if x.stride(-1) == 1 else x.contiguous()


def weight_gradient(d: torch.Tensor, a: torch.Tensor, precision: str, bounded: bool, du: torch.Tensor | None = None,
                    t: torch.Tensor | None = None,
                    bias: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(dL/dW = d^T a + sum_c du[c]^T t[c] (out, in), dL/db = d summed over the points (out,) with
    ``bias``, else None) for d (N, out), a (N, in), du (C, N, out) and t (C, N, in), float32 or
    bfloat16 (each as it is: strided views are read in place), at ``precision`` (``bounded``: a is a
    sine, in [-1, 1]); float32 results. Operands that do not match (shapes, types, one device) raise
    ValueError: the kernel would read past them."""
    _check_operands(d, a, du, t)
    n, outputs = d.shape
    inputs = a.shape[1]
    device = d.device
    if n == 0:
        return (torch.zeros((outputs, inputs), dtype=torch.float32, device=device),
                torch.zeros(outputs, dtype=torch.float32, device=device) if bias else None)
    planes = 0 if du is None else du.shape[0]
    tiling = gradient_tiling(outputs, inputs, precision, arch(d.device))
    splits, chunk = chunking(n, tiling.block_p)
    partial = torch.empty((splits, outputs, inputs), dtype=torch.float32, device=device)
    bias_partial = torch.empty((splits, outputs), dtype=torch.float32, device=device)
    d, a = _rows(d), _rows(a)
    if du is None:  # no plane: pointers never followed, not d and a (the cost model tells buffers apart)
        du = t = torch.empty((1, 1, 1), dtype=torch.float32, device=device)
    du, t = _rows(du), _rows(t)
    tiles = triton.cdiv(outputs, tiling.block_o) * triton.cdiv(inputs, tiling.block_i)
    with on_device(d):
        weight_gradient_kernel[(tiles, splits)](
            d, a, du, t, partial, bias_partial, n, chunk, planes, du.stride(0), t.stride(0), OUT=outputs, IN=inputs,
            D_ROW=d.stride(0), A_ROW=a.stride(0), DU_ROW=du.stride(1), T_ROW=t.stride(1), BOUNDED=bounded, BIAS=bias,
            PRECISION=kernel_precision(precision), BLOCK_O=tiling.block_o, BLOCK_I=tiling.block_i,
            BLOCK_P=tiling.block_p, **tiling.options)
    if splits == 1:
        return partial[0], bias_partial[0] if bias else None
    return partial.sum(0), bias_partial.sum(0) if bias else None


def parameter_gradients(x: torch.Tensor, deltas: Deltas, directions: torch.Tensor | None, precision: str,
                        need_weights: Sequence[bool],
                        need_biases: Sequence[bool]) -> tuple[list[torch.Tensor | None], list[torch.Tensor | None]]:
    """(dL/dW of each layer, dL/db of each layer with a bias; None where not needed) from
    ``training.backward``'s ``deltas`` (with the operands a and t its sweep left in the tape) for the
    network's inputs x (N, in) and, where the loss took the Jacobian, its ``directions`` dL/dJ (N,
    out, columns over x's last ones), whose first layer's tangents W v add dL/du_1^T v to W's last
    columns (the same GEMM, of ``columns`` inputs)."""
    inputs = [x.detach().float(), *deltas.a[:len(need_weights) - 1]]
    by_layer = [*deltas.pre, deltas.last]
    swept = deltas.tangents is not None
    tangent_deltas = [None, *deltas.tangents[1:], deltas.tangents_last] if swept else [None] * len(by_layer)
    tangent_inputs = [None, *deltas.t] if swept else [None] * len(by_layer)
    weight_grads: list[torch.Tensor | None] = []
    bias_grads: list[torch.Tensor | None] = []
    for layer, (d, a, need_w) in enumerate(zip(by_layer, inputs, need_weights)):
        need_b = layer < len(need_biases) and need_biases[layer]
        if need_w:
            w, b = weight_gradient(d, a, precision, layer > 0, tangent_deltas[layer], tangent_inputs[layer], need_b)
        else:
            w, b = None, d.sum(0, dtype=torch.float32) if need_b else None
        weight_grads.append(w)
        bias_grads.append(b)
    if swept and weight_grads[0] is not None:
        du, v = deltas.tangents[0], directions.detach().float().transpose(0, 1)  # (count, N, width / columns)
        more = len(du) > 1
        term, _ = weight_gradient(du[0], v[0], precision, False, du[1:] if more else None, v[1:] if more else None)
        weight_grads[0][:, x.shape[1] - v.shape[2]:] += term
    return weight_grads, bias_grads[:len(need_biases)]
