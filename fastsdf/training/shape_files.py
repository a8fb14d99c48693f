"""Shapes whose samples stay on disk: each batch reads only the rows it draws.

DeepSDF's ``.npz`` files as ``fastsdf sample`` (``np.savez``) and DeepSDF's own preprocessing
(``cnpy``) write them are uncompressed zip archives, so ``pos`` and ``neg`` lie whole at fixed
offsets (``fastsdf.training.npz_layout``). Opening a collection reads each file once, in chunks,
to check it: a CRC-32 that matches the archive's, float32 (N, 4) rows, all finite, ``pos`` rows
with sdf > 0 and ``neg`` rows with sdf <= 0, and ``surface_points`` (where the file has them:
``fastsdf sample --n-surface``; an occupancy network's input) float32 (S, 3) and finite. It then
keeps per shape only the file's path, the arrays' offsets and row counts and the normalisation (a few hundred bytes, whatever the sample count); a
batch maps the file, copies the rows it drew and unmaps it, so neither the process's objects nor
its resident memory grow with the number of shapes, and DataLoader workers can be started with
the collection as it is.

A file that passes the check is read in place; one that does not, yet that ``fastsdf.load_npz``
reads (compressed with ``np.savez_compressed``, float64, rows with NaN or Inf, which DeepSDF's
loader drops too, or rows on the wrong side) is converted once, atomically, into an uncompressed
copy in a hidden ``.fastsdf-cache`` folder beside it, which later runs reuse. The copy's name holds
the source's size and modification time, so an edited source is converted again (the stale copy
removed). Processes that open the same files at once (DDP's, on one node or on several sharing
the folder) may all convert one; the first copy written stays and the others' are discarded, so
no process reads a copy that is being replaced. Converting beats the alternatives: reading such a file whole for every batch would cost
its whole size per draw, and keeping it in memory is what this module avoids; the sources are
left as they are, so DeepSDF's loaders still read them. Either way a shape's rows, and so its
batches, are exactly those ``ShapeSamples`` builds from ``load_npz``'s samples of the same file.
"""

from __future__ import annotations

import glob
import io
import os
import zipfile
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from fastsdf.geometry.normalization import NormalizationTransform
from fastsdf.geometry.samples_npz import load_npz, save_npz
from fastsdf.training.npz_layout import StoredArray, stored_array
from fastsdf.training.shape_collection import ShapeCollection

__all__ = ["CACHE_FOLDER", "ShapeFiles"]

CACHE_FOLDER = ".fastsdf-cache"
_CHECK_ROWS = 1 << 18  # rows read at a time while checking a file (4 MiB)
_ROW = np.dtype("<f4")


class ShapeFiles(ShapeCollection):
    """Named shapes, each a DeepSDF ``.npz`` sample file read as batches draw from it.

    Args:
        names: one name per shape.
        paths: the shapes' files, checked now (see the module's docstring).

    Raises:
        FileNotFoundError: a missing file.
        ValueError: a file that is not a readable sample file or holds no finite samples, a
            converted copy that cannot be written (the message names the file).
    """

    def __init__(self, names: Sequence[str], paths: Sequence[str | os.PathLike]):
        self._take_names(names, len(paths), "files")
        self._paths: list[str] = []
        # outside offset, rows, inside offset, rows, surface points' offset, count
        self._places = np.zeros((len(paths), 6), np.int64)
        self._transforms: list[NormalizationTransform | None] = []
        for i, source in enumerate(map(Path, paths)):
            path, (places, transform) = _open(source)
            if places[1] + places[3] == 0:
                raise ValueError(f"{source} holds no finite samples")
            self._paths.append(str(path))
            self._places[i] = places
            self._transforms.append(transform)

    def transform(self, index: int) -> NormalizationTransform | None:
        return self._transforms[index]

    def sizes(self, index: int) -> tuple[int, int]:
        return int(self._places[index, 1]), int(self._places[index, 3])

    def rows(self, index: int, picks: list[tuple[int, torch.Tensor]]) -> torch.Tensor:
        return torch.from_numpy(np.concatenate([self._read(index, 2 * side, 4, chosen) for side, chosen in picks]))

    def surface_size(self, index: int) -> int:
        return int(self._places[index, 5])

    def surface_rows(self, index: int, chosen: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self._read(index, 4, 3, chosen))

    def _read(self, index: int, place: int, width: int, chosen: torch.Tensor) -> np.ndarray:
        """Rows ``chosen`` of the array at ``_places[index, place]`` (its offset, then its rows)."""
        offset, count = (int(v) for v in self._places[index, place:place + 2])
        table = np.memmap(self._paths[index], _ROW, "r", offset=offset, shape=(count, width))
        rows = np.asarray(table[chosen.numpy()])
        del table  # unmapped here: resident memory holds no more than the batch's rows
        return rows


def _open(source: Path) -> tuple[Path, tuple[tuple[int, ...], NormalizationTransform | None]]:
    """(the file to read, (its places, the normalisation)): ``source`` itself where it passes the
    check, else its converted copy."""
    if not source.is_file():
        raise FileNotFoundError(f"no such sample file: {source}")
    found = _mappable(source)
    if found is not None:
        return source, found
    copy = _converted(source)
    found = _mappable(copy)
    if found is None:
        raise ValueError(f"{copy}, the converted copy of {source}, is damaged: remove it")
    return copy, found


def _mappable(path: Path) -> tuple[tuple[int, ...], NormalizationTransform | None] | None:
    """The places of ``pos``, ``neg`` and ``surface_points`` in ``path`` (0, 0 for the surface
    points of a file without them) and its normalisation, or None unless the file passes the
    check as it is."""
    try:
        with zipfile.ZipFile(path) as archive:
            keys = {name.removesuffix(".npy") for name in archive.namelist()}
            if ("surface_points" in keys) != ("surface_normals" in keys):
                return None
            arrays = [stored_array(path, archive, key) for key in ("pos", "neg")]
            if not all(a is not None and _is_table(a) and _is_clean(path, a, outside=side == 0)
                       for side, a in enumerate(arrays)):
                return None
            surface = stored_array(path, archive, "surface_points") if "surface_points" in keys else None
            if "surface_points" in keys and not (surface is not None and _is_table(surface, 3)
                                                 and _is_clean(path, surface, None, 3)):
                return None
            extras = {key: archive.read(f"{key}.npy") for key in ("offset", "scale") if key in keys}
        transform = None
        if extras:
            transform = NormalizationTransform.from_dict({k: _npy(v) for k, v in extras.items()})
    except (zipfile.BadZipFile, OSError, KeyError, ValueError, EOFError):
        return None
    (pos, neg) = arrays
    places = (0, 0) if surface is None else (surface.offset, _count(surface))
    return (pos.offset, _count(pos), neg.offset, _count(neg), *places), transform


def _npy(data: bytes) -> np.ndarray:
    return np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)


def _count(array: StoredArray) -> int:
    return 0 if 0 in array.shape else array.shape[0]


def _is_table(array: StoredArray, width: int = 4) -> bool:
    """Float32 little-endian (N, width) rows in C order, or an empty float array (as load_npz takes)."""
    if array.dtype.kind == "f" and 0 in array.shape:
        return True
    return len(array.shape) == 2 and array.shape[1] == width and array.dtype == _ROW and not array.fortran_order


def _is_clean(path: Path, array: StoredArray, outside: bool | None, width: int = 4) -> bool:
    """Reads the array's rows in chunks: the CRC-32 matches, every row is finite and (unless
    ``outside`` is None) on its side."""
    crc = zlib.crc32(array.header)
    left = _count(array)
    with open(path, "rb") as f:
        f.seek(array.offset)
        while left:
            chunk = np.fromfile(f, _ROW, width * min(left, _CHECK_ROWS))
            if len(chunk) < width * min(left, _CHECK_ROWS):
                return False
            crc = zlib.crc32(chunk, crc)
            rows = chunk.reshape(-1, width)
            if not np.isfinite(rows).all() or (outside is not None and not ((rows[:, 3] > 0) == outside).all()):
                return False
            left -= len(rows)
    return crc == array.crc


def _converted(source: Path) -> Path:
    """The uncompressed, checked copy of ``source`` in its folder's cache, written on first use."""
    stat = source.stat()
    folder = source.parent / CACHE_FOLDER
    copy = folder / f"{source.name}.{stat.st_size}-{stat.st_mtime_ns}.npz"
    if copy.exists():
        return copy
    samples = load_npz(source)  # the clear error for a file that is no sample file
    if len(samples) == 0:
        raise ValueError(f"{source} holds no finite samples")
    try:
        for stale in folder.glob(f"{glob.escape(source.name)}.*-*.npz"):
            if stale != copy:  # another process converting the same file may have written it since
                stale.unlink(missing_ok=True)
        # Never over a copy another process (a DDP rank, another node's) wrote meanwhile and may
        # be reading: the first copy stays.
        save_npz(copy, samples, keep_existing=True)
    except OSError as exc:
        raise ValueError(f"{source} cannot be read in place (compressed, not float32, or with non-finite "
                         f"rows) and its converted copy cannot be written in {folder}: {exc}") from None
    return copy
