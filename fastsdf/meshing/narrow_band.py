"""The narrow band of ``extract_mesh(method="sparse")``: which grid samples may border the surface.

A signed distance says how far the surface can be: a box whose centre value c satisfies
|c - level| > r, r its half-diagonal, holds no point at the level if the field is 1-Lipschitz (a true
SDF: analytic shapes and their CSG, a ``MeshSDF``), so every sample in it has the sign of c - level.
Learned fields are only roughly 1-Lipschitz, hence the test |c - level| > ``safety`` * r: it is exact
for fields whose gradient norm stays below ``safety``.

The grid's cells are split into blocks of ``BLOCK``^3; a hierarchy of blocks 2, 4, 8, ... times as
large, starting at most ``COARSEST`` blocks per axis, is tested from the coarsest down, each level
evaluating only the centres of the children of blocks it could not rule out. The finest level
leaves, per block, either a sign (no surface in it) or "active". The samples of active blocks (their
closed boxes, shared faces included) are evaluated; every other sample gets a value of its block's
sign. Marching cubes then finds the same crossings as on the dense grid: a cell with a crossing lies
in an active block, so all its corners hold true values, and a cell of a ruled-out block has corners
of one sign. For a true SDF the mesh is the dense one, vertex for vertex.

What it can miss, for a field whose gradient exceeds ``safety`` somewhere: a part of the surface
thinner than a coarse block whose centre value overstates the distance; the ruled-out region then
meshes as empty, and the mesh stays closed around what was found.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from fastsdf import _memory
from fastsdf._arrays import to_numpy
from fastsdf.geometry.grid import Grid

__all__ = ["ACTIVE", "BLOCK", "COARSEST", "DEFAULT_SAFETY", "BlockStates", "NarrowBand"]

BLOCK = 4  # cells per axis of the finest blocks
COARSEST = 32  # blocks per axis, at most, of the coarsest level
DEFAULT_SAFETY = 2.0

ACTIVE = 0  # a block's state: ACTIVE, or the sign (+1 / -1) of all its samples


class BlockStates:
    """The finest blocks' states (``ACTIVE``, +1 or -1) for one grid, and the samples of each axis-0
    layer that they leave to evaluate (``slab``). Subclasses find the states: ``NarrowBand`` by the
    Lipschitz test, ``fastsdf.meshing.mise.Mise`` by sign changes.

    Attributes set by a subclass: ``state`` (int8 blocks of ``BLOCK``^3 cells) and ``fill`` (the
    distance from the level of the value given to samples left out).
    """

    state: np.ndarray
    fill: float

    def __init__(self, grid: Grid, level: float):
        self.res, self.lo, self.step, self.level = grid.resolution, grid.lo, grid.step, level
        self.cells = tuple(r - 1 for r in self.res)
        self.levels = 0  # block levels above the finest: the coarsest has at most COARSEST blocks per axis
        while max(math.ceil(c / (BLOCK << self.levels)) for c in self.cells) > COARSEST:
            self.levels += 1
        finest = self._blocks(0)
        _memory.check_fits(3 * math.prod(finest), f"the narrow band's {finest[0]}x{finest[1]}x{finest[2]} blocks",
                           None, "use a coarser grid")

    @staticmethod
    def refine(state: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
        """A level's states handed down to its children: each block's state repeated over the 2^3
        blocks of the next finer level (of ``shape``)."""
        for axis in range(3):
            state = np.repeat(state, 2, axis=axis)[tuple(slice(shape[a]) if a == axis else slice(None)
                                                         for a in range(3))]
        return state

    def _blocks(self, k: int) -> tuple[int, int, int]:
        return tuple(math.ceil(c / (BLOCK << k)) for c in self.cells)  # type: ignore[return-value]

    def slab(self, layers: np.ndarray, out: np.ndarray) -> np.ndarray:
        """For the samples of the given axis-0 layers: writes into ``out`` (float32 (L, ny, nz))
        the value of samples left out (level +- fill, by their block's sign) and returns which
        samples to evaluate (bool (L, ny, nz)). Works at block resolution as long as it can and
        expands by strided copies, so that the full-resolution arrays are the output and the mask."""
        count = self.state.shape[0]
        k = layers // BLOCK
        first = np.minimum(k, count - 1)
        shared = np.where((layers % BLOCK == 0) & (k >= 1) & (k <= count - 1), k - 1, first)
        blocks = self.state[first]
        values = np.where(blocks > 0, np.float32(self.level + self.fill), np.float32(self.level - self.fill))
        rows = (blocks == ACTIVE) | (self.state[shared] == ACTIVE)
        ny, nz = self.res[1], self.res[2]
        mask = np.empty((len(layers), ny, nz), bool)
        for source, target in ((values, out), (rows, mask)):
            # z first, on arrays BLOCK times smaller; then y, copying whole rows of z.
            by_z = np.empty((len(layers), source.shape[1], nz), source.dtype)
            _expand_last(source, by_z, target is mask)
            _expand_last(np.moveaxis(by_z, 1, -1), np.moveaxis(target, 1, -1), target is mask)
        return mask


class NarrowBand(BlockStates):
    """The finest blocks' states found coarse to fine by the Lipschitz test.

    Args:
        evaluate: (N, 3) float32 points -> (N,) values (extract_mesh's checked evaluator).
        grid: the grid of samples (``fastsdf.geometry.grid.Grid``).
        level: the iso-value.
        safety: the Lipschitz bound assumed (>= 1).
        batch: points per call of ``evaluate``.
    """

    def __init__(self, evaluate: Callable[[np.ndarray], Any], grid: Grid, level: float, safety: float, batch: int):
        super().__init__(grid, level)
        # Far enough from the level for a sign: safety * r, widened by float32's rounding of positions.
        slack = 1e-5 + 8 * np.finfo(np.float32).eps * max(1.0, *(abs(v) for v in grid.lo), *(abs(v) for v in grid.hi))
        state = np.zeros(self._blocks(self.levels), np.int8)
        for k in range(self.levels, -1, -1):
            if k < self.levels:
                state = self.refine(state, self._blocks(k))
            todo = np.nonzero(state == ACTIVE)
            centre, radius = self._boxes(todo, BLOCK << k)
            values = np.empty(len(centre), np.float64)
            for s in range(0, len(centre), batch):
                values[s:s + batch] = to_numpy(evaluate(centre[s:s + batch].astype(np.float32)))
            offset = values - level
            far = np.abs(offset) > safety * radius * (1 + 1e-5) + slack
            state[todo] = np.where(far, np.sign(offset), ACTIVE).astype(np.int8)
        self.state = state
        # The value given to samples left out: any of the right sign would do; this one keeps
        # vertices near the truth should a learned field break the bound.
        self.fill = float(safety * 0.5 * math.sqrt(sum((BLOCK * s) ** 2 for s in self.step)))

    def _boxes(self, index: tuple[np.ndarray, ...], size: int) -> tuple[np.ndarray, np.ndarray]:
        """Centres (N, 3) and half-diagonals (N,) of blocks of ``size`` cells, float64."""
        centre = np.empty((len(index[0]), 3), np.float64)
        half = np.empty((len(index[0]), 3), np.float64)
        for axis in range(3):
            first = index[axis].astype(np.int64) * size
            last = np.minimum(first + size, self.cells[axis])
            centre[:, axis] = self.lo[axis] + 0.5 * (first + last) * self.step[axis]
            half[:, axis] = 0.5 * (last - first) * self.step[axis]
        return centre, np.linalg.norm(half, axis=1)


def _expand_last(blocks: np.ndarray, out: np.ndarray, shared: bool) -> None:
    """Per block along the last axis to per sample: ``out[..., i] = blocks[..., min(i // BLOCK, count - 1)]``
    (each sample's first block); with ``shared``, sample k * BLOCK, the last of block k - 1 too,
    also ORs in that block's value."""
    n, count = out.shape[-1], blocks.shape[-1]
    full = min(n // BLOCK, count)
    grouped = np.lib.stride_tricks.as_strided(out, shape=(*out.shape[:-1], full, BLOCK),
                                              strides=(*out.strides[:-1], BLOCK * out.strides[-1], out.strides[-1]))
    np.copyto(grouped, blocks[..., :full, None])
    if full * BLOCK < n:
        out[..., full * BLOCK:] = blocks[..., min(full, count - 1), None]
    last = min(count - 1, (n - 1) // BLOCK)
    if shared and last >= 1:
        out[..., BLOCK:last * BLOCK + 1:BLOCK] |= blocks[..., :last]
