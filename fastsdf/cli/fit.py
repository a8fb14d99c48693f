"""``fastsdf fit``: fit a network to a mesh, then mesh it, score it and picture it.

The pipeline (``run``) is also the second half of ``fastsdf demo``.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path
from typing import Any

from fastsdf.cli.common import (UsageError, add_overwrite_option, integer, mesh_method, number, positive,
                                positive_int, progress_enabled, refuse_to_overwrite, relu_network, resolution, seed,
                                write_json)

__all__ = ["DEFAULT_FREQUENCIES", "NETWORK_CHOICES", "OUTPUTS", "add_parser", "check_outputs", "network_builder",
           "run"]

OUTPUTS = ("model.pt", "mesh.ply", "metrics.json", "training.png", "render.png", "mesh.png")
NETWORK_CHOICES = ("siren", "relu", "pe")
DEFAULT_FREQUENCIES = 10  # NeRF's L for positions

_HELP = """\
Fit a network to a mesh (the defaults: fastsdf.fit's, a 3 -> 128 x 3 -> 1 SIREN trained with DeepSDF's
clamped L1 on fresh samples, about a minute on 2 cores; --network relu or pe for the baselines the
literature compares it with), then write into OUT:

  model.pt        the trained model (fastsdf.load_model(OUT) reads it; points in the mesh's units)
  mesh.ply        its zero level set, marched at --resolution^3 over the normalised unit cube
  metrics.json    occupancy F1 near the surface and in the volume, IoU, Chamfer-L1/L2, F-score@1%,
                  normal consistency, training time, peak memory, model size
  training.png    the loss and learning-rate curves
  render.png      the learned surface, sphere-traced (normals from the network's gradient)
  mesh.png        the extracted mesh, rendered

While it trains, OUT/checkpoint.pt holds its progress: if the run is killed, the same command
resumes it. The checkpoint is removed once everything above is written; a finished run's outputs
are then never replaced without --overwrite.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    from fastsdf.training.fit import DEFAULT_BATCH, DEFAULT_LEARNING_RATE, LOSSES

    fit = sub.add_parser("fit", help="fit a network to a mesh; write the model, its mesh, metrics and pictures",
                         description=_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    fit.add_argument("mesh", metavar="MESH", help="a mesh file trimesh reads")
    fit.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    add_training_options(fit, LOSSES, DEFAULT_BATCH, DEFAULT_LEARNING_RATE)
    fit.add_argument("--resolution", type=resolution, default=256, metavar="N",
                     help="grid samples per axis for mesh.ply (default: 256)")
    fit.add_argument("--quiet", action="store_true", help="no progress bars")
    add_overwrite_option(fit)
    fit.set_defaults(run=_fit)


def add_training_options(parser: argparse.ArgumentParser, losses: tuple[str, ...], batch: int, rate: float) -> None:
    from fastsdf.nn.fourier_features import DEFAULT_FEATURES, MAX_FREQUENCIES, MAX_SIGMA

    parser.add_argument("--time-budget", type=positive, default=None, metavar="SECONDS",
                        help="stop after this many seconds of training")
    parser.add_argument("--steps", type=positive_int, default=None, metavar="N",
                        help="stop after N steps (default without --time-budget: 3000)")
    parser.add_argument("--loss", choices=losses, default="sdf_l1", help="training loss (default: sdf_l1)")
    parser.add_argument("--network", choices=NETWORK_CHOICES, default="siren",
                        help="siren: fastsdf.SirenMLP (default); relu: fastsdf.ReluMLP, the input fed again into "
                             "its middle layer (DeepSDF's skip; --no-skip for none); pe: the same ReLU MLP behind "
                             "NeRF's positional encoding (--frequencies) or Gaussian Fourier features (--sigma)")
    parser.add_argument("--frequencies", type=integer(1, MAX_FREQUENCIES), default=None, metavar="L",
                        help=f"--network pe: NeRF's positional encoding with L frequencies, 1 .. {MAX_FREQUENCIES} "
                             f"(default: {DEFAULT_FREQUENCIES})")
    parser.add_argument("--sigma", type=number(0.0, MAX_SIGMA, low_open=True), default=None, metavar="S",
                        help="--network pe: Gaussian random Fourier features of scale S (Tancik et al.) instead")
    parser.add_argument("--features", type=positive_int, default=None, metavar="M",
                        help=f"with --sigma: the number of Gaussian features (default: {DEFAULT_FEATURES})")
    parser.add_argument("--no-skip", action="store_true",
                        help="--network relu or pe: no skip connection of the input into the middle layer")
    parser.add_argument("--width", type=positive_int, default=128, help="hidden features (default: 128)")
    parser.add_argument("--layers", type=positive_int, default=3, help="hidden-to-hidden layers (default: 3)")
    parser.add_argument("--batch-size", type=positive_int, default=batch, metavar="N",
                        help=f"points per step (default: {batch})")
    parser.add_argument("--learning-rate", type=positive, default=rate, metavar="LR",
                        help=f"Adam's initial learning rate, decayed by a cosine (default: {rate:g})")
    parser.add_argument("--seed", type=seed, default=None,
                        help="make the run reproducible (with --steps): the same model, bit for bit, on this machine")


def network_builder(args: argparse.Namespace) -> Any:
    """A function of no arguments that builds the network ``args`` ask for (``fit`` calls it after
    seeding torch, so that --seed fixes the initialisation too); UsageError for options that do
    not go together."""
    import functools

    from fastsdf.nn import SirenMLP

    encoding_options = [name for name in ("frequencies", "sigma", "features") if getattr(args, name) is not None]
    if args.network != "pe" and encoding_options:
        raise UsageError(f"--{encoding_options[0]} is for --network pe")
    if args.network == "siren" and args.no_skip:
        raise UsageError("--no-skip is for --network relu or pe (a SIREN has no skip connection)")
    if args.frequencies is not None and args.sigma is not None:
        raise UsageError("--frequencies (positional encoding) and --sigma (Gaussian features) exclude each other")
    if args.features is not None and args.sigma is None:
        raise UsageError("--features needs --sigma (it counts Gaussian features)")
    if args.network == "siren":
        return functools.partial(SirenMLP, 3, args.width, args.layers, 1, double_backward=False)
    encoding = None
    if args.network == "pe":
        encoding = {"in_features": 3, "frequencies": args.frequencies, "sigma": args.sigma, "features": args.features}
        if args.sigma is None and args.frequencies is None:
            encoding["frequencies"] = DEFAULT_FREQUENCIES

    return functools.partial(relu_network, args.width, args.layers, skip=not args.no_skip, encoding=encoding)


def _fit(args: argparse.Namespace) -> int:
    mesh = Path(args.mesh)
    if not mesh.is_file():
        raise FileNotFoundError(f"no such mesh file: {mesh}")
    run(mesh, Path(args.out), args)
    return 0


def check_outputs(out: Path, overwrite: bool, extra: tuple[str, ...] = ()) -> None:
    """Refuses (FileExistsError) a folder holding a finished run's outputs, unless ``overwrite``;
    a folder with a checkpoint holds an unfinished run, which resumes."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out is not a folder: {out}")
    if not (out / "checkpoint.pt").exists():
        refuse_to_overwrite([out / name for name in (*extra, *OUTPUTS)], overwrite)


def run(mesh_path: Path, out: Path, args: argparse.Namespace) -> dict[str, Path]:
    """Fits, saves, extracts, scores and pictures; prints where everything went; returns the paths."""
    import fastsdf
    from fastsdf.geometry.mesh_io import load_mesh
    from fastsdf.io import write_ply
    from fastsdf.metrics import model_size_kb, occupancy_metrics, surface_metrics
    from fastsdf.plots import plot_history
    from fastsdf.render import render_mesh, render_sdf
    from fastsdf.training.fit import fit

    show = progress_enabled(args.quiet)
    network = network_builder(args)
    reference = load_mesh(mesh_path)  # fails here, before anything is written, if unreadable
    check_outputs(out, args.overwrite)
    paths = {name: out / name for name in OUTPUTS}
    checkpoint = out / "checkpoint.pt"
    if checkpoint.exists():
        print(f"resuming from {checkpoint}")
    model, history = fit(reference, network, loss=args.loss, steps=args.steps, time_budget=args.time_budget,
                         batch_size=args.batch_size, learning_rate=args.learning_rate, seed=args.seed,
                         device="cpu", checkpoint=checkpoint, progress=show)
    print(f"fitted {mesh_path.name}: {history['steps']:,} steps in {history['training_seconds']:.1f} s "
          f"(+{history['sampling_seconds']:.1f} s sampling), final loss {history['loss'][-1]:.3g}")
    model.save(paths["model.pt"])

    frame = model.bounds()
    start = time.perf_counter()
    verts, faces = fastsdf.extract_mesh(model, args.resolution, bounds=frame, method=mesh_method(model), progress=show,
                                        device="cpu")
    verts, faces = verts.numpy(), faces.numpy()
    extract_seconds = time.perf_counter() - start
    write_ply(paths["mesh.ply"], verts, faces)

    metrics: dict[str, Any] = occupancy_metrics(model.sdf, reference, model.transform, seed=args.seed)
    tau = 0.01 / model.transform.scale  # 1% of the normalised unit sphere
    metrics.update(surface_metrics((verts, faces), reference, tau=tau, seed=args.seed))
    metrics.update(training_seconds=history["training_seconds"], sampling_seconds=history["sampling_seconds"],
                   steps=history["steps"], extract_seconds=extract_seconds, resolution=args.resolution,
                   peak_memory_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   model_size_kb=model_size_kb(model.network), mesh=str(mesh_path), loss=args.loss,
                   network=args.network,
                   vertices=int(len(verts)), triangles=int(len(faces)))
    write_json(paths["metrics.json"], metrics)

    plot_history(history, paths["training.png"], title=f"fastsdf fit {mesh_path.name} ({args.network}, {args.loss})")
    render_sdf(model, paths["render.png"], bounds=frame, distance=model.kind == "sdf")
    render_mesh(verts, faces, paths["mesh.png"])
    print(f"  occupancy F1 near the surface {metrics['f1_near']:.4f}, in the volume {metrics['f1_volume']:.4f}; "
          f"Chamfer-L1 {metrics['chamfer_l1']:.3g}, F-score@1% {metrics['f_score']:.4f}")
    for name, path in paths.items():
        print(f"  {name + ':':14s}{path.resolve()}")
    checkpoint.unlink(missing_ok=True)
    return paths
