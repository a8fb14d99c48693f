"""``fastsdf generate``: new shapes from a latent diffusion model, meshed, and a picture of them all."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from fastsdf.cli.common import (UsageError, add_overwrite_option, number, positive_int, progress_enabled,
                                refuse_to_overwrite, resolution, seed, write_json)

__all__ = ["add_parser"]

DEFAULT_STEPS = 50

_HELP = """\
Sample COUNT new latent codes from MODEL (`fastsdf train-diffusion`'s output) by DDIM, decode each
with the model's auto-decoder or shape VAE and mesh it (sparse extraction), then write into OUT:

  shape_K.ply       the K-th generated shape, in the normalised frame ([-1, 1]^3)
  grid.png          a picture of them all
  generation.json   the settings, the codes, each mesh's triangles, the sampling and meshing times

A code whose shape has no surface in the frame gets no mesh (generation.json says so) and a blank
tile. The same --seed gives the same shapes; --eta 0 (the default) samples deterministically from
the starting noise, --eta 1 with --steps T is DDPM's ancestral sampling.

--condition POINTS (a model trained with `fastsdf train-diffusion --partial-clouds`): generate shapes
that fit a point cloud, full or partial (one side of a scan): its points (fastsdf sample's .npz
surface_points, an .npz or .npy `points` array, or a .ply/.obj... whose vertices are taken), in
the normalised frame, are encoded by the model's shape VAE, and each code is sampled conditioned on
that encoding, with classifier-free guidance of weight --guidance (1: the conditional model; more
follows the cloud more closely, at some cost in variety).
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("generate", help="new shapes from a latent diffusion model, meshed",
                            description=_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL", help="fastsdf train-diffusion's output (a folder or model.pt)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument("--count", type=positive_int, required=True, metavar="N", help="shapes to generate")
    parser.add_argument("--steps", type=positive_int, default=None, metavar="S",
                        help=f"DDIM steps, at most the model's timesteps (default: {DEFAULT_STEPS}, or the "
                             "timesteps if fewer)")
    parser.add_argument("--eta", type=number(0.0), default=0.0, metavar="E",
                        help="DDIM's eta: 0 deterministic (default), 1 DDPM-like noise at every step")
    parser.add_argument("--resolution", type=resolution, default=128, metavar="N",
                        help="grid samples per axis for the meshes (default: 128)")
    parser.add_argument("--condition", default=None, metavar="POINTS",
                        help="a point cloud (.npz, .npy, .ply, ...) the shapes must fit, full or partial")
    parser.add_argument("--guidance", type=number(), default=None, metavar="W",
                        help="classifier-free guidance weight with --condition (default: 1, the conditional model)")
    parser.add_argument("--seed", type=seed, default=0, help="random seed (default: 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_overwrite_option(parser)
    parser.set_defaults(run=_generate)


def _generate(args: argparse.Namespace) -> int:
    import fastsdf
    from fastsdf._progress import progress_bar
    from fastsdf.cli.common import load_model_of
    from fastsdf.cli.complete import read_points
    from fastsdf.io import write_ply
    from fastsdf.render import render_grid
    from fastsdf.training.latent_diffusion import LatentDiffusion

    if args.guidance is not None and args.condition is None:
        raise UsageError("--guidance weighs a condition: give --condition POINTS too")
    model = load_model_of(args.model, LatentDiffusion, "a latent diffusion model (fastsdf train-diffusion's output)")
    if model.latent_model is None:
        raise ValueError(f"{args.model} holds no latent model to decode its codes")
    condition = None
    if args.condition is not None:
        points, _ = read_points(Path(args.condition))
        condition = model.encode_condition(points, seed=args.seed)
    guidance = 1.0 if args.guidance is None else args.guidance
    if args.steps is None:
        args.steps = min(DEFAULT_STEPS, model.schedule.timesteps)
    if args.steps > model.schedule.timesteps:
        raise UsageError(f"--steps must be <= {model.schedule.timesteps} (the model's timesteps), got {args.steps}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out is not a folder: {out}")
    names = [f"shape_{k:0{max(3, len(str(args.count - 1)))}d}" for k in range(args.count)]
    refuse_to_overwrite([out / f"{name}.ply" for name in names] + [out / "grid.png", out / "generation.json"],
                        args.overwrite)

    start = time.perf_counter()
    codes = model.sample(args.count, steps=args.steps, eta=args.eta, seed=args.seed, condition=condition,
                         guidance=guidance)
    sampling = time.perf_counter() - start
    print(f"sampled {args.count} codes in {sampling:.2f} s ({args.count / max(sampling, 1e-9):,.1f} codes/s, "
          f"{args.steps} DDIM steps, eta {args.eta:g})")
    meshes: list[tuple[Any, Any]] = []
    shapes: dict[str, Any] = {}
    bar = progress_bar(progress_enabled(args.quiet), args.count, 0, "fastsdf generate", "shape")
    start = time.perf_counter()
    for name, code in zip(names, codes):
        shape = model.shape(code)
        verts, faces = fastsdf.extract_mesh(shape, args.resolution, bounds=shape.bounds(), method="sparse",
                                            device="cpu")
        verts, faces = verts.numpy(), faces.numpy()
        meshes.append((verts, faces))
        shapes[name] = {"code": code.tolist(), "triangles": len(faces)}
        if len(faces):
            write_ply(out / f"{name}.ply", verts, faces)
        else:
            print(f"{name}: no surface in [-1, 1]^3 (no mesh written)")
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    meshing = time.perf_counter() - start
    render_grid(meshes, out / "grid.png")
    write_json(out / "generation.json", {
        "model": str(Path(args.model).resolve()), "count": args.count, "steps": args.steps, "eta": args.eta,
        "seed": args.seed, "resolution": args.resolution,
        "condition": None if args.condition is None else str(Path(args.condition).resolve()), "guidance": guidance,
        "sampling_seconds": sampling, "meshing_seconds": meshing,
        "shapes": shapes})
    meshed = sum(1 for s in shapes.values() if s["triangles"])
    print(f"{meshed} of {args.count} shapes meshed at {args.resolution}^3 in {meshing:.1f} s "
          f"-> {(out / names[0]).resolve()}.ply ...")
    print(f"  grid.png:        {(out / 'grid.png').resolve()}")
    print(f"  generation.json: {(out / 'generation.json').resolve()}")
    return 0
