"""Shapes' SDF samples for multi-shape (auto-decoder) training: in memory (``ShapeSamples``) or
streamed from their DeepSDF ``.npz`` files (``load_shapes``, which gives a
``fastsdf.training.shape_files.ShapeFiles``).

Each shape's samples split into outside (``pos``, sdf > 0) and inside (``neg``) rows, as in DeepSDF's
npz files; a batch takes the same number of random rows from each half of each of its shapes
(DeepSDF's ``unpack_sdf_samples``, see ``fastsdf.training.shape_collection``), so thin shapes are
not drowned in outside points. Which rows a shape gives in an epoch depends only on the seed, the
epoch and the shape, never on which process draws them, nor on whether the rows are in memory or
on disk: the same files give the same batches either way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from fastsdf.geometry.normalization import NormalizationTransform
from fastsdf.geometry.sampling import SdfSamples
from fastsdf.training.shape_collection import ShapeCollection
from fastsdf.training.shape_files import ShapeFiles

__all__ = ["ShapeSamples", "load_shapes"]


class ShapeSamples(ShapeCollection):
    """Named shapes, each with its SDF samples (points in the shape's normalised frame).

    Args:
        names: one name per shape (file stems for ``load_shapes``).
        samples: one ``SdfSamples`` per shape, each with at least one sample, all 3D or all 2D.
    """

    def __init__(self, names: Sequence[str], samples: Sequence[SdfSamples]):
        self._take_names(names, len(samples), "shapes")
        dims = {s.dim for s in samples}
        if len(dims) != 1:
            raise ValueError(f"shapes of different dimensions: {sorted(dims)}")
        self.dim = dims.pop()
        self._sides: list[tuple[torch.Tensor, torch.Tensor]] = []  # (outside (M, 4), inside (K, 4)) per shape
        self._surfaces: list[torch.Tensor] = []  # (S, 3) per shape, S = 0 without surface points
        self._transforms = []
        for name, s in zip(names, samples):
            if len(s) == 0:
                raise ValueError(f"shape {name!r} has no samples")
            rows = torch.from_numpy(np.concatenate([s.points, s.sdf[:, None]], axis=1))
            outside = rows[:, -1] > 0
            self._sides.append((rows[outside].contiguous(), rows[~outside].contiguous()))
            surface = s.surface_points if s.surface_points is not None else np.zeros((0, 3), np.float32)
            self._surfaces.append(torch.from_numpy(surface))
            self._transforms.append(s.transform)

    def transform(self, index: int) -> NormalizationTransform | None:
        return self._transforms[index]

    def sizes(self, index: int) -> tuple[int, int]:
        outside, inside = self._sides[index]
        return len(outside), len(inside)

    def rows(self, index: int, picks: list[tuple[int, torch.Tensor]]) -> torch.Tensor:
        return torch.cat([self._sides[index][side][chosen] for side, chosen in picks])

    def surface_size(self, index: int) -> int:
        return len(self._surfaces[index])

    def surface_rows(self, index: int, chosen: torch.Tensor) -> torch.Tensor:
        return self._surfaces[index][chosen]


def load_shapes(folder_or_files: str | os.PathLike | Sequence[str | os.PathLike]) -> ShapeFiles:
    """The DeepSDF ``.npz`` files of a folder (sorted by name; not its subfolders) or a list of
    files, named by their stems, as a ``ShapeFiles``: checked now, their rows read from disk as
    batches draw them (see ``fastsdf.training.shape_files``), so memory does not grow with them.

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
    stems = [p.stem for p in paths]
    names = stems if len(set(stems)) == len(stems) else [str(p) for p in paths]
    return ShapeFiles(names, paths)
