"""The comparison the neural-implicit lectures draw: a ReLU MLP, the same behind NeRF's positional
encoding (L = 6 and 10) and a SIREN, each fitted to every shared mesh for the same time on 2 cores.

    models-cpu-{mesh}  one shape of ../shared/meshes learned in 60 s of training by each model
                       (FASTSDF_BENCH_MODELS_SECONDS replaces it) on FASTSDF_BENCH_MODELS_THREADS (2)
                       torch threads, through ``fastsdf.fit`` (DeepSDF's clamped L1, batches of 8,192
                       from its 2.5M-point pool, Adam with a cosine decay), then judged by fastsdf.metrics:
                       occupancy F1 near the surface and in the volume, IoU, and on the mesh extracted at
                       FASTSDF_BENCH_MODELS_RESOLUTION (128)^3, Chamfer-L1 and normal consistency.
        relu           DeepSDF's decoder for one shape: 8 ReLU layers of 512, the input again at layer 4
                       (``ReluMLP(3, 512, 7, 1, skip=(4,))``), Adam 5e-4 (the paper's rate; weight
                       normalisation and dropout regularise its many-shape auto-decoder and are left out)
        pe-L6, pe-L10  NeRF's MLP: 8 ReLU layers of 256, the input again at layer 5, behind gamma(p) with
                       L frequencies and p itself (``ReluMLP(3, 256, 7, 1, skip=(5,),
                       encoding=FourierFeatures(3, L))``), Adam 5e-4 (NeRF's rate)
        siren          ``fastsdf.fit``'s defaults: SirenMLP 3 -> 128 x 3 -> 1, Adam 1e-3

Each peer is run once (one round: the time is the whole call, sampling and training included). The
figures are printed per mesh at the end of the run and recorded in ``extra_info`` (``f1_near``,
``f1_volume``, ``iou_volume``, ``chamfer_l1``, ``normal_consistency``, ``steps``); the picture of
every mesh as each model learned it, the reference first, all from one viewpoint, is written to
FASTSDF_BENCH_MODELS_FIGURE (benchmarks/results/models.png) after each test.

Smoke run (seconds, not the comparison): FASTSDF_BENCH_MODELS_SECONDS=2
FASTSDF_BENCH_MODELS_RESOLUTION=32 FASTSDF_BENCH_MESHES=suzanne
FASTSDF_BENCH_MODELS_FIGURE=/tmp/models.png pytest benchmarks/test_bench_models.py --benchmark-disable
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import fastsdf
from bench_common import MESH_DIR, bench_meshes
from fastsdf import FourierFeatures, ReluMLP, metrics
from fastsdf.render import render_mesh

pytest.importorskip("pytest_benchmark")

SECONDS = float(os.environ.get("FASTSDF_BENCH_MODELS_SECONDS", "60"))
THREADS = int(os.environ.get("FASTSDF_BENCH_MODELS_THREADS", "2"))
RESOLUTION = int(os.environ.get("FASTSDF_BENCH_MODELS_RESOLUTION", "128"))
FIGURE = Path(os.environ.get("FASTSDF_BENCH_MODELS_FIGURE",
                             str(Path(__file__).resolve().parent / "results" / "models.png")))
MESHES = [name for name in bench_meshes() if (MESH_DIR / f"{name}.obj").exists()]
EVAL_POINTS = 100_000
IMAGE_SIZE = 256
FIGURES: dict[str, dict[str, dict[str, float]]] = {}
IMAGES: dict[str, dict[str, np.ndarray]] = {}


def _nerf(frequencies: int) -> ReluMLP:
    return ReluMLP(3, 256, 7, 1, skip=(5,), encoding=FourierFeatures(3, frequencies))


# name -> (label, the network's builder or None for fit's default, Adam's rate or None for fit's)
PEERS: dict[str, tuple[str, Callable[[], torch.nn.Module] | None, float | None]] = {
    "relu": ("ReLU MLP, DeepSDF's 8 x 512 with a skip", functools.partial(ReluMLP, 3, 512, 7, 1, skip=(4,)), 5e-4),
    "pe-L6": ("ReLU + positional encoding L=6, NeRF's 8 x 256", functools.partial(_nerf, 6), 5e-4),
    "pe-L10": ("ReLU + positional encoding L=10, NeRF's 8 x 256", functools.partial(_nerf, 10), 5e-4),
    "siren": ("SIREN, fastsdf.fit's 3 -> 128 x 3 -> 1", None, None),
}


def _fit(mesh: Any, builder: Callable[[], torch.nn.Module] | None, rate: float | None) -> tuple[Any, int]:
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        options = {} if rate is None else {"learning_rate": rate}
        model, history = fastsdf.fit(mesh, builder, time_budget=SECONDS, seed=0, progress=False, device="cpu",
                                     **options)
    finally:
        torch.set_num_threads(threads)
    return model, history["steps"]


def _write_figure() -> None:
    """Every mesh so far as a row: the reference, then each model's extracted mesh, one viewpoint."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    columns = ["reference", *PEERS]
    rows = sorted(IMAGES)
    figure, axes = plt.subplots(len(rows), len(columns), figsize=(2.4 * len(columns), 2.4 * len(rows)),
                                squeeze=False)
    try:
        for r, mesh_name in enumerate(rows):
            for c, column in enumerate(columns):
                axis = axes[r][c]
                axis.set_xticks([])
                axis.set_yticks([])
                if column in IMAGES[mesh_name]:
                    axis.imshow(IMAGES[mesh_name][column])
                if r == 0:
                    axis.set_title(column, fontsize=10)
                if c == 0:
                    axis.set_ylabel(mesh_name, fontsize=10)
        figure.suptitle(f"each model after {SECONDS:g} s of training on {THREADS} threads "
                        f"(meshes at {RESOLUTION}³)", fontsize=11)
        figure.tight_layout()
        FIGURE.parent.mkdir(parents=True, exist_ok=True)
        from fastsdf.io import atomic_write

        with atomic_write(FIGURE) as out:
            figure.savefig(out, format="png", dpi=100)
    finally:
        plt.close(figure)


@pytest.mark.parametrize(("key", "mesh_name"), [
    pytest.param(key, name, id=f"{key}-{name}", marks=pytest.mark.benchmark(group=f"models-cpu-{name}"))
    for name in MESHES for key in PEERS])
def test_model_quality(benchmark: Any, key: str, mesh_name: str) -> None:
    label, builder, rate = PEERS[key]
    mesh = fastsdf.geometry.mesh_io.load_mesh(MESH_DIR / f"{mesh_name}.obj")
    model, steps = benchmark.pedantic(lambda: _fit(mesh, builder, rate), rounds=1, warmup_rounds=0, iterations=1)
    figures = metrics.occupancy_metrics(model.sdf, mesh, model.transform, n_points=EVAL_POINTS, seed=1)
    verts, faces = fastsdf.extract_mesh(model, RESOLUTION, bounds=model.bounds(), device="cpu", progress=False)
    verts, faces = verts.numpy(), faces.numpy()
    surface = metrics.surface_metrics((verts, faces), mesh, n_points=EVAL_POINTS, seed=1,
                                      tau=0.01 / model.transform.scale)
    figures.update(chamfer_l1=surface["chamfer_l1"], normal_consistency=surface["normal_consistency"])
    FIGURES.setdefault(mesh_name, {})[key] = {**figures, "steps": steps}
    images = IMAGES.setdefault(mesh_name, {})
    if "reference" not in images:
        images["reference"] = render_mesh(mesh.vertices, mesh.faces, size=IMAGE_SIZE)
    images[key] = render_mesh(verts, faces, size=IMAGE_SIZE)
    _write_figure()
    benchmark.extra_info.update(
        peer=label, version=fastsdf.__version__, device="cpu", threads=THREADS, steps=steps, **figures,
        input=f"{mesh_name}: {SECONDS:g} s of training, then occupancy F1 on {EVAL_POINTS:,} fresh points near "
              f"the surface and {EVAL_POINTS:,} in the volume, Chamfer-L1 (mesh units) and normal consistency "
              f"of the mesh extracted at {RESOLUTION}³ ({EVAL_POINTS:,} points on each surface)",
        notes=["Every model trained by fastsdf.fit with DeepSDF's clamped L1 for the same time on the same "
               "threads; each architecture and learning rate as its paper recommends (see "
               "benchmarks/test_bench_models.py). Time is the whole call (sampling and training), one round."])


def summary_lines() -> list[str]:
    """The per-mesh figures, printed at the end of the run (benchmarks/conftest.py calls this)."""
    lines = [f"models after {SECONDS:g} s of training on {THREADS} threads "
             "(F1 near / F1 volume / Chamfer-L1 / normal consistency / steps)"]
    for mesh_name, peers in sorted(FIGURES.items()):
        lines.append(f"  {mesh_name}")
        for key, f in peers.items():
            lines.append(f"    {key:8s} {f['f1_near']:.4f} / {f['f1_volume']:.4f} / {f['chamfer_l1']:.3g} / "
                         f"{f['normal_consistency']:.4f} / {f['steps']}")
    return lines + [f"  picture: {FIGURE}"] if FIGURES else []
