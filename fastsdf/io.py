"""Writing results without ever leaving a half-written file behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np

__all__ = ["atomic_write", "write_ply"]


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Opens a temporary file beside ``path`` and renames it over ``path`` only if the block
    succeeds, so a crash or a kill never leaves a truncated file (or destroys an existing one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    # mkstemp makes the file private (0600); give it the permissions a plain open() would.
    os.chmod(tmp, 0o666 & ~_UMASK)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_ply(path: str | os.PathLike, verts: Any, faces: Any) -> None:
    """Writes a triangle mesh as binary little-endian PLY (float32 positions, 32-bit indices).

    ``verts`` (V, 3) and ``faces`` (F, 3) may be NumPy arrays or tensors on any device.
    """
    verts = np.ascontiguousarray(_to_numpy(verts), dtype="<f4")
    faces = _to_numpy(faces)
    if verts.ndim != 2 or verts.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"expected verts (V, 3) and faces (F, 3), got {verts.shape} and {faces.shape}")
    if len(faces) and (faces.min() < 0 or faces.max() >= len(verts)):
        raise ValueError("faces index vertices that do not exist")
    if len(verts) >= 2**32:
        raise ValueError("PLY stores at most 2^32 vertices with 32-bit indices")
    index = "int" if len(verts) < 2**31 else "uint"
    records = np.empty(len(faces), dtype=[("n", "u1"), ("v", "<i4" if index == "int" else "<u4", (3,))])
    records["n"] = 3
    records["v"] = faces
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment written by fastsdf\n"
        f"element vertex {len(verts)}\nproperty float x\nproperty float y\nproperty float z\n"
        f"element face {len(faces)}\nproperty list uchar {index} vertex_indices\nend_header\n"
    )
    with atomic_write(path) as f:
        f.write(header.encode("ascii"))
        f.write(verts.tobytes())
        f.write(records.tobytes())


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)
