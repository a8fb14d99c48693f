"""Writing results without ever leaving a half-written file behind."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
import time
import zlib
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np

from fastsdf._arrays import to_numpy

__all__ = ["PlyWriter", "atomic_write", "remove_stale_temporaries", "write_ply"]


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


# Temporaries are named .NAME.HOST-PID.XXXXXXXX.tmp: whoever writes NAME next can tell a killed
# writer's leftovers (this host, that process gone) from a live writer's file and remove them.
_HOST = f"{zlib.crc32(socket.gethostname().encode()):08x}"
_TEMP = re.compile(r"(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)\.[A-Za-z0-9_]+\.tmp")
# Beyond this age a temporary is stale whoever made it (any write finishes far sooner); this also
# covers other hosts' leftovers and the unmarked .NAME.XXXXXXXX.tmp that earlier versions made.
STALE_SECONDS = 24 * 3600
_LEGACY_TEMP = re.compile(r"[A-Za-z0-9_]{8}\.tmp")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", *, keep_existing: bool = False) -> Iterator[IO[Any]]:
    """Opens a temporary file beside ``path`` and renames it over ``path`` only if the block
    succeeds, so a crash or a kill never leaves a truncated file (or destroys an existing one).
    Temporaries that killed writers of ``path`` left behind are removed first
    (``remove_stale_temporaries``).

    With ``keep_existing``, a file at ``path`` when the block ends (another process's, written
    meanwhile) stays, and this one is discarded: of writers racing to write the same content the
    first wins, and a reader of ``path`` never has it replaced under it (which on NFS, from another
    host, fails its reads with a stale handle)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_HOST}-{os.getpid()}.", suffix=".tmp")
    # mkstemp makes the file private (0600); give it the permissions a plain open() would.
    os.chmod(tmp, 0o666 & ~_UMASK)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if keep_existing:
            _publish_once(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _publish_once(tmp: str, path: Path) -> None:
    """``tmp`` at ``path`` unless a file is there, else ``tmp`` removed: a hard link, which unlike a
    rename fails on an existing name, atomically (on NFS too)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    except OSError:  # a filesystem without hard links: a rename, unless the file is there already
        if not path.exists():
            os.replace(tmp, path)
            return
    os.unlink(tmp)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Removes the temporaries ``atomic_write(path)`` left when its process was killed: those made
    on this host by a process that no longer runs, and any older than ``STALE_SECONDS``. A live
    process's temporary is never touched. Returns what was removed."""
    path = Path(path)
    prefix = f".{path.name}."
    removed = []
    try:
        entries = [e for e in os.scandir(path.parent) if e.name.startswith(prefix) and e.name.endswith(".tmp")]
    except FileNotFoundError:
        return removed
    now = time.time()
    for entry in entries:
        rest = entry.name[len(prefix):]
        match = _TEMP.fullmatch(rest)
        if match is None and not _LEGACY_TEMP.fullmatch(rest):
            continue  # not a name atomic_write makes
        try:
            old = now - entry.stat(follow_symlinks=False).st_mtime > STALE_SECONDS
        except FileNotFoundError:
            continue  # its writer finished meanwhile
        orphan = match is not None and match["host"] == _HOST and not _process_alive(int(match["pid"]))
        if (old or orphan) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name != "posix":  # os.kill would end the process there, not probe it
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process (a number too large for a pid is none)
        return False
    except PermissionError:  # another user's
        return True
    return True


def write_ply(path: str | os.PathLike, verts: Any, faces: Any) -> None:
    """Writes a triangle mesh as binary little-endian PLY (float32 positions, 32-bit indices).

    ``verts`` (V, 3) and ``faces`` (F, 3) may be NumPy arrays or tensors on any device.
    """
    verts, faces = _mesh_arrays(verts, faces)
    if len(faces) and faces.max() >= len(verts):
        raise ValueError("faces index vertices that do not exist")
    _check_vertex_count(len(verts))
    with atomic_write(path) as f:
        f.write(_ply_header(len(verts), len(faces)))
        f.write(verts.tobytes())
        f.write(_face_records(faces).tobytes())


class PlyWriter:
    """A binary PLY written piece by piece, for meshes larger than memory (the same file as
    ``write_ply`` of the whole mesh).

    ``add(verts, faces)`` appends vertices and faces, the faces indexing the whole mesh (earlier
    pieces' vertices included); they wait in temporary files beside ``path``. Leaving the ``with``
    block writes the header and both into ``path`` atomically; an exception in it writes nothing
    and leaves an existing ``path`` as it was.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.vertices = self.faces = 0
        self._largest_index = -1
        self._parts = [tempfile.TemporaryFile(dir=self.path.parent, prefix=f".{self.path.name}.") for _ in range(2)]

    def add(self, verts: Any, faces: Any) -> None:
        verts, faces = _mesh_arrays(verts, faces)
        _check_vertex_count(self.vertices + len(verts))
        if len(faces):
            self._largest_index = max(self._largest_index, int(faces.max()))
        self._parts[0].write(verts.tobytes())
        self._parts[1].write(_face_records(faces).tobytes())
        self.vertices += len(verts)
        self.faces += len(faces)

    def __enter__(self) -> "PlyWriter":
        return self

    def __exit__(self, kind: Any, *rest: Any) -> None:
        try:
            if kind is None:
                if self._largest_index >= self.vertices:
                    raise ValueError("faces index vertices that do not exist")
                with atomic_write(self.path) as f:
                    f.write(_ply_header(self.vertices, self.faces))
                    for part in self._parts:
                        part.seek(0)
                        shutil.copyfileobj(part, f, 1 << 24)
        finally:
            for part in self._parts:
                part.close()


def _mesh_arrays(verts: Any, faces: Any) -> tuple[np.ndarray, np.ndarray]:
    verts = np.ascontiguousarray(to_numpy(verts), dtype="<f4")
    faces = to_numpy(faces)
    if verts.ndim != 2 or verts.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"expected verts (V, 3) and faces (F, 3), got {verts.shape} and {faces.shape}")
    if len(faces) and faces.min() < 0:
        raise ValueError("faces index vertices that do not exist")
    return verts, faces


def _check_vertex_count(count: int) -> None:
    if count >= 2**32:
        raise ValueError("PLY stores at most 2^32 vertices with 32-bit indices")


def _ply_header(vertices: int, faces: int) -> bytes:
    # Indices are stored as unsigned 32-bit words and declared "int" (the common reading) while
    # they fit; the bits are the same.
    index = "int" if vertices < 2**31 else "uint"
    return (
        "ply\nformat binary_little_endian 1.0\ncomment written by fastsdf\n"
        f"element vertex {vertices}\nproperty float x\nproperty float y\nproperty float z\n"
        f"element face {faces}\nproperty list uchar {index} vertex_indices\nend_header\n"
    ).encode("ascii")


def _face_records(faces: np.ndarray) -> np.ndarray:
    records = np.empty(len(faces), dtype=[("n", "u1"), ("v", "<u4", (3,))])
    records["n"] = 3
    records["v"] = faces
    return records
