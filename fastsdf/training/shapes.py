"""A collection of shapes' SDF samples for multi-shape (auto-decoder) training, drawn from as DeepSDF does.

Each shape's samples split into outside (``pos``, sdf > 0) and inside (``neg``) rows, as in DeepSDF's
npz files; a batch takes the same number of random rows from each half of each of its shapes
(DeepSDF's ``unpack_sdf_samples``), so thin shapes are not drowned in outside points. Which rows a
shape gives in an epoch depends only on the seed, the epoch and the shape, never on which process
draws them: training on several processes sees the same points as on one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from fastsdf.geometry.normalization import NormalizationTransform
from fastsdf.geometry.samples_npz import load_npz
from fastsdf.geometry.sampling import SdfSamples

__all__ = ["ShapeSamples", "load_shapes"]


@dataclass
class _Shape:
    outside: torch.Tensor  # (M, 4): x, y, z, sdf
    inside: torch.Tensor  # (K, 4)
    transform: NormalizationTransform | None


class ShapeSamples:
    """Named shapes, each with its SDF samples (points in the shape's normalised frame).

    Args:
        names: one name per shape (file stems for ``load_shapes``).
        samples: one ``SdfSamples`` per shape, each with at least one sample.
    """

    def __init__(self, names: Sequence[str], samples: Sequence[SdfSamples]):
        if len(names) != len(samples):
            raise ValueError(f"{len(names)} names for {len(samples)} shapes")
        if not samples:
            raise ValueError("no shapes to train on")
        if len(set(names)) != len(names):
            raise ValueError("shape names must be unique")
        self.names = list(names)
        self._shapes = []
        for name, s in zip(names, samples):
            if len(s) == 0:
                raise ValueError(f"shape {name!r} has no samples")
            rows = torch.from_numpy(np.concatenate([s.points, s.sdf[:, None]], axis=1))
            outside = rows[:, 3] > 0
            self._shapes.append(_Shape(rows[outside].contiguous(), rows[~outside].contiguous(), s.transform))

    def __len__(self) -> int:
        return len(self._shapes)

    def transform(self, index: int) -> NormalizationTransform | None:
        return self._shapes[index].transform

    def batch(self, shapes: Sequence[int], samples_per_shape: int, seed: int,
              epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(points (B, 3), sdf (B,), shape index (B,)), B = len(shapes) * samples_per_shape: half
        of each shape's rows from outside and half from inside (all from one side where the other
        is empty), drawn with replacement by a generator seeded by (seed, epoch, shape)."""
        tables, owners = [], []
        for index in shapes:
            shape = self._shapes[index]
            generator = torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 1_000_003 + int(index)) % 2**63)
            halves = [h for h in (shape.outside, shape.inside) if len(h)]
            counts = [samples_per_shape // len(halves) + (i < samples_per_shape % len(halves))
                      for i in range(len(halves))]
            for half, count in zip(halves, counts):
                tables.append(half[torch.randint(0, len(half), (count,), generator=generator)])
            owners.append(torch.full((samples_per_shape,), int(index), dtype=torch.long))
        if not tables:
            return torch.zeros((0, 3)), torch.zeros(0), torch.zeros(0, dtype=torch.long)
        table = torch.cat(tables)
        return table[:, :3], table[:, 3], torch.cat(owners)


def load_shapes(folder_or_files: str | os.PathLike | Sequence[str | os.PathLike]) -> ShapeSamples:
    """The DeepSDF ``.npz`` files of a folder (sorted by name; not its subfolders) or a list of
    files, read with ``fastsdf.load_npz`` and named by their stems.

    Raises:
        FileNotFoundError: a missing folder or file.
        ValueError: a folder without .npz files, an unreadable file or one without samples (the
            message names the file).
    """
    if isinstance(folder_or_files, (str, os.PathLike)):
        folder = Path(folder_or_files)
        if not folder.exists():
            raise FileNotFoundError(f"no such folder or file: {folder}")
        paths = sorted(folder.glob("*.npz")) if folder.is_dir() else [folder]
        if not paths:
            raise ValueError(f"{folder} holds no .npz sample files (make them with `fastsdf sample`)")
    else:
        paths = [Path(p) for p in folder_or_files]
        if not paths:
            raise ValueError("no sample files given")
    samples = []
    for path in paths:
        s = load_npz(path)
        if len(s) == 0:
            raise ValueError(f"{path} holds no finite samples")
        samples.append(s)
    stems = [p.stem for p in paths]
    names = stems if len(set(stems)) == len(stems) else [str(p) for p in paths]
    return ShapeSamples(names, samples)

