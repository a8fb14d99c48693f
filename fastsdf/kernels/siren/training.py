"""The training backward of the fused forward: ``backward`` (the autograd Function around it and why
this design: ``fastsdf.ops.siren_triton``).

The forward launched by ``network.forward_taped`` stores each sine layer's pre-activations, and
``network.forward_directional`` the tangents each layer receives (the tape), and ``backward_kernel``
walks a tile's layers down from dL/dy and dL/dJ (J: the forward's tangents at the output; for the
Jacobian's loss, the derivatives along its directions) with dL/da and dL/dt in registers: per layer
the tape gives omega cos(omega z) and its derivative (MUFU), dL/dz and dL/du are stored, and they
are multiplied by the weights as they are (out x in, through the same ``device.products``, one
weight chunk for all) into the next dL/da and dL/dt; at the bottom dL/dx (tf32x3). Tangents go in
the forward's groups (3 a launch to width 128, 1 from 256), each launch after the first adding its
share. ``input_gradient`` is the same sweep from dL/dy alone without storing dL/dz: reverse mode's
Jacobian. The parameter gradients are ``parameters``' GEMMs after it, whose operands the sweep
leaves: in bf16 in bfloat16 (``Deltas``), which halves what the sweep writes and the GEMMs read of
them (the eikonal step at width 256, counted: 74 -> 48 KB of HBM traffic a point). Tilings and
their registers and spills: ``launch``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from fastsdf.kernels.siren.device import (BF16, FP16X3, inverse_scale, layer_products, operand, products,
                                          sincos_reduced, store_rounded, store_tangents)
from fastsdf.kernels.siren.launch import OUT_PAD, arch, backward_config, column_groups, on_device
from fastsdf.kernels.siren.network import Tape
from fastsdf.kernels.siren.operands import kernel_precision, layer_operands

__all__ = ["Deltas", "backward", "backward_kernel", "input_gradient"]


@triton.jit
def _sine_backward(abar, tbar0, tbar1, tbar2, z_rows, u_rows, u_stride, delta_rows, delta_u_rows, valid, omega,
                   N: tl.constexpr, COLUMNS: tl.constexpr, TANGENTS: tl.constexpr, FIRST: tl.constexpr,
                   DELTAS: tl.constexpr, STORE_A: tl.constexpr, STORE_T: tl.constexpr, HALF: tl.constexpr):
    """Through a = sin(omega z), t_i = c u_i (c = omega cos(omega z), u_i the incoming tangents, read
    from the tape as z is): from dL/da and dL/dt_i to dL/dz (stored with DELTAS, added to what earlier
    launches stored unless FIRST) and dL/du_i (stored at delta_u_rows + i u_stride); a delta pointer
    to bfloat16 takes them rounded (``device.store_rounded``). STORE_A writes a over z and STORE_T
    each t_i over u_i in the tape, once read: the weight gradients' operands, with HALF in bfloat16
    (``_store_operand``). The *_rows are row pointers (BLOCK_M): the (BLOCK_M, N) offsets are made
    here, where they are used, not kept live across the layers (64-bit, a tile's worth of registers
    each)."""
    columns = tl.arange(0, N)
    inside = valid[:, None] & (columns < COLUMNS)[None, :]
    z_at = z_rows[:, None] + columns[None, :]
    s, c = sincos_reduced(tl.load(z_at, mask=inside, other=0.0) * omega, (TANGENTS > 0) or STORE_A, True)
    if STORE_A:
        _store_operand(z_at, s, inside, N, HALF)
    c = c * omega
    dc = s * (-omega * omega)
    zbar = abar * c
    ubar0, ubar1, ubar2 = tbar0, tbar1, tbar2
    u_at = u_rows[:, None] + columns[None, :]
    du_at = delta_u_rows[:, None] + columns[None, :]
    if TANGENTS > 0:
        u = tl.load(u_at, mask=inside, other=0.0)
        zbar += tbar0 * u * dc
        ubar0 = tbar0 * c
        store_rounded(du_at, ubar0, inside)
        if STORE_T:
            _store_operand(u_at, u * c, inside, N, HALF)
    if TANGENTS > 1:
        u = tl.load(u_at + u_stride, mask=inside, other=0.0)
        zbar += tbar1 * u * dc
        ubar1 = tbar1 * c
        store_rounded(du_at + u_stride, ubar1, inside)
        if STORE_T:
            _store_operand(u_at + u_stride, u * c, inside, N, HALF)
    if TANGENTS > 2:
        u = tl.load(u_at + 2 * u_stride, mask=inside, other=0.0)
        zbar += tbar2 * u * dc
        ubar2 = tbar2 * c
        store_rounded(du_at + 2 * u_stride, ubar2, inside)
        if STORE_T:
            _store_operand(u_at + 2 * u_stride, u * c, inside, N, HALF)
    _store_delta(delta_rows, zbar, valid, N, COLUMNS, FIRST, DELTAS)
    return zbar, ubar0, ubar1, ubar2


@triton.jit
def _store_operand(at, x, mask, N: tl.constexpr, HALF: tl.constexpr):
    """x over the tape's values it was computed from (``at``: (BLOCK_M, N) pointers to float32): with
    HALF in bfloat16 in the first half of each row's bytes (what bf16's weight gradients read:
    ``Deltas``), else as it is."""
    if HALF:
        # Column j's float32 sits at bfloat16 index 2 (row + j); its bfloat16 goes to 2 row + j.
        store_rounded(at.to(tl.pointer_type(tl.bfloat16)) - tl.arange(0, N)[None, :], x, mask)
    else:
        tl.store(at, x, mask=mask)


@triton.jit
def _store_delta(delta_rows, zbar, valid, N: tl.constexpr, COLUMNS: tl.constexpr, FIRST: tl.constexpr,
                 DELTAS: tl.constexpr):
    """With DELTAS, zbar stored at delta_rows (row pointers), or added to what is there unless FIRST."""
    if DELTAS:
        columns = tl.arange(0, N)
        inside = valid[:, None] & (columns < COLUMNS)[None, :]
        at = delta_rows[:, None] + columns[None, :]
        if FIRST:
            store_rounded(at, zbar, inside)
        else:
            store_rounded(at, zbar + tl.load(at, mask=inside, other=0.0), inside)


@triton.jit
def backward_kernel(dy_ptr, dj_ptr, n_points, dx_ptr, tape_ptr, tape_last_ptr, tape_u_ptr, tape_u_last_ptr,
                     delta_ptr, delta_last_ptr, delta_u_ptr, delta_u_last_ptr, w_first, w_hidden, w_last, scales,
                     omega_first,
                     omega_hidden, omega_last, hidden_layers, jac_column, IN: tl.constexpr, IN_PAD: tl.constexpr,
                     H: tl.constexpr, OUT: tl.constexpr, GRAD_COLUMNS: tl.constexpr, TANGENTS: tl.constexpr,
                     FIRST: tl.constexpr, SINE_LAST: tl.constexpr, NEED_DX: tl.constexpr, DELTAS: tl.constexpr,
                     STORE_A: tl.constexpr, STORE_T: tl.constexpr, PRECISION: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """The backward sweep of BLOCK_M points from dL/dy and dL/dJ (TANGENTS columns of the Jacobian
    from jac_column on): each layer's dL/dz (delta, laid out as the tape) and dL/du_i (the incoming
    tangents' gradients, delta_u), and dL/dx. The launch of the first columns (FIRST) takes dL/dy
    and writes delta and dL/dx, the others add their share: the sweep is linear in (dL/dy, dL/dJ).
    Without DELTAS (the input gradient alone) no delta is stored. STORE_A and STORE_T overwrite the
    sine layers' z and u in the tape (not the output layer's) with a and t, once read, in bf16 as
    bfloat16 (``_sine_backward``): the last launch takes STORE_A, since every launch reads z.
    omega cos(omega z) and the tangents come from the forward's tape; dL/da and dL/dt_i stay in
    registers and are multiplied by W as it is (out, in: the output layer's padded to OUT_PAD
    rows, the first layer's to IN_PAD columns; for FP16X3 split and scaled, their inverse scales at
    ``scales``: the hidden layers', then the output layer's), one weight chunk for all of them."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    valid = rows < n_points
    ro = tl.arange(0, OUT_PAD)
    inside = valid[:, None] & (ro < OUT)[None, :]
    out_rows = rows * OUT
    out_plane = tl.cast(n_points, tl.int64) * OUT
    if FIRST:
        abar = tl.load(dy_ptr + out_rows[:, None] + ro[None, :], mask=inside, other=0.0)
    else:
        abar = tl.zeros((BLOCK_M, OUT_PAD), dtype=tl.float32)
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
                                                   delta_u_last_ptr + u_rows, valid, omega_last, OUT_PAD, OUT,
                                                   TANGENTS, FIRST, DELTAS, False, False, False)
    else:
        _store_delta(delta_last_ptr + out_rows, abar, valid, OUT_PAD, OUT, FIRST, DELTAS)
        store_tangents(delta_u_last_ptr + u_rows[:, None] + ro[None, :], tbar0, tbar1, tbar2, out_plane, inside,
                        TANGENTS)
    abar, tbar0, tbar1, tbar2 = layer_products(abar, tbar0, tbar1, tbar2, w_last,
                                                inverse_scale(scales + hidden_layers, PRECISION), OUT_PAD, H,
                                                TANGENTS, False, BLOCK_M, BLOCK_K, PRECISION)
    hidden_rows = rows * H
    plane = tl.cast(n_points, tl.int64) * H
    matrix = H * H * (2 if PRECISION == FP16X3 else 1)  # a hidden layer's weights (FP16X3: two parts)
    for j in range(hidden_layers):
        layer = hidden_layers - j
        z_rows = layer * plane + hidden_rows
        u_layer = (layer * GRAD_COLUMNS + jac_column) * plane + hidden_rows
        abar, tbar0, tbar1, tbar2 = _sine_backward(abar, tbar0, tbar1, tbar2, tape_ptr + z_rows, tape_u_ptr + u_layer,
                                                   plane, delta_ptr + z_rows, delta_u_ptr + u_layer, valid,
                                                   omega_hidden, H, H, TANGENTS, FIRST, DELTAS, STORE_A, STORE_T,
                                                   PRECISION == BF16)
        abar, tbar0, tbar1, tbar2 = layer_products(operand(abar, PRECISION), operand(tbar0, PRECISION),
                                                    operand(tbar1, PRECISION), operand(tbar2, PRECISION),
                                                    w_hidden + (layer - 1) * matrix,
                                                    inverse_scale(scales + (layer - 1), PRECISION), H, H, TANGENTS,
                                                    False, BLOCK_M, BLOCK_K, PRECISION)
    u_first = jac_column * plane + hidden_rows
    abar, tbar0, tbar1, tbar2 = _sine_backward(abar, tbar0, tbar1, tbar2, tape_ptr + hidden_rows, tape_u_ptr + u_first,
                                               plane, delta_ptr + hidden_rows, delta_u_ptr + u_first, valid,
                                               omega_first, H, H, TANGENTS, FIRST, DELTAS, STORE_A, STORE_T,
                                               PRECISION == BF16)
    if NEED_DX:
        # The first layer's tangents (rows of W, or W v) do not depend on x: only dL/dz reaches x.
        dx = tl.zeros((BLOCK_M, IN_PAD), dtype=tl.float32)
        dx, _, _, _ = products(abar, abar, abar, abar, dx, dx, dx, dx, w_first, 0, H, IN_PAD, 0, BLOCK_K, 0)
        ri = tl.arange(0, IN_PAD)
        dx_at = dx_ptr + rows[:, None] * IN + ri[None, :]
        dx_inside = valid[:, None] & (ri < IN)[None, :]
        if not FIRST:
            dx += tl.load(dx_at, mask=dx_inside, other=0.0)
        tl.store(dx_at, dx, mask=dx_inside)



@dataclass
class Deltas:
    """What ``backward`` gives: dL/dx (N, in) or None; dL/dz of the sine layers ``pre`` (layers, N,
    width) and of the output layer ``last`` (N, out); with tangents swept, dL/du of the incoming
    tangents, ``tangents`` (layers, count, N, width) and ``tangents_last`` (count, N, out); and the
    weight gradients' operands the sweep left in the tape: each sine layer's a = sin(omega z), ``a``
    (layers, N, width), and t = omega cos(omega z) u, ``t`` (layers, count, N, width; None without
    tangents). In bf16, ``a`` and ``t`` are bfloat16 in the first half of each of the tape's float32
    rows (strided views), and ``pre`` and ``tangents`` bfloat16 where one launch swept them: each is
    rounded to bfloat16 by the GEMMs anyway, so they move half the bytes and the weight gradients
    are the same (dL/db, summed from the rounded dL/dz, as autocast's)."""

    dx: torch.Tensor | None
    pre: torch.Tensor
    last: torch.Tensor
    tangents: torch.Tensor | None
    tangents_last: torch.Tensor | None
    a: torch.Tensor
    t: torch.Tensor | None


def backward(dy: torch.Tensor | None, dj: torch.Tensor | None, x: torch.Tensor, tape: Tape,
             weights: Sequence[torch.Tensor], omegas: Sequence[float | None], precision: str,
             need_dx: bool) -> Deltas:
    """The backward sweep from dL/dy (N, out) and dL/dJ (N, out, tangents: of the tape's tangents at
    the output; None: not used by the loss, and no tangent is swept), one launch per group of
    tangents as the forward's (launches after the first add their share); the products after the
    first layer at ``precision``, dL/dx's in fp32 (tf32x3). It leaves in the tape what the weight
    gradients multiply, each sine layer's a = sin(omega z) over its z in ``tape.pre`` and t = omega
    cos(omega z) u over its u in ``tape.tangents`` (a sine output layer's stay; ``Deltas``): a tape is
    swept once."""
    n, inputs = x.shape
    width, outputs = weights[0].shape[0], weights[-1].shape[0]
    device = x.device
    columns = 0 if dj is None else dj.shape[-1]
    if dy is None:
        dy = torch.zeros((n, outputs), dtype=torch.float32, device=device)
    dy = dy.detach().contiguous().float()
    dj = dy if dj is None else dj.detach().contiguous().float()
    half = precision == "bf16"
    swept = torch.bfloat16 if half and len(column_groups(width, columns)) == 1 else torch.float32
    out = Deltas(torch.empty((n, inputs), dtype=torch.float32, device=device) if need_dx else None,
                 torch.empty(tape.pre.shape, dtype=swept, device=device),
                 torch.empty((n, outputs), dtype=torch.float32, device=device),
                 torch.empty(tape.tangents.shape, dtype=swept, device=device) if columns else None,
                 torch.empty((columns, n, outputs), dtype=torch.float32, device=device) if columns else None,
                 _halves(tape.pre) if half else tape.pre,
                 (_halves(tape.tangents) if half else tape.tangents) if columns else None)
    spare = out.last
    _sweep(dy, dj, tape, weights, omegas, precision, weights[0], spare if out.dx is None else out.dx, need_dx,
           (out.pre, out.last, spare if out.tangents is None else out.tangents,
            spare if out.tangents_last is None else out.tangents_last), columns)
    return out


def _halves(rows: torch.Tensor) -> torch.Tensor:
    """The first half of each float32 row's bytes, as bfloat16 of the row's length (a strided view)."""
    return rows.view(torch.bfloat16)[..., :rows.shape[-1]]


def input_gradient(dy: torch.Tensor, tape: Tape, weights: Sequence[torch.Tensor], omegas: Sequence[float | None],
                   precision: str, dx: torch.Tensor) -> None:
    """dL/dx of the last dx.shape[1] inputs into dx (N, columns, contiguous) for dL/dy ``dy`` (N, out):
    the sweep of ``backward`` without tangents and without storing dL/dz, its products at
    ``precision`` (dL/dx's in fp32), the first layer's weights cut to those columns."""
    dy = dy.detach().contiguous().float()
    _sweep(dy, dy, tape, weights, omegas, precision, weights[0][:, weights[0].shape[1] - dx.shape[1]:], dx, True,
           None, 0)


def _sweep(dy: torch.Tensor, dj: torch.Tensor, tape: Tape, weights: Sequence[torch.Tensor],
           omegas: Sequence[float | None], precision: str, first: torch.Tensor, dx: torch.Tensor, need_dx: bool,
           deltas: tuple[torch.Tensor, ...] | None, columns: int) -> None:
    """The launches of ``backward_kernel``: dL/dx = dL/dz_1 ``first`` (the first layer's weight columns
    dx takes) where need_dx, the deltas (pre, last, tangents, tangents_last) where given."""
    n, device = dy.shape[0], dy.device
    if n == 0:
        return
    width, outputs, hidden = weights[0].shape[0], weights[-1].shape[0], len(weights) - 2
    inputs = first.shape[1]
    in_pad = max(OUT_PAD.value, triton.next_power_of_2(inputs))
    w_first = torch.zeros((width, in_pad), dtype=torch.float32, device=device)
    w_first[:, :inputs] = first.detach()
    last = torch.zeros((OUT_PAD.value, width), dtype=torch.float32, device=device)
    last[:outputs] = weights[-1].detach()
    w_hidden, w_last, scales = layer_operands(torch.stack([w.detach() for w in weights[1:-1]]) if hidden else None,
                                              last, precision)
    target = arch(device)
    with on_device(dy):
        for start, tangents in column_groups(width, columns):
            cfg = backward_config(width, tangents, precision, target)
            backward_kernel[(triton.cdiv(n, cfg.block_m),)](
                dy, dj, n, dx, *tape.tensors(), *(deltas or 4 * [dx]), w_first, w_hidden, w_last, scales,
                float(omegas[0]), float(omegas[1] if hidden else omegas[0]), float(omegas[-1] or 0.0), hidden, start,
                IN=inputs, IN_PAD=in_pad, H=width, OUT=outputs, GRAD_COLUMNS=max(columns, 1), TANGENTS=tangents,
                FIRST=start == 0, SINE_LAST=omegas[-1] is not None, NEED_DX=need_dx, DELTAS=deltas is not None,
                STORE_A=deltas is not None and start + tangents == columns, STORE_T=deltas is not None,
                PRECISION=kernel_precision(precision), BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k, **cfg.options)
