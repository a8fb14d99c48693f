"""Training batches from a DataLoader: drawn in worker processes, ahead of the training step.

A batch is a pure function of (epoch, its first position in the epoch's order): the epoch's order
(``epoch_order``) and each shape's rows (``ShapeCollection.batch``) depend on the seed alone, so
any number of workers, 0 included, gives the same batches in the same order, and a resumed run
starts from its epoch with nothing to restore. One DataLoader serves the whole run, so its
workers start once. It draws its own workers' seeds from a generator of its own: the global
generator, which dropout draws from and checkpoints save, is left as it was.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from fastsdf._validation import integer
from fastsdf.training.shape_collection import ShapeCollection, epoch_order

__all__ = ["DEFAULT_WORKERS", "shape_batches"]

DEFAULT_WORKERS = 2


class _EpochBatches(Dataset):
    """Batch (epoch, start): this process's share of the shapes at ``start`` of the epoch's order,
    drawn by ``draw(shapes, epoch)``."""

    def __init__(self, count: int, shapes_per_batch: int, seed: int, rank: int, world: int,
                 draw: Callable[[list[int], int], Any]):
        self.count, self.shapes_per_batch, self.draw = count, shapes_per_batch, draw
        self.seed, self.rank, self.world = seed, rank, world
        self._order: tuple[int, torch.Tensor] | None = None  # the latest epoch's, reused by its batches

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, start = key
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, epoch_order(self.count, self.seed, epoch))
        chosen = self._order[1][start:start + self.shapes_per_batch]
        return self.draw(chosen[self.rank::self.world].tolist(), epoch=epoch)


class _Keys:
    """Every batch's key from ``first`` to the last epoch, made as they are asked for."""

    def __init__(self, shapes: int, shapes_per_batch: int, first: int, epochs: int):
        self.shapes, self.shapes_per_batch, self.first, self.epochs = shapes, shapes_per_batch, first, epochs

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((epoch, start) for epoch in range(self.first, self.epochs)
                for start in range(0, self.shapes, self.shapes_per_batch))

    def __len__(self) -> int:
        return (self.epochs - self.first) * -(-self.shapes // self.shapes_per_batch)


def shape_batches(shapes: ShapeCollection, *, first_epoch: int, epochs: int, shapes_per_batch: int,
                  samples_per_shape: int, seed: int, rank: int = 0, world: int = 1, num_workers: int = DEFAULT_WORKERS,
                  pin_memory: bool = False, draw: Callable[[list[int], int], Any] | None = None) -> Iterator[Any]:
    """(points, sdf, shape index) of every batch of epochs ``first_epoch`` to ``epochs - 1``, in
    order: per epoch, ``ceil(len(shapes) / shapes_per_batch)`` batches of this rank's share of the
    shapes (``ShapeCollection.batch``), drawn by ``num_workers`` processes (0: in this one).
    ``draw(shape indices, epoch=epoch)``, a picklable callable, draws other batches from the same
    shares (an occupancy network's); ``samples_per_shape`` is then unused."""
    num_workers = integer(num_workers, "num_workers", 0)
    if draw is None:
        draw = functools.partial(shapes.batch, samples_per_shape=samples_per_shape, seed=seed)
    batches = _EpochBatches(len(shapes), shapes_per_batch, seed, rank, world, draw)
    keys = _Keys(len(shapes), shapes_per_batch, first_epoch, epochs)
    loader = DataLoader(batches, batch_size=None, sampler=keys, num_workers=num_workers, pin_memory=pin_memory,
                        generator=torch.Generator().manual_seed(seed))
    return iter(loader)
