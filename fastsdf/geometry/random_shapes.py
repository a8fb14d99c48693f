"""Random shapes to train on when there is no folder of meshes: CSG of the analytic primitives.

A shape is 2 to 4 primitives (spheres, boxes, tori, each moved and the boxes and tori turned) joined,
and in half of the shapes one more carved out of them. Every primitive stays inside [-0.9, 0.9]^3,
and a mesh is extracted on a grid over [-1, 1]^3, so the surface never touches the grid's border
and every mesh is closed. Mesh ``i`` of seed ``s`` draws from its own stream, seeded by ``(s, i)``:
a collection of 10 is the first 10 of a collection of 1,000, whoever writes them and in what order.

A collection can also come in families: a few recipes (shapes as above, kept as numbers) whose
members vary each primitive a little, the modes a generative model has to find in real collections.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fastsdf._arrays import constant_like
from fastsdf._progress import progress_bar
from fastsdf._validation import SEED_LIMIT, WrongTypeError, integer
from fastsdf.geometry.analytic import SDF, Box, Difference, Sphere, Torus, Union
from fastsdf.io import write_ply
from fastsdf.meshing.extract import extract_mesh

__all__ = ["DEFAULT_RESOLUTION", "MIN_RESOLUTION", "random_mesh", "random_shape", "random_shape_paths",
           "write_random_shapes"]

DEFAULT_RESOLUTION = 40  # about 2,000 triangles and 20 ms a mesh
# Below 8 samples per axis a third of the shapes fall between the grid's samples and are drawn again.
MIN_RESOLUTION = 8
# Draws of one mesh before giving up: at the smallest resolution 1 draw in 300 has no surface.
_MAX_DRAWS = 100
# How far a family's members stray from its recipe: sizes (log scale, bounded to 1.25x either way),
# turns (near-identity rotations of about 6 degrees) and moves (per axis).
_SIZE_SPREAD, _SIZE_LIMIT = 0.1, np.log(1.25)
_TURN_SPREAD = 0.1
_MOVE_SPREAD = 0.05
# A family's recipe fills at least this share of [-1, 1]^3 (the smallest primitive fills 0.18%).
_FAMILY_MIN_VOLUME = 0.001


class _Turned(SDF):
    """``shape`` turned by the rotation matrix ``rotation`` about the origin (a rigid motion keeps
    distances exact)."""

    def __init__(self, shape: SDF, rotation: np.ndarray):
        self.shape, self.rotation = shape, rotation

    def distance(self, points: Any) -> Any:
        # Row vectors times R are R^T applied to each point: the rotation's inverse.
        return self.shape(points @ constant_like(self.rotation, points))

    def __repr__(self) -> str:
        return f"_Turned({self.shape!r}, rotation={self.rotation.tolist()})"


class _Moved(SDF):
    """``shape`` moved by ``offset``."""

    def __init__(self, shape: SDF, offset: np.ndarray):
        self.shape, self.offset = shape, offset

    def distance(self, points: Any) -> Any:
        return self.shape(points - constant_like(self.offset, points))

    def __repr__(self) -> str:
        return f"_Moved({self.shape!r}, offset={self.offset.tolist()})"


def _rotation(rng: np.random.Generator, spread: float | None = None) -> np.ndarray:
    """A rotation: drawn uniformly (Haar) when ``spread`` is None, otherwise one near the identity
    (its angle grows with ``spread``): QR of a Gaussian matrix (or of the identity plus ``spread``
    times one), signs fixed, det +1."""
    gaussian = rng.standard_normal((3, 3))
    q, r = np.linalg.qr(gaussian if spread is None else np.eye(3) + spread * gaussian)
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


@dataclass(frozen=True)
class _Primitive:
    """A sphere, box or torus as numbers (what a family's members vary): ``size`` is the radius, the
    box's half extents or the torus's (major, minor) radii; spheres are not turned."""

    kind: str
    size: np.ndarray
    rotation: np.ndarray | None
    centre: np.ndarray

    @property
    def reach(self) -> float:
        """The radius of a ball about the centre holding the primitive, whatever its turn."""
        return float(self.size.sum() if self.kind == "torus" else np.linalg.norm(self.size))

    def sdf(self) -> SDF:
        if self.kind == "sphere":
            return Sphere(float(self.size[0]), self.centre)
        shape = Box(self.size) if self.kind == "box" else Torus(*map(float, self.size))
        return _Moved(_Turned(shape, self.rotation), self.centre)

    def varied(self, rng: np.random.Generator) -> "_Primitive":
        """A sibling: each size scaled by up to 25%, turned by a few degrees, moved by ~0.05, and
        kept inside [-0.9, 0.9]^3."""
        scale = np.exp(np.clip(_SIZE_SPREAD * rng.standard_normal(len(self.size)), -_SIZE_LIMIT, _SIZE_LIMIT))
        rotation = None if self.rotation is None else _rotation(rng, _TURN_SPREAD) @ self.rotation
        moved = replace(self, size=self.size * scale, rotation=rotation)
        room = 0.9 - moved.reach
        return replace(moved, centre=np.clip(self.centre + _MOVE_SPREAD * rng.standard_normal(3), -room, room))


def _primitive(rng: np.random.Generator) -> _Primitive:
    """A primitive of size 0.1 to 0.45 whose centre leaves it inside [-0.9, 0.9]^3."""
    kind = rng.integers(3)
    if kind == 0:
        radius = rng.uniform(0.15, 0.4)
        return _Primitive("sphere", np.array([radius]), None, rng.uniform(-0.9 + radius, 0.9 - radius, 3))
    if kind == 1:
        half = rng.uniform(0.1, 0.3, 3)
        reach = np.linalg.norm(half)
        return _Primitive("box", half, _rotation(rng), rng.uniform(-0.9 + reach, 0.9 - reach, 3))
    major = rng.uniform(0.2, 0.35)
    minor = rng.uniform(0.06, 0.5 * major)
    rotation = _rotation(rng)
    return _Primitive("torus", np.array([major, minor]), rotation,
                      rng.uniform(-0.9 + major + minor, 0.9 - major - minor, 3))


@dataclass(frozen=True)
class _Recipe:
    """A CSG shape as numbers: the union of ``joined``, less ``carved`` when there is one."""

    joined: tuple[_Primitive, ...]
    carved: _Primitive | None

    def sdf(self) -> SDF:
        shape: SDF = Union(*(part.sdf() for part in self.joined))
        return shape if self.carved is None else Difference(shape, self.carved.sdf())

    def varied(self, rng: np.random.Generator) -> "_Recipe":
        return _Recipe(tuple(part.varied(rng) for part in self.joined),
                       None if self.carved is None else self.carved.varied(rng))


def _recipe(rng: np.random.Generator) -> _Recipe:
    joined = tuple(_primitive(rng) for _ in range(rng.integers(2, 5)))
    return _Recipe(joined, _primitive(rng) if rng.random() < 0.5 else None)


def _check_seed(seed: Any) -> int:
    return integer(seed, "seed", 0, SEED_LIMIT - 1)


def _generator(seed: Any) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    try:
        return np.random.default_rng(_check_seed(seed))
    except WrongTypeError:
        raise WrongTypeError(f"seed must be an integer in [0, 2^63) or a numpy.random.Generator, "
                             f"got {seed!r}") from None


def random_shape(seed: int | np.random.Generator) -> SDF:
    """A random CSG shape of fastsdf's analytic primitives, inside [-0.9, 0.9]^3.

    2 to 4 spheres, boxes and tori (sizes 0.1 to 0.45, the boxes and tori turned at random) joined,
    and in half of the shapes one more carved out; the carving can remove everything, which
    ``random_mesh`` draws again. The result is an ``SDF`` like ``Sphere``: a callable on NumPy
    arrays or torch tensors of shape (..., 3), negative inside (a bound on the distance, exact sign).

    Args:
        seed: an integer in [0, 2^63) (``np.random.default_rng(seed)`` draws the shape), or a
            ``numpy.random.Generator``, which the draw advances.

    Raises:
        ValueError: a seed that is not such an integer or generator (WrongTypeError for the wrong kind).
    """
    return _recipe(_generator(seed)).sdf()


@functools.lru_cache(maxsize=1024)
def _family(seed: int, family: int) -> _Recipe:
    """Family ``family`` of the collection ``seed``: a recipe drawn from its own stream (its spawn key
    keeps it apart from every mesh's ``[seed, index]`` stream) until its solid fills at least
    ``_FAMILY_MIN_VOLUME`` of [-1, 1]^3, so that carving has not left its members nearly empty."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, family], spawn_key=(1,)))
    axis = np.linspace(-1, 1, 32)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    for _ in range(_MAX_DRAWS):
        recipe = _recipe(rng)
        if (recipe.sdf()(grid) < 0).mean() >= _FAMILY_MIN_VOLUME:
            return recipe
    raise RuntimeError(f"no family {family} of seed {seed} has a solid in {_MAX_DRAWS} draws")


def random_mesh(index: int, seed: int = 0, resolution: int = DEFAULT_RESOLUTION, *,
                families: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mesh ``index`` of the collection ``seed``: float32 (V, 3) vertices in [-1, 1]^3 and int64
    (F, 3) faces, closed (every edge shared by two faces) and never empty.

    It is ``random_shape`` drawn from ``np.random.default_rng([seed, index])`` and meshed by
    ``extract_mesh(shape, resolution)`` over [-1, 1]^3; a shape without a surface on the grid is
    drawn again from the same stream. The same arguments give the same mesh.

    With ``families`` K > 0 the collection is K families, a structure a single Gaussian cannot
    hold: mesh ``index`` belongs to family ``index % K``, whose recipe (a random shape as above,
    one per family and seed) it varies: each primitive's sizes scaled by up to 25%, turned by a
    few degrees and moved by about 0.05, staying inside [-0.9, 0.9]^3.

    Args:
        index: the mesh's place in the collection, an integer >= 0.
        seed: the collection, an integer in [0, 2^63).
        resolution: grid samples per axis, at least ``MIN_RESOLUTION`` (8); coarse grids lose the
            thinnest parts (tori's tubes are 0.12 across at the least).
        families: 0 (every shape drawn on its own) or how many families the collection has.

    Raises:
        ValueError: an argument out of range or of the wrong kind.
        MemoryError: a grid too large for the memory available.
    """
    index = integer(index, "index", 0)
    seed = _check_seed(seed)
    resolution = integer(resolution, "resolution", MIN_RESOLUTION)
    families = integer(families, "families", 0)
    rng = np.random.default_rng([seed, index])
    recipe = _family(seed, index % families) if families else None
    for _ in range(_MAX_DRAWS):
        shape = random_shape(rng) if recipe is None else recipe.varied(rng).sdf()
        vertices, faces = extract_mesh(shape, resolution, progress=False)
        if len(faces):
            return np.asarray(vertices), np.asarray(faces)
    raise RuntimeError(f"no shape of seed {seed}, index {index} has a surface at resolution {resolution} "
                       f"in {_MAX_DRAWS} draws")


def random_shape_paths(folder: str | os.PathLike, count: int, start: int = 0) -> list[Path]:
    """The files ``write_random_shapes(folder, count, start=start)`` writes:
    ``folder/shape_NNNNN.ply`` for ``start`` .. ``start + count - 1``."""
    count = integer(count, "count", 1)
    start = integer(start, "start", 0)
    return [Path(folder) / f"shape_{index:05d}.ply" for index in range(start, start + count)]


def write_random_shapes(folder: str | os.PathLike, count: int, seed: int = 0, resolution: int = DEFAULT_RESOLUTION,
                        start: int = 0, *, families: int = 0, overwrite: bool = False,
                        progress: bool | None = None, log: Callable[[str], None] | None = None) -> list[Path]:
    """Writes meshes ``start`` .. ``start + count - 1`` of the collection ``seed`` (``random_mesh``)
    as binary PLY files ``folder/shape_NNNNN.ply``, a training set for ``fastsdf sample``.

    Nothing is written if one of the files exists, unless ``overwrite``; each file is written
    atomically, so a killed run leaves whole files (and ``overwrite`` rewrites them the same).

    Args:
        folder: where the files go (created when missing).
        count: how many meshes, at least 1.
        seed, resolution, families: as ``random_mesh`` takes them.
        start: the first mesh's index: ``start=100, count=20`` continues a collection of 100
            (or gives held-out shapes).
        overwrite: replace files that exist.
        progress: a progress bar (None: when stderr is a terminal).
        log: called with one line per file written.

    Returns:
        The paths written, in index order.

    Raises:
        ValueError: an argument out of range or of the wrong kind.
        NotADirectoryError: ``folder`` is a file.
        FileExistsError: one of the files exists and not ``overwrite``.
    """
    paths = random_shape_paths(folder, count, start)
    seed = _check_seed(seed)
    resolution = integer(resolution, "resolution", MIN_RESOLUTION)
    families = integer(families, "families", 0)
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"not a folder: {folder}")
    existing = [path for path in paths if path.exists()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise FileExistsError(f"{existing[0]} exists{more}: pass overwrite=True to replace it")
    folder.mkdir(parents=True, exist_ok=True)
    bar = progress_bar(progress, len(paths), 0, "fastsdf shapes", "shape")
    try:
        for index, path in enumerate(paths, integer(start, "start", 0)):
            vertices, faces = random_mesh(index, seed, resolution, families=families)
            write_ply(path, vertices, faces)
            if log is not None:
                (log if bar is None else bar.write)(f"wrote {path} ({len(faces):,} triangles)")
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return paths
