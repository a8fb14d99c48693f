"""Generating shapes on a generated collection: sample -> train_deepsdf -> train_diffusion -> DDIM,
against two baselines, scored with fastsdf.metrics' generation metrics.

    generate-cpu-{n}shapes  n training meshes of fastsdf.write_random_shapes (random CSG of analytic
                            primitives) and n/4 held-out ones, sampled (DeepSDF's recipe, fewer
                            points), an auto-decoder trained on them, a denoiser on its codes; then
                            as many shapes as the training set from each of:
                              diffusion  DDIM (50 steps, eta 0) from the trained model
                              prior      codes from N(0, I / latent_size), the codes' initialisation
                              gaussian   codes from a full-covariance Gaussian fitted to the codes
                            each decoded and meshed (sparse, 64^3). extra_info["sources"] per source: MMD, COV and
                            1-NNA (PointFlow's Chamfer between 2,048-point clouds, in the normalised
                            frame) against the training and the held-out meshes, the share of
                            watertight meshes, the median Chamfer to the nearest training shape
                            (against the training set's own leave-one-out median: far below it means
                            copies); codes sampled per second and meshes per second.

Issue 16's claim is that the diffusion row's MMD and COV beat both baselines'. The benchmark times
the whole pipeline once (one round).

Environment: FASTSDF_BENCH_GENERATE_SHAPES (default 64), FASTSDF_BENCH_GENERATE_EPOCHS (default
300), FASTSDF_BENCH_GENERATE_STEPS (default 5000) and FASTSDF_BENCH_GENERATE_RESOLUTION (default 64)
make a smaller run.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fastsdf import write_random_shapes

pytest.importorskip("pytest_benchmark")

SHAPES = int(os.environ.get("FASTSDF_BENCH_GENERATE_SHAPES", "64"))
EPOCHS = int(os.environ.get("FASTSDF_BENCH_GENERATE_EPOCHS", "300"))
STEPS = int(os.environ.get("FASTSDF_BENCH_GENERATE_STEPS", "5000"))
HELD_OUT = max(2, SHAPES // 4)
LATENT = 64
RESOLUTION = int(os.environ.get("FASTSDF_BENCH_GENERATE_RESOLUTION", "64"))


def _normalised_meshes(paths: list[Path]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The meshes in the frame their samples (and so the generated shapes) live in."""
    import fastsdf
    from fastsdf.geometry.mesh_io import load_mesh, mesh_arrays

    out = []
    for path in paths:
        vertices, faces = mesh_arrays(load_mesh(path))
        _, transform = fastsdf.normalize((vertices, faces))
        out.append((transform.apply(vertices), faces))
    return out


def _mesh_codes(autodecoder: Any, codes: torch.Tensor) -> tuple[list[tuple[np.ndarray, np.ndarray]], float]:
    import fastsdf

    start, meshes = time.perf_counter(), []
    for code in codes:
        shape = autodecoder.shape(code)
        vertices, faces = fastsdf.extract_mesh(shape, RESOLUTION, bounds=shape.bounds(), method="sparse",
                                               device="cpu")
        meshes.append((np.asarray(vertices, np.float64), np.asarray(faces)))
    return meshes, time.perf_counter() - start


def _scores(meshes: list, training: np.ndarray, held_out: np.ndarray, own_median: float) -> dict[str, Any]:
    import trimesh

    from fastsdf.metrics import generation_metrics, nearest_shapes, point_clouds

    surfaced = [m for m in meshes if len(m[1])]
    row: dict[str, Any] = {"meshed": len(surfaced), "count": len(meshes),
                           "watertight": float(np.mean([trimesh.Trimesh(*m, process=False).is_watertight
                                                        for m in surfaced])) if surfaced else 0.0}
    if not surfaced:
        return row
    clouds = point_clouds(surfaced, seed=1)
    for name, reference in (("train", training), ("held_out", held_out)):
        metrics = generation_metrics(clouds, reference)
        row.update({f"{key}_{name}": metrics[key] for key in ("mmd", "cov", "1-nna")})
    distances, _ = nearest_shapes(clouds, training)
    row.update(nearest_train_median=float(np.median(distances)), train_leave_one_out_median=own_median)
    return row


def test_generate_pipeline(benchmark: Any, tmp_path: Path) -> None:
    import fastsdf
    from fastsdf.metrics import chamfer_matrix, point_clouds

    paths = write_random_shapes(tmp_path / "meshes", SHAPES + HELD_OUT, progress=False)
    train_paths, held_paths = paths[:SHAPES], paths[SHAPES:]
    results: dict[str, Any] = {}

    def pipeline() -> None:
        torch.manual_seed(0)
        fastsdf.sample_meshes(train_paths, tmp_path / "samples", n_uniform=2_000, n_near=30_000, seed=0,
                              progress=False)
        decoder = fastsdf.DeepSDFDecoder(latent_size=LATENT, hidden_features=256, hidden_layers=6, latent_in=(3,),
                                         dropout=0.0)
        autodecoder, _ = fastsdf.train_deepsdf(tmp_path / "samples", decoder, epochs=EPOCHS, shapes_per_batch=16,
                                               samples_per_shape=2048, learning_rate=1e-3, code_learning_rate=5e-3,
                                               decay_every=max(1, EPOCHS // 2), seed=0, progress=False)
        model, history = fastsdf.train_diffusion(autodecoder, steps=STEPS, seed=0, progress=False)
        start = time.perf_counter()
        codes = {"diffusion": model.sample(SHAPES, steps=50, seed=0)}
        results["codes_per_second"] = SHAPES / (time.perf_counter() - start)
        generator = torch.Generator().manual_seed(0)
        codes["prior"] = torch.randn(SHAPES, LATENT, generator=generator) / LATENT**0.5
        data = autodecoder.codes.double()
        fitted = torch.distributions.MultivariateNormal(
            data.mean(0), covariance_matrix=torch.cov(data.T) + 1e-6 * torch.eye(LATENT, dtype=torch.float64))
        torch.manual_seed(0)
        codes["gaussian"] = fitted.sample((SHAPES,)).float()
        training = point_clouds(_normalised_meshes(train_paths), seed=2)
        held_out = point_clouds(_normalised_meshes(held_paths), seed=3)
        own = chamfer_matrix(training, training)
        np.fill_diagonal(own, np.inf)
        own_median = float(np.median(own.min(axis=1)))
        for source, sampled in codes.items():
            meshes, seconds = _mesh_codes(autodecoder, sampled)
            results[source] = {**_scores(meshes, training, held_out, own_median),
                               "meshes_per_second": len(meshes) / seconds}
        results["diffusion_training_seconds"] = history["training_seconds"]

    benchmark.group = f"generate-cpu-{SHAPES}shapes"
    benchmark.pedantic(pipeline, rounds=1, iterations=1)
    sources = {source: results.pop(source) for source in ("diffusion", "prior", "gaussian")}
    benchmark.extra_info.update(shapes=SHAPES, held_out=HELD_OUT, epochs=EPOCHS, steps=STEPS, latent_size=LATENT,
                                resolution=RESOLUTION, sources=sources, **results)
    for source, row in sources.items():
        print(source, {k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()})
    print("codes per second", round(results["codes_per_second"], 1))
