"""``fastsdf sample`` on a generated collection: meshes per second serially, on the process pool and
on Ray, and where a mesh's time goes.

    sample-cpu-{n}meshes the command on n generated meshes (fastsdf.write_random_shapes: random CSG
                         of analytic primitives, ~1,900 faces each), DeepSDF's 500,000 samples per
                         mesh, --seed 0: --workers 1 (today's serial command, the kernels on every
                         core), then the pool and Ray with --workers = the cores (one thread per
                         mesh), and Ray once more started before the timing (ray-running: a cluster
                         that is up, as Ray is used across machines; Ray's local start, ~10 s, is in
                         the "ray" row). Each row records meshes per second and whether its files are
                         byte for byte the serial run's (identical_to_serial). Issue 14's target: pool
                         and Ray at least 1.3x serial on 200 meshes and 2 cores.
    sample-stages-{n}meshes the serial steps of the first 20 meshes timed apart: load, normalise,
                         sample (surface points and noise), query (MeshSDF) and write, in seconds
                         per mesh (extra_info).

Each run starts from an empty output folder and includes the engine's start (the pool's processes,
a local Ray instance; not in ray-running). One round: a run is long. Ray's row is skipped when Ray is not installed.

Environment: FASTSDF_BENCH_SAMPLE_MESHES (default 200) and FASTSDF_BENCH_SAMPLE_POINTS (default
500000) make a smaller run.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench_common import cpu_threads
from fastsdf import write_random_shapes

pytest.importorskip("pytest_benchmark")

MESHES = int(os.environ.get("FASTSDF_BENCH_SAMPLE_MESHES", "200"))
POINTS = int(os.environ.get("FASTSDF_BENCH_SAMPLE_POINTS", "500000"))
N_UNIFORM = POINTS * 3 // 50  # DeepSDF's share: 30,000 of 500,000
STAGE_MESHES = 20
_FILES: dict[str, dict[str, bytes]] = {}


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("collection")
    write_random_shapes(folder, MESHES, progress=False)
    return folder


def _command(folder: Path, out: Path, engine: str) -> int:
    from fastsdf.cli import main

    workers = "1" if engine == "serial" else str(cpu_threads())
    return main(["sample", str(folder), str(out), "--n-near", str(POINTS - N_UNIFORM), "--n-uniform",
                 str(N_UNIFORM), "--seed", "0", "--quiet", "--workers", workers, "--engine", engine])


@pytest.mark.parametrize("variant", ["serial", "pool", "ray", "ray-running"])
def test_sample_collection(benchmark: Any, variant: str, collection: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    engine = variant.split("-")[0]
    if engine == "ray":
        ray = pytest.importorskip("ray")
    benchmark.group = f"sample-cpu-{MESHES}meshes"
    out = tmp_path / variant

    def setup() -> None:
        shutil.rmtree(out, ignore_errors=True)
        if variant == "ray-running":  # as on a cluster that is up: the command finds Ray started
            ray.init(num_cpus=cpu_threads(), include_dashboard=False, logging_level="ERROR", log_to_driver=False)

    try:
        code = benchmark.pedantic(_command, args=(collection, out, engine), setup=setup, rounds=1, iterations=1)
    finally:
        if variant == "ray-running":
            ray.shutdown()
    capsys.readouterr()
    assert code == 0
    _FILES[variant] = {p.name: p.read_bytes() for p in out.iterdir()}
    assert len(_FILES[variant]) == MESHES
    median = benchmark.stats.stats.median
    method = "ray, started before the timing" if variant == "ray-running" else engine
    benchmark.extra_info.update(
        peer="fastsdf", variant=variant, compare_with="serial", method=method, meshes=MESHES,
        threads=cpu_threads(), meshes_per_s=MESHES / median,
        input=f"{MESHES} generated meshes x {POINTS:,} samples (fastsdf sample --seed 0)",
        notes=["Target (issue 14): pool and Ray >= 1.3x the serial command's meshes per second on 2 cores."])
    if "serial" in _FILES and variant != "serial":
        benchmark.extra_info["identical_to_serial"] = _FILES[variant] == _FILES["serial"]
        assert _FILES[variant] == _FILES["serial"]
    print(f"\nsample {variant}: {MESHES / median:.2f} meshes/s")


def test_sample_stages(benchmark: Any, collection: Path, tmp_path: Path) -> None:
    from fastsdf.geometry import normalization, sampling
    from fastsdf.geometry.mesh_io import load_mesh, mesh_arrays
    from fastsdf.geometry.mesh_sdf import MeshSDF
    from fastsdf.geometry.samples_npz import save_npz

    benchmark.group = f"sample-stages-{MESHES}meshes"
    paths = sorted(collection.iterdir())[:STAGE_MESHES]
    totals = dict.fromkeys(("load", "normalise", "sample", "query", "write"), 0.0)

    def timed_query(vertices: np.ndarray, faces: np.ndarray, sign: str) -> Any:
        start = time.perf_counter()
        sdf = MeshSDF(vertices, faces, sign=sign)  # the BVH's build counts as querying
        totals["query"] += time.perf_counter() - start

        def query(points: np.ndarray) -> Any:
            start = time.perf_counter()
            values = sdf(points)
            totals["query"] += time.perf_counter() - start
            return values

        return query

    def run() -> None:
        for path in paths:
            start = time.perf_counter()
            mesh = load_mesh(path)
            loaded = time.perf_counter()
            mesh, transform = normalization.normalize(mesh)
            normalised = time.perf_counter()
            query_before = totals["query"]
            samples = sampling.sample_sdf(mesh, N_UNIFORM, POINTS - N_UNIFORM, seed=0,
                                          sdf=timed_query(*mesh_arrays(mesh), "winding"))
            sampled = time.perf_counter()
            save_npz(tmp_path / f"{path.stem}.npz", dataclasses.replace(samples, transform=transform))
            written = time.perf_counter()
            totals["load"] += loaded - start
            totals["normalise"] += normalised - loaded
            totals["sample"] += (sampled - normalised) - (totals["query"] - query_before)
            totals["write"] += written - sampled

    benchmark.pedantic(run, rounds=1, iterations=1)
    per_mesh = {f"{stage}_s": seconds / len(paths) for stage, seconds in totals.items()}
    benchmark.extra_info.update(
        peer="fastsdf", meshes=len(paths), threads=cpu_threads(), **per_mesh,
        input=f"the first {len(paths)} meshes, serially, {POINTS:,} samples each",
        notes=["Per mesh: " + ", ".join(f"{stage[:-2]} {seconds * 1e3:.0f} ms" for stage, seconds in per_mesh.items())
               + " (query: MeshSDF's build and calls, on every core; the rest on one)."])
    print("\nper mesh: " + ", ".join(f"{stage} {seconds * 1e3:.0f} ms" for stage, seconds in per_mesh.items()))
