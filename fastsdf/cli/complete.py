"""``fastsdf complete``: the shapes of point clouds, full or partial, under a trained occupancy network.

A command of its own rather than an option of ``fastsdf reconstruct``: that one optimises a latent
code against distance samples under a DeepSDF decoder; this one encodes points in one pass and
meshes logits, whose inputs, options and outputs differ.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fastsdf.cli.common import (add_overwrite_option, integer, progress_enabled, refuse_to_overwrite, resolution, seed,
                                write_json)

__all__ = ["add_parser"]

_HELP = """\
Encode each point cloud of POINTS with the occupancy network of MODEL (`fastsdf train-occupancy`'s
output) and mesh the shape it describes (marching cubes at logit 0; by default with Occupancy
Networks' multiresolution extraction, refined only where the signs change), then write into OUT:

  NAME.ply          the completed surface, in the cloud's own coordinates when its file recorded
                    the normalisation (fastsdf sample's do)
  NAME.png          a render of it
  completion.json   per shape: the points used, triangles, seconds

POINTS: fastsdf sample's .npz files (their surface_points; --n-surface when sampling), .npz or .npy
files with an (N, 3) array `points`, or point clouds or meshes trimesh reads (.ply, .obj, .off...:
their vertices), all in the model's normalised frame (fastsdf sample's .npz files are).
--partial DIRECTION keeps only the points on the side facing DIRECTION (e.g. +z): completion from
what one view sees. --points N encodes N of them drawn at random (default: as many as training
used; 0: all).
"""

_DIRECTIONS = {f"{sign}{axis}": tuple((1.0 if sign == "+" else -1.0) * (i == a) for i in range(3))
               for a, axis in enumerate("xyz") for sign in "+-"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("complete", help="mesh the shapes of point clouds under a trained occupancy network",
                            description=_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL", help="fastsdf train-occupancy's output (a folder or model.pt)")
    parser.add_argument("points", nargs="+", metavar="POINTS", help="point cloud files (.npz, .npy, .ply, ...)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument("--partial", choices=sorted(_DIRECTIONS), default=None, metavar="DIRECTION",
                        help="use only the points facing DIRECTION, one of " + ", ".join(sorted(_DIRECTIONS)))
    parser.add_argument("--points", dest="count", type=integer(0), default=None, metavar="N",
                        help="points encoded, drawn at random (default: the model's training count; 0: all)")
    parser.add_argument("--resolution", type=resolution, default=128, metavar="N",
                        help="grid samples per axis for the meshes (default: 128)")
    parser.add_argument("--method", choices=("mise", "dense"), default="mise",
                        help="mise: refined where the signs change (ONet's); dense: every grid sample (default: mise)")
    parser.add_argument("--seed", type=seed, default=0, help="random seed of the subsampling (default: 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_overwrite_option(parser)
    parser.set_defaults(run=_complete)


def read_points(path: Path) -> tuple[Any, Any]:
    """(points (N, 3), the normalisation or None) of a point cloud file (see the command's help)."""
    import numpy as np

    if not path.is_file():
        raise FileNotFoundError(f"no such point cloud file: {path}")
    suffix = path.suffix.lower()
    if suffix in (".npz", ".npy"):
        try:
            data = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ValueError(f"{path} is not a readable NumPy file: {exc}") from None
        if isinstance(data, np.ndarray):
            return data, None
        with data:
            if "surface_points" in data.files:
                from fastsdf.geometry.samples_npz import load_npz

                samples = load_npz(path)
                return samples.surface_points, samples.transform
            if "points" in data.files:
                return data["points"], None
            raise ValueError(f"{path} has neither 'surface_points' (fastsdf sample --n-surface) nor 'points' "
                             f"(it has {sorted(data.files)})")
    import trimesh

    try:
        loaded = trimesh.load(path, process=False)
    except Exception as exc:  # noqa: BLE001 - trimesh's parsers fail in many ways on a bad file
        raise ValueError(f"cannot read {path} as a point cloud: {type(exc).__name__}: {exc}") from None
    vertices = getattr(loaded, "vertices", None)
    if vertices is None:
        raise ValueError(f"cannot read {path} as a point cloud (trimesh gave {type(loaded).__name__})")
    return np.asarray(vertices), None


def _complete(args: argparse.Namespace) -> int:
    import time

    import fastsdf
    from fastsdf._progress import progress_bar
    from fastsdf.cli.common import load_model_of
    from fastsdf.io import write_ply
    from fastsdf.render import render_mesh
    from fastsdf.training.occupancy import OccupancyNetwork, partial_cloud

    model = load_model_of(args.model, OccupancyNetwork, "an occupancy network (fastsdf train-occupancy's output)")
    files = [Path(p) for p in args.points]
    if len({f.stem for f in files}) != len(files):
        raise ValueError("two point cloud files share a name; their outputs would overwrite each other")
    clouds = {f.stem: read_points(f) for f in files}  # every file read before any work: a bad one fails first
    if args.partial is not None:
        clouds = {name: (partial_cloud(p, _DIRECTIONS[args.partial]), t) for name, (p, t) in clouds.items()}
    count = model.settings.get("input_points") if args.count is None else (args.count or None)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out is not a folder: {out}")
    refuse_to_overwrite([out / f"{name}.{suffix}" for name in clouds for suffix in ("ply", "png")] +
                        [out / "completion.json"], args.overwrite)

    summary: dict[str, Any] = {"model": str(Path(args.model).resolve()), "partial": args.partial,
                               "method": args.method, "resolution": args.resolution, "shapes": {}}
    bar = progress_bar(progress_enabled(args.quiet), len(clouds), 0, "fastsdf complete", "shape")
    for name, (points, transform) in clouds.items():
        start = time.perf_counter()
        shape = model.shape(points, transform, count=count, seed=args.seed)
        verts, faces = fastsdf.extract_mesh(shape, args.resolution, bounds=shape.bounds(), method=args.method,
                                            device="cpu")
        if len(faces) == 0:
            raise ValueError(f"the shape of {name} has no surface in its unit cube (the network predicts one "
                             "side everywhere)")
        verts, faces = verts.numpy(), faces.numpy()
        write_ply(out / f"{name}.ply", verts, faces)
        render_mesh(verts, faces, out / f"{name}.png")
        seconds = time.perf_counter() - start
        summary["shapes"][name] = {"points": len(points), "encoded": count or len(points), "triangles": len(faces),
                                   "seconds": seconds}
        if bar is not None:
            bar.update(1)
        print(f"{name}: {len(points):,} points, {len(faces):,} triangles in {seconds:.1f} s "
              f"-> {(out / f'{name}.ply').resolve()}")
    if bar is not None:
        bar.close()
    write_json(out / "completion.json", summary)
    print(f"  completion.json: {(out / 'completion.json').resolve()}")
    return 0
