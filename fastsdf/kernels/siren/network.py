"""The whole SIREN in one launch: ``forward``, ``forward_with_tangents`` (the input Jacobian by forward
mode), ``forward_taped`` (which also writes the training backward's tape, ``Tape``) and
``forward_directional`` (forward mode along given directions, adding their tangents to a tape).

``siren_kernel`` runs the network with one program per tile of BLOCK_M points. The tile's
activations (BLOCK_M x H, fp32) stay in registers from the first layer to the last: nothing but x,
y and the Jacobian touches global memory per point (12 + 4 OUT bytes forward, + 12 OUT with the xyz
Jacobian); the weights are streamed (from L2) once per tile. A layer is one (BLOCK_M, N)
accumulator (``device.products``).

The input Jacobian in one launch is forward mode: the tangents dz/dx_j of the requested inputs ride
along as BLOCK_M x H tiles, multiplied by the same weight chunk as the activations (loaded once) and
by omega cos(omega z) after it; it keeps 1 + TANGENTS tiles and their accumulators live and stores
nothing (reverse mode, which needs the tape: ``gradient``). A launch takes up to 3 columns
(``launch.tangents_per_launch``: 1 from width 256 on); more take several launches, each computing y
too. With TAPE (and no tangents) the kernel also stores each sine layer's pre-activations, for
``training.backward``. Forward mode along given directions for the backward's Jacobian term,
``directional_kernel``, carries tangents alone over that tape: z is read back, not recomputed, and
the activations' tile and products are left out.

Measured on one H200 (2026-11-29, width 256, benchmarks/RESULTS.md): forward 107M points/s in fp32
(eager PyTorch 77M; by tf32x3 then, fp16x3 now, not yet measured: ``device``), 152M in tf32, 198M
in bf16 (at BLOCK_M 32, before bf16's tiles of 128; not yet measured); the Jacobian by forward
mode 19M (fp32), 26M (tf32), 34M (bf16), slower than the composed path except in tf32
(``fastsdf.ops.siren_triton.jacobian_pays``; reverse mode, ``gradient``, not yet measured).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from fastsdf.kernels.siren.device import (FP16X3, dot, inverse_scale, layer_products, operand, sincos_reduced,
                                          store_tangents)
from fastsdf.kernels.siren.launch import OUT_PAD, arch, column_groups, config, on_device
from fastsdf.kernels.siren.operands import kernel_precision, layer_operands

__all__ = ["BLOCK_K_FIRST", "EXACT_FIRST_LAYER", "Tape", "directional_kernel", "forward", "forward_directional",
           "forward_taped", "forward_with_tangents", "siren_kernel"]

EXACT_FIRST_LAYER = 16  # inputs up to which the first layer is a loop of fp32 multiply-adds
BLOCK_K_FIRST = 32  # inputs per product of a first layer beyond EXACT_FIRST_LAYER


@triton.jit
def _activate(z, t0, t1, t2, b_ptr, omega, tape_rows, valid, N: tl.constexpr, SINE: tl.constexpr,
              HAS_BIAS: tl.constexpr, TANGENTS: tl.constexpr, TAPED: tl.constexpr):
    """z + b and, with SINE, (sin(omega (z + b)), omega cos(omega (z + b)) t_i). TAPED > 0 stores the
    first TAPED columns of z + b at tape_rows (row pointers), for the backward."""
    if HAS_BIAS:
        z += tl.load(b_ptr + tl.arange(0, N))[None, :]
    if TAPED > 0:
        columns = tl.arange(0, N)
        tl.store(tape_rows[:, None] + columns[None, :], z, mask=valid[:, None] & (columns < TAPED)[None, :])
    if SINE:
        z, c = sincos_reduced(z * omega, True, TANGENTS > 0)
        if TANGENTS > 0:
            t0, t1, t2 = _times(c * omega, t0, t1, t2, TANGENTS)
    return z, t0, t1, t2


@triton.jit
def _times(c, t0, t1, t2, TANGENTS: tl.constexpr):
    """The first TANGENTS of t0, t1, t2 times c."""
    if TANGENTS > 0:
        t0 = t0 * c
    if TANGENTS > 1:
        t1 = t1 * c
    if TANGENTS > 2:
        t2 = t2 * c
    return t0, t1, t2


@triton.jit
def _layer(a, t0, t1, t2, w_ptr, b_ptr, scale_ptr, omega, tape_rows, valid, K: tl.constexpr, N: tl.constexpr,
           SINE: tl.constexpr, HAS_BIAS: tl.constexpr, TANGENTS: tl.constexpr, TAPED: tl.constexpr,
           BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """A layer after the first: K inputs, N outputs, the whole (BLOCK_M, N) result one accumulator
    (``device.layer_products``; for FP16X3 the weights' inverse scale at scale_ptr)."""
    z, u0, u1, u2 = layer_products(a, t0, t1, t2, w_ptr, inverse_scale(scale_ptr, PRECISION), K, N, TANGENTS, True,
                                   BLOCK_M, BLOCK_K, PRECISION)
    return _activate(z, u0, u1, u2, b_ptr, omega, tape_rows, valid, N, SINE, HAS_BIAS, TANGENTS, TAPED)


@triton.jit
def _first_layer(x_rows, valid, w_ptr, b_ptr, omega, first_column, tape_rows, IN: tl.constexpr, K: tl.constexpr,
                 H: tl.constexpr, HAS_BIAS: tl.constexpr, TANGENTS: tl.constexpr, TAPED: tl.constexpr,
                 EXACT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """The first layer from x (x_rows: row pointers, IN columns); its tangents start as the weights'
    rows first_column... EXACT: by fp32 multiply-adds, else by tf32x3 products over blocks of BLOCK_K
    inputs (K: IN padded to BLOCK_K, padding rows zero)."""
    rn = tl.arange(0, H)
    z = tl.zeros((BLOCK_M, H), dtype=tl.float32)
    if EXACT:
        for k in tl.static_range(IN):
            z += tl.load(x_rows + k, mask=valid, other=0.0)[:, None] * tl.load(w_ptr + k * H + rn)[None, :]
    else:
        rk = tl.arange(0, BLOCK_K)
        # A loop, not unrolled: unrolled, every block's loads were hoisted (7-8 KB of spills at width
        # 256 with a 256-d latent code, 0.5 MB at 512).
        for k0 in range(0, K, BLOCK_K):
            xk = tl.load(x_rows[:, None] + (k0 + rk)[None, :], mask=valid[:, None] & (k0 + rk < IN)[None, :],
                         other=0.0)
            z = dot(xk, tl.load(w_ptr + (k0 + rk)[:, None] * H + rn[None, :]), z, 0)
    t0, t1, t2 = z, z, z
    if TANGENTS > 0:
        t0 = tl.broadcast_to(tl.load(w_ptr + first_column * H + rn)[None, :], (BLOCK_M, H))
    if TANGENTS > 1:
        t1 = tl.broadcast_to(tl.load(w_ptr + (first_column + 1) * H + rn)[None, :], (BLOCK_M, H))
    if TANGENTS > 2:
        t2 = tl.broadcast_to(tl.load(w_ptr + (first_column + 2) * H + rn)[None, :], (BLOCK_M, H))
    return _activate(z, t0, t1, t2, b_ptr, omega, tape_rows, valid, H, True, HAS_BIAS, TANGENTS, TAPED)


@triton.jit
def siren_kernel(x_ptr, n_points, y_ptr, jac_ptr, w_first, b_first, w_hidden, b_hidden, w_last, b_last,
                  scales, omega_first, omega_hidden, omega_last, hidden_layers, first_column, jac_column, tape_ptr,
                  tape_last_ptr, IN: tl.constexpr, K_FIRST: tl.constexpr, H: tl.constexpr, OUT: tl.constexpr,
                  GRAD_COLUMNS: tl.constexpr, TANGENTS: tl.constexpr, SINE_LAST: tl.constexpr,
                  HAS_BIAS: tl.constexpr, EXACT_FIRST: tl.constexpr, PRECISION: tl.constexpr, TAPE: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_K_FIRST: tl.constexpr):
    """y (and TANGENTS columns of the Jacobian from jac_column on) of BLOCK_M points. Weights
    transposed (in, out); the output layer padded to OUT_PAD columns; for FP16X3 the hidden and
    output layers' as ``operands.split_fp16`` gives them, their inverse scales at ``scales`` (hidden
    layers, then the output layer). With TAPE (and no tangents), what the backward reads too: the
    sine layers' pre-activations (layers, n_points, H) at tape_ptr and a sine output layer's
    (n_points, OUT) at tape_last_ptr."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    valid = rows < n_points
    x_rows = x_ptr + rows * IN
    plane = tl.cast(n_points, tl.int64) * H
    tape_rows = tape_ptr + rows * H
    a, t0, t1, t2 = _first_layer(x_rows, valid, w_first, b_first, omega_first, first_column, tape_rows, IN, K_FIRST,
                                 H, HAS_BIAS, TANGENTS, H if TAPE else 0, EXACT_FIRST, BLOCK_M, BLOCK_K_FIRST)
    a, t0, t1, t2 = operand(a, PRECISION), operand(t0, PRECISION), operand(t1, PRECISION), operand(t2, PRECISION)
    w = w_hidden
    bias = b_hidden
    scale = scales
    for _ in range(hidden_layers):
        tape_rows += plane
        a, t0, t1, t2 = _layer(a, t0, t1, t2, w, bias, scale, omega_hidden, tape_rows, valid, H, H, True, HAS_BIAS,
                               TANGENTS, H if TAPE else 0, BLOCK_M, BLOCK_K, PRECISION)
        a, t0, t1, t2 = (operand(a, PRECISION), operand(t0, PRECISION), operand(t1, PRECISION),
                         operand(t2, PRECISION))
        w += H * H * (2 if PRECISION == FP16X3 else 1)
        bias += H
        scale += 1
    y, t0, t1, t2 = _layer(a, t0, t1, t2, w_last, b_last, scale, omega_last, tape_last_ptr + rows * OUT, valid, H,
                           OUT_PAD, SINE_LAST, HAS_BIAS, TANGENTS, OUT if TAPE and SINE_LAST else 0, BLOCK_M,
                           BLOCK_K, PRECISION)
    ro = tl.arange(0, OUT_PAD)
    inside = valid[:, None] & (ro < OUT)[None, :]
    tl.store(y_ptr + rows[:, None] * OUT + ro[None, :], y, mask=inside)
    store_tangents(jac_ptr + (rows[:, None] * OUT + ro[None, :]) * GRAD_COLUMNS + jac_column, t0, t1, t2, 1, inside,
                    TANGENTS)


@triton.jit
def _times_derivative(a, t0, t1, t2, z_rows, omega, valid, N: tl.constexpr, COLUMNS: tl.constexpr,
                      TANGENTS: tl.constexpr):
    """a and the first TANGENTS of t0, t1, t2 times omega cos(omega z), z the tape's pre-activations
    at z_rows (row pointers, COLUMNS of N columns)."""
    columns = tl.arange(0, N)
    inside = valid[:, None] & (columns < COLUMNS)[None, :]
    _, c = sincos_reduced(tl.load(z_rows[:, None] + columns[None, :], mask=inside, other=0.0) * omega, False, True)
    c = c * omega
    t0, t1, t2 = _times(c, t0, t1, t2, TANGENTS)
    return a * c, t0, t1, t2


@triton.jit
def directional_kernel(n_points, jac_ptr, w_hidden, w_last, scales, omega_first, omega_hidden, omega_last,
                       hidden_layers, jac_column, tape_ptr, tape_last_ptr, tape_u_ptr, tape_u_last_ptr,
                       H: tl.constexpr, OUT: tl.constexpr, GRAD_COLUMNS: tl.constexpr, TANGENTS: tl.constexpr,
                       SINE_LAST: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
                       BLOCK_K: tl.constexpr):
    """Forward mode along given directions over ``forward_taped``'s tape, for BLOCK_M points: 1 + TANGENTS
    tangents from column jac_column on (of GRAD_COLUMNS), the first in the activations' place of
    ``device.layer_products`` (an operand without a bound), start as the tape's first-layer tangents
    (W v, at tape_u_ptr) and go through each layer as t = omega cos(omega z) (W t of the layer
    below), z read from the tape, not recomputed. Stores each layer's incoming tangents W t in the
    tape (a sine output layer's at tape_u_last_ptr) and the derivatives (n_points, OUT,
    GRAD_COLUMNS) at jac_ptr. Weights as ``siren_kernel``'s."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    valid = rows < n_points
    plane = tl.cast(n_points, tl.int64) * H
    columns = tl.arange(0, H)
    inside = valid[:, None] & (columns < H)[None, :]
    z_rows = tape_ptr + rows * H
    u_rows = tape_u_ptr + jac_column * plane + rows * H
    given = u_rows[:, None] + columns[None, :]
    a = tl.load(given, mask=inside, other=0.0)
    t0, t1, t2 = a, a, a
    if TANGENTS > 0:
        t0 = tl.load(given + plane, mask=inside, other=0.0)
    if TANGENTS > 1:
        t1 = tl.load(given + 2 * plane, mask=inside, other=0.0)
    if TANGENTS > 2:
        t2 = tl.load(given + 3 * plane, mask=inside, other=0.0)
    a, t0, t1, t2 = _times_derivative(a, t0, t1, t2, z_rows, omega_first, valid, H, H, TANGENTS)
    w = w_hidden
    scale = scales
    for _ in range(hidden_layers):
        z_rows += plane
        u_rows += GRAD_COLUMNS * plane
        a, t0, t1, t2 = layer_products(operand(a, PRECISION), operand(t0, PRECISION), operand(t1, PRECISION),
                                       operand(t2, PRECISION), w, inverse_scale(scale, PRECISION), H, H, TANGENTS,
                                       False, BLOCK_M, BLOCK_K, PRECISION)
        at = u_rows[:, None] + columns[None, :]
        tl.store(at, a, mask=inside)
        store_tangents(at + plane, t0, t1, t2, plane, inside, TANGENTS)
        a, t0, t1, t2 = _times_derivative(a, t0, t1, t2, z_rows, omega_hidden, valid, H, H, TANGENTS)
        w += H * H * (2 if PRECISION == FP16X3 else 1)
        scale += 1
    a, t0, t1, t2 = layer_products(operand(a, PRECISION), operand(t0, PRECISION), operand(t1, PRECISION),
                                   operand(t2, PRECISION), w_last, inverse_scale(scale, PRECISION), H, OUT_PAD,
                                   TANGENTS, False, BLOCK_M, BLOCK_K, PRECISION)
    ro = tl.arange(0, OUT_PAD)
    inside = valid[:, None] & (ro < OUT)[None, :]
    if SINE_LAST:
        out_plane = tl.cast(n_points, tl.int64) * OUT
        at = tape_u_last_ptr + jac_column * out_plane + rows[:, None] * OUT + ro[None, :]
        tl.store(at, a, mask=inside)
        store_tangents(at + out_plane, t0, t1, t2, out_plane, inside, TANGENTS)
        a, t0, t1, t2 = _times_derivative(a, t0, t1, t2, tape_last_ptr + rows * OUT, omega_last, valid, OUT_PAD, OUT,
                                          TANGENTS)
    at = jac_ptr + (rows[:, None] * OUT + ro[None, :]) * GRAD_COLUMNS + jac_column
    tl.store(at, a, mask=inside)
    store_tangents(at + 1, t0, t1, t2, 1, inside, TANGENTS)


def _launch_args(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None],
                 precision: str) -> tuple[list[torch.Tensor], dict]:
    """The weights as the kernel reads them (transposed; the hidden and output layers'
    ``operands.layer_operands``, with their inverse scales) and the shape constants, the same for
    every launch of a call."""
    inputs = x.shape[1]
    width, outputs = weights[0].shape[0], weights[-1].shape[0]
    exact = inputs <= EXACT_FIRST_LAYER
    k_first = inputs if exact else triton.cdiv(inputs, BLOCK_K_FIRST) * BLOCK_K_FIRST
    device = x.device
    w_first = torch.zeros((k_first, width), dtype=torch.float32, device=device)
    w_first[:inputs] = weights[0].detach().t()
    w_hidden, w_last, scales = _products_weights(weights, precision)
    has_bias = biases[0] is not None
    empty = torch.zeros(1, dtype=torch.float32, device=device)
    b_first = biases[0].detach().float().contiguous() if has_bias else empty
    b_hidden = (torch.stack([b.detach() for b in biases[1:-1]]).float().contiguous()
                if has_bias and len(weights) > 2 else empty)
    b_last = torch.zeros(OUT_PAD.value, dtype=torch.float32, device=device)
    if has_bias:
        b_last[:outputs] = biases[-1].detach()
    constants = dict(IN=inputs, K_FIRST=k_first, H=width, OUT=outputs, HAS_BIAS=has_bias, EXACT_FIRST=exact,
                     PRECISION=kernel_precision(precision), BLOCK_K_FIRST=BLOCK_K_FIRST)
    return [w_first, b_first, w_hidden, b_hidden, w_last, b_last, scales], constants


def _products_weights(weights: Sequence[torch.Tensor], precision: str) -> tuple[torch.Tensor, ...]:
    """The hidden and output layers' weights as the forward's products read them, transposed (the
    output layer's padded to OUT_PAD columns; ``operands.layer_operands``), and their inverse scales."""
    width, outputs = weights[0].shape[0], weights[-1].shape[0]
    hidden = torch.stack([w.detach().t() for w in weights[1:-1]]) if len(weights) > 2 else None
    last = torch.zeros((width, OUT_PAD.value), dtype=torch.float32, device=weights[0].device)
    last[:, :outputs] = weights[-1].detach().t()
    return layer_operands(hidden, last, precision)


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
    columns = grad_columns or 0
    target = arch(x.device)
    with on_device(x):
        tensors, constants = _launch_args(x, weights, biases, precision)
        for start, tangents in column_groups(width, columns):
            cfg = config(width, tangents, precision, target, "forward" if tape is None else "taped")
            siren_kernel[(triton.cdiv(n, cfg.block_m),)](
                x, n, y, y if jacobian is None else jacobian, *tensors,
                float(omegas[0]), float(omegas[1] if hidden else omegas[0]), float(omegas[-1] or 0.0), hidden,
                inputs - columns + start, start, *([y, y] if tape is None else [tape.pre, tape.last]),
                GRAD_COLUMNS=max(columns, 1), TANGENTS=tangents, SINE_LAST=omegas[-1] is not None,
                TAPE=tape is not None, BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k, **cfg.options, **constants)
    return y, jacobian


@dataclass
class Tape:
    """What ``forward_taped`` keeps for ``backward``: the sine layers' pre-activations z = W a + b,
    ``pre`` (layers, N, width), and from ``forward_directional`` their incoming tangents u (W t of
    the layer below; the first layer's: W v), ``tangents`` (layers, count, N, width); a sine output
    layer's in ``last`` (N, out) and ``tangents_last`` (count, N, out)."""

    pre: torch.Tensor
    last: torch.Tensor
    tangents: torch.Tensor
    tangents_last: torch.Tensor

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.pre, self.last, self.tangents, self.tangents_last


def forward_taped(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None],
                  omegas: Sequence[float | None], precision: str) -> tuple[torch.Tensor, Tape]:
    """(y (N, out), the tape of pre-activations ``backward`` reads): ``forward``'s launch, storing
    the tape too."""
    n, width, outputs = x.shape[0], weights[0].shape[0], weights[-1].shape[0]
    layers = len(weights) - 1

    def empty(*shape: int) -> torch.Tensor:
        return torch.empty(shape, dtype=torch.float32, device=x.device)

    unused = empty(1)  # pointers the kernels never follow
    tape = Tape(empty(layers, n, width), empty(n, outputs) if omegas[-1] is not None else unused, unused, unused)
    y, _ = _run(x, weights, biases, omegas, precision, None, tape)
    return y, tape


def forward_directional(weights: Sequence[torch.Tensor], omegas: Sequence[float | None], precision: str,
                        directions: torch.Tensor, tape: Tape) -> tuple[torch.Tensor, Tape]:
    """(the derivatives of y along ``directions`` (N, count, c) of the last c inputs, (N, out,
    count), and ``tape`` with the tangents they take, for ``backward``): forward mode over the
    tape's pre-activations (``directional_kernel``: tangents alone; the points and biases are in
    them), with the first layer's tangents W v (one GEMM here, written into the tape, where the
    kernel reads them)."""
    n, count, columns = directions.shape
    device = directions.device
    width, outputs, layers = weights[0].shape[0], weights[-1].shape[0], len(weights) - 1
    tangents = torch.empty((layers, count, n, width), dtype=torch.float32, device=device)
    first = weights[0].detach()
    columns_w = first[:, first.shape[1] - columns:].t()
    for k in range(count):  # each written in place (an einsum wrote a copy, then copied it)
        torch.mm(directions[:, k].float(), columns_w, out=tangents[0, k])
    last = (torch.empty((count, n, outputs), dtype=torch.float32, device=device) if omegas[-1] is not None
            else tape.tangents_last)
    directed = Tape(tape.pre, tape.last, tangents, last)
    derivatives = torch.empty((n, outputs, count), dtype=torch.float32, device=device)
    if n == 0:
        return derivatives, directed
    target = arch(device)
    with on_device(directions):
        w_hidden, w_last, scales = _products_weights(weights, precision)
        for start, group in column_groups(width, count):
            cfg = config(width, group - 1, precision, target, "directional")
            directional_kernel[(triton.cdiv(n, cfg.block_m),)](
                n, derivatives, w_hidden, w_last, scales, float(omegas[0]), float(omegas[1] if layers > 1 else 0.0),
                float(omegas[-1] or 0.0), layers - 1, start, *directed.tensors(), H=width, OUT=outputs,
                GRAD_COLUMNS=count, TANGENTS=group - 1, SINE_LAST=omegas[-1] is not None,
                PRECISION=kernel_precision(precision), BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k, **cfg.options)
    return derivatives, directed


def forward(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None],
            omegas: Sequence[float | None], precision: str) -> torch.Tensor:
    """The network at x (N, in) -> (N, out), one launch; the operands are prepared from the weights
    at every call (a few weight-sized copies)."""
    return _run(x, weights, biases, omegas, precision, None)[0]


def forward_with_tangents(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None],
                          omegas: Sequence[float | None], precision: str,
                          grad_columns: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(y (N, out), dy/dx (N, out, grad_columns)) for the last ``grad_columns`` inputs by forward mode:
    one launch per 3 columns (1 from width 256 on), each computing y too."""
    y, jacobian = _run(x, weights, biases, omegas, precision, grad_columns)
    assert jacobian is not None
    return y, jacobian
