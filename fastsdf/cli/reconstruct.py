"""``fastsdf reconstruct``: codes for new shapes under a trained auto-decoder, meshed (and interpolated)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from fastsdf.cli.common import (add_overwrite_option, integer, positive, positive_int, progress_enabled,
                                refuse_to_overwrite, resolution, seed, write_json)

__all__ = ["add_parser"]

_HELP = """\
Find the latent code of each shape in SAMPLES (DeepSDF .npz files, or folders of them) under the
frozen decoder of MODEL (`fastsdf train-deepsdf`'s output), then write into OUT:

  NAME.ply              the reconstructed surface, in the shape's own coordinates when its samples
                        recorded the normalisation (fastsdf sample's do)
  NAME.png              a render of it
  reconstruction.json   per shape: its code, final loss, seconds, the samples used
  interpolation_K.ply   with --interpolate N: N shapes whose codes run from the first shape's to the
                        last one's (normalised frame)

--partial DIRECTION keeps only the samples on the side facing DIRECTION (e.g. +z): shape completion
from a partial observation.
"""

_DIRECTIONS = {f"{sign}{axis}": tuple((1.0 if sign == "+" else -1.0) * (i == a) for i in range(3))
               for a, axis in enumerate("xyz") for sign in "+-"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    from fastsdf.training import reconstruct as rc

    parser = sub.add_parser("reconstruct", help="latent codes of new shapes under a trained auto-decoder, meshed",
                            description=_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL", help="fastsdf train-deepsdf's output (a folder or model.pt)")
    parser.add_argument("samples", nargs="+", metavar="SAMPLES", help="DeepSDF .npz files or folders of them")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument("--recipe", choices=sorted(rc.RECIPES), default="fast",
                        help="fast (default): 200 Adam iterations of 1,024 points at 2e-2, the rate divided by 10 "
                             "halfway, fastsdf's clamped L1 + 1e-4 ||z||^2; deepsdf: DeepSDF's reconstruct.py, 800 "
                             "iterations of 8,000 points at 5e-3 (divided by 10 halfway), prediction and target "
                             "clamped to 0.1, L1 + 1e-4 mean(z^2), fp32: the paper's numbers, minutes per shape")
    parser.add_argument("--iterations", type=positive_int, default=None, metavar="N",
                        help="Adam iterations per shape (default: the recipe's)")
    parser.add_argument("--samples-per-iteration", type=positive_int, default=None, metavar="N",
                        help="points per iteration, half inside (default: the recipe's)")
    parser.add_argument("--learning-rate", type=positive, default=None, metavar="LR",
                        help="Adam's rate, divided by 10 halfway (default: the recipe's)")
    parser.add_argument("--partial", choices=sorted(_DIRECTIONS), default=None, metavar="DIRECTION",
                        help="use only the samples facing DIRECTION, one of " + ", ".join(sorted(_DIRECTIONS)))
    parser.add_argument("--resolution", type=resolution, default=128, metavar="N",
                        help="grid samples per axis for the meshes (default: 128)")
    parser.add_argument("--interpolate", type=integer(2), default=None, metavar="N",
                        help="also mesh N shapes between the first and the last reconstructed one (N >= 2)")
    parser.add_argument("--seed", type=seed, default=0, help="random seed (default: 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_overwrite_option(parser)
    parser.set_defaults(run=_reconstruct)


def _sample_files(items: list[str]) -> list[Path]:
    files: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            found = sorted(item.glob("*.npz"))
            if not found:
                raise ValueError(f"{item} holds no .npz sample files (make them with `fastsdf sample`)")
            files += found
        elif item.is_file():
            files.append(item)
        else:
            raise FileNotFoundError(f"no such sample file or folder: {item}")
    stems = [f.stem for f in files]
    if len(set(stems)) != len(stems):
        raise ValueError("two sample files share a name; their outputs would overwrite each other")
    return files


def _mesh(shape: Any, path: Path, picture: Path | None, grid: int) -> int:
    import fastsdf
    from fastsdf.io import write_ply
    from fastsdf.render import render_mesh

    verts, faces = fastsdf.extract_mesh(shape, grid, bounds=shape.bounds(), method="sparse", device="cpu")
    if len(faces) == 0:
        raise ValueError(f"the shape for {path.name} has no surface in its unit cube "
                         "(the code does not describe a shape)")
    verts, faces = verts.numpy(), faces.numpy()
    write_ply(path, verts, faces)
    if picture is not None:
        render_mesh(verts, faces, picture)
    return len(faces)


def _reconstruct(args: argparse.Namespace) -> int:
    from fastsdf.cli.common import load_model_of
    from fastsdf.geometry.samples_npz import load_npz
    from fastsdf.training.autodecoder import AutoDecoder
    from fastsdf._progress import progress_bar
    from fastsdf.training.reconstruct import partial_view, reconstruct

    model = load_model_of(args.model, AutoDecoder, "a DeepSDF auto-decoder (fastsdf train-deepsdf's output)")
    files = _sample_files(args.samples)
    observed = {f.stem: load_npz(f) for f in files}  # every file read before any work: a bad one fails first
    if args.partial is not None:
        observed = {name: partial_view(s, _DIRECTIONS[args.partial]) for name, s in observed.items()}
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out is not a folder: {out}")
    refuse_to_overwrite([out / f"{name}.{suffix}" for name in observed for suffix in ("ply", "png")] +
                        [out / f"interpolation_{k}.ply" for k in range(args.interpolate or 0)] +
                        [out / "reconstruction.json"], args.overwrite)

    summary: dict[str, Any] = {"model": str(Path(args.model).resolve()), "partial": args.partial,
                               "recipe": args.recipe, "shapes": {}}
    results = []
    bar = progress_bar(progress_enabled(args.quiet), len(observed), 0, "fastsdf reconstruct", "shape")
    for name, samples in observed.items():
        result = reconstruct(model, samples, recipe=args.recipe, iterations=args.iterations,
                             samples_per_iteration=args.samples_per_iteration, learning_rate=args.learning_rate,
                             seed=args.seed)
        summary.setdefault("settings", dataclasses.asdict(result.recipe))
        triangles = _mesh(result.shape, out / f"{name}.ply", out / f"{name}.png", args.resolution)
        results.append(result)
        summary["shapes"][name] = {"seconds": result.seconds, "loss": result.loss[-1], "samples": len(samples),
                                   "triangles": triangles, "code": result.code.tolist()}
        if bar is not None:
            bar.update(1)
        print(f"{name}: loss {result.loss[-1]:.3g} in {result.seconds:.1f} s, {triangles:,} triangles "
              f"-> {(out / f'{name}.ply').resolve()}")
    if bar is not None:
        bar.close()
    if args.interpolate:
        shapes = model.interpolate(results[0].code, results[-1].code, args.interpolate)
        for k, shape in enumerate(shapes):
            _mesh(shape, out / f"interpolation_{k}.ply", None, args.resolution)
        print(f"interpolation: {args.interpolate} meshes -> {(out / 'interpolation_0.ply').resolve()} ...")
    write_json(out / "reconstruction.json", summary)
    print(f"  reconstruction.json: {(out / 'reconstruction.json').resolve()}")
    return 0
