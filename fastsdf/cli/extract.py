"""``fastsdf extract``: mesh a saved model's zero level set into a PLY file."""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

from fastsdf.cli.common import (add_overwrite_option, load_fitted, mesh_method, number, progress_enabled,
                                refuse_to_overwrite, resolution)
from fastsdf.meshing.narrow_band import DEFAULT_SAFETY

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    extract = sub.add_parser("extract", help="mesh a saved model (fastsdf fit's model.pt) into a PLY",
                             description="Marches the model's zero level set over its normalised unit cube "
                                         "(mapped to the mesh's coordinates) and writes a binary PLY.")
    extract.add_argument("model", metavar="MODEL", help="a model file, or a folder holding model.pt")
    extract.add_argument("--out", required=True, metavar="PLY", help="the mesh file to write")
    extract.add_argument("--resolution", type=resolution, default=256, metavar="N",
                         help="grid samples per axis (default: 256)")
    extract.add_argument("--method", choices=("dense", "chunked", "sparse", "mise"), default="sparse",
                         help="dense: one grid; chunked: slabs of about 256 MiB, the same mesh; sparse: the "
                              "slabs, evaluated only near the surface; mise: refined where the signs change "
                              "(default: sparse; occupancy models: mise)")
    extract.add_argument("--safety", type=number(1.0), default=DEFAULT_SAFETY, metavar="S",
                         help="sparse: the gradient bound assumed when ruling out blocks; larger is safer and "
                              f"slower (default: {DEFAULT_SAFETY:g})")
    extract.add_argument("--quiet", action="store_true", help="no progress bar")
    add_overwrite_option(extract)
    extract.set_defaults(run=_extract)


def _extract(args: argparse.Namespace) -> int:
    import fastsdf

    model = load_fitted(args.model)
    refuse_to_overwrite([Path(args.out)], args.overwrite)
    frame = model.bounds()
    start = time.perf_counter()
    # Written slab by slab as it is made: the mesh never has to fit in memory.
    vertices, triangles = fastsdf.extract_mesh(model, args.resolution, bounds=frame,
                                               method=mesh_method(model, args.method),
                                               progress=progress_enabled(args.quiet), safety=args.safety,
                                               out=Path(args.out))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.resolution}^3 -> {vertices:,} vertices, {triangles:,} triangles in {seconds:.1f} s "
          f"(peak memory {peak:,.0f} MiB) -> {Path(args.out).resolve()}")
    return 0
