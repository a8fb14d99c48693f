"""A collection of meshes to test and benchmark dataset code on, generated instead of downloaded.

Mesh ``i`` of seed ``s`` is a random CSG shape of fastsdf's analytic primitives (spheres, boxes,
tori, each moved and the tori and boxes turned), 2 to 4 of them joined and sometimes one carved out,
meshed by ``fastsdf.extract_mesh`` (marching cubes): closed, and different for every (s, i), from
its own random stream, so a collection of 10 is the first 10 of a collection of 1,000. The shape
stays inside [-0.9, 0.9]^3 and the grid covers [-1, 1]^3, so the zero set never touches the grid's
border and the mesh is closed. About 20 ms a mesh at the default resolution.

Used by tests/test_cli_sample.py and benchmarks/test_bench_sample.py (which puts tests/ on its path).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fastsdf import Box, Difference, Sphere, Torus, Union, extract_mesh
from fastsdf.geometry.analytic import SDF
from fastsdf.io import write_ply

RESOLUTION = 40


class _Turned(SDF):
    """A shape turned by a rotation matrix about the origin (a rigid motion keeps distances)."""

    def __init__(self, shape: SDF, rotation: np.ndarray):
        self.shape, self.rotation = shape, rotation

    def distance(self, points: Any) -> Any:
        return self.shape(points @ self.rotation)  # the rotation's inverse applied to the row vectors


class _Moved(SDF):
    """A shape moved by ``offset``."""

    def __init__(self, shape: SDF, offset: np.ndarray):
        self.shape, self.offset = shape, np.asarray(offset, np.float64)

    def distance(self, points: Any) -> Any:
        return self.shape(points - self.offset.astype(points.dtype))


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _primitive(rng: np.random.Generator) -> SDF:
    """A primitive of size 0.15 to 0.45 whose centre leaves it inside [-0.9, 0.9]^3."""
    kind = rng.integers(3)
    if kind == 0:
        radius = rng.uniform(0.15, 0.4)
        return Sphere(radius, rng.uniform(-0.9 + radius, 0.9 - radius, 3))
    if kind == 1:
        half = rng.uniform(0.1, 0.3, 3)
        reach = np.linalg.norm(half)  # the box fits in this ball whatever the turn
        box = Box(half, (0.0, 0.0, 0.0))
        return _Moved(_Turned(box, _rotation(rng)), rng.uniform(-0.9 + reach, 0.9 - reach, 3))
    major = rng.uniform(0.2, 0.35)
    minor = rng.uniform(0.06, 0.5 * major)
    torus = _Turned(Torus(major, minor), _rotation(rng))
    return _Moved(torus, rng.uniform(-0.9 + major + minor, 0.9 - major - minor, 3))


def random_shape(rng: np.random.Generator) -> SDF:
    """2 to 4 primitives joined, and in half of the shapes one more carved out of them."""
    shape: SDF = Union(*(_primitive(rng) for _ in range(rng.integers(2, 5))))
    if rng.random() < 0.5:
        shape = Difference(shape, _primitive(rng))
    return shape


def generated_mesh(index: int, seed: int = 0, resolution: int = RESOLUTION) -> tuple[np.ndarray, np.ndarray]:
    """Mesh ``index`` of collection ``seed``: float32 (V, 3) vertices, int (F, 3) faces, closed.
    A shape that the carving left without a surface is drawn again from the same stream."""
    rng = np.random.default_rng([seed, index])
    while True:
        vertices, faces = extract_mesh(random_shape(rng), resolution, progress=False)
        if len(faces):
            return np.asarray(vertices), np.asarray(faces)


def write_collection(folder: Path, count: int, seed: int = 0, resolution: int = RESOLUTION,
                     start: int = 0) -> list[Path]:
    """Meshes ``start`` .. ``start + count - 1`` of collection ``seed`` as ``folder/shape_NNNNN.ply``
    (binary PLY); returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(start, start + count):
        path = folder / f"shape_{index:05d}.ply"
        write_ply(path, *generated_mesh(index, seed, resolution))
        paths.append(path)
    return paths
