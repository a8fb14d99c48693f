"""Device functions the SIREN kernels share: the sine and cosine, the operands' rounding, the products
of a layer at a precision, and the stores of the Jacobian's tangents.

Sine and cosine (``sincos_reduced``): an explicit range reduction to [-pi, pi] (k = floor(phase / 2 pi + 1/2),
then phase - k 2 pi with a three-constant Cody-Waite split, fused multiply-adds), then the special
function unit's ``sin.approx.f32`` / ``cos.approx.f32`` by inline PTX (max absolute error
2^-20.9 on [-pi, pi], PTX ISA). The interpreter has no PTX: there the same reduced argument goes
through ``tl.sin``/``tl.cos``, and the tests add the hardware's error bound to their tolerances.

Precision of the products after the first layer (``layer_products``): ``"fp32"`` is ``FP16X3``,
three fp16 products of big and small parts (the small parts' product left out), ``"tf32"`` one
TF32 product, ``"bf16"`` bfloat16 operands (weights converted once per call on the host,
activations at the dot); all accumulate in fp32. fp16 runs at twice TF32's rate on A100 and H100
with half tf32x3's MMA instructions (m16n8k16), and rounded to nearest its 11 bits leave big +
small within 2^-23 of an operand, relatively (fp32 rounds to 2^-24; three TF32 products, tf32x3,
truncate to 2^-20), as long as both parts are fp16 normals. So the weights are scaled by a power of
two per matrix on the host (``operands.split_fp16``), a sine (in [-1, 1], its small parts below
fp16's normals within 2^-25 absolutely, fp32's own rounding of a sine) is taken as it is, and an
operand without a bound (the Jacobian's tangents, the backward's gradients) has each row scaled
by a power of two first (``scale_rows``: one point per row; ``scale_columns`` for the weight
gradients' inputs), each into fp16's top binade (``fp16_scale``), so that its values down to 2^-18
of the largest keep normal small parts; the sums are scaled back. The first
layer (few inputs, magnified by omega_0) is exact fp32 multiply-adds when it has at most 16
inputs, ``tf32x3`` products (``dot``) over blocks of the inputs read from global memory beyond
(latent codes), and the backward's dL/dx is tf32x3 too. The interpreter ignores
``input_precision``, so there the kernels round the operands themselves as the hardware does (TF32
truncation, the tf32x3 split, bfloat16 round-to-nearest-even) and run an exact product; its fp16
dot is numpy's float32 product of fp16 values, exact as the tensor cores': the numerics the tests
see are the GPU's, up to summation order.

A layer's products (``products``) are one (BLOCK_M, N) accumulator summed over chunks of BLOCK_K
inputs: the input tile is cut into its column halves recursively (``_halves``: reshape, permute,
split, which moves no data where the top column bits are register bits of the accumulator layout),
and each chunk is multiplied by the matching BLOCK_K rows of W^T. So only a BLOCK_M x BLOCK_K chunk
is ever in the MMA operand layout, which Triton replicates over the warps that split N, or split
into big and small parts; the previous design converted the whole tile (three copies in fp32
mode) and spilled from width 128 on.
"""

from __future__ import annotations

import math
import os

import numpy as np
import triton
import triton.language as tl

__all__ = ["BF16", "FP16X3", "FP16_RANGE", "bfloat16", "dot", "dot_fp16x3", "fp16_parts", "fp16_scale",
           "inverse_scale", "layer_products", "operand", "products", "scale_columns", "scale_rows", "sincos_reduced",
           "store_rounded", "store_tangents"]

# Triton's interpreter has no inline PTX and ignores input_precision: there the kernels emulate both.
_NATIVE = tl.constexpr(os.environ.get("TRITON_INTERPRET") != "1")

# 2 pi = _C1 + _C2 + _C3: _C1 has 8 significant bits (k _C1 is exact for |k| < 2^16), the rest
# carries the remainder to ~2^-70, so phase - k 2 pi loses nothing but its final rounding.
_INV_2PI = tl.constexpr(1.0 / (2.0 * math.pi))
_C1 = tl.constexpr(6.28125)
_C2 = tl.constexpr(float(np.float32(2.0 * math.pi - 6.28125)))
_C3 = tl.constexpr(float(np.float32(2.0 * math.pi - 6.28125 - float(np.float32(2.0 * math.pi - 6.28125)))))

# The kernels' PRECISION for "fp32" (operands.kernel_precision): fp16 big and small parts, the
# weights' side by side in each row (``products``); and for "bf16".
FP16X3 = tl.constexpr(3)
BF16 = tl.constexpr(2)
# Operands without a bound are scaled below 2^FP16_RANGE (fp16's largest finite value is ~2^16):
# the big parts round within range, and small parts, 2^-11 of them, stay normal down to 2^-18 of
# the largest (``fp16_scale``).
FP16_RANGE = tl.constexpr(15)


@triton.jit
def sincos_reduced(phase, SINE: tl.constexpr, COSINE: tl.constexpr):
    """(sin(phase), cos(phase)) after reduction to [-pi, pi]; the MUFU on the GPU. Only the asked-for
    ones are computed (the other is returned as the reduced phase, not to be used): ptxas drops an
    unused one anyway, but the interpreter would run it, and the cost model counts what it runs."""
    k = tl.floor(phase * _INV_2PI + 0.5)
    r = tl.fma(k, -_C1, phase)
    r = tl.fma(k, -_C2, r)
    r = tl.fma(k, -_C3, r)
    s = _mufu(r, False) if SINE else r
    c = _mufu(r, True) if COSINE else r
    return s, c


@triton.jit
def _mufu(r, COSINE: tl.constexpr):
    """cos(r) (COSINE) or sin(r) for r in [-pi, pi]: sin.approx.f32 / cos.approx.f32 on the GPU, tl.sin /
    tl.cos in the interpreter (no PTX)."""
    if _NATIVE:
        return tl.inline_asm_elementwise("cos.approx.f32 $0, $1;" if COSINE else "sin.approx.f32 $0, $1;", "=r,r",
                                         [r], dtype=tl.float32, is_pure=True, pack=1)
    else:
        return tl.cos(r) if COSINE else tl.sin(r)


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
def bfloat16(x):
    """x in bfloat16, rounded to nearest even (the interpreter's own conversion truncates)."""
    if _NATIVE:
        return x.to(tl.bfloat16)
    else:
        return _bf16(x).to(tl.bfloat16)


@triton.jit
def store_rounded(at, x, mask):
    """x stored at ``at``: rounded to nearest even where ``at`` points to bfloat16, else as it is."""
    if at.dtype.element_ty == tl.bfloat16:
        tl.store(at, bfloat16(x), mask=mask)
    else:
        tl.store(at, x, mask=mask)


@triton.jit
def operand(x, PRECISION: tl.constexpr):
    """x as ``dot`` reads it when x is its first operand: bfloat16 for PRECISION 2 (rounded to nearest
    even, as ``dot`` would round it), else x. A tile kept between layers in bfloat16 takes half the
    registers, which lets bf16 run larger tiles than fp32 and tf32 without spilling."""
    if PRECISION == BF16:
        if _NATIVE:
            return x.to(tl.bfloat16)
        else:
            return _bf16(x)
    else:
        return x


@triton.jit
def _dot_tf32(a, b, acc):
    """acc + a b with TF32 operands (truncated, as the tensor cores read fp32)."""
    if _NATIVE:
        return tl.dot(a, b, acc, input_precision="tf32")
    else:
        return tl.dot(_tf32(a), _tf32(b), acc, input_precision="ieee")


@triton.jit
def dot(a, b, acc, PRECISION: tl.constexpr):
    """acc + a b: a fp32, b fp32 (bf16 for PRECISION 2), fp32 accumulation. tf32x3 is written out
    (big and small parts, the small ones' product left out) rather than left to Triton's TF32x3,
    whose operand copies in shared memory do not fit at widths >= 128."""
    if PRECISION == BF16:
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
def fp16_parts(x):
    """(x rounded to fp16, the rest rounded to fp16), both to nearest even: x = big + small within
    2^-22 of x while both are fp16 normals."""
    big = x.to(tl.float16)
    return big, (x - big.to(tl.float32)).to(tl.float16)


@triton.jit
def dot_fp16x3(a, b_big, b_small, acc):
    """acc + a b for a below 2^FP16_RANGE in magnitude (fp32) and b = b_big + b_small (fp16): a's parts
    rounded to nearest, the small parts' product left out. The interpreter's fp16 dot is numpy's
    float32 product of the fp16 values: exact products, as the tensor cores'."""
    a_big, a_small = fp16_parts(a)
    acc = tl.dot(a_small, b_big, acc)
    acc = tl.dot(a_big, b_small, acc)
    return tl.dot(a_big, b_big, acc)


@triton.jit
def _times(x, b, b_small, acc, PRECISION: tl.constexpr):
    """acc + x b at PRECISION (b_small: the small parts of b for FP16X3)."""
    if PRECISION == FP16X3:
        return dot_fp16x3(x, b, b_small, acc)
    else:
        return dot(x, b, acc, PRECISION)


@triton.jit
def fp16_scale(largest):
    """(2^p, 2^-p) for each of ``largest``, p the power that puts it in [2^(FP16_RANGE - 1),
    2^FP16_RANGE), fp16's top binade, clamped to [-126, 126] (fp32's normal powers): zeros and
    subnormals take 2^126, an infinity or a NaN 2^-114 and stays not finite."""
    exponent = (largest.to(tl.int32, bitcast=True) >> 23) & 0xFF
    power = tl.minimum(tl.maximum(FP16_RANGE + 126 - exponent, -126), 126)
    return ((power + 127) << 23).to(tl.float32, bitcast=True), ((127 - power) << 23).to(tl.float32, bitcast=True)


@triton.jit
def scale_rows(x):
    """(x with each row scaled by a power of two to fp16's top binade (``fp16_scale`` of its largest
    |value|), the inverse powers (rows,)): an operand without a bound as FP16X3 multiplies it."""
    scale, inverse = fp16_scale(tl.max(tl.abs(x), axis=1))
    return x * scale[:, None], inverse


@triton.jit
def scale_columns(x):
    """``scale_rows`` by columns: (x scaled, the inverse powers (columns,))."""
    scale, inverse = fp16_scale(tl.max(tl.abs(x), axis=0))
    return x * scale[None, :], inverse


@triton.jit
def inverse_scale(scale_ptr, PRECISION: tl.constexpr):
    """The inverse scale of a layer's weights at scale_ptr for FP16X3 (``layer_products``), else 1."""
    return tl.load(scale_ptr) if PRECISION == FP16X3 else 1.0


@triton.jit
def _unscaled(acc, rows, w_inverse, SCALED: tl.constexpr):
    """acc times the weights' inverse scale and, where the operand's rows were scaled, theirs (one
    after the other: their product alone could leave fp32's normal range)."""
    if SCALED:
        return acc * rows[:, None] * w_inverse
    else:
        return acc * w_inverse


@triton.jit
def layer_products(a, t0, t1, t2, w_ptr, w_inverse, K: tl.constexpr, N: tl.constexpr, TANGENTS: tl.constexpr,
                   BOUNDED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """(a W^T, t_i W^T) of a layer, K inputs, N outputs, one (BLOCK_M, N) accumulator each
    (``products``). For FP16X3 the weights are ``operands.split_fp16``'s, w_inverse their inverse
    scale, and each operand's rows are scaled first (``scale_rows``) unless it is bounded (BOUNDED:
    a, a sine), their products scaled back."""
    acc = tl.zeros((BLOCK_M, N), dtype=tl.float32)
    if PRECISION == FP16X3:
        ra = w_inverse
        if not BOUNDED:
            a, ra = scale_rows(a)
        r0, r1, r2 = ra, ra, ra
        if TANGENTS > 0:
            t0, r0 = scale_rows(t0)
        if TANGENTS > 1:
            t1, r1 = scale_rows(t1)
        if TANGENTS > 2:
            t2, r2 = scale_rows(t2)
        z, u0, u1, u2 = products(a, t0, t1, t2, acc, acc, acc, acc, w_ptr, 0, K, N, TANGENTS, BLOCK_K, PRECISION)
        z = _unscaled(z, ra, w_inverse, not BOUNDED)
        if TANGENTS > 0:
            u0 = _unscaled(u0, r0, w_inverse, True)
        if TANGENTS > 1:
            u1 = _unscaled(u1, r1, w_inverse, True)
        if TANGENTS > 2:
            u2 = _unscaled(u2, r2, w_inverse, True)
    else:
        z, u0, u1, u2 = products(a, t0, t1, t2, acc, acc, acc, acc, w_ptr, 0, K, N, TANGENTS, BLOCK_K, PRECISION)
    return z, u0, u1, u2


@triton.jit
def _halves(x):
    """x's first and second half of columns. The top column bits of a dot's accumulator are
    register bits of each thread (repetitions of the MMA tile), so this moves no data."""
    return tl.split(tl.permute(tl.reshape(x, (x.shape[0], 2, x.shape[1] // 2)), (0, 2, 1)))


@triton.jit
def products(a, t0, t1, t2, z, u0, u1, u2, w_ptr, K0: tl.constexpr, K: tl.constexpr, LDW: tl.constexpr,
              TANGENTS: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """z += a W^T[K0:K0 + K] and u_i += t_i W^T[K0:K0 + K] (a, t_i: columns K0..K0 + K of the
    layer's input; W^T (in, LDW) row-major at w_ptr; for FP16X3, without tangents, (in, 2, LDW) fp16:
    each row's big parts, then its small ones), in chunks of BLOCK_K rows: each chunk of the
    weights is loaded once for the activations and the tangents, and only a chunk of an operand is
    ever in the MMA operand layout (or split into big and small parts) at a time."""
    if K == BLOCK_K:
        # The chunk's offset is added to the scalar pointer: one offset tile serves every chunk and
        # layer, where per-chunk offset tiles would be hoisted out of the layer loop, all live.
        if PRECISION == FP16X3:
            at = (w_ptr + K0 * 2 * LDW) + (tl.arange(0, BLOCK_K)[:, None] * (2 * LDW) + tl.arange(0, LDW)[None, :])
            b = tl.load(at)
            b_small = tl.load(at + LDW)
        else:
            b = tl.load((w_ptr + K0 * LDW) + (tl.arange(0, BLOCK_K)[:, None] * LDW + tl.arange(0, LDW)[None, :]))
            b_small = b
        z = _times(a, b, b_small, z, PRECISION)
        if TANGENTS > 0:
            u0 = _times(t0, b, b_small, u0, PRECISION)
        if TANGENTS > 1:
            u1 = _times(t1, b, b_small, u1, PRECISION)
        if TANGENTS > 2:
            u2 = _times(t2, b, b_small, u2, PRECISION)
    else:
        a_lo, a_hi = _halves(a)
        t0_lo, t0_hi, t1_lo, t1_hi, t2_lo, t2_hi = t0, t0, t1, t1, t2, t2
        if TANGENTS > 0:
            t0_lo, t0_hi = _halves(t0)
        if TANGENTS > 1:
            t1_lo, t1_hi = _halves(t1)
        if TANGENTS > 2:
            t2_lo, t2_hi = _halves(t2)
        z, u0, u1, u2 = products(a_lo, t0_lo, t1_lo, t2_lo, z, u0, u1, u2, w_ptr, K0, K // 2, LDW, TANGENTS,
                                  BLOCK_K, PRECISION)
        z, u0, u1, u2 = products(a_hi, t0_hi, t1_hi, t2_hi, z, u0, u1, u2, w_ptr, K0 + K // 2, K // 2, LDW,
                                  TANGENTS, BLOCK_K, PRECISION)
    return z, u0, u1, u2



@triton.jit
def store_tangents(at, t0, t1, t2, stride, mask, TANGENTS: tl.constexpr):
    """The first TANGENTS of t0, t1, t2 stored at ``at``, ``at + stride`` and ``at + 2 stride``."""
    if TANGENTS > 0:
        tl.store(at, t0, mask=mask)
    if TANGENTS > 1:
        tl.store(at + stride, t1, mask=mask)
    if TANGENTS > 2:
        tl.store(at + 2 * stride, t2, mask=mask)
