"""Triton kernels for ``fastsdf.ops.siren`` on CUDA tensors (on the CPU under TRITON_INTERPRET=1).

Design
------
``forward`` and ``forward_with_gradient`` run the whole network in one launch, one program per tile
of BLOCK_M points. The tile's activations (BLOCK_M x H, fp32) stay in registers from the first
layer to the last: nothing but x, y and the Jacobian touches global memory per point (12 + 4 OUT
bytes forward, + 12 OUT with the xyz Jacobian); the weights are streamed (from L2) once per tile.
A layer is ``tl.dot`` of the register tile with the weights in chunks of BLOCK_N output columns, so
that the weight chunk Triton stages in shared memory (H x BLOCK_N) fits every target; each chunk
gets its bias and sine at once and the chunks are reassembled into the next tile by ``tl.join`` +
``tl.reshape``, which interleaves their columns. The kernel never permutes registers to undo that:
the host hands it the weights with their hidden units in the tile's order (``_tile_order``), the
rows of every weight matrix and the columns of the first one permuted to match.

The input Jacobian is forward mode: the tangents dz/dx_j of the TANGENTS (<= 3) requested inputs
ride along as BLOCK_M x H tiles, multiplied by the same weight chunk as the activations (loaded
once) and by omega cos(omega z) after it. Reverse mode would need every layer's cos factors
(L x BLOCK_M x H) kept for the backward sweep, which is what forced the previous design into a
global scratch buffer and into spills; forward mode keeps 1 + TANGENTS tiles live and stores
nothing. More than 3 requested columns (a latent code's) take ceil(G / 3) launches.

Sine and cosine: an explicit range reduction to [-pi, pi] (k = floor(phase / 2 pi + 1/2), then
phase - k 2 pi with a three-constant Cody-Waite split, fused multiply-adds), then the special
function unit's ``sin.approx.f32`` / ``cos.approx.f32`` by inline PTX (max absolute error
2^-20.9 on [-pi, pi], PTX ISA). The interpreter has no PTX: there the same reduced argument goes
through ``tl.sin``/``tl.cos``, and the tests add the hardware's error bound to their tolerances.

Precision of the products after the first layer: ``"fp32"`` is ``tf32x3`` (three TF32 products,
fp32 accuracy on tensor cores), ``"tf32"`` one TF32 product, ``"bf16"`` bfloat16 operands (weights
converted once per call on the host, activations at the dot) with fp32 accumulation. The first
layer (few inputs, magnified by omega_0) is exact fp32 multiply-adds when it has at most 16 inputs,
``tf32x3`` products over blocks of the inputs read from global memory beyond (latent codes). The
interpreter ignores ``input_precision``, so there the kernels round the operands themselves as the
hardware does (TF32 truncation, the tf32x3 split, bfloat16 round-to-nearest-even) and run an exact
product: the numerics the tests see are the GPU's, up to summation order.

Offsets that scale with the batch (points x IN, points x OUT, the Jacobian's) are 64-bit, and every
launch runs under ``torch.cuda.device`` of its tensors.

Configurations (``_CONFIGS``): per width and number of tangent tiles, BLOCK_M, BLOCK_N, the warp
count and no software pipelining of the layer loop (Triton's default 3 stages held three copies of
a layer's weights in shared memory). ``tests/test_triton_compile.py`` compiles them for sm_80 and
sm_90: up to width 64 no spills and at most 36 KB of shared memory in every precision (e.g. width
64, fp32: forward BLOCK_M 64, 4 warps, 184 registers; three tangents BLOCK_M 32, 8 warps, 180).
From width 128 on the live state, 2 (1 + TANGENTS) BLOCK_M H floats per program at a layer boundary
(previous tiles plus those being assembled, times two in fp32 mode for the big/small operands),
exceeds the register file and the tilings spill (width 256 fp32 forward, BLOCK_M 64, 8 warps:
~15 KB per thread, 192 KB shared on sm_90; bf16: none on sm_90, 844 B on sm_80): still open.

Why Triton ``tl.dot`` on register tiles and not Gluon or CUDA C++: Gluon (explicit shared memory,
``wgmma`` descriptors, warp specialisation) is the way to BLOCK_M 128 tiles held in shared memory
at width 256, but its API is experimental and differs between Triton 3.6 (the GPU machine's) and
3.9 (this one's), and neither it nor a CUDA C++ kernel can run under the interpreter, which is the
only place these kernels are tested until a GPU is lent. The register design reaches the tensor
cores and the MUFU with no global traffic beyond inputs and outputs; its cost is the small
BLOCK_M of the Jacobian at widths >= 256 (weights re-read from L2 per 16 points), the first thing
to revisit with a profiler.

``sincos`` is the elementwise (sin(omega z), omega cos(omega z)) of the autograd path.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import triton
import triton.language as tl

from fastsdf.ops.siren import KernelCache

__all__ = ["forward", "forward_with_gradient", "sincos", "supports"]

_PRECISION_CODES = {"fp32": 0, "tf32": 1, "bf16": 2}
_EXACT_FIRST_LAYER = 16  # inputs up to which the first layer is a loop of fp32 multiply-adds
_MAX_TANGENTS = 3  # Jacobian columns per launch
_WIDTHS = (16, 32, 64, 128, 256, 512)
_MAX_OUTPUTS = 16  # the output layer is one chunk of _OUT_PAD columns
_OUT_PAD = tl.constexpr(16)
_MAX_INPUTS = 512
# Triton's interpreter has no inline PTX and ignores input_precision: there the kernels emulate both.
_NATIVE = tl.constexpr(os.environ.get("TRITON_INTERPRET") != "1")

# 2 pi = _C1 + _C2 + _C3: _C1 has 8 significant bits (k _C1 is exact for |k| < 2^16), the rest
# carries the remainder to ~2^-70, so phase - k 2 pi loses nothing but its final rounding.
_INV_2PI = tl.constexpr(1.0 / (2.0 * math.pi))
_C1 = tl.constexpr(6.28125)
_C2 = tl.constexpr(float(np.float32(2.0 * math.pi - 6.28125)))
_C3 = tl.constexpr(float(np.float32(2.0 * math.pi - 6.28125 - float(np.float32(2.0 * math.pi - 6.28125)))))


@dataclass(frozen=True)
class Config:
    """A tiling: points per program, output columns per weight chunk, warps, and Triton's software
    pipelining of the loop over hidden layers (1: none; more prefetches the next layers' weights
    into shared memory, one copy of a layer's weights per stage)."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int = 1


# (width, tangent tiles) -> Config, measured by tests/test_triton_compile.py (Triton 3.9's compiler,
# ptxas 12.9): up to width 64 every precision compiles without spills on sm_80 and sm_90; from 128
# on the tiles below are the best found so far and still spill (numbers in that test's module).
_CONFIGS: dict[tuple[int, int], Config] = {}
for _w in _WIDTHS:
    for _t in range(_MAX_TANGENTS + 1):
        if _w <= 32:
            _CONFIGS[_w, _t] = Config(64 if _t == 0 else 32, _w, 4)
        elif _w == 64:
            _CONFIGS[_w, _t] = Config(64, 64, 4) if _t == 0 else Config(32, 64, 8)
        elif _w == 128:
            _CONFIGS[_w, _t] = Config(64 if _t == 0 else 32, 64, 8)
        elif _w == 256:
            _CONFIGS[_w, _t] = Config(64 if _t == 0 else 16, 64 if _t == 0 else 32, 8)
        else:
            _CONFIGS[_w, _t] = Config(32 if _t == 0 else 16, 32, 8)


# --- device functions ------------------------------------------------------------------------------


@triton.jit
def _sincos(phase):
    """(sin(phase), cos(phase)) after reduction to [-pi, pi]; the MUFU on the GPU."""
    k = tl.floor(phase * _INV_2PI + 0.5)
    r = tl.fma(k, -_C1, phase)
    r = tl.fma(k, -_C2, r)
    r = tl.fma(k, -_C3, r)
    if _NATIVE:
        s = tl.inline_asm_elementwise("sin.approx.f32 $0, $1;", "=r,r", [r], dtype=tl.float32, is_pure=True,
                                      pack=1)
        c = tl.inline_asm_elementwise("cos.approx.f32 $0, $1;", "=r,r", [r], dtype=tl.float32, is_pure=True,
                                      pack=1)
    else:
        s = tl.sin(r)
        c = tl.cos(r)
    return s, c


@triton.jit
def _tf32(x):
    """x with its mantissa truncated to TF32's 10 bits (what the tensor cores read of fp32)."""
    return (x.to(tl.uint32, bitcast=True) & 0xFFFFE000).to(tl.float32, bitcast=True)


@triton.jit
def _bf16(x):
    """x rounded to bfloat16 (to nearest, ties to even), kept in fp32."""
    bits = x.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _dot_tf32(a, b, acc):
    """acc + a b with TF32 operands (truncated, as the tensor cores read fp32)."""
    if _NATIVE:
        return tl.dot(a, b, acc, input_precision="tf32")
    else:
        return tl.dot(_tf32(a), _tf32(b), acc, input_precision="ieee")


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr):
    """a (fp32) times b (fp32, bf16 for PRECISION 2), fp32 result. tf32x3 is written out (big and
    small parts, the small one's product left out) rather than left to Triton's TF32x3, whose
    operand copies in shared memory do not fit at widths >= 128."""
    acc = tl.zeros((a.shape[0], b.shape[1]), dtype=tl.float32)
    if PRECISION == 2:
        if _NATIVE:
            return tl.dot(a.to(tl.bfloat16), b, acc)
        else:
            return tl.dot(_bf16(a), b.to(tl.float32), acc, input_precision="ieee")
    elif PRECISION == 1:
        return _dot_tf32(a, b, acc)
    else:
        a_big = _tf32(a)
        b_big = _tf32(b)
        acc = _dot_tf32(a - a_big, b_big, acc)
        acc = _dot_tf32(a_big, b - b_big, acc)
        return _dot_tf32(a_big, b_big, acc)


@triton.jit
def _interleave(x, y):
    """(BLOCK_M, 2 N) from two (BLOCK_M, N): columns x0 y0 x1 y1 ... (see ``_tile_order``)."""
    return tl.reshape(tl.join(x, y), (x.shape[0], 2 * x.shape[1]))


@triton.jit
def _chunk(a, t0, t1, t2, x_rows, valid, w_ptr, b_ptr, omega, first_column, N0: tl.constexpr, K: tl.constexpr,
           LDW: tl.constexpr, IN: tl.constexpr, SINE: tl.constexpr, HAS_BIAS: tl.constexpr,
           TANGENTS: tl.constexpr, FROM_X: tl.constexpr, EXACT: tl.constexpr, BLOCK_M: tl.constexpr,
           BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    """Columns N0..N0 + BLOCK_N of one layer: z = a W^T + b, W^T (K, LDW) row-major at w_ptr, the
    tangents' dz = t W^T (t0..t2, TANGENTS of them), and with SINE (sin(omega z), omega cos(omega z)
    dz). FROM_X: the first layer, whose input is x (x_rows: row pointers, IN columns) and whose
    tangents start as the weights' rows first_column..; EXACT: by fp32 multiply-adds, else by
    tf32x3 products over blocks of BLOCK_K inputs (K: IN padded to BLOCK_K, padding rows zero)."""
    rn = N0 + tl.arange(0, BLOCK_N)
    if FROM_X:
        z = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        if EXACT:
            for k in tl.static_range(IN):
                z += tl.load(x_rows + k, mask=valid, other=0.0)[:, None] * tl.load(w_ptr + k * LDW + rn)[None, :]
        else:
            rk = tl.arange(0, BLOCK_K)
            for k0 in tl.static_range(0, K, BLOCK_K):
                xk = tl.load(x_rows[:, None] + (k0 + rk)[None, :], mask=valid[:, None] & (k0 + rk < IN)[None, :],
                             other=0.0)
                z = z + _dot(xk, tl.load(w_ptr + (k0 + rk)[:, None] * LDW + rn[None, :]), 0)
        if TANGENTS > 0:
            t0 = tl.broadcast_to(tl.load(w_ptr + first_column * LDW + rn)[None, :], (BLOCK_M, BLOCK_N))
        if TANGENTS > 1:
            t1 = tl.broadcast_to(tl.load(w_ptr + (first_column + 1) * LDW + rn)[None, :], (BLOCK_M, BLOCK_N))
        if TANGENTS > 2:
            t2 = tl.broadcast_to(tl.load(w_ptr + (first_column + 2) * LDW + rn)[None, :], (BLOCK_M, BLOCK_N))
    else:
        b = tl.load(w_ptr + tl.arange(0, K)[:, None] * LDW + rn[None, :])
        z = _dot(a, b, PRECISION)
        if TANGENTS > 0:
            t0 = _dot(t0, b, PRECISION)
        if TANGENTS > 1:
            t1 = _dot(t1, b, PRECISION)
        if TANGENTS > 2:
            t2 = _dot(t2, b, PRECISION)
    if HAS_BIAS:
        z += tl.load(b_ptr + rn)[None, :]
    if SINE:
        z, c = _sincos(z * omega)
        c = c * omega
        if TANGENTS > 0:
            t0 = t0 * c
        if TANGENTS > 1:
            t1 = t1 * c
        if TANGENTS > 2:
            t2 = t2 * c
    return z, t0, t1, t2


@triton.jit
def _layer(a, t0, t1, t2, x_rows, valid, w_ptr, b_ptr, omega, first_column, N0: tl.constexpr, N: tl.constexpr,
           K: tl.constexpr, LDW: tl.constexpr, IN: tl.constexpr, HAS_BIAS: tl.constexpr, TANGENTS: tl.constexpr,
           FROM_X: tl.constexpr, EXACT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
           BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    """A sine layer's columns N0..N0 + N: chunks of BLOCK_N, halves interleaved (``_tile_order``)."""
    if N == BLOCK_N:
        z, t0, t1, t2 = _chunk(a, t0, t1, t2, x_rows, valid, w_ptr, b_ptr, omega, first_column, N0, K, LDW, IN, True,
                               HAS_BIAS, TANGENTS, FROM_X, EXACT, BLOCK_M, BLOCK_K, BLOCK_N, PRECISION)
    else:
        z, u0, u1, u2 = _layer(a, t0, t1, t2, x_rows, valid, w_ptr, b_ptr, omega, first_column, N0, N // 2, K, LDW,
                               IN, HAS_BIAS, TANGENTS, FROM_X, EXACT, BLOCK_M, BLOCK_K, BLOCK_N, PRECISION)
        z2, v0, v1, v2 = _layer(a, t0, t1, t2, x_rows, valid, w_ptr, b_ptr, omega, first_column, N0 + N // 2, N // 2,
                                K, LDW, IN, HAS_BIAS, TANGENTS, FROM_X, EXACT, BLOCK_M, BLOCK_K, BLOCK_N, PRECISION)
        z = _interleave(z, z2)
        if TANGENTS > 0:
            t0 = _interleave(u0, v0)
        if TANGENTS > 1:
            t1 = _interleave(u1, v1)
        if TANGENTS > 2:
            t2 = _interleave(u2, v2)
    return z, t0, t1, t2


@triton.jit
def _siren_kernel(x_ptr, n_points, y_ptr, jac_ptr, w_first, b_first, w_hidden, b_hidden, w_last, b_last,
                  omega_first, omega_hidden, omega_last, hidden_layers, first_column, jac_column,
                  IN: tl.constexpr, K_FIRST: tl.constexpr, H: tl.constexpr, OUT: tl.constexpr,
                  GRAD_COLUMNS: tl.constexpr, TANGENTS: tl.constexpr, SINE_LAST: tl.constexpr,
                  HAS_BIAS: tl.constexpr, EXACT_FIRST: tl.constexpr, PRECISION: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_N_FIRST: tl.constexpr,
                  BLOCK_K_FIRST: tl.constexpr):
    """y (and TANGENTS columns of the Jacobian from jac_column on) of BLOCK_M points. Weights
    transposed (in, out), rows in the previous layer's tile order; the output layer padded to
    _OUT_PAD columns."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    valid = rows < n_points
    x_rows = x_ptr + rows * IN
    a, t0, t1, t2 = _layer(x_rows, x_rows, x_rows, x_rows, x_rows, valid, w_first, b_first, omega_first, first_column,
                           0, H, K_FIRST, H, IN, HAS_BIAS, TANGENTS, True, EXACT_FIRST, BLOCK_M, BLOCK_K_FIRST,
                           BLOCK_N_FIRST, 0)
    w = w_hidden
    bias = b_hidden
    for _ in range(hidden_layers):
        a, t0, t1, t2 = _layer(a, t0, t1, t2, x_rows, valid, w, bias, omega_hidden, first_column, 0, H, H, H, IN,
                               HAS_BIAS, TANGENTS, False, False, BLOCK_M, BLOCK_K_FIRST, BLOCK_N, PRECISION)
        w += H * H
        bias += H
    y, t0, t1, t2 = _chunk(a, t0, t1, t2, x_rows, valid, w_last, b_last, omega_last, first_column, 0, H, _OUT_PAD,
                           IN, SINE_LAST, HAS_BIAS, TANGENTS, False, False, BLOCK_M, BLOCK_K_FIRST, _OUT_PAD,
                           PRECISION)
    ro = tl.arange(0, _OUT_PAD)
    inside = valid[:, None] & (ro < OUT)[None, :]
    tl.store(y_ptr + rows[:, None] * OUT + ro[None, :], y, mask=inside)
    at = jac_ptr + (rows[:, None] * OUT + ro[None, :]) * GRAD_COLUMNS + jac_column
    if TANGENTS > 0:
        tl.store(at, t0, mask=inside)
    if TANGENTS > 1:
        tl.store(at + 1, t1, mask=inside)
    if TANGENTS > 2:
        tl.store(at + 2, t2, mask=inside)


@triton.jit
def _sincos_kernel(z_ptr, s_ptr, c_ptr, n, omega, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offsets < n
    s, c = _sincos(tl.load(z_ptr + offsets, mask=inside, other=0.0) * omega)
    tl.store(s_ptr + offsets, s, mask=inside)
    tl.store(c_ptr + offsets, omega * c, mask=inside)


# --- host side -------------------------------------------------------------------------------------

_SINCOS_BLOCK = 1024
_BLOCK_K_FIRST = 32


def _on_device(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """Launches on t's GPU, whichever is current (Triton launches on the current device)."""
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()


def sincos(z: torch.Tensor, omega: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(sin(omega z), omega cos(omega z)), float32."""
    z = z.contiguous()
    s = torch.empty_like(z)
    c = torch.empty_like(z)
    n = z.numel()
    if n:
        with _on_device(z):
            _sincos_kernel[(triton.cdiv(n, _SINCOS_BLOCK),)](z, s, c, n, float(omega), BLOCK=_SINCOS_BLOCK)
    return s, c


def supports(weights: Sequence[torch.Tensor]) -> bool:
    """Whether the fused kernels take this network: hidden layers square, of a power-of-two width
    from 16 to 512, at most 512 inputs and at most 16 outputs."""
    width = weights[0].shape[0]
    square = all(tuple(w.shape) == (width, width) for w in weights[1:-1])
    return (square and width in _WIDTHS and weights[0].shape[1] <= _MAX_INPUTS
            and weights[-1].shape[0] <= _MAX_OUTPUTS)


def config(width: int, tangents: int) -> Config:
    """The tiling the kernels run a network of this width with, ``tangents`` Jacobian columns per
    launch (0 for the forward)."""
    return _CONFIGS[width, tangents]


def _tile_order(width: int, block_n: int) -> list[int]:
    """Which hidden unit each column of the register tile holds when a layer is computed in chunks
    of block_n units whose halves ``_interleave`` joins (column 2i of a join from its first half's
    column i, 2i + 1 from its second's)."""
    if width == block_n:
        return list(range(width))
    half = _tile_order(width // 2, block_n)
    return [unit for pair in zip(half, [u + width // 2 for u in half]) for unit in pair]


def _first_block_n(width: int, inputs: int, cfg: Config) -> int:
    return width if inputs <= _EXACT_FIRST_LAYER else cfg.block_n


def _launch_args(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None],
                 precision: str, cfg: Config) -> tuple[list[torch.Tensor], dict]:
    """The weights as the kernel reads them (transposed, rows in the tile order, hidden and output
    layers in the precision's operand type: converted once per call) and the shape constants."""
    inputs = x.shape[1]
    width, outputs = weights[0].shape[0], weights[-1].shape[0]
    exact = inputs <= _EXACT_FIRST_LAYER
    k_first = inputs if exact else triton.cdiv(inputs, _BLOCK_K_FIRST) * _BLOCK_K_FIRST
    operand = torch.bfloat16 if precision == "bf16" else torch.float32
    device = x.device
    w_first = torch.zeros((k_first, width), dtype=torch.float32, device=device)
    w_first[:inputs] = weights[0].detach().t()
    orders = [_tile_order(width, _first_block_n(width, inputs, cfg))]
    orders += [_tile_order(width, cfg.block_n)] * (len(weights) - 2)
    hidden = [w.detach().t()[order].to(operand) for w, order in zip(weights[1:-1], orders)]
    w_hidden = torch.stack(hidden).contiguous() if hidden else torch.zeros(1, dtype=operand, device=device)
    w_last = torch.zeros((width, _OUT_PAD.value), dtype=operand, device=device)
    w_last[:, :outputs] = weights[-1].detach().t()[orders[-1]].to(operand)
    has_bias = biases[0] is not None
    empty = torch.zeros(1, dtype=torch.float32, device=device)
    b_first = biases[0].detach().float().contiguous() if has_bias else empty
    b_hidden = (torch.stack([b.detach() for b in biases[1:-1]]).float().contiguous()
                if has_bias and len(weights) > 2 else empty)
    b_last = torch.zeros(_OUT_PAD.value, dtype=torch.float32, device=device)
    if has_bias:
        b_last[:outputs] = biases[-1].detach()
    constants = dict(IN=inputs, K_FIRST=k_first, H=width, OUT=outputs, HAS_BIAS=has_bias, EXACT_FIRST=exact,
                     PRECISION=_PRECISION_CODES[precision], BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
                     BLOCK_N_FIRST=_first_block_n(width, inputs, cfg), BLOCK_K_FIRST=_BLOCK_K_FIRST)
    return [w_first, b_first, w_hidden, b_hidden, w_last, b_last], constants


def _run(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None],
         omegas: Sequence[float | None], precision: str, grad_columns: int | None) -> tuple[torch.Tensor,
                                                                                        torch.Tensor | None]:
    x = x.detach().contiguous()
    n, inputs = x.shape
    width, outputs, hidden = weights[0].shape[0], weights[-1].shape[0], len(weights) - 2
    y = torch.empty((n, outputs), dtype=torch.float32, device=x.device)
    jacobian = None if grad_columns is None else torch.empty((n, outputs, grad_columns), dtype=torch.float32,
                                                             device=x.device)
    if n == 0:
        return y, jacobian
    # Launches of up to _MAX_TANGENTS Jacobian columns each (a forward alone without a Jacobian).
    columns = grad_columns or 0
    groups = [(c, min(_MAX_TANGENTS, columns - c)) for c in range(0, columns, _MAX_TANGENTS)] or [(0, 0)]
    with _on_device(x):
        for start, tangents in groups:
            cfg = config(width, tangents)
            tensors, constants = _launch_args(x, weights, biases, precision, cfg)
            _siren_kernel[(triton.cdiv(n, cfg.block_m),)](
                x, n, y, y if jacobian is None else jacobian, *tensors,
                float(omegas[0]), float(omegas[1] if hidden else omegas[0]), float(omegas[-1] or 0.0), hidden,
                inputs - columns + start, start,
                GRAD_COLUMNS=max(columns, 1), TANGENTS=tangents, SINE_LAST=omegas[-1] is not None,
                num_warps=cfg.num_warps, num_stages=cfg.num_stages, **constants)
    return y, jacobian


def forward(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None],
            omegas: Sequence[float | None], precision: str, cache: KernelCache) -> torch.Tensor:
    """The network at x (N, in) -> (N, out), one launch. ``cache`` stays unused: the operands are
    prepared anew at every call (a few weight-sized copies), where checking cached ones against
    edits through .data would cost a synchronisation."""
    return _run(x, weights, biases, omegas, precision, None)[0]


def forward_with_gradient(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None],
                          omegas: Sequence[float | None], precision: str, grad_columns: int,
                          cache: KernelCache) -> tuple[torch.Tensor, torch.Tensor]:
    """(y (N, out), dy/dx (N, out, grad_columns)) for the last ``grad_columns`` inputs: one launch
    per 3 columns, each computing y too."""
    y, jacobian = _run(x, weights, biases, omegas, precision, grad_columns)
    assert jacobian is not None
    return y, jacobian
