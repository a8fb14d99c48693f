"""``fastsdf demo``: the whole job on the bundled mesh (Spot): sample, fit, extract, evaluate, render."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from fastsdf.cli import fit
from fastsdf.cli.common import add_overwrite_option, positive, positive_int, resolution, seed

__all__ = ["add_parser", "bundled_mesh"]


def bundled_mesh() -> Path:
    return Path(__file__).resolve().parent.parent / "data" / "spot.obj"


def add_parser(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser(
        "demo", help="the whole job on a bundled mesh: sample, fit, extract, evaluate, render",
        description="Samples the bundled mesh (Spot, CC0) into DeepSDF's .npz layout, fits a SIREN to it "
                    "(60 s of training by default), meshes it, scores it against the mesh and draws pictures; "
                    "prints where everything went. About 75 s on 2 cores.")
    demo.add_argument("--out", default="outputs/demo", help="output folder (default: outputs/demo)")
    demo.add_argument("--time-budget", type=positive, default=60.0, metavar="SECONDS",
                      help="seconds of training (default: 60)")
    demo.add_argument("--steps", type=positive_int, default=None, metavar="N", help="stop after N steps instead")
    demo.add_argument("--resolution", type=resolution, default=256, metavar="N",
                      help="grid samples per axis of the extracted mesh (default: 256)")
    demo.add_argument("--seed", type=seed, default=0, help="random seed (default: 0)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    add_overwrite_option(demo)
    demo.set_defaults(run=_demo)


def _demo(args: argparse.Namespace) -> int:
    from fastsdf.geometry.mesh_io import load_mesh
    from fastsdf.geometry.normalization import normalize
    from fastsdf.geometry.samples_npz import save_npz
    from fastsdf.geometry.sampling import sample_sdf
    from fastsdf.training.fit import DEFAULT_BATCH, DEFAULT_LEARNING_RATE

    out = Path(args.out)
    fit.check_outputs(out, args.overwrite)
    mesh_path = bundled_mesh()
    start = time.perf_counter()
    npz = out / "spot.npz"
    if npz.exists() and not args.overwrite:  # as fastsdf sample does; the fit below trains on the mesh
        print(f"skip sampling: {npz.resolve()} exists")
    else:
        mesh, transform = normalize(load_mesh(mesh_path))
        samples = sample_sdf(mesh, n_uniform=30_000, n_near=470_000, n_surface=10_000, seed=args.seed)
        samples.transform = transform
        save_npz(npz, samples)
        print(f"sampled {mesh_path.name}: {len(samples):,} points with signed distances in "
              f"{time.perf_counter() - start:.1f} s -> {npz.resolve()}")
    options = argparse.Namespace(time_budget=None if args.steps else args.time_budget, steps=args.steps,
                                 loss="sdf_l1", network="siren", frequencies=None, sigma=None,
                                 features=None, no_skip=False, width=128, layers=3, batch_size=DEFAULT_BATCH,
                                 learning_rate=DEFAULT_LEARNING_RATE,
                                 seed=args.seed, resolution=args.resolution, quiet=args.quiet,
                                 overwrite=args.overwrite)
    fit.run(mesh_path, out, options)
    print(f"done in {time.perf_counter() - start:.0f} s")
    return 0
