"""``fastsdf sample``: DeepSDF training data for a mesh or a folder of meshes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fastsdf.cli.common import UsageError, integer, positive_int, progress_enabled, seed

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
at the end (exit status 1) and the rest go on (one that kills its worker process is tried once more,
then reported with how the process died). Several meshes are sampled at once (--workers), on a local
process pool, or on Ray when a cluster is named (--address or RAY_ADDRESS; pip install
'fastsdf[distributed]') or --engine ray asks for it; --seed gives the same files whichever runs them.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    from fastsdf._parallel import ENGINES
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
    sample.add_argument("--workers", type=positive_int, default=None, metavar="N",
                        help="meshes sampled at once (default: this machine's CPUs, or the Ray cluster's "
                             "with --address); 1 samples them one after another in this process")
    sample.add_argument("--threads", type=positive_int, default=None, metavar="T",
                        help="OpenMP threads per mesh when --workers > 1 (default: the CPUs divided by --workers)")
    sample.add_argument("--engine", choices=ENGINES, default="auto",
                        help="where the meshes run: auto (Ray when --address or RAY_ADDRESS names a cluster, "
                             "else a local process pool; one worker runs in this process), serial, pool or "
                             "ray (a local Ray instance without --address) (default: auto)")
    sample.add_argument("--address", default=None, metavar="ADDRESS",
                        help="an existing Ray cluster, as ray.init(address=...) takes it: auto, or "
                             "ray://HOST:10001 (default: RAY_ADDRESS if set; none: the meshes run on this machine)")
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
    from fastsdf.geometry.dataset_sampling import sample_meshes
    from fastsdf.geometry.mesh_io import MESH_SUFFIXES
    from fastsdf.geometry.sampling import DEEPSDF_NEAR_STD

    if args.n_uniform + args.n_near + args.n_surface == 0:
        raise UsageError("nothing to sample: --n-uniform, --n-near and --n-surface are all 0")
    if args.address is not None and args.engine not in ("auto", "ray"):
        raise UsageError(f"--address is a Ray cluster's: it needs --engine ray, not {args.engine}")
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

    report = sample_meshes(meshes, out_dir, n_uniform=args.n_uniform, n_near=args.n_near,
                           near_std=args.near_std or DEEPSDF_NEAR_STD, n_surface=args.n_surface,
                           normalize=args.normalize, sign=args.sign, seed=args.seed, overwrite=args.overwrite,
                           workers=args.workers, threads=args.threads, engine=args.engine, address=args.address,
                           progress=progress_enabled(args.quiet), log=print)
    print(f"{len(report.written)} written, {len(report.skipped)} skipped (output exists), "
          f"{len(report.failures)} failed")
    for line in report.failures:
        print(f"fastsdf sample: failed: {line}", file=sys.stderr)
    return 1 if report.failures else 0
