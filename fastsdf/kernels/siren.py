"""Triton kernels for ``fastsdf.ops.siren`` on CUDA tensors (on the CPU under TRITON_INTERPRET=1).

Design
------
``forward`` and ``forward_with_gradient`` run the whole network in one launch, one program per tile
of BLOCK_M points. The tile's activations (BLOCK_M x H, fp32) stay in registers from the first
layer to the last: nothing but x, y and the Jacobian touches global memory per point (12 + 4 OUT
bytes forward, + 12 OUT with the xyz Jacobian); the weights are streamed (from L2) once per tile.
A layer is one (BLOCK_M, N) accumulator, summed over chunks of BLOCK_K inputs: the input tile is
cut into its column halves recursively (``_halves``: reshape, permute, split, which moves no data
where the top column bits are register bits of the accumulator layout), and each chunk is
multiplied by the matching BLOCK_K rows of W^T. So only a BLOCK_M x BLOCK_K chunk is ever in the
MMA operand layout, which Triton replicates over the warps that split N, or split into TF32 big
and small parts; the previous design converted the whole tile (three copies in fp32 mode) and
spilled from width 128 on.

The input Jacobian is forward mode: the tangents dz/dx_j of the requested inputs ride along as
BLOCK_M x H tiles, multiplied by the same weight chunk as the activations (loaded once) and by
omega cos(omega z) after it. Reverse mode would need every layer's cos factors kept for the
backward sweep; forward mode keeps 1 + TANGENTS tiles and their accumulators live and stores
nothing. A launch takes up to 3 columns (``_tangents_per_launch``: 1 from width 256 on); more
take several launches, each computing y too.

Register budget (fp32 words per thread): a BLOCK_M x H tile costs BLOCK_M H / (32 num_warps); a
layer holds 2 (1 + TANGENTS) of them (inputs and accumulators) plus the chunk's operands (the
A chunk replicated over the N warps, its big/small parts, the weight chunk's, and the loads ptxas
prefetches for the next chunks, ~100-140 registers measured). Width 256, fp32 forward: BLOCK_M 32,
8 warps, 2 x 32 tile registers, 206 in all, no spill; BLOCK_M 64 (2 x 64) spills 428-624 B. The
Jacobian at 256 with 3 tangents (8 tiles) spills even at BLOCK_M 16 (408-808 B), with 1 tangent
per launch at BLOCK_M 16 it is 12-24 B. Small tiles cost tensor-core efficiency: sm_90's wgmma
needs M >= 64 per warpgroup, so with BLOCK_M < 64 Triton issues mma.sync (HMMA m16n8k8), and the
weights are re-read from L2 per BLOCK_M points; spill-free was preferred to larger tiles.

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

Configurations (``_CONFIGS``, BLOCK_M / BLOCK_K / warps, no software pipelining of the layer loop)
measured with Triton 3.9 and its ptxas (registers / spill bytes / shared memory, sm_80 ; sm_90),
fp32 unless said:

=====  ==========  ===========  ==============================  ===============================
width  tangents    tiling       sm_80                           sm_90
=====  ==========  ===========  ==============================  ===============================
16     0 / 3       64,32 /16/4  56 / 0 / 4 KB; 96 / 0 / 2 KB    42 / 0 / 2 KB; 96 / 0 / 2 KB
32     0 / 3       64,32 /16/4  76 / 0 / 4 KB; 205 / 0 / 2 KB   64 / 0 / 4 KB; 174 / 0 / 2 KB
64     0           64/16/4      163 / 0 / 4 KB (tf32, bf16 128)  119 / 0 / 8 KB (tf32 124, bf16 96)
64     3           16/16/4      168 / 0 / 4 KB (tf32 166,        168 / 36 B / 4 KB (tf32 166 / 0,
                                bf16 128, no spill)              bf16 146 / 0)
128    0 / 3       32,16 /16/8  not measured                     not measured
256    0           32/16/8      202 / 0 / 32 KB                  206 / 0 / 32 KB
256    1 per call  16/16/8      255 / 12 B / 16 KB               255 / 24 B / 16 KB
512    0 / 1       16/16/8      not measured                     not measured
=====  ==========  ===========  ==============================  ===============================

Still open: the Jacobian at width 256 (and width 64 fp32 on sm_90) spills a few words; widths 128
and 512 and the tf32/bf16 variants at 256 are compiled only with FASTSDF_COMPILE_ALL=1
(tests/test_triton_compile.py).

Measured on one H200 (2026-11-29, width 256, benchmarks/RESULTS.md): forward 107M points/s in fp32
(eager PyTorch 77M), 152M in tf32, 198M in bf16; the Jacobian 19M (fp32), 26M (tf32), 34M (bf16),
slower than the composed path except in tf32 (``jacobian_pays``).

Why Triton ``tl.dot`` on register tiles and not Gluon or CUDA C++: Gluon (explicit shared memory,
``wgmma`` descriptors, warp specialisation) is the way to BLOCK_M 128 tiles held in shared memory
at width 256, but its API is experimental and differs between Triton 3.6 (the GPU machine's) and
3.9 (this one's), and neither it nor a CUDA C++ kernel can run under the interpreter, which is
where CI tests these kernels (it has no GPU). The register design reaches the tensor
cores and the MUFU with no global traffic beyond inputs and outputs; its cost is the small
BLOCK_M from width 256 on (weights re-read from L2 per 16-32 points), the first thing to
revisit with a profiler.

Training (``forward_taped``, ``backward``; the autograd Function and why this design:
``fastsdf.ops.siren_triton``): the forward kernel with TAPE also stores each sine layer's
pre-activations and, with the Jacobian, the tangents each layer receives (the tape), and
``_backward_kernel`` walks a tile's layers down from dL/dy and dL/dJ with dL/da and dL/dt in
registers: per layer the tape gives omega cos(omega z) and its derivative (MUFU), dL/dz and dL/du
are stored, and they are multiplied by the weights as they are (out x in, through the same
``_products``, one weight chunk for all) into the next dL/da and dL/dt; at the bottom dL/dx (tf32x3).
Jacobian columns go in the forward's groups (3 a launch to width 128, 1 from 256), each launch after
the first adding its share. The parameter gradients are GEMMs on the host side. Tilings
(``_BACKWARD_CONFIGS``, ``_TAPED_CONFIGS`` where they differ from the forward's; measured by
tests/test_triton_compile.py, which compiles the other precisions too), fp32, registers / spill
bytes / shared memory:

========  ======  ===========  ==========================  ===============================
kernel    width   tangents     sm_80                       sm_90
========  ======  ===========  ==========================  ===============================
backward  16      0 / 3        96/0/4 KB; 168/0/2 KB       96/0/4 KB; 158/0/2 KB
backward  32      0 / 3        156/0/8 KB; 166/0/2 KB      236/0/8 KB; 149/0/2 KB
backward  64      0 / 3        168/0/8 KB; 254/0/4 KB      244/0/8 KB; 254/0/4 KB
backward  128     0 / 3        169/0/8 KB; 255/36 B/8 KB   172/0/8 KB; 255/12 B/8 KB
backward  256     0 / 1        251/0/16 KB; 255/1424 B     254/0/16 KB; 255/1552 B
backward  512     0 / 1        255/560 B; 255/7968 B       255/684 B; 255/11100 B
taped     16, 32  3            136/0; 255/0                143/0; 255/0
taped     128     0 / 3        199/0/16 KB; 255/0/8 KB     255/0/16 KB; 255/0/8 KB
taped     256     0 / 1        206/0/32 KB; 255/0/16 KB    208/0/32 KB; 255/60 B/16 KB
========  ======  ===========  ==========================  ===============================

(the backward's tilings: those of the forward's launch with as many tangents, except BLOCK_M 32 at
width 64 and 16 at 128-256 without tangents, and 16 at width 32 with 3; the taped forward's: the
forward's, except BLOCK_M 32 at width 64, where 64 spilled 188 B on sm_90). Still open: the
Jacobian's backward at width 256 spills 1.4-1.6 KB in fp32 (dL/da, dL/dt, their accumulators,
the tf32x3 split's big and small parts and the tape's z, u and derivative live at once at BLOCK_M
16, the smallest ``tl.dot`` tile; 16 warps cap the registers at 128 and spill 8 KB), none in tf32
or bf16; tf32/bf16 variants at widths 128-256 spill 24-96 B (tests/test_triton_compile.py's
``KNOWN_SPILLS``); width 512 spills throughout.

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

__all__ = ["Deltas", "Tape", "backward", "backward_config", "forward", "forward_taped", "forward_with_gradient",
           "jacobian_pays", "sincos", "supports"]

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
    """A tiling: points per program, rows of a weight chunk (the K of each ``tl.dot``), warps, and
    Triton's software pipelining of the loop over hidden layers (1: none; more prefetches the next
    layers' weights into shared memory, one copy of a layer's weights per stage)."""

    block_m: int
    block_k: int
    num_warps: int
    num_stages: int = 1


def _tangents_per_launch(width: int) -> int:
    """Jacobian columns one launch computes (each costs two tiles of registers)."""
    return _MAX_TANGENTS if width <= 128 else 1


# (width, tangent tiles) -> Config, measured by tests/test_triton_compile.py (the table above).
_CONFIGS: dict[tuple[int, int], Config] = {}
for _w in _WIDTHS:
    for _t in range(_tangents_per_launch(_w) + 1):
        if _w <= 32:
            _CONFIGS[_w, _t] = Config(64 if _t == 0 else 32, 16, 4)
        elif _w == 64:
            _CONFIGS[_w, _t] = Config(64 if _t == 0 else 16, 16, 4)
        elif _w <= 256:
            _CONFIGS[_w, _t] = Config(32 if _t == 0 else 16, 16, 8)
        else:
            _CONFIGS[_w, _t] = Config(16, 16, 8)

# Where the training kernels need smaller tiles than the forward's (measured as the table above).
_BACKWARD_CONFIGS: dict[tuple[int, int], Config] = {(64, 0): Config(32, 16, 4), (128, 0): Config(16, 16, 8),
                                                    (256, 0): Config(16, 16, 8), (32, 3): Config(16, 16, 4)}
_TAPED_CONFIGS: dict[tuple[int, int], Config] = {(64, 0): Config(32, 16, 4)}


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
def _dot(a, b, acc, PRECISION: tl.constexpr):
    """acc + a b: a fp32, b fp32 (bf16 for PRECISION 2), fp32 accumulation. tf32x3 is written out
    (big and small parts, the small ones' product left out) rather than left to Triton's TF32x3,
    whose operand copies in shared memory do not fit at widths >= 128."""
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
def _halves(x):
    """x's first and second half of columns. The top column bits of a dot's accumulator are
    register bits of each thread (repetitions of the MMA tile), so this moves no data."""
    return tl.split(tl.permute(tl.reshape(x, (x.shape[0], 2, x.shape[1] // 2)), (0, 2, 1)))


@triton.jit
def _products(a, t0, t1, t2, z, u0, u1, u2, w_ptr, K0: tl.constexpr, K: tl.constexpr, LDW: tl.constexpr,
              TANGENTS: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """z += a W^T[K0:K0 + K] and u_i += t_i W^T[K0:K0 + K] (a, t_i: columns K0..K0 + K of the
    layer's input; W^T (in, LDW) row-major at w_ptr), in chunks of BLOCK_K rows: each chunk of the
    weights is loaded once for the activations and the tangents, and only a chunk of an operand is
    ever in the MMA operand layout (or split into TF32 big and small parts) at a time."""
    if K == BLOCK_K:
        # The chunk's offset is added to the scalar pointer: one offset tile serves every chunk and
        # layer, where per-chunk offset tiles would be hoisted out of the layer loop, all live.
        b = tl.load((w_ptr + K0 * LDW) + (tl.arange(0, BLOCK_K)[:, None] * LDW + tl.arange(0, LDW)[None, :]))
        z = _dot(a, b, z, PRECISION)
        if TANGENTS > 0:
            u0 = _dot(t0, b, u0, PRECISION)
        if TANGENTS > 1:
            u1 = _dot(t1, b, u1, PRECISION)
        if TANGENTS > 2:
            u2 = _dot(t2, b, u2, PRECISION)
    else:
        a_lo, a_hi = _halves(a)
        t0_lo, t0_hi, t1_lo, t1_hi, t2_lo, t2_hi = t0, t0, t1, t1, t2, t2
        if TANGENTS > 0:
            t0_lo, t0_hi = _halves(t0)
        if TANGENTS > 1:
            t1_lo, t1_hi = _halves(t1)
        if TANGENTS > 2:
            t2_lo, t2_hi = _halves(t2)
        z, u0, u1, u2 = _products(a_lo, t0_lo, t1_lo, t2_lo, z, u0, u1, u2, w_ptr, K0, K // 2, LDW, TANGENTS,
                                  BLOCK_K, PRECISION)
        z, u0, u1, u2 = _products(a_hi, t0_hi, t1_hi, t2_hi, z, u0, u1, u2, w_ptr, K0 + K // 2, K // 2, LDW,
                                  TANGENTS, BLOCK_K, PRECISION)
    return z, u0, u1, u2


@triton.jit
def _activate(z, t0, t1, t2, b_ptr, omega, tape_rows, tape_u_rows, u_stride, store_z, valid, N: tl.constexpr,
              SINE: tl.constexpr, HAS_BIAS: tl.constexpr, TANGENTS: tl.constexpr, TAPED: tl.constexpr):
    """z + b and, with SINE, (sin(omega (z + b)), omega cos(omega (z + b)) t_i). TAPED > 0 stores the
    first TAPED columns of z + b at tape_rows (row pointers; rows where store_z) and of the tangents t_i
    as they come in (W t of the layer below) at tape_u_rows + i u_stride, for the backward."""
    if HAS_BIAS:
        z += tl.load(b_ptr + tl.arange(0, N))[None, :]
    if TAPED > 0:
        columns = tl.arange(0, N)
        inside = valid[:, None] & (columns < TAPED)[None, :]
        tl.store(tape_rows[:, None] + columns[None, :], z, mask=inside & store_z[:, None])
        _store_tangents(tape_u_rows[:, None] + columns[None, :], t0, t1, t2, u_stride, inside, TANGENTS)
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
def _layer(a, t0, t1, t2, w_ptr, b_ptr, omega, tape_rows, tape_u_rows, u_stride, store_z, valid, K: tl.constexpr,
           N: tl.constexpr,
           SINE: tl.constexpr, HAS_BIAS: tl.constexpr, TANGENTS: tl.constexpr, TAPED: tl.constexpr,
           BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """A layer after the first: K inputs, N outputs, the whole (BLOCK_M, N) result one accumulator."""
    z = tl.zeros((BLOCK_M, N), dtype=tl.float32)
    z, u0, u1, u2 = _products(a, t0, t1, t2, z, z, z, z, w_ptr, 0, K, N, TANGENTS, BLOCK_K, PRECISION)
    return _activate(z, u0, u1, u2, b_ptr, omega, tape_rows, tape_u_rows, u_stride, store_z, valid, N, SINE,
                     HAS_BIAS, TANGENTS, TAPED)


@triton.jit
def _first_layer(x_rows, valid, w_ptr, b_ptr, omega, first_column, tape_rows, tape_u_rows, u_stride, store_z,
                 IN: tl.constexpr, K: tl.constexpr,
                 H: tl.constexpr, HAS_BIAS: tl.constexpr, TANGENTS: tl.constexpr, TAPED: tl.constexpr,
                 EXACT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """The first layer from x (x_rows: row pointers, IN columns); its tangents start as the weights'
    rows first_column... EXACT: by fp32 multiply-adds, else by tf32x3 products over blocks of
    BLOCK_K inputs (K: IN padded to BLOCK_K, padding rows zero)."""
    rn = tl.arange(0, H)
    z = tl.zeros((BLOCK_M, H), dtype=tl.float32)
    if EXACT:
        for k in tl.static_range(IN):
            z += tl.load(x_rows + k, mask=valid, other=0.0)[:, None] * tl.load(w_ptr + k * H + rn)[None, :]
    else:
        rk = tl.arange(0, BLOCK_K)
        for k0 in tl.static_range(0, K, BLOCK_K):
            xk = tl.load(x_rows[:, None] + (k0 + rk)[None, :], mask=valid[:, None] & (k0 + rk < IN)[None, :],
                         other=0.0)
            z = _dot(xk, tl.load(w_ptr + (k0 + rk)[:, None] * H + rn[None, :]), z, 0)
    t0, t1, t2 = z, z, z
    if TANGENTS > 0:
        t0 = tl.broadcast_to(tl.load(w_ptr + first_column * H + rn)[None, :], (BLOCK_M, H))
    if TANGENTS > 1:
        t1 = tl.broadcast_to(tl.load(w_ptr + (first_column + 1) * H + rn)[None, :], (BLOCK_M, H))
    if TANGENTS > 2:
        t2 = tl.broadcast_to(tl.load(w_ptr + (first_column + 2) * H + rn)[None, :], (BLOCK_M, H))
    return _activate(z, t0, t1, t2, b_ptr, omega, tape_rows, tape_u_rows, u_stride, store_z, valid, H, True,
                     HAS_BIAS, TANGENTS, TAPED)


@triton.jit
def _siren_kernel(x_ptr, n_points, y_ptr, jac_ptr, w_first, b_first, w_hidden, b_hidden, w_last, b_last,
                  omega_first, omega_hidden, omega_last, hidden_layers, first_column, jac_column, tape_ptr,
                  tape_last_ptr, tape_u_ptr, tape_u_last_ptr, IN: tl.constexpr, K_FIRST: tl.constexpr,
                  H: tl.constexpr, OUT: tl.constexpr, GRAD_COLUMNS: tl.constexpr, TANGENTS: tl.constexpr,
                  SINE_LAST: tl.constexpr, HAS_BIAS: tl.constexpr, EXACT_FIRST: tl.constexpr, PRECISION: tl.constexpr,
                  TAPE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_K_FIRST: tl.constexpr):
    """y (and TANGENTS columns of the Jacobian from jac_column on) of BLOCK_M points. Weights
    transposed (in, out); the output layer padded to _OUT_PAD columns. With TAPE, what the backward
    reads too: the sine layers' pre-activations (layers, n_points, H) at tape_ptr (written by the
    launch of column 0) and their incoming tangents (layers, GRAD_COLUMNS, n_points, H) at
    tape_u_ptr; a sine output layer's (n_points, OUT) and (GRAD_COLUMNS, n_points, OUT) at
    tape_last_ptr and tape_u_last_ptr."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    valid = rows < n_points
    x_rows = x_ptr + rows * IN
    plane = n_points.to(tl.int64) * H
    store_z = (tl.zeros_like(rows) + jac_column) == 0  # a block: the interpreter takes no scalar in a mask
    tape_rows = tape_ptr + rows * H
    tape_u_rows = tape_u_ptr + jac_column * plane + rows * H
    a, t0, t1, t2 = _first_layer(x_rows, valid, w_first, b_first, omega_first, first_column, tape_rows, tape_u_rows,
                                 plane, store_z, IN, K_FIRST, H, HAS_BIAS, TANGENTS, H if TAPE else 0, EXACT_FIRST,
                                 BLOCK_M, BLOCK_K_FIRST)
    w = w_hidden
    bias = b_hidden
    for _ in range(hidden_layers):
        tape_rows += plane
        tape_u_rows += GRAD_COLUMNS * plane
        a, t0, t1, t2 = _layer(a, t0, t1, t2, w, bias, omega_hidden, tape_rows, tape_u_rows, plane, store_z, valid,
                               H, H, True, HAS_BIAS, TANGENTS, H if TAPE else 0, BLOCK_M, BLOCK_K, PRECISION)
        w += H * H
        bias += H
    out_plane = n_points.to(tl.int64) * OUT
    y, t0, t1, t2 = _layer(a, t0, t1, t2, w_last, b_last, omega_last, tape_last_ptr + rows * OUT,
                           tape_u_last_ptr + jac_column * out_plane + rows * OUT, out_plane, store_z, valid, H,
                           _OUT_PAD, SINE_LAST, HAS_BIAS, TANGENTS, OUT if TAPE and SINE_LAST else 0, BLOCK_M,
                           BLOCK_K, PRECISION)
    ro = tl.arange(0, _OUT_PAD)
    inside = valid[:, None] & (ro < OUT)[None, :]
    tl.store(y_ptr + rows[:, None] * OUT + ro[None, :], y, mask=inside)
    _store_tangents(jac_ptr + (rows[:, None] * OUT + ro[None, :]) * GRAD_COLUMNS + jac_column, t0, t1, t2, 1, inside,
                    TANGENTS)


@triton.jit
def _store_tangents(at, t0, t1, t2, stride, mask, TANGENTS: tl.constexpr):
    """The first TANGENTS of t0, t1, t2 stored at ``at``, ``at + stride`` and ``at + 2 stride``."""
    if TANGENTS > 0:
        tl.store(at, t0, mask=mask)
    if TANGENTS > 1:
        tl.store(at + stride, t1, mask=mask)
    if TANGENTS > 2:
        tl.store(at + 2 * stride, t2, mask=mask)


@triton.jit
def _sine_backward(abar, tbar0, tbar1, tbar2, z_rows, u_rows, u_stride, delta_rows, delta_u_rows, valid, omega,
                   N: tl.constexpr, COLUMNS: tl.constexpr, TANGENTS: tl.constexpr, FIRST: tl.constexpr):
    """Through a = sin(omega z), t_i = c u_i (c = omega cos(omega z), u_i the incoming tangents, read
    from the tape as z is): from dL/da and dL/dt_i to dL/dz (stored, added to what earlier launches
    stored unless FIRST) and dL/du_i (stored at delta_u_rows + i u_stride). The *_rows are row
    pointers (BLOCK_M): the (BLOCK_M, N) offsets are made here, where they are used, not kept live
    across the layers (64-bit, a tile's worth of registers each)."""
    columns = tl.arange(0, N)
    inside = valid[:, None] & (columns < COLUMNS)[None, :]
    s, c = _sincos(tl.load(z_rows[:, None] + columns[None, :], mask=inside, other=0.0) * omega)
    c = c * omega
    dc = s * (-omega * omega)
    zbar = abar * c
    ubar0, ubar1, ubar2 = tbar0, tbar1, tbar2
    u_at = u_rows[:, None] + columns[None, :]
    du_at = delta_u_rows[:, None] + columns[None, :]
    if TANGENTS > 0:
        zbar += tbar0 * tl.load(u_at, mask=inside, other=0.0) * dc
        ubar0 = tbar0 * c
        tl.store(du_at, ubar0, mask=inside)
    if TANGENTS > 1:
        zbar += tbar1 * tl.load(u_at + u_stride, mask=inside, other=0.0) * dc
        ubar1 = tbar1 * c
        tl.store(du_at + u_stride, ubar1, mask=inside)
    if TANGENTS > 2:
        zbar += tbar2 * tl.load(u_at + 2 * u_stride, mask=inside, other=0.0) * dc
        ubar2 = tbar2 * c
        tl.store(du_at + 2 * u_stride, ubar2, mask=inside)
    _store_delta(delta_rows, zbar, valid, N, COLUMNS, FIRST)
    return zbar, ubar0, ubar1, ubar2


@triton.jit
def _store_delta(delta_rows, zbar, valid, N: tl.constexpr, COLUMNS: tl.constexpr, FIRST: tl.constexpr):
    """zbar stored at delta_rows (row pointers), or added to what is there unless FIRST."""
    columns = tl.arange(0, N)
    inside = valid[:, None] & (columns < COLUMNS)[None, :]
    at = delta_rows[:, None] + columns[None, :]
    if FIRST:
        tl.store(at, zbar, mask=inside)
    else:
        tl.store(at, zbar + tl.load(at, mask=inside, other=0.0), mask=inside)


@triton.jit
def _backward_kernel(dy_ptr, dj_ptr, n_points, dx_ptr, tape_ptr, tape_last_ptr, tape_u_ptr, tape_u_last_ptr,
                     delta_ptr, delta_last_ptr, delta_u_ptr, delta_u_last_ptr, w_first, w_hidden, w_last, omega_first,
                     omega_hidden, omega_last, hidden_layers, jac_column, IN: tl.constexpr, IN_PAD: tl.constexpr,
                     H: tl.constexpr, OUT: tl.constexpr, GRAD_COLUMNS: tl.constexpr, TANGENTS: tl.constexpr,
                     FIRST: tl.constexpr, SINE_LAST: tl.constexpr, NEED_DX: tl.constexpr, PRECISION: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """The backward sweep of BLOCK_M points from dL/dy and dL/dJ (TANGENTS columns of the Jacobian
    from jac_column on): each layer's dL/dz (delta, laid out as the tape) and dL/du_i (the incoming
    tangents' gradients, delta_u), and dL/dx. The launch of the first columns (FIRST) takes dL/dy
    and writes delta and dL/dx, the others add their share: the sweep is linear in (dL/dy, dL/dJ).
    omega cos(omega z) and the tangents come from the forward's tape; dL/da and dL/dt_i stay in
    registers and are multiplied by W as it is (out, in: the output layer's padded to _OUT_PAD
    rows, the first layer's to IN_PAD columns), one weight chunk for all of them."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    valid = rows < n_points
    ro = tl.arange(0, _OUT_PAD)
    inside = valid[:, None] & (ro < OUT)[None, :]
    out_rows = rows * OUT
    out_plane = n_points.to(tl.int64) * OUT
    if FIRST:
        abar = tl.load(dy_ptr + out_rows[:, None] + ro[None, :], mask=inside, other=0.0)
    else:
        abar = tl.zeros((BLOCK_M, _OUT_PAD), dtype=tl.float32)
    dj_at = dj_ptr + (out_rows[:, None] + ro[None, :]) * GRAD_COLUMNS + jac_column
    tbar0, tbar1, tbar2 = abar, abar, abar
    if TANGENTS > 0:
        tbar0 = tl.load(dj_at, mask=inside, other=0.0)
    if TANGENTS > 1:
        tbar1 = tl.load(dj_at + 1, mask=inside, other=0.0)
    if TANGENTS > 2:
        tbar2 = tl.load(dj_at + 2, mask=inside, other=0.0)
    u_rows = jac_column * out_plane + out_rows
    if SINE_LAST:
        abar, tbar0, tbar1, tbar2 = _sine_backward(abar, tbar0, tbar1, tbar2, tape_last_ptr + out_rows,
                                                   tape_u_last_ptr + u_rows, out_plane, delta_last_ptr + out_rows,
                                                   delta_u_last_ptr + u_rows, valid, omega_last, _OUT_PAD, OUT,
                                                   TANGENTS, FIRST)
    else:
        _store_delta(delta_last_ptr + out_rows, abar, valid, _OUT_PAD, OUT, FIRST)
        _store_tangents(delta_u_last_ptr + u_rows[:, None] + ro[None, :], tbar0, tbar1, tbar2, out_plane, inside,
                        TANGENTS)
    acc = tl.zeros((BLOCK_M, H), dtype=tl.float32)
    abar, tbar0, tbar1, tbar2 = _products(abar, tbar0, tbar1, tbar2, acc, acc, acc, acc, w_last, 0, _OUT_PAD, H,
                                          TANGENTS, BLOCK_K, PRECISION)
    hidden_rows = rows * H
    plane = n_points.to(tl.int64) * H
    for j in range(hidden_layers):
        layer = hidden_layers - j
        z_rows = layer * plane + hidden_rows
        u_layer = (layer * GRAD_COLUMNS + jac_column) * plane + hidden_rows
        abar, tbar0, tbar1, tbar2 = _sine_backward(abar, tbar0, tbar1, tbar2, tape_ptr + z_rows, tape_u_ptr + u_layer,
                                                   plane, delta_ptr + z_rows, delta_u_ptr + u_layer, valid,
                                                   omega_hidden, H, H, TANGENTS, FIRST)
        acc = tl.zeros((BLOCK_M, H), dtype=tl.float32)
        abar, tbar0, tbar1, tbar2 = _products(abar, tbar0, tbar1, tbar2, acc, acc, acc, acc,
                                              w_hidden + (layer - 1) * H * H, 0, H, H, TANGENTS, BLOCK_K, PRECISION)
    u_first = jac_column * plane + hidden_rows
    abar, tbar0, tbar1, tbar2 = _sine_backward(abar, tbar0, tbar1, tbar2, tape_ptr + hidden_rows, tape_u_ptr + u_first,
                                               plane, delta_ptr + hidden_rows, delta_u_ptr + u_first, valid,
                                               omega_first, H, H, TANGENTS, FIRST)
    if NEED_DX:
        # The first layer's tangents are constant rows of W: only dL/dz reaches x.
        dx = tl.zeros((BLOCK_M, IN_PAD), dtype=tl.float32)
        dx, _, _, _ = _products(abar, abar, abar, abar, dx, dx, dx, dx, w_first, 0, H, IN_PAD, 0, BLOCK_K, 0)
        ri = tl.arange(0, IN_PAD)
        dx_at = dx_ptr + rows[:, None] * IN + ri[None, :]
        dx_inside = valid[:, None] & (ri < IN)[None, :]
        if not FIRST:
            dx += tl.load(dx_at, mask=dx_inside, other=0.0)
        tl.store(dx_at, dx, mask=dx_inside)


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


# The fused Jacobian against the composed path (plain PyTorch), on one H200 (2026-11-29,
# 3->256x3->1, 2^20 points, medians of CUDA-event timings): fp32 19.0 against 35.1 M points/s, tf32
# 25.8 against 20.4, bf16 34.2 against 37.8. Until the kernel wins, the dispatcher runs it only in the
# precisions where it does (FASTSDF_BACKEND=triton runs it in all).
_JACOBIAN_PRECISIONS = ("tf32",)


def jacobian_pays(precision: str) -> bool:
    """Whether ``forward_with_gradient`` at ``precision`` was measured faster fused than composed."""
    return precision in _JACOBIAN_PRECISIONS


def supports(weights: Sequence[torch.Tensor]) -> bool:
    """Whether the fused kernels take this network: hidden layers square, of a power-of-two width
    from 16 to 512, at most 512 inputs and at most 16 outputs."""
    width = weights[0].shape[0]
    square = all(tuple(w.shape) == (width, width) for w in weights[1:-1])
    return (square and width in _WIDTHS and weights[0].shape[1] <= _MAX_INPUTS
            and weights[-1].shape[0] <= _MAX_OUTPUTS)


def backward_config(width: int, tangents: int = 0) -> Config:
    """The tiling of ``backward`` at this width, ``tangents`` Jacobian columns per launch."""
    return _BACKWARD_CONFIGS.get((width, tangents)) or _CONFIGS[width, tangents]


def config(width: int, tangents: int, taped: bool = False) -> Config:
    """The tiling the kernels run a network of this width with, ``tangents`` Jacobian columns per
    launch (0 for the forward); ``taped``: the forward that writes the backward's tape."""
    return (taped and _TAPED_CONFIGS.get((width, tangents))) or _CONFIGS[width, tangents]


def _launch_args(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None],
                 precision: str, cfg: Config) -> tuple[list[torch.Tensor], dict]:
    """The weights as the kernel reads them (transposed, hidden and output
    layers in the precision's operand type: converted once per call) and the shape constants."""
    inputs = x.shape[1]
    width, outputs = weights[0].shape[0], weights[-1].shape[0]
    exact = inputs <= _EXACT_FIRST_LAYER
    k_first = inputs if exact else triton.cdiv(inputs, _BLOCK_K_FIRST) * _BLOCK_K_FIRST
    operand = torch.bfloat16 if precision == "bf16" else torch.float32
    device = x.device
    w_first = torch.zeros((k_first, width), dtype=torch.float32, device=device)
    w_first[:inputs] = weights[0].detach().t()
    hidden = [w.detach().t().to(operand) for w in weights[1:-1]]
    w_hidden = torch.stack(hidden).contiguous() if hidden else torch.zeros(1, dtype=operand, device=device)
    w_last = torch.zeros((width, _OUT_PAD.value), dtype=operand, device=device)
    w_last[:, :outputs] = weights[-1].detach().t().to(operand)
    has_bias = biases[0] is not None
    empty = torch.zeros(1, dtype=torch.float32, device=device)
    b_first = biases[0].detach().float().contiguous() if has_bias else empty
    b_hidden = (torch.stack([b.detach() for b in biases[1:-1]]).float().contiguous()
                if has_bias and len(weights) > 2 else empty)
    b_last = torch.zeros(_OUT_PAD.value, dtype=torch.float32, device=device)
    if has_bias:
        b_last[:outputs] = biases[-1].detach()
    constants = dict(IN=inputs, K_FIRST=k_first, H=width, OUT=outputs, HAS_BIAS=has_bias, EXACT_FIRST=exact,
                     PRECISION=_PRECISION_CODES[precision], BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k,
                     BLOCK_K_FIRST=_BLOCK_K_FIRST)
    return [w_first, b_first, w_hidden, b_hidden, w_last, b_last], constants


def _run(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None],
         omegas: Sequence[float | None], precision: str, grad_columns: int | None,
         tape: Tape | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    x = x.detach().contiguous()
    n, inputs = x.shape
    width, outputs, hidden = weights[0].shape[0], weights[-1].shape[0], len(weights) - 2
    y = torch.empty((n, outputs), dtype=torch.float32, device=x.device)
    jacobian = None if grad_columns is None else torch.empty((n, outputs, grad_columns), dtype=torch.float32,
                                                             device=x.device)
    if n == 0:
        return y, jacobian
    # Launches of up to _tangents_per_launch Jacobian columns each (a forward alone without a Jacobian).
    columns = grad_columns or 0
    per_launch = _tangents_per_launch(width)
    groups = [(c, min(per_launch, columns - c)) for c in range(0, columns, per_launch)] or [(0, 0)]
    with _on_device(x):
        for start, tangents in groups:
            cfg = config(width, tangents, tape is not None)
            tensors, constants = _launch_args(x, weights, biases, precision, cfg)
            _siren_kernel[(triton.cdiv(n, cfg.block_m),)](
                x, n, y, y if jacobian is None else jacobian, *tensors,
                float(omegas[0]), float(omegas[1] if hidden else omegas[0]), float(omegas[-1] or 0.0), hidden,
                inputs - columns + start, start, *(4 * [y] if tape is None else tape.tensors()),
                GRAD_COLUMNS=max(columns, 1), TANGENTS=tangents, SINE_LAST=omegas[-1] is not None,
                TAPE=tape is not None, num_warps=cfg.num_warps, num_stages=cfg.num_stages, **constants)
    return y, jacobian


@dataclass
class Tape:
    """What ``forward_taped`` keeps for ``backward``: the sine layers' pre-activations z = W a + b,
    ``pre`` (layers, N, width), and with the Jacobian their incoming tangents u (W t of the layer
    below; the first layer's: W's columns), ``tangents`` (layers, columns, N, width); a sine output
    layer's in ``last`` (N, out) and ``tangents_last`` (columns, N, out)."""

    pre: torch.Tensor
    last: torch.Tensor
    tangents: torch.Tensor
    tangents_last: torch.Tensor

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.pre, self.last, self.tangents, self.tangents_last


def forward_taped(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None],
                  omegas: Sequence[float | None], precision: str,
                  grad_columns: int | None) -> tuple[torch.Tensor, torch.Tensor | None, Tape]:
    """(y (N, out), the Jacobian of the last ``grad_columns`` inputs or None, the tape ``backward``
    reads): the launches of ``forward`` or ``forward_with_gradient``, storing the tape too."""
    n, width, outputs = x.shape[0], weights[0].shape[0], weights[-1].shape[0]
    columns, layers = grad_columns or 0, len(weights) - 1
    sine_last = omegas[-1] is not None

    def empty(*shape: int) -> torch.Tensor:
        return torch.empty(shape, dtype=torch.float32, device=x.device)

    unused = empty(1)  # pointers the kernels never follow
    tape = Tape(empty(layers, n, width), empty(n, outputs) if sine_last else unused,
                empty(layers, columns, n, width) if columns else unused,
                empty(columns, n, outputs) if columns and sine_last else unused)
    y, jacobian = _run(x, weights, biases, omegas, precision, grad_columns, tape)
    return y, jacobian, tape


@dataclass
class Deltas:
    """What ``backward`` gives: dL/dx (N, in) or None; dL/dz of the sine layers ``pre`` (layers, N,
    width) and of the output layer ``last`` (N, out); with the Jacobian's gradient, dL/du of the
    incoming tangents, ``tangents`` (layers, columns, N, width) and ``tangents_last`` (columns, N, out)."""

    dx: torch.Tensor | None
    pre: torch.Tensor
    last: torch.Tensor
    tangents: torch.Tensor | None
    tangents_last: torch.Tensor | None


def backward(dy: torch.Tensor | None, dj: torch.Tensor | None, x: torch.Tensor, tape: Tape,
             weights: Sequence[torch.Tensor], omegas: Sequence[float | None], precision: str,
             need_dx: bool) -> Deltas:
    """The backward sweep from dL/dy (N, out) and dL/dJ (N, out, columns; None: not used by the loss,
    and no tangent is swept), one launch per group of Jacobian columns as the forward's (launches
    after the first add their share); the products after the first layer at ``precision``, dL/dx's
    in fp32 (tf32x3)."""
    n, inputs = x.shape
    width, outputs, hidden = weights[0].shape[0], weights[-1].shape[0], len(weights) - 2
    device = x.device
    columns = 0 if dj is None else dj.shape[-1]
    if dy is None:
        dy = torch.zeros((n, outputs), dtype=torch.float32, device=device)
    dy = dy.detach().contiguous().float()
    dj = dy if dj is None else dj.detach().contiguous().float()
    out = Deltas(torch.empty((n, inputs), dtype=torch.float32, device=device) if need_dx else None,
                 torch.empty_like(tape.pre), torch.empty((n, outputs), dtype=torch.float32, device=device),
                 torch.empty_like(tape.tangents) if columns else None,
                 torch.empty((columns, n, outputs), dtype=torch.float32, device=device) if columns else None)
    if n == 0:
        return out
    operand = torch.bfloat16 if precision == "bf16" else torch.float32
    in_pad = max(_OUT_PAD.value, triton.next_power_of_2(inputs))
    w_first = torch.zeros((width, in_pad), dtype=torch.float32, device=device)
    w_first[:, :inputs] = weights[0].detach()
    hidden_weights = [w.detach().to(operand) for w in weights[1:-1]]
    w_hidden = (torch.stack(hidden_weights).contiguous() if hidden_weights
                else torch.zeros(1, dtype=operand, device=device))
    w_last = torch.zeros((_OUT_PAD.value, width), dtype=operand, device=device)
    w_last[:outputs] = weights[-1].detach().to(operand)
    per_launch = _tangents_per_launch(width)
    groups = [(c, min(per_launch, columns - c)) for c in range(0, columns, per_launch)] or [(0, 0)]
    spare = out.last
    with _on_device(x):
        for start, tangents in groups:
            cfg = backward_config(width, tangents)
            _backward_kernel[(triton.cdiv(n, cfg.block_m),)](
                dy, dj, n, spare if out.dx is None else out.dx, *tape.tensors(), out.pre, out.last,
                spare if out.tangents is None else out.tangents,
                spare if out.tangents_last is None else out.tangents_last, w_first, w_hidden, w_last,
                float(omegas[0]), float(omegas[1] if hidden else omegas[0]), float(omegas[-1] or 0.0), hidden, start,
                IN=inputs, IN_PAD=in_pad, H=width, OUT=outputs, GRAD_COLUMNS=max(columns, 1), TANGENTS=tangents,
                FIRST=start == 0, SINE_LAST=omegas[-1] is not None, NEED_DX=need_dx,
                PRECISION=_PRECISION_CODES[precision], BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k,
                num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return out


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
