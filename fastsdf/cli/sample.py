"""``fastsdf sample``: DeepSDF training data for a mesh or a folder of meshes."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from fastsdf.cli.common import UsageError, integer, progress_enabled, seed

__all__ = ["add_parser"]


_SAMPLE_HELP = """\
Write DeepSDF training data: for each mesh, OUT_DIR/<stem>.npz with `pos` and `neg` float32 (N, 4)
arrays of (x, y, z, sdf) rows, sdf > 0 in `pos` and sdf <= 0 in `neg` (negative inside), as
DeepSDF's preprocessing writes them, plus `offset` and `scale` (original -> normalised:
(p + offset) * scale, DeepSDF's NormalizationParameters convention). The defaults are DeepSDF's:
470,000 near-surface points (surface points plus Gaussian noise, half with std 0.0707 and half with
std 0.0224, i.e. variances 0.005 and 0.0005) and 30,000 uniform points in [-1, 1]^3, after
centring the mesh and scaling it into the sphere of radius 1/1.03. Existing outputs are skipped,
never overwritten (unless --overwrite), so a rerun finishes a folder; a mesh that fails is reported
at the end (exit status 1) and the rest go on.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    from fastsdf.geometry.mesh_io import MESH_SUFFIXES
    from fastsdf.geometry.sampling import DEEPSDF_N_NEAR, DEEPSDF_N_UNIFORM

    sample = sub.add_parser("sample", help="sample signed distances of meshes into DeepSDF .npz files",
                            description=_SAMPLE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    sample.add_argument("mesh", metavar="MESH_OR_FOLDER",
                        help=f"a mesh file, or a folder whose {' '.join(MESH_SUFFIXES)} files are all sampled "
                             "(not its subfolders)")
    sample.add_argument("out", metavar="OUT_DIR", help="folder for the .npz files (created if missing)")
    sample.add_argument("--n-uniform", type=integer(0), default=DEEPSDF_N_UNIFORM, metavar="N",
                        help=f"points uniform in [-1, 1]^3 (default: {DEEPSDF_N_UNIFORM:,}, DeepSDF's)")
    sample.add_argument("--n-near", type=integer(0), default=DEEPSDF_N_NEAR, metavar="N",
                        help=f"points near the surface (default: {DEEPSDF_N_NEAR:,}, DeepSDF's)")
    sample.add_argument("--near-std", type=_stds, default=None, metavar="S[,S2]",
                        help="standard deviation of the near-surface noise, in normalised units: one "
                             "value, or two for half of the points each (default: 0.0707,0.0224, "
                             "DeepSDF's variances 0.005 and 0.0005)")
    sample.add_argument("--n-surface", type=integer(0), default=0, metavar="N",
                        help="also store N points on the surface and their normals as `surface_points` "
                             "and `surface_normals` (default: 0)")
    sample.add_argument("--seed", type=seed, default=None, metavar="S",
                        help="make the output reproducible: each mesh draws from a stream seeded by S and "
                             "its file name (default: fresh randomness)")
    sample.add_argument("--normalize", choices=("sphere", "cube", "none"), default="sphere",
                        help="sphere: DeepSDF's unit sphere of radius 1/1.03; cube: longest side in "
                             "[-1/1.03, 1/1.03]; none: use the mesh as it is, which should then lie in [-1, 1]^3 "
                             "(default: sphere)")
    sample.add_argument("--sign", choices=("winding", "pseudonormal", "exact_winding"), default="winding",
                        help="how fastsdf.MeshSDF tells inside from outside (default: winding)")
    sample.add_argument("--quiet", action="store_true", help="no progress bar")
    sample.add_argument("--overwrite", action="store_true", help="replace existing outputs instead of skipping them")
    sample.set_defaults(run=_sample)


def _stds(text: str) -> tuple[float, ...]:
    from fastsdf.geometry.sampling import near_stds

    try:
        return near_stds([float(v) for v in text.split(",")])
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be one or two positive numbers like 0.07 or 0.07,0.02, "
                                         f"got {text!r}") from None


def _sample(args: argparse.Namespace) -> int:
    import zlib

    import numpy as np

    from fastsdf.geometry.mesh_io import MESH_SUFFIXES
    from fastsdf.geometry.samples_npz import save_npz
    from fastsdf.geometry.sampling import DEEPSDF_NEAR_STD
    from fastsdf._progress import progress_bar

    if args.n_uniform + args.n_near + args.n_surface == 0:
        raise UsageError("nothing to sample: --n-uniform, --n-near and --n-surface are all 0")
    source, out_dir = Path(args.mesh), Path(args.out)
    if not source.exists():
        raise FileNotFoundError(f"no such file or folder: {source}")
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"OUT_DIR is not a folder: {out_dir}")
    if source.is_dir():
        meshes = sorted(p for p in source.iterdir()
                        if p.suffix.lower() in MESH_SUFFIXES and p.is_file() and not p.name.startswith("."))
        if not meshes:
            raise FileNotFoundError(f"no mesh files ({', '.join(MESH_SUFFIXES)}) in {source}")
    else:
        meshes = [source]

    options = {"n_uniform": args.n_uniform, "n_near": args.n_near, "n_surface": args.n_surface,
               "near_std": args.near_std or DEEPSDF_NEAR_STD, "sign": args.sign}
    failures: list[str] = []
    written = skipped = 0
    claimed: dict[str, Path] = {}
    bar = progress_bar(progress_enabled(args.quiet), len(meshes), 0, "fastsdf sample", "mesh", meshes)
    say = print if bar is None else bar.write
    try:
        for path in meshes if bar is None else bar:
            target = out_dir / f"{path.stem}.npz"
            if path.stem in claimed:
                failures.append(f"{path}: same output {target.name} as {claimed[path.stem].name}; rename one")
                continue
            claimed[path.stem] = path
            if target.exists() and not args.overwrite:
                say(f"skip {path.name}: {target} exists")
                skipped += 1
                continue
            seed = None if args.seed is None else np.random.SeedSequence([args.seed, zlib.crc32(path.stem.encode())])
            start = time.perf_counter()
            try:
                samples = _sample_one(path, args.normalize, seed, options)
                save_npz(target, samples)
            except Exception as exc:  # noqa: BLE001 - one bad mesh must not stop the others
                message = str(exc) if isinstance(exc, (ValueError, OSError)) else f"{type(exc).__name__}: {exc}"
                failures.append(message if str(path) in message else f"{path}: {message}")
                continue
            written += 1
            say(f"wrote {target} ({len(samples.pos()):,} pos, {len(samples.neg()):,} neg) "
                f"in {time.perf_counter() - start:.1f} s")
    finally:
        if bar is not None:
            bar.close()
    print(f"{written} written, {skipped} skipped (output exists), {len(failures)} failed")
    for line in failures:
        print(f"fastsdf sample: failed: {line}", file=sys.stderr)
    return 1 if failures else 0


def _sample_one(path: Path, normalize: str, seed: Any, options: dict[str, Any]) -> Any:
    """Loads, normalises and samples one mesh; the samples carry the normalisation transform."""
    import dataclasses

    from fastsdf.geometry import normalization, sampling
    from fastsdf.geometry.mesh_io import load_mesh

    mesh = load_mesh(path)
    if normalize == "none":
        transform = normalization.NormalizationTransform.identity()
    else:
        mesh, transform = normalization.normalize(mesh, method=normalize)
    samples = sampling.sample_sdf(mesh, seed=seed, **options)
    return dataclasses.replace(samples, transform=transform)
