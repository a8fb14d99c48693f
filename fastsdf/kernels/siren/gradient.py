"""The network and its input Jacobian without autograd: ``forward_with_gradient``, by forward or
reverse mode, whichever runs fewer products (``reverse_pays``).

Forward mode (``network.forward_with_tangents``) carries one tangent tile per Jacobian column
through every layer beside the activations: 1 + columns products per layer, in one launch up to
width 128 and one launch per column from 256 on (``launch.tangents_per_launch``: registers), each
launch computing y again, so 2 x 3 = 6 products per layer for the xyz gradient at width 256.
Reverse mode runs the taped forward (``network.forward_taped``: each sine layer's pre-activations,
4 bytes per neuron and point) and one backward sweep per output (``training.input_gradient``: the
training backward without tangents and without storing dL/dz), 1 + outputs products per layer:
2 for an SDF. It pays for that with the tape's traffic (written once, read once: 8 bytes per neuron
and point) and a second launch, and it keeps the tape for at most ``TAPE_BYTES`` of points at a
time, so its memory does not grow with the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fastsdf.kernels.siren.launch import column_groups
from fastsdf.kernels.siren.network import Tape, forward_taped, forward_with_tangents
from fastsdf.kernels.siren.training import input_gradient

__all__ = ["TAPE_BYTES", "forward_with_gradient", "jacobian_from_tape", "reverse_pays"]

TAPE_BYTES = 1 << 28  # the reverse mode's tape per chunk of points: 256 MiB, 65,536 points at 4 x 256 neurons
_TILE = 128  # a chunk is a multiple of every tiling's BLOCK_M


def reverse_pays(width: int, outputs: int, columns: int) -> bool:
    """Whether reverse mode runs fewer products per layer than forward mode: 1 + outputs against one
    per launch plus one per column."""
    return 1 + outputs < len(column_groups(width, columns)) + columns


def forward_with_gradient(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None],
                          omegas: Sequence[float | None], precision: str, grad_columns: int,
                          reverse: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(y (N, out), dy/dx (N, out, grad_columns)) for the last ``grad_columns`` inputs, by reverse
    mode where ``reverse`` (None: where ``reverse_pays``), else by forward mode."""
    width, outputs = weights[0].shape[0], weights[-1].shape[0]
    if reverse is None:
        reverse = reverse_pays(width, outputs, grad_columns)
    if not reverse:
        return forward_with_tangents(x, weights, biases, omegas, precision, grad_columns)
    x = x.detach().contiguous()
    n = x.shape[0]
    neurons = width * (len(weights) - 1) + (outputs if omegas[-1] is not None else 0)
    chunk = max(_TILE, TAPE_BYTES // (4 * neurons) // _TILE * _TILE)
    jacobian = torch.empty((n, outputs, grad_columns), dtype=torch.float32, device=x.device)
    ys = []
    for start in range(0, max(n, 1), chunk):
        stop = min(n, start + chunk)
        y, tape = forward_taped(x[start:stop], weights, biases, omegas, precision)
        ys.append(y)
        jacobian_from_tape(tape, weights, omegas, precision, jacobian[start:stop])
    return (ys[0] if len(ys) == 1 else torch.cat(ys)), jacobian


def jacobian_from_tape(tape: Tape, weights: Sequence[torch.Tensor], omegas: Sequence[float | None], precision: str,
                       out: torch.Tensor) -> None:
    """The Jacobian of the last out.shape[2] inputs into ``out`` (N, outputs, columns, contiguous),
    from the tape of ``forward_taped``: a backward sweep per output (``training.input_gradient``)."""
    n, outputs, columns = out.shape
    for output in range(outputs):
        dy = torch.zeros((n, outputs), dtype=torch.float32, device=out.device)
        dy[:, output] = 1
        dx = out[:, 0] if outputs == 1 else torch.empty((n, columns), dtype=torch.float32, device=out.device)
        input_gradient(dy, tape, weights, omegas, precision, dx)
        if outputs > 1:
            out[:, output] = dx
