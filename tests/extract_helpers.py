"""SDFs and probes the extraction tests share (test_extract_mesh.py, test_sparse_extract.py)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from conftest import to_numpy


def torch_only(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Makes ``fn`` refuse NumPy input, like a function written with torch ops only."""

    def sdf(p: Any) -> Any:
        if not isinstance(p, torch.Tensor):
            raise TypeError("tensors only")
        return fn(p)

    return sdf


class Recorder:
    """Wraps an SDF, recording the batches it is called with."""

    def __init__(self, fn: Callable[[Any], Any]):
        self.fn = fn
        self.sizes: list[int] = []
        self.shapes: list[tuple[int, ...]] = []
        self.points: list[np.ndarray] = []
        self.keep_points = False

    def __call__(self, p: Any) -> Any:
        self.sizes.append(len(p))
        self.shapes.append(tuple(p.shape))
        if self.keep_points:
            self.points.append(to_numpy(p).copy())
        return self.fn(p)


class SphereModule(torch.nn.Module):
    """An analytic sphere as a module without parameters (evaluated on CPU float32)."""

    def __init__(self, sdf: Callable[[Any], Any]):
        super().__init__()
        self.sdf = sdf
        self.seen_dtypes: set[torch.dtype] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen_dtypes.add(x.dtype)
        return self.sdf(x)


def slab_bytes(resolution: Sequence[int], owned: int) -> int:
    """The _SLAB_BYTES that makes chunked mode own ``owned`` point layers per slab."""
    return 4 * resolution[1] * resolution[2] * (owned + 2)
