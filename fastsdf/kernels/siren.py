"""Triton kernels for ``fastsdf.ops.siren`` on CUDA tensors (on the CPU under TRITON_INTERPRET=1).

``forward`` and ``forward_with_gradient`` run the whole network in one launch: each program takes
blocks of BLOCK_M points through every layer, a layer being a loop of ``tl.dot`` over chunks of
the weights with the bias and sine applied to each output chunk before it is stored. Activations
go to a per-program scratch buffer (a few hundred KB, so it stays in L2) rather than to memory
the size of the batch; a fixed number of programs loops over the blocks (a persistent grid), which
is what bounds the scratch. The Jacobian is reverse mode within the block: the derivative factors
omega cos(omega z) of every layer are kept in the scratch, and the rows dy/da run back through the
layers (one pass per output).

Precision of the hidden layers' products: ``"fp32"`` uses three TF32 products (``tf32x3``, as
accurate as fp32 on tensor cores), ``"tf32"`` one, ``"bf16"`` bfloat16 operands with fp32
accumulation. The first layer (few inputs, magnified by omega_0) is always computed in exact fp32
when it has at most 16 inputs, with ``tf32x3`` beyond.

``sincos`` is the elementwise (sin(omega z), omega cos(omega z)) of the autograd path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from fastsdf.ops.siren import KernelCache

__all__ = ["forward", "forward_with_gradient", "sincos", "supports"]

_PRECISION_CODES = {"fp32": 0, "tf32": 1, "bf16": 2}
_EXACT_FIRST_LAYER = 16  # inputs up to which the first layer is a loop of fp32 multiply-adds
# Triton's interpreter multiplies bfloat16 blocks as if they were integers: there the operands are
# rounded to bfloat16 (it truncates) and multiplied in fp32, which gives the same kind of values.
_NATIVE_BF16 = tl.constexpr(os.environ.get("TRITON_INTERPRET") != "1")


@triton.jit
def _dot(a, b, acc, PRECISION: tl.constexpr):
    if PRECISION == 2:
        if _NATIVE_BF16:
            return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), acc)
        return tl.dot(a.to(tl.bfloat16).to(tl.float32), b.to(tl.bfloat16).to(tl.float32), acc, input_precision="ieee")
    elif PRECISION == 1:
        return tl.dot(a, b, acc, input_precision="tf32")
    else:
        return tl.dot(a, b, acc, input_precision="tf32x3")


@triton.jit
def _product_chunk(a_ptr, lda, K, w_ptr, w_n, w_k, N, n0, EXACT_K: tl.constexpr, BLOCK_M: tl.constexpr,
                   BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """(BLOCK_M x BLOCK_N) = A[:, :K] times columns n0.. of B, with A row-major (stride lda) and
    B[k, n] at w_ptr + n * w_n + k * w_k; zeros past K and N. EXACT_K > 0: K == EXACT_K, summed by
    fp32 multiply-adds."""
    rm = tl.arange(0, BLOCK_M)
    rn = n0 + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if EXACT_K > 0:
        for k in tl.static_range(EXACT_K):
            a = tl.load(a_ptr + rm * lda + k)
            b = tl.load(w_ptr + rn * w_n + k * w_k, mask=rn < N, other=0.0)
            acc += a[:, None] * b[None, :]
    else:
        rk = tl.arange(0, BLOCK_K)
        for k0 in range(0, K, BLOCK_K):
            ks = k0 + rk
            a = tl.load(a_ptr + rm[:, None] * lda + ks[None, :], mask=ks[None, :] < K, other=0.0)
            b = tl.load(w_ptr + rn[None, :] * w_n + ks[:, None] * w_k, mask=(ks[:, None] < K) & (rn[None, :] < N),
                        other=0.0)
            acc = _dot(a, b, acc, PRECISION)
    return acc


@triton.jit
def _layer(a_ptr, lda, K, w_ptr, b_ptr, N, out_ptr, c_ptr, ldo, omega, SINE: tl.constexpr, HAS_BIAS: tl.constexpr,
           KEEP_DERIVATIVE: tl.constexpr, EXACT_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
           BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """One layer of the block: out = sin(omega (A W^T + b)) (or A W^T + b), W (N, K) row-major; with
    KEEP_DERIVATIVE, c = omega cos(omega (A W^T + b)) too. Outputs row-major, stride ldo."""
    rm = tl.arange(0, BLOCK_M)
    for n0 in range(0, N, BLOCK_N):
        rn = n0 + tl.arange(0, BLOCK_N)
        z = _product_chunk(a_ptr, lda, K, w_ptr, K, 1, N, n0, EXACT_K, BLOCK_M, BLOCK_N, BLOCK_K, PRECISION)
        if HAS_BIAS:
            z += tl.load(b_ptr + rn, mask=rn < N, other=0.0)[None, :]
        at = rm[:, None] * ldo + rn[None, :]
        inside = rn[None, :] < N
        if SINE:
            phase = z * omega
            tl.store(out_ptr + at, tl.sin(phase), mask=inside)
            if KEEP_DERIVATIVE:
                tl.store(c_ptr + at, omega * tl.cos(phase), mask=inside)
        else:
            tl.store(out_ptr + at, z, mask=inside)


@triton.jit
def _siren_kernel(x_ptr, n_points, y_ptr, jac_ptr, scratch_ptr, scratch_stride,
                  w_first, b_first, w_hidden, b_hidden, w_last, b_last, omega_first, omega_hidden, omega_last,
                  hidden_layers, IN: tl.constexpr, H: tl.constexpr, OUT: tl.constexpr, ROWS_LD: tl.constexpr,
                  GRAD_COLUMNS: tl.constexpr,
                  SINE_LAST: tl.constexpr, HAS_BIAS: tl.constexpr, WITH_JACOBIAN: tl.constexpr,
                  EXACT_FIRST: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
                  BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # Scratch of this program (_scratch_floats): inputs (BLOCK_M x IN), two activation buffers
    # (BLOCK_M x H), the derivative factors of every sine layer (hidden_layers + 2 buffers of
    # BLOCK_M x H) and two Jacobian row buffers (BLOCK_M x ROWS_LD, ROWS_LD = max(H, IN)).
    pid = tl.program_id(0)
    inputs = scratch_ptr + pid * scratch_stride
    act = inputs + BLOCK_M * IN
    factors = act + 2 * BLOCK_M * H
    rows = factors + (hidden_layers + 2) * BLOCK_M * H
    rm = tl.arange(0, BLOCK_M)
    blocks = tl.cdiv(n_points, BLOCK_M)
    for block in range(pid, blocks, tl.num_programs(0)):
        points = block * BLOCK_M + rm
        valid = points < n_points
        for k in tl.static_range(IN):
            tl.store(inputs + rm * IN + k, tl.load(x_ptr + points * IN + k, mask=valid, other=0.0))
        tl.debug_barrier()
        _layer(inputs, IN, IN, w_first, b_first, H, act, factors, H, omega_first, True, HAS_BIAS, WITH_JACOBIAN,
               EXACT_FIRST, BLOCK_M, BLOCK_N, BLOCK_K, PRECISION)
        tl.debug_barrier()
        for layer in range(hidden_layers):
            src = act + (layer % 2) * BLOCK_M * H
            dst = act + ((layer + 1) % 2) * BLOCK_M * H
            _layer(src, H, H, w_hidden + layer * H * H, b_hidden + layer * H, H, dst,
                   factors + (layer + 1) * BLOCK_M * H, H, omega_hidden, True, HAS_BIAS, WITH_JACOBIAN, 0, BLOCK_M,
                   BLOCK_N, BLOCK_K, PRECISION)
            tl.debug_barrier()
        last_in = act + (hidden_layers % 2) * BLOCK_M * H
        last_factors = factors + (hidden_layers + 1) * BLOCK_M * H
        # The output layer, its OUT columns padded to a chunk of at least 16.
        for n0 in range(0, OUT, BLOCK_N):
            rn = n0 + tl.arange(0, BLOCK_N)
            z = _product_chunk(last_in, H, H, w_last, H, 1, OUT, n0, 0, BLOCK_M, BLOCK_N, BLOCK_K, PRECISION)
            if HAS_BIAS:
                z += tl.load(b_last + rn, mask=rn < OUT, other=0.0)[None, :]
            if SINE_LAST:
                phase = z * omega_last
                if WITH_JACOBIAN:
                    tl.store(last_factors + rm[:, None] * H + rn[None, :], omega_last * tl.cos(phase),
                             mask=rn[None, :] < OUT)
                z = tl.sin(phase)
            tl.store(y_ptr + points[:, None] * OUT + rn[None, :], z, mask=valid[:, None] & (rn[None, :] < OUT))
        if WITH_JACOBIAN:
            tl.debug_barrier()
            # dy_o/dx by reverse mode, one output at a time: g = dy_o/da_{last hidden}, then
            # g <- (g * c_l) W_l down to the inputs.
            rh = tl.arange(0, H)
            for o in range(OUT):
                g = tl.load(w_last + o * H + rh)[None, :] + tl.zeros((BLOCK_M, H), dtype=tl.float32)
                if SINE_LAST:
                    g = g * tl.load(last_factors + rm * H + o)[:, None]
                tl.store(rows + rm[:, None] * H + rh[None, :], g)
                tl.debug_barrier()
                for step in range(hidden_layers):
                    layer = hidden_layers - step  # the hidden layer's index among the factors
                    src = rows + (step % 2) * BLOCK_M * ROWS_LD
                    dst = rows + ((step + 1) % 2) * BLOCK_M * ROWS_LD
                    _scale_rows(src, factors + layer * BLOCK_M * H, H, BLOCK_M, H)
                    tl.debug_barrier()
                    _rows_times_weights(src, w_hidden + (layer - 1) * H * H, H, H, dst, BLOCK_M, BLOCK_N, BLOCK_K,
                                        PRECISION)
                    tl.debug_barrier()
                src = rows + (hidden_layers % 2) * BLOCK_M * ROWS_LD
                dst = rows + ((hidden_layers + 1) % 2) * BLOCK_M * ROWS_LD
                _scale_rows(src, factors, H, BLOCK_M, H)
                tl.debug_barrier()
                _rows_times_weights(src, w_first, H, IN, dst, BLOCK_M, BLOCK_N, BLOCK_K, PRECISION)
                tl.debug_barrier()
                for c in tl.static_range(GRAD_COLUMNS):
                    value = tl.load(dst + rm * IN + (IN - GRAD_COLUMNS + c))
                    tl.store(jac_ptr + (points * OUT + o) * GRAD_COLUMNS + c, value, mask=valid)
                tl.debug_barrier()


@triton.jit
def _scale_rows(rows_ptr, factors_ptr, ld, BLOCK_M: tl.constexpr, H: tl.constexpr):
    """rows *= factors, both BLOCK_M x H (stride ld)."""
    rm = tl.arange(0, BLOCK_M)
    rh = tl.arange(0, H)
    at = rm[:, None] * ld + rh[None, :]
    tl.store(rows_ptr + at, tl.load(rows_ptr + at) * tl.load(factors_ptr + at))


@triton.jit
def _rows_times_weights(rows_ptr, w_ptr, K, N, out_ptr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """out (BLOCK_M x N, stride N) = rows (BLOCK_M x K, stride K) times W, W (K, N) row-major: the
    Jacobian rows through one layer, whose weights are (out = K, in = N)."""
    rm = tl.arange(0, BLOCK_M)
    for n0 in range(0, N, BLOCK_N):
        rn = n0 + tl.arange(0, BLOCK_N)
        acc = _product_chunk(rows_ptr, K, K, w_ptr, 1, N, N, n0, 0, BLOCK_M, BLOCK_N, BLOCK_K, PRECISION)
        tl.store(out_ptr + rm[:, None] * N + rn[None, :], acc, mask=rn[None, :] < N)


@triton.jit
def _sincos_kernel(z_ptr, s_ptr, c_ptr, n, omega, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = offsets < n
    phase = tl.load(z_ptr + offsets, mask=inside, other=0.0) * omega
    tl.store(s_ptr + offsets, tl.sin(phase), mask=inside)
    tl.store(c_ptr + offsets, omega * tl.cos(phase), mask=inside)


def sincos(z: torch.Tensor, omega: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(sin(omega z), omega cos(omega z)), float32."""
    z = z.contiguous()
    s = torch.empty_like(z)
    c = torch.empty_like(z)
    n = z.numel()
    if n:
        block = 1024
        _sincos_kernel[(triton.cdiv(n, block),)](z, s, c, n, float(omega), BLOCK=block)
    return s, c


def supports(weights: Sequence[torch.Tensor]) -> bool:
    """Whether the fused kernels take this network: hidden layers square, of a power-of-two width
    from 16 to 1024, and no more outputs than that width."""
    width = weights[0].shape[0]
    square = all(tuple(w.shape) == (width, width) for w in weights[1:-1])
    return square and 16 <= width <= 1024 and width & (width - 1) == 0 and weights[-1].shape[0] <= width


def _scratch_floats(block_m: int, inputs: int, width: int, hidden_layers: int) -> int:
    return block_m * (inputs + 2 * width + (hidden_layers + 2) * width + 2 * max(width, inputs))


def _programs(x: torch.Tensor, blocks: int) -> int:
    if x.device.type == "cuda":
        return max(1, min(blocks, 4 * torch.cuda.get_device_properties(x.device).multi_processor_count))
    return max(1, min(blocks, 4))  # the interpreter


def _run(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None],
         omegas: Sequence[float | None], precision: str, cache: KernelCache,
         grad_columns: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    x = x.detach().contiguous()
    n, inputs = x.shape
    width, outputs, hidden = weights[0].shape[0], weights[-1].shape[0], len(weights) - 2
    has_bias = biases[0] is not None
    empty = torch.zeros(1, dtype=torch.float32, device=x.device)

    # The hidden layers stacked anew at every call: one device copy of weights that the kernel reads
    # many times over, where checking a cached stack against edits through .data would cost a
    # synchronisation (``cache`` stays unused here).
    w_hidden, b_hidden = empty, empty
    if hidden:
        w_hidden = torch.stack([t.detach() for t in weights[1:-1]]).contiguous()
        b_hidden = torch.stack([t.detach() for t in biases[1:-1]]).contiguous() if has_bias else empty
    block_m = 64
    block_n, block_k = min(64, width), min(32, width)
    programs = _programs(x, triton.cdiv(n, block_m))
    stride = _scratch_floats(block_m, inputs, width, hidden)
    scratch = torch.empty(programs * stride, dtype=torch.float32, device=x.device)
    y = torch.empty((n, outputs), dtype=torch.float32, device=x.device)
    jacobian = None if grad_columns is None else torch.empty((n, outputs, grad_columns), dtype=torch.float32,
                                                             device=x.device)
    if n == 0:
        return y, jacobian
    detached = [w.detach().contiguous() for w in (weights[0], weights[-1])]
    bias_first, bias_last = ((biases[0].detach().contiguous(), biases[-1].detach().contiguous()) if has_bias
                             else (empty, empty))
    _siren_kernel[(programs,)](
        x, n, y, empty if jacobian is None else jacobian, scratch, stride,
        detached[0], bias_first, w_hidden, b_hidden, detached[1], bias_last,
        float(omegas[0]), float(omegas[1] if hidden else omegas[0]), float(omegas[-1] or 0.0), hidden,
        IN=inputs, H=width, OUT=outputs, ROWS_LD=max(width, inputs), GRAD_COLUMNS=grad_columns or 1,
        SINE_LAST=omegas[-1] is not None, HAS_BIAS=has_bias, WITH_JACOBIAN=jacobian is not None,
        EXACT_FIRST=inputs if inputs <= _EXACT_FIRST_LAYER else 0, PRECISION=_PRECISION_CODES[precision],
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
    )
    return y, jacobian


def forward(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None],
            omegas: Sequence[float | None], precision: str, cache: KernelCache) -> torch.Tensor:
    return _run(x, weights, biases, omegas, precision, cache, None)[0]


def forward_with_gradient(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None],
                          omegas: Sequence[float | None], precision: str, grad_columns: int,
                          cache: KernelCache) -> tuple[torch.Tensor, torch.Tensor]:
    y, jacobian = _run(x, weights, biases, omegas, precision, cache, grad_columns)
    return y, jacobian
