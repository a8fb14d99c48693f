"""What every collection of shapes' SDF samples shares: DeepSDF's per-shape draw, written once.

A collection holds, per shape, its outside rows (sdf > 0, DeepSDF's ``pos``) and its inside rows
(sdf <= 0, ``neg``), each row (x, y, z, sdf) in float32, or (x, y, sdf) for 2D shapes. ``ShapeSamples`` keeps them in memory,
``ShapeFiles`` on disk; both draw through ``ShapeCollection.batch``, so the same seed gives the same
rows from either. A shape's draw in an epoch comes from a generator seeded by (seed, epoch, shape)
alone, so that any process, DataLoader worker or DDP rank draws the same rows for it.

The draw is DeepSDF's ``unpack_sdf_samples`` (``deep_sdf/data.py``): half the points, with
replacement, from each side. Where DeepSDF's differs, this one is defined rather than failing:
an odd count gives the extra point to the outside (DeepSDF draws ``2 * (count // 2)``), and a shape
with one side empty draws every point from the other (DeepSDF's ``torch.rand(half) * 0`` indexes row
0 of an empty tensor and raises).
"""

from __future__ import annotations

from typing import Sequence

import torch

from fastsdf.geometry.normalization import NormalizationTransform
from fastsdf.training.seeding import mixed_seed

__all__ = ["ShapeCollection", "draw_rows", "epoch_order", "shape_generator"]


def epoch_order(count: int, seed: int, epoch: int) -> torch.Tensor:
    """The order in which an epoch visits ``count`` shapes: a permutation seeded by (seed, epoch)."""
    return torch.randperm(count, generator=torch.Generator().manual_seed(mixed_seed(seed, epoch)))


def shape_generator(seed: int, epoch: int, index: int, stream: int = 0) -> torch.Generator:
    """The generator of shape ``index``'s draws in ``epoch``: seeded by (seed, epoch, index) and, for
    draws other than its sample rows (``stream`` > 0: an occupancy network's input points), the stream."""
    return torch.Generator().manual_seed(mixed_seed(seed, epoch, index, *((stream,) if stream else ())))


def draw_rows(sizes: tuple[int, int], count: int, seed: int, epoch: int, index: int,
              balanced: bool = True) -> list[tuple[int, torch.Tensor]]:
    """Which rows shape ``index`` gives in ``epoch``: (side, row indices) pairs, side 0 the outside
    rows and 1 the inside ones, ``sizes`` their counts (not both 0). ``balanced`` (DeepSDF's):
    ``count // 2`` (plus the odd one) from the outside and the rest from the inside, all from the
    non-empty side where one is empty; drawn in that order by ``shape_generator(seed, epoch,
    index)``. Otherwise (Occupancy Networks' draw from uniform samples) ``count`` rows uniformly
    from all rows, in the same order split by side."""
    generator = shape_generator(seed, epoch, index)
    if not balanced:
        chosen = torch.randint(0, sizes[0] + sizes[1], (count,), generator=generator)
        outside = chosen < sizes[0]
        picks = [(0, chosen[outside]), (1, chosen[~outside] - sizes[0])]
        return [(side, rows) for side, rows in picks if len(rows)]
    sides = [side for side in (0, 1) if sizes[side]]
    shares = [count // len(sides) + (i < count % len(sides)) for i in range(len(sides))]
    return [(side, torch.randint(0, sizes[side], (share,), generator=generator))
            for side, share in zip(sides, shares)]


class ShapeCollection:
    """Named shapes with their outside and inside sample rows; subclasses say where the rows live
    (``sizes``, ``rows``) and the shapes' normalisations (``transform``)."""

    names: list[str]
    dim: int = 3  # coordinates per point

    def _take_names(self, names: Sequence[str], count: int, what: str) -> None:
        """Keeps ``names``, one per shape of ``count`` (``what``: how the subclass counts them):
        ValueError for a count that differs, no shapes or repeated names."""
        if len(names) != count:
            raise ValueError(f"{len(names)} names for {count} {what}")
        if not count:
            raise ValueError("no shapes to train on")
        if len(set(names)) != len(names):
            raise ValueError("shape names must be unique")
        self.names = list(names)

    def __len__(self) -> int:
        return len(self.names)

    def transform(self, index: int) -> NormalizationTransform | None:
        raise NotImplementedError

    def sizes(self, index: int) -> tuple[int, int]:
        """(outside rows, inside rows) of shape ``index``."""
        raise NotImplementedError

    def rows(self, index: int, picks: list[tuple[int, torch.Tensor]]) -> torch.Tensor:
        """The float32 (n, dim + 1) rows ``picks`` (``draw_rows``'s answer) name, in that order."""
        raise NotImplementedError

    def surface_size(self, index: int) -> int:
        """Surface points stored for shape ``index`` (0 when its samples have none)."""
        raise NotImplementedError

    def surface_rows(self, index: int, chosen: torch.Tensor) -> torch.Tensor:
        """The float32 (n, 3) surface points of shape ``index`` at positions ``chosen``."""
        raise NotImplementedError

    def batch(self, shapes: Sequence[int], samples_per_shape: int, seed: int,
              epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(points (B, dim), sdf (B,), shape index (B,)), B = len(shapes) * samples_per_shape: each
        shape's rows as ``draw_rows`` picks them, shape after shape."""
        tables, owners = [], []
        for index in map(int, shapes):
            tables.append(self.rows(index, draw_rows(self.sizes(index), samples_per_shape, seed, epoch, index)))
            owners.append(torch.full((samples_per_shape,), index, dtype=torch.long))
        if not tables:
            return torch.zeros((0, self.dim)), torch.zeros(0), torch.zeros(0, dtype=torch.long)
        table = torch.cat(tables)
        return table[:, :-1], table[:, -1], torch.cat(owners)
