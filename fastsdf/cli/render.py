"""``fastsdf render``: a PNG of a saved model (sphere-traced) or of a mesh file."""

from __future__ import annotations

import argparse
from pathlib import Path

from fastsdf.cli.common import add_overwrite_option, integer, load_fitted, number, refuse_to_overwrite

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    render = sub.add_parser("render", help="draw a saved model (sphere tracing) or a mesh file as a PNG")
    render.add_argument("source", metavar="MODEL_OR_MESH",
                        help="a model file or folder (fastsdf fit's), or a mesh file trimesh reads")
    render.add_argument("--out", required=True, metavar="PNG", help="the picture to write")
    render.add_argument("--size", type=integer(16, 8192), default=512,
                        help="pixels per side, 16 to 8192 (default: 512)")
    render.add_argument("--azimuth", type=number(), default=35.0, help="degrees around the up axis (default: 35)")
    render.add_argument("--elevation", type=number(-90.0, 90.0), default=25.0,
                        help="degrees above the horizon, -90 to 90 (default: 25)")
    render.add_argument("--up", choices=("x", "y", "z"), default="y",
                        help="the axis drawn upwards; the azimuth turns around it (default: y, as in OBJ)")
    add_overwrite_option(render)
    render.set_defaults(run=_render)


def _render(args: argparse.Namespace) -> int:
    import numpy as np

    from fastsdf.render import render_mesh, render_sdf

    source, out = Path(args.source), Path(args.out)
    view = {"size": args.size, "azimuth": args.azimuth, "elevation": args.elevation, "up": args.up}
    if source.is_dir() or source.suffix == ".pt":
        model = load_fitted(source)
        refuse_to_overwrite([out], args.overwrite)
        frame = model.bounds()
        render_sdf(model, out, bounds=frame, distance=model.kind == "sdf", **view)
    else:
        from fastsdf.geometry.mesh_io import load_mesh

        mesh = load_mesh(source)
        refuse_to_overwrite([out], args.overwrite)
        render_mesh(np.asarray(mesh.vertices), np.asarray(mesh.faces), out, **view)
    print(f"wrote {out.resolve()}")
    return 0
