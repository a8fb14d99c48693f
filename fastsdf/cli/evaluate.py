"""``fastsdf eval``: score a saved model against a mesh."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fastsdf.cli.common import (add_overwrite_option, load_fitted, mesh_method, positive, positive_int,
                                progress_enabled, refuse_to_overwrite, resolution, seed, write_json)

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    evaluate = sub.add_parser(
        "eval", help="score a saved model against a mesh (occupancy F1, IoU, Chamfer, F-score, normals)",
        description="Occupancy F1 near the surface (Gaussian noise of --near-std in the normalised frame) and "
                    "in the bounding volume, volume IoU, on fresh points; then the model's mesh at "
                    "--resolution against the reference: Chamfer-L1/L2, F-score@1% of the unit sphere, normal "
                    "consistency. Prints JSON (and writes it with --out).")
    evaluate.add_argument("model", metavar="MODEL", help="a model file, or a folder holding model.pt")
    evaluate.add_argument("mesh", metavar="MESH", help="the reference mesh, in the coordinates the model was fitted in")
    evaluate.add_argument("--points", type=positive_int, default=100_000, metavar="N",
                          help="points near the surface and in the volume, each (default: 100,000)")
    evaluate.add_argument("--near-std", type=positive, default=0.01, metavar="S",
                          help="noise of the near-surface points, normalised units (default: 0.01)")
    evaluate.add_argument("--resolution", type=resolution, default=256, metavar="N",
                          help="grid of the mesh the surface metrics compare (default: 256)")
    evaluate.add_argument("--seed", type=seed, default=None, help="make the points reproducible")
    evaluate.add_argument("--out", metavar="JSON", help="also write the metrics here")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    add_overwrite_option(evaluate)
    evaluate.set_defaults(run=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    import fastsdf
    from fastsdf.geometry.mesh_io import load_mesh
    from fastsdf.metrics import model_size_kb, occupancy_metrics, surface_metrics

    model = load_fitted(args.model)
    reference = load_mesh(args.mesh)
    if args.out:
        refuse_to_overwrite([Path(args.out)], args.overwrite)
    metrics = occupancy_metrics(model.sdf, reference, model.transform, n_points=args.points,
                                near_std=args.near_std, seed=args.seed)
    frame = model.bounds()
    verts, faces = fastsdf.extract_mesh(model, args.resolution, bounds=frame, method=mesh_method(model),
                                        progress=progress_enabled(args.quiet))
    metrics.update(surface_metrics((verts.numpy(), faces.numpy()), reference, n_points=args.points,
                                   tau=0.01 / model.transform.scale, seed=args.seed))
    metrics.update(model_size_kb=model_size_kb(model.network), resolution=args.resolution,
                   training_seconds=model.history.get("training_seconds"))
    print(json.dumps(metrics, indent=2, sort_keys=True))
    if args.out:
        write_json(Path(args.out), metrics)
    return 0
