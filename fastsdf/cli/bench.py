"""``fastsdf bench``: how fast the main operations run on this machine, in a few seconds.

A quick look, not the comparison with other libraries: that is the pytest-benchmark suite in
benchmarks/ (see its README).
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable

from fastsdf.cli.common import positive_int

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="time the main operations on this machine (a few seconds)",
                           description="Times mesh signed distances, marching cubes, the SIREN forward and a "
                                       "training step, each the median of a few calls, and prints a table. "
                                       "The comparison with other libraries is the pytest-benchmark suite "
                                       "in benchmarks/.")
    bench.add_argument("--repeat", type=positive_int, default=5, help="calls timed per operation (default: 5)")
    bench.set_defaults(run=_bench)


def _median_seconds(call: Callable[[], Any], repeat: int) -> float:
    call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _bench(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    import fastsdf
    from fastsdf.cli.demo import bundled_mesh
    from fastsdf.geometry.mesh_io import load_mesh
    from fastsdf.geometry.normalization import normalize

    mesh, _ = normalize(load_mesh(bundled_mesh()))
    rng = np.random.default_rng(0)
    points = rng.uniform(-1, 1, (1_000_000, 3)).astype(np.float32)
    sdf = fastsdf.MeshSDF(np.asarray(mesh.vertices), np.asarray(mesh.faces))
    x = np.linspace(-1, 1, 256, dtype=np.float32)
    volume = np.sqrt(x[:, None, None] ** 2 + x[None, :, None] ** 2 + x[None, None, :] ** 2) - 0.6
    siren = fastsdf.SirenMLP(3, 256, 3, 1)
    batch = torch.from_numpy(points[:65_536])
    train = fastsdf.SirenMLP(3, 256, 3, 1)
    optimiser = torch.optim.Adam(train.parameters(), lr=1e-5)
    step_points = batch[:16_384]

    def forward() -> None:
        with torch.no_grad():
            siren(batch)

    def step() -> None:
        optimiser.zero_grad()
        y, jacobian = train.forward_with_gradient(step_points)
        (y.abs().mean() + (jacobian[:, 0].norm(dim=-1) - 1).abs().mean()).backward()
        optimiser.step()

    rows = [
        ("MeshSDF, winding signs (Spot, 1M points)", len(points), lambda: sdf(points)),
        ("marching_cubes (256^3 sphere)", 256**3, lambda: fastsdf.marching_cubes(volume)),
        ("SirenMLP 3->256x4->1 forward (65,536 points)", len(batch), forward),
        ("SirenMLP training step, L1 + eikonal (16,384 points)", len(step_points), step),
    ]
    print(f"{'operation':55s} {'median':>10s} {'throughput':>18s}")
    for name, count, call in rows:
        seconds = _median_seconds(call, args.repeat)
        print(f"{name:55s} {seconds * 1e3:8.1f} ms {count / seconds / 1e6:12.2f} M/s")
    return 0
