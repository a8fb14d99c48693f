"""Generating shapes on a generated collection: sample -> train_deepsdf -> train_diffusion -> DDIM,
against two baselines, scored with fastsdf.metrics' generation metrics.

    generate-cpu-{n}shapes  n training meshes of fastsdf.write_random_shapes (random CSG of analytic
                            primitives) and 64 unseen ones (never sampled, never trained on): DeepSDF
                            samples of the training meshes (fewer points), an auto-decoder on them
                            (the README's CPU size, 128 x 4, codes of 64), then 64 codes from each of
                              diffusion   train_diffusion's defaults at the README's 3,000 steps: a
                                          tenth of the codes held out, the weights those of the
                                          step where the loss on them was lowest; DDIM, 50 steps
                              memorising  the same trained on every code, its last weights
                              prior       N(0, I / latent_size), the codes' initialisation
                              gaussian    a full-covariance Gaussian fitted to the codes
                              mixture     a mixture of 8 Gaussians fitted to the codes (k-means,
                                          best of 20 starts; the clusters' covariance shared):
                                          a baseline told how many families there are
                            each decoded and meshed (sparse, 64^3). extra_info["sources"] per source:
                            MMD, COV and 1-NNA (PointFlow's Chamfer between 2,048-point clouds, in
                            the normalised frame) against the unseen meshes (as many as the
                            samples), the share of watertight meshes, the median Chamfer from a
                            sample to its nearest training shape (against the unseen shapes' own
                            median distance to the training set: far below it means copies), codes
                            sampled per second and meshes per second.

    generate-cpu-{n}shapes-{k}families
                            the same on a collection of k families (write_random_shapes(families=k):
                            each shape a variation of its family's recipe), codes with modes that a
                            single Gaussian blends.

Issue 16's claim is that the diffusion row's MMD and COV beat both baselines' without copying. The
benchmark times the whole pipeline once (one round) per collection; about 15 minutes each on 2 cores.

Environment: FASTSDF_BENCH_GENERATE_SHAPES (default 320), FASTSDF_BENCH_GENERATE_EPOCHS (default
150), FASTSDF_BENCH_GENERATE_STEPS (default 3000), FASTSDF_BENCH_GENERATE_COUNT (generated per source
and unseen meshes, default 64) and FASTSDF_BENCH_GENERATE_RESOLUTION (default 64) make a smaller
run; FASTSDF_BENCH_GENERATE_FAMILIES (default "8,0": the families' collection, then the plain one)
picks the collections.
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

SHAPES = int(os.environ.get("FASTSDF_BENCH_GENERATE_SHAPES", "320"))
EPOCHS = int(os.environ.get("FASTSDF_BENCH_GENERATE_EPOCHS", "150"))
STEPS = int(os.environ.get("FASTSDF_BENCH_GENERATE_STEPS", "3000"))
COUNT = int(os.environ.get("FASTSDF_BENCH_GENERATE_COUNT", "64"))
LATENT = 64
RESOLUTION = int(os.environ.get("FASTSDF_BENCH_GENERATE_RESOLUTION", "64"))
SOURCES = ("diffusion", "memorising", "prior", "gaussian", "mixture")
COMPONENTS = 8
FAMILIES = [int(k) for k in os.environ.get("FASTSDF_BENCH_GENERATE_FAMILIES", "8,0").split(",")]


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


def _mixture_codes(data: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` codes from COMPONENTS Gaussians fitted to ``data`` (float64): k-means (Lloyd, best
    of 20 starts), then the clusters' sizes as weights, their means, and one covariance pooled over
    the clusters (40 codes a cluster are too few for a full covariance of their own)."""
    generator, best = torch.Generator().manual_seed(0), None
    for _ in range(20):
        centres = data[torch.randperm(len(data), generator=generator)[:COMPONENTS]]
        for _ in range(100):
            label = torch.cdist(data, centres).argmin(1)
            centres = torch.stack([data[label == k].mean(0) if (label == k).any() else centres[k]
                                   for k in range(COMPONENTS)])
        inertia = float(((data - centres[label]) ** 2).sum())
        if best is None or inertia < best[0]:
            best = (inertia, centres, label)
    _, centres, label = best
    residuals = data - centres[label]
    pooled = residuals.T @ residuals / (len(data) - COMPONENTS) + 1e-6 * torch.eye(data.shape[1], dtype=data.dtype)
    component = torch.multinomial(torch.bincount(label, minlength=COMPONENTS).double(), count, replacement=True,
                                  generator=generator)
    noise = torch.distributions.MultivariateNormal(torch.zeros_like(data[0]), covariance_matrix=pooled)
    torch.manual_seed(0)
    return (centres[component] + noise.sample((count,))).float()


def _scores(meshes: list, training: np.ndarray, unseen: tuple[np.ndarray, np.ndarray],
            novelty: float) -> dict[str, Any]:
    """A source's row: metrics against the unseen clouds (with their own Chamfer matrix), and the
    nearest training shape's distance against ``novelty``, the unseen shapes' median."""
    import trimesh

    from fastsdf.metrics import chamfer_matrix, generation_scores, point_clouds

    surfaced = [m for m in meshes if len(m[1])]
    row: dict[str, Any] = {"meshed": len(surfaced), "count": len(meshes),
                           "watertight": float(np.mean([trimesh.Trimesh(*m, process=False).is_watertight
                                                        for m in surfaced])) if surfaced else 0.0}
    if not surfaced:
        return row
    clouds = point_clouds(surfaced, seed=1)
    scores = generation_scores(chamfer_matrix(clouds, unseen[0]), chamfer_matrix(clouds, clouds), unseen[1])
    row.update({f"{key}_unseen": value for key, value in scores.items()})
    row.update(nearest_train_median=float(np.median(chamfer_matrix(clouds, training).min(axis=1))),
               unseen_nearest_train_median=novelty)
    return row


@pytest.mark.parametrize("families", FAMILIES)
def test_generate_pipeline(benchmark: Any, tmp_path: Path, families: int) -> None:
    import fastsdf
    from fastsdf.metrics import chamfer_matrix, point_clouds

    paths = write_random_shapes(tmp_path / "meshes", SHAPES + COUNT, families=families, progress=False)
    train_paths, unseen_paths = paths[:SHAPES], paths[SHAPES:]
    results: dict[str, Any] = {}

    def pipeline() -> None:
        torch.manual_seed(0)
        fastsdf.sample_meshes(train_paths, tmp_path / "samples", n_uniform=2_000, n_near=30_000, seed=0,
                              progress=False)
        decoder = fastsdf.DeepSDFDecoder(latent_size=LATENT, hidden_features=128, hidden_layers=4, latent_in=(2,),
                                         dropout=0.0)
        autodecoder, _ = fastsdf.train_deepsdf(tmp_path / "samples", decoder, epochs=EPOCHS, shapes_per_batch=32,
                                               samples_per_shape=1024, learning_rate=1e-3, code_learning_rate=5e-3,
                                               decay_every=max(1, EPOCHS // 2), seed=0, progress=False)
        model, history = fastsdf.train_diffusion(autodecoder, steps=STEPS, seed=0, progress=False)
        start = time.perf_counter()
        codes = {"diffusion": model.sample(COUNT, steps=50, seed=0)}
        results["codes_per_second"] = COUNT / (time.perf_counter() - start)
        memorising, _ = fastsdf.train_diffusion(autodecoder, steps=STEPS, held_out=0.0, seed=0, progress=False)
        codes["memorising"] = memorising.sample(COUNT, steps=50, seed=0)
        generator = torch.Generator().manual_seed(0)
        codes["prior"] = torch.randn(COUNT, LATENT, generator=generator) / LATENT**0.5
        data = autodecoder.codes.double()
        fitted = torch.distributions.MultivariateNormal(
            data.mean(0), covariance_matrix=torch.cov(data.T) + 1e-6 * torch.eye(LATENT, dtype=torch.float64))
        torch.manual_seed(0)
        codes["gaussian"] = fitted.sample((COUNT,)).float()
        codes["mixture"] = _mixture_codes(data, COUNT)
        training = point_clouds(_normalised_meshes(train_paths), seed=2)
        unseen = point_clouds(_normalised_meshes(unseen_paths), seed=3)
        novelty = float(np.median(chamfer_matrix(unseen, training).min(axis=1)))
        within = chamfer_matrix(unseen, unseen)
        for source in SOURCES:
            meshes, seconds = _mesh_codes(autodecoder, codes[source])
            results[source] = {**_scores(meshes, training, (unseen, within), novelty),
                               "meshes_per_second": len(meshes) / seconds}
        results.update(diffusion_training_seconds=history["training_seconds"],
                       diffusion_best_step=history.get("best_step"))

    benchmark.group = f"generate-cpu-{SHAPES}shapes" + (f"-{families}families" if families else "")
    benchmark.pedantic(pipeline, rounds=1, iterations=1)
    sources = {source: results.pop(source) for source in SOURCES}
    benchmark.extra_info.update(shapes=SHAPES, families=families, unseen=COUNT, epochs=EPOCHS, steps=STEPS,
                                latent_size=LATENT, resolution=RESOLUTION, sources=sources, **results)
    for source, row in sources.items():
        print(source, {k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()})
    print("codes per second", round(results["codes_per_second"], 1))
