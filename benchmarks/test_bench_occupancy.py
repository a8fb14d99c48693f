"""Occupancy Networks on a generated collection: shape completion from point clouds, measured as ONet
reports it.

    occupancy-cpu-completion  train_occupancy on FASTSDF_BENCH_ONET_TRAIN generated meshes
                              (fastsdf.random_mesh: random CSG, seed 0) for
                              FASTSDF_BENCH_ONET_SECONDS of training on 2 threads, then completion
                              of held-out meshes (seed 1) and of the shared meshes from 300 surface
                              points with noise 0.01 (ONet's 0.005 in its unit cube), all of the
                              surface and the half facing +z: IoU in the volume, Chamfer-L1 in
                              ONet's unit cube frame and normal consistency
                              (``fastsdf.metrics.occupancy_network_metrics``), means per input in
                              extra_info; meshed at 128^3 with MISE. A picture of input points,
                              prediction and ground truth: results/occupancy_completion.png.

Data as ``fastsdf sample MESHES DATA --n-near 0 --n-uniform 100000 --n-surface 100000`` writes it
(ONet's: points uniform in the padded box, surface points for the input). The networks: ONet's
encoder and CBN decoder at CPU-practical widths (FASTSDF_BENCH_ONET_WIDTH, default 128; ONet's
are 512 and 256), codes of 256, 16 shapes x 2,048 points per step, Adam 1e-4 (ONet's rate).

Environment (smaller runs): FASTSDF_BENCH_ONET_TRAIN (default 200), FASTSDF_BENCH_ONET_TEST
(default 20), FASTSDF_BENCH_ONET_SECONDS (default 1200), FASTSDF_BENCH_ONET_WIDTH (default 128),
FASTSDF_BENCH_ONET_RESOLUTION (default 128), FASTSDF_BENCH_ONET_POINTS (samples per shape, default 100000).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import fastsdf
from bench_common import MESH_DIR, load_mesh
from fastsdf.metrics import occupancy_network_metrics
from fastsdf.plots import plot_completion
from fastsdf.training.occupancy import CLOUD_NOISE, CLOUD_POINTS

pytest.importorskip("pytest_benchmark")

TRAIN = int(os.environ.get("FASTSDF_BENCH_ONET_TRAIN", "200"))
TEST = int(os.environ.get("FASTSDF_BENCH_ONET_TEST", "20"))
SECONDS = float(os.environ.get("FASTSDF_BENCH_ONET_SECONDS", "1200"))
WIDTH = int(os.environ.get("FASTSDF_BENCH_ONET_WIDTH", "128"))
RESOLUTION = int(os.environ.get("FASTSDF_BENCH_ONET_RESOLUTION", "128"))
POINTS = int(os.environ.get("FASTSDF_BENCH_ONET_POINTS", "100000"))
RESULTS = Path(__file__).resolve().parent / "results"
THREADS = 2


def _samples(mesh: tuple[np.ndarray, np.ndarray], seed: int) -> tuple[fastsdf.SdfSamples, Any]:
    normalised, transform = fastsdf.normalize(mesh)
    samples = fastsdf.sample_sdf(normalised, n_uniform=POINTS, n_near=0, n_surface=POINTS, seed=seed)
    samples.transform = transform
    return samples, normalised


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, Any, Any]]]:
    """The training files, and the held-out shapes: (name, samples, normalised mesh)."""
    folder = tmp_path_factory.mktemp("onet-data")
    for index in range(TRAIN):
        fastsdf.save_npz(folder / f"shape_{index:05d}.npz", _samples(fastsdf.random_mesh(index, seed=0), index)[0])
    held_out = [(f"held_{index:03d}", *_samples(fastsdf.random_mesh(index, seed=1), 10_000 + index))
                for index in range(TEST)]
    for path in sorted(MESH_DIR.glob("*.obj")) if MESH_DIR.is_dir() else []:
        mesh = load_mesh(path.stem)
        held_out.append((path.stem, *_samples((mesh.vertices, mesh.faces), 20_000)))
    return folder, held_out


def test_occupancy_completion(benchmark: Any, collection: tuple[Path, list]) -> None:
    folder, held_out = collection
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    encoder = fastsdf.PointNetEncoder(256, WIDTH)
    decoder = fastsdf.OccupancyDecoder(256, WIDTH)

    def train() -> dict[str, Any]:
        return fastsdf.train_occupancy(folder, encoder, decoder, epochs=10**6, shapes_per_batch=16,
                                       time_budget=SECONDS, device="cpu", progress=False, num_workers=1)

    benchmark.group = "occupancy-cpu-completion"
    model, history = benchmark.pedantic(train, rounds=1, warmup_rounds=0, iterations=1)
    rows, scores = [], {"full": [], "partial": []}
    rng = np.random.default_rng(0)
    for name, samples, (verts, faces) in held_out:
        for kind in ("full", "partial"):
            cloud = samples.surface_points
            if kind == "partial":
                cloud = fastsdf.partial_cloud(cloud, (0.0, 0.0, 1.0))
            cloud = cloud[rng.integers(0, len(cloud), CLOUD_POINTS)]
            cloud = cloud + rng.normal(0.0, CLOUD_NOISE, cloud.shape).astype(np.float32)
            shape = model.shape(cloud)
            predicted = fastsdf.extract_mesh(shape, RESOLUTION, method="mise", device="cpu")
            predicted = tuple(np.asarray(a) for a in predicted)
            figures = occupancy_network_metrics(shape.sdf, predicted, (verts, faces),
                                                fastsdf.NormalizationTransform.identity(), n_points=20_000, seed=0)
            scores[kind].append(figures)
            if len(rows) < 6 and (len(rows) < 2 or not name.startswith("held_")):  # 1 generated, 2 shared
                rows.append((f"{name} ({kind})", cloud, predicted, (verts, faces)))
    RESULTS.mkdir(exist_ok=True)
    plot_completion(rows, RESULTS / "occupancy_completion.png")
    # An empty prediction has IoU 0 but no surface to measure: its Chamfer is infinite, so the
    # surface scores are the means over the predictions that have one, and the empty ones are counted.
    summary = {kind: {"iou_volume": float(np.mean([s["iou_volume"] for s in values])),
                      **{key: float(np.mean([s[key] for s in values if np.isfinite(s["chamfer_l1"])] or [np.nan]))
                         for key in ("chamfer_l1", "normal_consistency")},
                      "empty": sum(not np.isfinite(s["chamfer_l1"]) for s in values)}
               for kind, values in scores.items()}
    benchmark.extra_info.update(
        peer=f"Occupancy Network, width {WIDTH}", version=fastsdf.__version__, shapes=TRAIN, held_out=len(held_out), epochs=history["epochs"], training_seconds=history["training_seconds"],
        final_bce=history["loss"][-1], accuracy=history["accuracy"][-1], width=WIDTH, resolution=RESOLUTION,
        threads=THREADS, scores=summary, chamfer_units="unit cube (reference's longest side 1)")
    print(f"\noccupancy networks, {TRAIN} shapes, {history['epochs']} epochs in {history['training_seconds']:.0f} s: "
          + "; ".join(f"{kind}: IoU {s['iou_volume']:.3f}, Chamfer-L1 {s['chamfer_l1']:.4f}, "
                      f"NC {s['normal_consistency']:.3f}" for kind, s in summary.items()))
