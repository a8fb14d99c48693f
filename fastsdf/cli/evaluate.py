"""``fastsdf eval``: score a saved model, a reconstructed mesh, or a folder of them, against the truth."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fastsdf.cli.common import (add_overwrite_option, load_fitted, mesh_method, positive, positive_int,
                                progress_enabled, refuse_to_overwrite, resolution, seed, write_json)

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    evaluate = sub.add_parser(
        "eval", help="score a saved model against a mesh (occupancy F1, IoU, Chamfer, F-score, normals)",
        description="Occupancy F1 near the surface (Gaussian noise of --near-std in the normalised frame) and "
                    "in the bounding volume, volume IoU, on fresh points; then the model's mesh at "
                    "--resolution against the reference: Chamfer-L1/L2, F-score@1% of the unit sphere, normal "
                    "consistency. A mesh instead of a model (e.g. fastsdf reconstruct's NAME.ply) is scored "
                    "the same way, its own winding-number sign giving its occupancy; a folder of meshes is "
                    "scored against the folder of references of the same names, with the mean and median over "
                    "the shapes (DeepSDF reports both). Prints JSON (and writes it with --out).")
    evaluate.add_argument("model", metavar="MODEL",
                          help="a model file, a folder holding model.pt, a mesh, or a folder of meshes")
    evaluate.add_argument("mesh", metavar="MESH",
                          help="the reference mesh, in the coordinates the model was fitted in (a folder of "
                               "them for a folder of meshes)")
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
    from fastsdf.geometry.mesh_io import MESH_SUFFIXES

    source = Path(args.model)
    if source.suffix.lower() in MESH_SUFFIXES:
        metrics = _score_mesh(source, Path(args.mesh), args)
    elif source.is_dir() and not (source / "model.pt").exists():
        metrics = _score_folder(source, Path(args.mesh), args)
    else:
        metrics = _score_model(args)
    print(json.dumps(metrics, indent=2, sort_keys=True))
    if args.out:
        write_json(Path(args.out), metrics)
    return 0


def _refuse_to_overwrite(args: argparse.Namespace) -> None:
    if args.out:
        refuse_to_overwrite([Path(args.out)], args.overwrite)


def _score_model(args: argparse.Namespace) -> dict[str, Any]:
    import fastsdf
    from fastsdf.geometry.mesh_io import load_mesh
    from fastsdf.metrics import model_size_kb, occupancy_metrics, surface_metrics

    model = load_fitted(args.model)
    reference = load_mesh(args.mesh)
    _refuse_to_overwrite(args)
    metrics = occupancy_metrics(model.sdf, reference, model.transform, n_points=args.points,
                                near_std=args.near_std, seed=args.seed)
    frame = model.bounds()
    verts, faces = fastsdf.extract_mesh(model, args.resolution, bounds=frame, method=mesh_method(model),
                                        progress=progress_enabled(args.quiet))
    metrics.update(surface_metrics((verts.numpy(), faces.numpy()), reference, n_points=args.points,
                                   tau=0.01 / model.transform.scale, seed=args.seed))
    metrics.update(model_size_kb=model_size_kb(model.network), resolution=args.resolution,
                   training_seconds=model.history.get("training_seconds"))
    return metrics


def _score_mesh(source: Path, reference: Path, args: argparse.Namespace) -> dict[str, Any]:
    from fastsdf.geometry.mesh_io import load_mesh
    from fastsdf.metrics import mesh_metrics

    reconstruction, truth = load_mesh(source), load_mesh(reference)
    _refuse_to_overwrite(args)
    return mesh_metrics(reconstruction, truth, n_points=args.points, near_std=args.near_std, seed=args.seed)


def _mesh_files(folder: Path) -> dict[str, Path]:
    """The folder's mesh files by name (stem); ValueError where two share one."""
    from fastsdf.geometry.mesh_io import MESH_SUFFIXES

    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in MESH_SUFFIXES and path.is_file() and not path.name.startswith("."):
            if path.stem in found:
                raise ValueError(f"{found[path.stem].name} and {path.name} in {folder} are one shape: keep one")
            found[path.stem] = path
    return found


def _score_folder(folder: Path, references: Path, args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from fastsdf._progress import progress_bar
    from fastsdf.geometry.mesh_io import MESH_SUFFIXES, load_mesh
    from fastsdf.metrics import mesh_metrics

    meshes = _mesh_files(folder)
    if not meshes:
        raise FileNotFoundError(f"{folder} holds neither a model (model.pt) nor meshes ({', '.join(MESH_SUFFIXES)})")
    if not references.is_dir():
        raise NotADirectoryError(f"{folder} is a folder of meshes: MESH must be the folder of their references, "
                                 f"not {references}")
    truth = _mesh_files(references)
    pairs = {name: (path, truth[name]) for name, path in meshes.items() if name in truth}
    if not pairs:
        raise FileNotFoundError(f"no mesh in {folder} has a reference of the same name in {references}")
    _refuse_to_overwrite(args)
    shapes: dict[str, dict[str, float]] = {}
    bar = progress_bar(progress_enabled(args.quiet), len(pairs), 0, "fastsdf eval", "shape")
    for name, (path, reference) in pairs.items():
        shapes[name] = mesh_metrics(load_mesh(path), load_mesh(reference), n_points=args.points,
                                    near_std=args.near_std, seed=args.seed)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    figures = [key for key in next(iter(shapes.values())) if key != "tau"]  # tau: each reference's own
    return {"shapes": shapes, "count": len(shapes), "unmatched": sorted(set(meshes) - set(pairs)),
            "mean": {key: float(np.mean([m[key] for m in shapes.values()])) for key in figures},
            "median": {key: float(np.median([m[key] for m in shapes.values()])) for key in figures}}
