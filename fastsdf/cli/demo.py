"""``fastsdf demo``: the whole job on the bundled mesh (Spot): sample, fit, extract, evaluate, render;
``fastsdf demo --2d``: the 2D DeepSDF exercise: an auto-decoder fitted to a few 2D shapes, an
interpolation between two of them, and the fields drawn with their zero contours."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from fastsdf.cli import fit
from fastsdf.cli.common import (add_overwrite_option, positive, positive_int, progress_enabled, refuse_to_overwrite,
                                 resolution, seed)

__all__ = ["add_parser", "bundled_mesh"]

# The 2D demo's shapes (in [-1, 1]^2), the pair it interpolates, and its defaults: 40 s of CPU time.
_SHAPES_2D = ("circle", "rounded box", "star", "ring", "capsule", "blob")
_INTERPOLATE_2D = ("circle", "star")
_STEPS_2D = 400
_RESOLUTION_2D = 96
_SAMPLES_2D = 6000


def bundled_mesh() -> Path:
    return Path(__file__).resolve().parent.parent / "data" / "spot.obj"


def add_parser(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser(
        "demo", help="the whole job on a bundled mesh: sample, fit, extract, evaluate, render",
        description="Samples the bundled mesh (Spot, CC0) into DeepSDF's .npz layout, fits a SIREN to it "
                    "(60 s of training by default), meshes it, scores it against the mesh and draws pictures; "
                    "prints where everything went. About 75 s on 2 cores. With --2d: fits a latent-conditioned "
                    f"SIREN to {len(_SHAPES_2D)} 2D shapes at once (DeepSDF's auto-decoder), interpolates between "
                    "two of their codes and draws every field with its zero contour (40 s of CPU time).")
    demo.add_argument("--2d", dest="two_d", action="store_true",
                      help="the 2D auto-decoder demo instead (outputs: model.pt, demo2d.png)")
    demo.add_argument("--out", default=None, help="output folder (default: outputs/demo, or outputs/demo2d with --2d)")
    demo.add_argument("--time-budget", type=positive, default=60.0, metavar="SECONDS",
                      help="seconds of training (default: 60; not with --2d, which trains for a number of steps)")
    demo.add_argument("--steps", type=positive_int, default=None, metavar="N",
                      help=f"stop after N steps instead (with --2d: N steps, default {_STEPS_2D})")
    demo.add_argument("--resolution", type=resolution, default=None, metavar="N",
                      help="grid samples per axis of the extracted mesh (default: 256), or of the 2D pictures "
                           f"(default: {_RESOLUTION_2D})")
    demo.add_argument("--seed", type=seed, default=0, help="random seed (default: 0)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    add_overwrite_option(demo)
    demo.set_defaults(run=_demo)


def _demo(args: argparse.Namespace) -> int:
    if args.two_d:
        return _demo_2d(args)
    args.out = args.out or "outputs/demo"
    args.resolution = args.resolution or 256
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


def _shapes_2d() -> dict[str, object]:
    """The 2D demo's shapes, by name: analytic ones, a star polygon and some CSG."""
    import numpy as np

    from fastsdf import Capsule, Circle, PolygonSDF, Rectangle, SmoothUnion

    angles = np.linspace(0, 2 * np.pi, 10, endpoint=False) + np.pi / 2
    radii = np.where(np.arange(10) % 2, 0.35, 0.8)
    star = PolygonSDF(np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1))
    shapes = {"circle": Circle(0.6), "rounded box": Rectangle((0.7, 0.45), radius=0.15), "star": star,
              "ring": Circle(0.7) - Circle(0.35), "capsule": Capsule((-0.55, -0.35), (0.55, 0.35), 0.25),
              "blob": SmoothUnion(Circle(0.4, (-0.3, 0.0)), Circle(0.3, (0.35, 0.2)), radius=0.3)}
    assert tuple(shapes) == _SHAPES_2D
    return shapes


def _demo_2d(args: argparse.Namespace) -> int:
    from fastsdf import marching_squares, sample_sdf, train_deepsdf
    from fastsdf.geometry.grid import UNIT_BOUNDS_2D, Grid
    from fastsdf.nn import SirenMLP
    from fastsdf.plots import plot_sdf_2d
    from fastsdf.training.shapes import ShapeSamples

    out = Path(args.out or "outputs/demo2d")
    picture, model_path = out / "demo2d.png", out / "model.pt"
    refuse_to_overwrite([picture, model_path], args.overwrite)
    steps = args.steps or _STEPS_2D
    grid = Grid(args.resolution or _RESOLUTION_2D, UNIT_BOUNDS_2D, dim=2)
    points = grid.points(0, 0, grid.layer_points * grid.resolution[0])
    start = time.perf_counter()
    shapes = _shapes_2d()
    outlines, samples = {}, []
    for k, (name, shape) in enumerate(shapes.items()):
        # Every shape's outline, traced by marching squares on a fine grid, is where the near
        # samples start; their distances come from the shape itself.
        fine = Grid(257, UNIT_BOUNDS_2D, dim=2)
        field = shape(fine.points(0, 0, 257 * 257)).reshape(257, 257)
        outlines[name] = marching_squares(field, 0.0, fine.step, fine.lo)
        samples.append(sample_sdf(outlines[name], n_uniform=_SAMPLES_2D // 4, n_near=_SAMPLES_2D - _SAMPLES_2D // 4,
                                  near_std=(0.02, 0.1), seed=args.seed + k, sdf=shape))
    decoder = SirenMLP(2, 64, 2, 1, latent_features=16)
    model, history = train_deepsdf(ShapeSamples(list(shapes), samples), decoder, epochs=steps, latent_size=16,
                                   shapes_per_batch=len(shapes), samples_per_shape=512, learning_rate=1e-3,
                                   code_learning_rate=1e-2, decay_every=max(1, steps // 2), seed=args.seed,
                                   device="cpu", progress=progress_enabled(args.quiet), num_workers=0)
    model.save(model_path)
    print(f"trained on {len(shapes)} 2D shapes for {steps} steps in {time.perf_counter() - start:.1f} s "
          f"(final loss {history['loss'][-1]:.4f}) -> {model_path.resolve()}")
    res = grid.resolution
    fields = [model.shape(name).sdf(points).reshape(res) for name in shapes]
    fields += [f.sdf(points).reshape(res) for f in model.interpolate(*_INTERPOLATE_2D, 5)]
    titles = list(shapes) + [f"{_INTERPOLATE_2D[0]} -> {_INTERPOLATE_2D[1]} {t / 4:.2f}" for t in range(5)]
    references = [outlines[name] for name in shapes] + [outlines[_INTERPOLATE_2D[0]], None, None, None,
                                                         outlines[_INTERPOLATE_2D[1]]]
    plot_sdf_2d(fields, picture, UNIT_BOUNDS_2D, titles, columns=max(len(shapes), 5), outlines=references)
    print(f"drew the fitted fields (zero contour in black, the true outline dashed) and the interpolation "
          f"{_INTERPOLATE_2D[0]} -> {_INTERPOLATE_2D[1]} -> {picture.resolve()}")
    print(f"done in {time.perf_counter() - start:.0f} s")
    return 0
