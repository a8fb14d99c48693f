"""What the CLI tests share: small training settings and a reader of the PLY files the commands write."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Settings that train in seconds: enough for a mesh, not for a good one.
SMALL_FIT = ["--steps", "30", "--width", "32", "--layers", "1", "--resolution", "32", "--seed", "0", "--quiet"]
SMALL_DEEPSDF = ["--latent-size", "8", "--width", "64", "--layers", "4", "--dropout", "0", "--epochs", "60",
                 "--shapes-per-batch", "3", "--samples-per-shape", "256", "--learning-rate", "2e-3",
                 "--code-learning-rate", "1e-2", "--quiet"]


def read_ply(path: Path) -> tuple[np.ndarray, np.ndarray]:
    data = path.read_bytes()
    header, body = data.split(b"end_header\n", 1)
    lines = header.decode().splitlines()
    assert lines[1] == "format binary_little_endian 1.0"
    n_verts = int(next(l for l in lines if l.startswith("element vertex")).split()[-1])
    n_faces = int(next(l for l in lines if l.startswith("element face")).split()[-1])
    verts = np.frombuffer(body[: 12 * n_verts], "<f4").reshape(-1, 3)
    records = np.frombuffer(body[12 * n_verts :], [("n", "u1"), ("v", "<i4", (3,))])
    assert len(records) == n_faces and (records["n"] == 3).all()
    return verts, records["v"].astype(np.int64)
