"""The ``fastsdf`` command line."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    import numpy as np

    import fastsdf
    from fastsdf.io import write_ply
    from fastsdf.render import render_mesh

    shape = (fastsdf.Torus(major=0.55, minor=0.2) | fastsdf.Sphere(radius=0.3)) - fastsdf.Box(
        half_size=(0.35, 0.35, 0.6), center=(0.5, -0.5, 0.0))
    out = Path(args.out)
    start = time.perf_counter()
    verts, faces = fastsdf.extract_mesh(shape, args.resolution, bounds=((-1, -1, -1), (1, 1, 1)),
                                        progress=False if args.quiet else None)
    seconds = time.perf_counter() - start
    mesh_path, picture_path = out / "demo.ply", out / "demo.png"
    write_ply(mesh_path, verts, faces)
    render_mesh(verts, faces, picture_path)
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    _, uses = np.unique(edges, axis=0, return_counts=True)
    euler = len(verts) - len(uses) + len(faces)
    print(f"meshed {shape!r}")
    print(f"  grid {args.resolution}^3 -> {len(verts):,} vertices, {len(faces):,} triangles in {seconds:.2f} s")
    print(f"  watertight: {bool((uses == 2).all())}, Euler characteristic {euler}")
    print(f"  mesh:    {mesh_path.resolve()}")
    print(f"  picture: {picture_path.resolve()}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastsdf", description="Kernel-accelerated signed distance functions.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="mesh an analytic CSG shape and write a PLY and a PNG of it")
    demo.add_argument("--out", default="outputs/demo", help="output folder (default: outputs/demo)")
    demo.add_argument("--resolution", type=int, default=256, help="grid samples per axis (default: 256)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "resolution", 2) < 2:
        print("fastsdf: error: --resolution must be at least 2", file=sys.stderr)
        return 2
    try:
        return args.run(args)
    except (OSError, ValueError, MemoryError) as exc:
        print(f"fastsdf {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
