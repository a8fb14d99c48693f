"""Training curves, 2D signed distance fields and shape completions as PNG (matplotlib, no display)."""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from fastsdf.geometry.grid import UNIT_BOUNDS_2D, Bounds, parse_bounds
from fastsdf.io import atomic_write
from fastsdf.meshing.marching_squares import marching_squares

__all__ = ["plot_completion", "plot_history", "plot_sdf_2d"]


def plot_history(history: dict[str, Any], path: str | os.PathLike, title: str = "training", x: str = "step") -> None:
    """The loss (log scale) and the learning rate against ``x`` (``"step"``, ``"epoch"``), from a
    history with lists ``x``, ``loss`` and optionally ``learning_rate`` and ``validation_loss``
    (the loss on held-out data, with ``best_step`` marked: ``fastsdf.train_diffusion``'s), as
    ``fastsdf.fit`` and ``fastsdf.train_deepsdf`` return, written atomically."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    steps, loss = history.get(x, []), history.get("loss", [])
    if len(steps) != len(loss):
        raise ValueError(f"history has {len(steps)} {x}s but {len(loss)} losses")
    figure, axis = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    try:
        axis.plot(steps, loss, color="tab:blue", linewidth=1, label="training")
        if history.get("validation_loss"):
            axis.plot(steps, history["validation_loss"], color="tab:green", linewidth=1, label="held out")
            if "best_step" in history:
                axis.axvline(history["best_step"], color="tab:green", linestyle=":", linewidth=1,
                             label="weights kept")
            axis.legend(loc="upper right", fontsize=8)
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


def plot_sdf_2d(fields: Sequence[Any], path: str | os.PathLike, bounds: Bounds = UNIT_BOUNDS_2D,
                titles: Sequence[str] | None = None, columns: int | None = None,
                outlines: Sequence[Any | None] | None = None) -> None:
    """2D signed distance fields as coloured pictures with their zero contour, side by side.

    Args:
        fields: 2-D arrays (R0, R1) of signed distances on ``fastsdf.geometry.grid.Grid(...,
            bounds, dim=2)`` (axis 0 along x), e.g. ``PolygonSDF.grid``'s; blue inside, red
            outside, white on the zero contour (``marching_squares``, drawn in black), with
            iso-lines every tenth of the largest |distance| of all fields.
        path: the PNG to write, atomically.
        bounds: the rectangle the fields cover.
        titles: one per field, or None.
        columns: pictures per row (default: all in one row).
        outlines: per field, ``(vertices (V, 2), segments (S, 2))`` of a reference outline drawn
            dashed in green (e.g. the ground truth), or None.

    Raises:
        ValueError: no fields, a field that is not 2-D and finite, or titles or outlines of
            another length than the fields.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    arrays = [np.asarray(f, dtype=np.float64) for f in fields]
    if not arrays:
        raise ValueError("no fields to plot")
    for i, a in enumerate(arrays):
        if a.ndim != 2 or min(a.shape) < 2 or not np.isfinite(a).all():
            raise ValueError(f"field {i} must be a finite 2-D array with at least 2 samples per axis, got "
                             f"shape {a.shape}")
    for name, extra in (("titles", titles), ("outlines", outlines)):
        if extra is not None and len(extra) != len(arrays):
            raise ValueError(f"{len(extra)} {name} for {len(arrays)} fields")
    lo, hi = parse_bounds(bounds, 2)
    columns = len(arrays) if columns is None else max(1, min(int(columns), len(arrays)))
    rows = -(-len(arrays) // columns)
    scale = max(float(np.abs(a).max()) for a in arrays) or 1.0
    figure, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.4 * rows), dpi=100, squeeze=False)
    try:
        for index, axis in enumerate(axes.flat):
            axis.set_axis_off()
            if index >= len(arrays):
                continue
            field = arrays[index]
            # imshow draws rows along y: the field's axis 1 is y, hence the transpose.
            axis.imshow(field.T, origin="lower", extent=(lo[0], hi[0], lo[1], hi[1]), cmap="RdBu_r",
                        vmin=-scale, vmax=scale, interpolation="bilinear")
            xs = np.linspace(lo[0], hi[0], field.shape[0])
            ys = np.linspace(lo[1], hi[1], field.shape[1])
            axis.contour(xs, ys, field.T, levels=np.linspace(-scale, scale, 21), colors="k", linewidths=0.3,
                         alpha=0.35)
            spacing = ((hi[0] - lo[0]) / (field.shape[0] - 1), (hi[1] - lo[1]) / (field.shape[1] - 1))
            verts, segments = marching_squares(field, 0.0, spacing, lo)
            axis.add_collection(LineCollection(verts[segments], colors="k", linewidths=1.5))
            if outlines is not None and outlines[index] is not None:
                vertices, pairs = (np.asarray(a) for a in outlines[index])
                axis.add_collection(LineCollection(vertices[pairs], colors="tab:green", linewidths=1.0,
                                                   linestyles="dashed"))
            axis.set_xlim(lo[0], hi[0])
            axis.set_ylim(lo[1], hi[1])
            axis.set_aspect("equal")
            if titles is not None:
                axis.set_title(str(titles[index]), fontsize=9)
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
