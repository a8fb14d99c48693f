"""``fastsdf shapes``: a folder of random closed meshes to train on, for those without one."""

from __future__ import annotations

import argparse
from pathlib import Path

from fastsdf.cli.common import add_overwrite_option, integer, positive_int, progress_enabled, refuse_to_overwrite, seed

__all__ = ["add_parser"]

_HELP = """\
Write COUNT random shapes as closed meshes OUT_DIR/shape_NNNNN.ply (binary PLY), a training set for
`fastsdf sample`: each is 2 to 4 spheres, boxes and tori (moved and turned at random) joined, and in
half of them one more carved out, inside [-0.9, 0.9]^3 and meshed by marching cubes over [-1, 1]^3
(fastsdf.write_random_shapes). Shape K of a --seed is always the same, whatever --count: --start
100 --count 20 adds 20 to a collection of 100, or with another --seed gives held-out shapes.
With --families K the collection is K families of shapes (shape N is a variation of family N % K's
random recipe: sizes, turns and places changed a little), a structure with modes, as real
collections have (chairs, tables, lamps), for generative models to learn.
Existing files are never replaced without --overwrite (the command refuses to start).
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    from fastsdf.geometry.random_shapes import DEFAULT_RESOLUTION, MIN_RESOLUTION

    parser = sub.add_parser("shapes", help="write random closed meshes (CSG of spheres, boxes, tori) to train on",
                            description=_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", metavar="OUT_DIR", help="folder for the .ply files (created if missing)")
    parser.add_argument("--count", type=positive_int, required=True, metavar="N", help="shapes to write")
    parser.add_argument("--seed", type=seed, default=0, metavar="S", help="which collection (default: 0)")
    parser.add_argument("--start", type=integer(0), default=0, metavar="K",
                        help="index of the first shape (default: 0)")
    parser.add_argument("--resolution", type=integer(MIN_RESOLUTION), default=DEFAULT_RESOLUTION, metavar="N",
                        help=f"marching cubes' grid samples per axis, at least {MIN_RESOLUTION} "
                             f"(default: {DEFAULT_RESOLUTION}, about 2,000 triangles a shape)")
    parser.add_argument("--families", type=integer(0), default=0, metavar="K",
                        help="K families of shapes, each shape a variation of its family's recipe "
                             "(default: 0, every shape drawn on its own)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_overwrite_option(parser)
    parser.set_defaults(run=_shapes)


def _shapes(args: argparse.Namespace) -> int:
    from fastsdf.geometry.random_shapes import random_shape_paths, write_random_shapes

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"OUT_DIR is not a folder: {out}")
    refuse_to_overwrite(random_shape_paths(out, args.count, args.start), args.overwrite)
    paths = write_random_shapes(out, args.count, args.seed, args.resolution, args.start, families=args.families,
                                overwrite=args.overwrite, progress=progress_enabled(args.quiet))
    print(f"{len(paths)} shapes written: {paths[0]} .. {paths[-1].name}")
    return 0
