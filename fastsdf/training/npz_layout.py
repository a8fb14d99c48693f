"""Where an uncompressed .npz archive keeps an array's bytes, so that they can be memory-mapped.

``np.load(..., mmap_mode="r")`` maps .npy files only; an .npz is a zip archive, and an array stored
in it uncompressed (``np.savez``, and the ``cnpy`` library DeepSDF's preprocessing writes with)
lies whole at a fixed offset in the file: its zip local header, then its .npy header, then the
data. ``stored_array`` finds that offset from the archive's own headers.
"""

from __future__ import annotations

import os
import struct
import zipfile
from dataclasses import dataclass

import numpy as np

__all__ = ["StoredArray", "stored_array"]

_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, then (after 22 bytes) name and extra lengths
_LOCAL_SIGNATURE = b"PK\x03\x04"


@dataclass(frozen=True)
class StoredArray:
    """An array's place in the file: its data at byte ``offset``; ``header`` the .npy header's bytes
    and ``crc`` the zip CRC-32 of the header and data together."""

    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    header: bytes
    crc: int


def stored_array(path: str | os.PathLike, archive: zipfile.ZipFile, key: str) -> StoredArray | None:
    """Array ``key`` of the open ``archive`` (the file at ``path``) where it is mappable: stored
    uncompressed and unencrypted, with a version 1 or 2 .npy header that agrees with the archive's
    sizes; None otherwise (compressed, or a header this reading does not know). Raises KeyError
    when the archive has no such array."""
    info = archive.getinfo(f"{key}.npy")
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(_LOCAL_HEADER.size)
        if len(local) != _LOCAL_HEADER.size:
            return None
        signature, name_length, extra_length = _LOCAL_HEADER.unpack(local)
        if signature != _LOCAL_SIGNATURE:
            return None
        start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
        f.seek(start)
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                return None
        except ValueError:
            return None
        offset = f.tell()
        f.seek(start)
        header = f.read(offset - start)
    if dtype.hasobject or offset - start + int(np.prod(shape)) * dtype.itemsize != info.file_size:
        return None
    return StoredArray(offset, tuple(shape), dtype, bool(fortran_order), header, info.CRC)
