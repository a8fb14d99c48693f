"""Multiresolution isosurface extraction (MISE, Occupancy Networks, Mescheder et al. 2019) on the
blocks of ``fastsdf.meshing.narrow_band``: ``extract_mesh(method="mise")``.

For fields without a Lipschitz bound, such as an occupancy network's logits, where the narrow band's
distance test means nothing. The coarsest blocks' corners (grid samples; at most ``COARSEST`` blocks
of ``BLOCK`` << k cells per axis, ONet's first grid of 32^3) are evaluated; a block whose corners lie
on both sides of the level is active, and so are its 26 neighbours (a margin ONet's MISE does not
have: it catches surface that pokes into a block between corners of one side). Only the children
of active blocks are tested at the next level, down to blocks of ``BLOCK``^3 cells, whose samples
are then all evaluated, as in the narrow band; the other samples take a value of their block's side.

Exact where the coarse corners see every part of the surface: the mesh is the dense one, vertex for
vertex, for any affine field (over a box it takes its extremes at the corners) and for a ball whose
radius exceeds about 2 coarsest blocks (tested), given a field that gives a point the same value in
any batch (BLAS's float32 products round by batch size and alignment, and MISE evaluates other
batches than the dense grid; a network's mesh may then differ from the dense one by an ulp). A part of the surface smaller than the blocks and
between their corners can be missed, as by ONet's MISE; the mesh stays closed around what was found.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from fastsdf._arrays import to_numpy
from fastsdf.geometry.grid import Grid
from fastsdf.meshing.narrow_band import ACTIVE, BLOCK, BlockStates

__all__ = ["Mise"]


class Mise(BlockStates):
    """The finest blocks' states (``ACTIVE``, +1 or -1) found by sign changes at block corners.

    Args:
        evaluate: (N, 3) float32 points -> (N,) values (extract_mesh's checked evaluator).
        grid: the grid of samples.
        level: the iso-value; a sample is above it when its value exceeds it (marching cubes' rule).
        batch: points per call of ``evaluate``.
    """

    def __init__(self, evaluate: Callable[[np.ndarray], Any], grid: Grid, level: float, batch: int):
        super().__init__(grid, level)
        self._grid, self._evaluate, self._batch = grid, evaluate, batch
        self._known = (np.zeros(0, np.int64), np.zeros(0, np.float64))  # sorted flat sample indices, values
        state = np.zeros(self._blocks(self.levels), np.int8)
        for k in range(self.levels, -1, -1):
            if k < self.levels:
                state = self.refine(state, self._blocks(k))
            todo = state == ACTIVE
            above = self._corner_sides(np.nonzero(todo), BLOCK << k)
            crossed = np.zeros(state.shape, bool)
            crossed[todo] = above.any(axis=1) & ~above.all(axis=1)
            near = _dilate(crossed) & todo
            sides = np.zeros(state.shape, np.int8)
            sides[todo] = np.where(above.all(axis=1), 1, -1)
            state = np.where(todo & ~near, sides, state).astype(np.int8)
        self.state = state
        # Samples left out take a value as far from the level as any evaluated one: vertices on
        # edges from an evaluated sample to one left out then lie near the evaluated sample.
        values = self._known[1]
        self.fill = float(np.abs(values - level).max()) if len(values) else 1.0

    def _corner_sides(self, index: tuple[np.ndarray, ...], size: int) -> np.ndarray:
        """Whether each corner of the blocks ``index`` (of ``size`` cells) is above the level:
        bool (N, 8)."""
        corners = []
        for c in range(8):
            sample = [np.minimum(index[a].astype(np.int64) * size + size * ((c >> a) & 1), self.cells[a])
                      for a in range(3)]
            corners.append((sample[0] * self.res[1] + sample[1]) * self.res[2] + sample[2])
        flat = np.stack(corners, axis=1)
        return self._values(flat.reshape(-1)).reshape(flat.shape) > self.level

    def _values(self, flat: np.ndarray) -> np.ndarray:
        """The field at flat sample indices, each evaluated once over the whole search."""
        known, values = self._known
        wanted = np.unique(flat)
        new = wanted
        if len(known):
            new = wanted[known[np.minimum(np.searchsorted(known, wanted), len(known) - 1)] != wanted]
        found = np.empty(len(new), np.float64)
        for s in range(0, len(new), self._batch):
            points = self._grid.points_at(0, new[s:s + self._batch])
            found[s:s + self._batch] = to_numpy(self._evaluate(points)).astype(np.float64)
        order = np.argsort(np.concatenate([known, new]), kind="stable")
        self._known = (np.concatenate([known, new])[order], np.concatenate([values, found])[order])
        known, values = self._known
        return values[np.searchsorted(known, flat)]


def _dilate(mask: np.ndarray) -> np.ndarray:
    """``mask`` grown by one block in each of the 26 directions."""
    out = mask.copy()
    for axis in range(3):
        grown = out.copy()
        for shift in (1, -1):
            source = [slice(None)] * 3
            target = [slice(None)] * 3
            source[axis] = slice(None, -1) if shift == 1 else slice(1, None)
            target[axis] = slice(1, None) if shift == 1 else slice(None, -1)
            grown[tuple(target)] |= out[tuple(source)]
        out = grown
    return out
