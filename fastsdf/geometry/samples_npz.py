"""DeepSDF's sample files: ``SdfSamples`` written to and read from .npz.

``pos`` holds the rows (x, y, z, sdf) with sdf > 0 and ``neg`` those with sdf <= 0, both float32
(N, 4), exactly as DeepSDF's ``writeSDFToNPZ`` (``src/PreprocessMesh.cpp`` in
facebookresearch/DeepSDF). A point exactly on the surface (sdf == 0) therefore goes to ``neg``.
Extra keys (``offset``, ``scale``, ``surface_points``, ``surface_normals``) ride along; DeepSDF's
loader reads only ``pos`` and ``neg``.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from fastsdf.geometry.normalization import NormalizationTransform
from fastsdf.geometry.sampling import SdfSamples
from fastsdf.io import atomic_write

__all__ = ["load_npz", "save_npz"]

# The keys of a sample file that load_npz reads; any others are ignored.
_NPZ_KEYS = {"pos", "neg", "offset", "scale", "surface_points", "surface_normals"}


def save_npz(path: str | os.PathLike, samples: SdfSamples, *, keep_existing: bool = False) -> None:
    """Writes ``samples`` in DeepSDF's layout, atomically (never a half-written file); with
    ``keep_existing``, a file already at ``path`` when the writing ends stays as it is
    (``fastsdf.io.atomic_write``: of processes racing to write the same file, the first wins).

    Keys: ``pos`` (M, 4) and ``neg`` (K, 4) float32 rows (x, y, z, sdf), with sdf > 0 in ``pos``
    and sdf <= 0 in ``neg`` (DeepSDF's ``writeSDFToNPZ``). Also, when ``samples`` has them:
    ``offset`` float64 (3,) and ``scale`` float64 (1,), DeepSDF's ``NormalizationParameters``
    layout; ``surface_points`` and ``surface_normals`` float32 (S, 3). The file is written
    uncompressed at exactly ``path`` (no ``.npz`` is appended).
    """
    if not isinstance(samples, SdfSamples):
        raise TypeError(f"samples must be SdfSamples, got {type(samples).__name__}")
    if samples.dim != 3:
        raise ValueError(f"DeepSDF's .npz layout holds 3D samples, these are {samples.dim}D: keep 2D samples in "
                         "memory (fastsdf.training.shapes.ShapeSamples) or in a file of your own")
    arrays = {"pos": samples.pos(), "neg": samples.neg()}
    if samples.transform is not None:
        arrays["offset"] = samples.transform.offset.astype(np.float64)
        arrays["scale"] = np.array([samples.transform.scale], np.float64)
    if samples.surface_points is not None:
        arrays["surface_points"] = samples.surface_points
        arrays["surface_normals"] = samples.surface_normals
    with atomic_write(path, keep_existing=keep_existing) as f:
        np.savez(f, **arrays)


def load_npz(path: str | os.PathLike) -> SdfSamples:
    """Reads a DeepSDF sample file (``save_npz``'s or DeepSDF's own) into ``SdfSamples``.

    ``pos`` and ``neg`` must be real (N, 4) arrays (any float dtype; read as float32); their
    rows become ``points``/``sdf``, ``pos`` first. Rows with NaN or Inf are dropped, as DeepSDF's
    loader (``remove_nans``) does. Other keys are ignored, except ``offset`` + ``scale`` (read as
    the ``transform``) and ``surface_points`` + ``surface_normals``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not an .npz archive, a damaged one, ``pos`` or ``neg`` missing or of the
            wrong shape or dtype, bad extra arrays.
    """
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path} is not a readable .npz archive: {exc}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is an .npy array, not an .npz archive with 'pos' and 'neg'")
    try:
        with data:
            keys = set(data.files)
            arrays = {k: np.asarray(data[k]) for k in keys & _NPZ_KEYS}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise ValueError(f"{path} is a damaged .npz archive: {exc}") from None
    missing = [k for k in ("pos", "neg") if k not in arrays]
    if missing:
        raise ValueError(f"{path} has no {' or '.join(map(repr, missing))} array (it has {sorted(keys)})")
    rows = []
    for key in ("pos", "neg"):
        a = arrays[key]
        if a.size == 0:
            a = a.reshape(0, 4) if a.dtype.kind == "f" else np.zeros((0, 4), np.float32)
        if a.ndim != 2 or a.shape[1] != 4 or a.dtype.kind != "f":
            raise ValueError(f"{path}: {key!r} must be a float (N, 4) array, got {a.dtype} {a.shape}")
        a = a.astype(np.float32)
        rows.append(a[np.isfinite(a).all(axis=1)])
    table = np.concatenate(rows)
    transform = surface_points = surface_normals = None
    try:
        if "offset" in arrays or "scale" in arrays:
            transform = NormalizationTransform.from_dict(arrays)
        if "surface_points" in arrays or "surface_normals" in arrays:
            surface_points, surface_normals = arrays.get("surface_points"), arrays.get("surface_normals")
            if surface_points is None or surface_normals is None:
                raise ValueError("surface_points and surface_normals come together")
        return SdfSamples(table[:, :3], table[:, 3], surface_points, surface_normals, transform)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
