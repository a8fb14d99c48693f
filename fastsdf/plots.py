"""Training curves as PNG (matplotlib, no display)."""

from __future__ import annotations

import os
from typing import Any

from fastsdf.io import atomic_write

__all__ = ["plot_completion", "plot_history"]


def plot_history(history: dict[str, Any], path: str | os.PathLike, title: str = "training", x: str = "step") -> None:
    """The loss (log scale) and the learning rate against ``x`` (``"step"``, ``"epoch"``), from a
    history with lists ``x``, ``loss`` and optionally ``learning_rate`` (as ``fastsdf.fit`` and
    ``fastsdf.train_deepsdf`` return), written atomically."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    steps, loss = history.get(x, []), history.get("loss", [])
    if len(steps) != len(loss):
        raise ValueError(f"history has {len(steps)} {x}s but {len(loss)} losses")
    figure, axis = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    try:
        axis.plot(steps, loss, color="tab:blue", linewidth=1)
        if any(v > 0 for v in loss):
            axis.set_yscale("log")
        axis.set_xlabel(x)
        axis.set_ylabel("loss", color="tab:blue")
        axis.set_title(title)
        axis.grid(alpha=0.3)
        if history.get("learning_rate"):
            rate = axis.twinx()
            rate.plot(steps, history["learning_rate"], color="tab:orange", linewidth=1)
            rate.set_ylabel("learning rate", color="tab:orange")
        figure.tight_layout()
        with atomic_write(path) as out:
            figure.savefig(out, format="png")
    finally:
        plt.close(figure)


def plot_completion(rows: list[tuple[str, Any, Any, Any]], path: str | os.PathLike, size: int = 256) -> None:
    """Shape completion side by side, one row per shape: its input points, the predicted mesh and
    the ground truth (``fastsdf.render.render_mesh``, the same view), written atomically as PNG.

    ``rows``: (name, points (N, 3), (verts, faces) predicted, (verts, faces) truth); an empty
    predicted mesh leaves its panel blank.
    """
    import matplotlib
    import numpy as np

    from fastsdf.render import render_mesh

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if not rows:
        raise ValueError("no shapes to draw")
    figure = plt.figure(figsize=(7.5, 2.5 * len(rows)), dpi=100)
    try:
        for r, (name, points, predicted, truth) in enumerate(rows):
            cloud = np.asarray(points, np.float64).reshape(-1, 3)
            axis = figure.add_subplot(len(rows), 3, 3 * r + 1, projection="3d")
            # render_mesh's default view: y up, azimuth 35, elevation 25 (matplotlib's z is up).
            axis.scatter(cloud[:, 0], cloud[:, 2], cloud[:, 1], s=2, c="tab:blue", depthshade=False)
            axis.view_init(elev=25, azim=-90 + 35)
            axis.set_axis_off()
            axis.set_title(f"{name}: {len(cloud)} input points", fontsize=8)
            for c, (mesh, label) in enumerate(((predicted, "prediction"), (truth, "ground truth")), start=2):
                axis = figure.add_subplot(len(rows), 3, 3 * r + c)
                axis.imshow(render_mesh(*mesh, size=size))
                axis.set_axis_off()
                axis.set_title(label, fontsize=8)
        figure.tight_layout()
        with atomic_write(path) as out:
            figure.savefig(out, format="png")
    finally:
        plt.close(figure)
