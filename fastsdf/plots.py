"""Training curves as PNG (matplotlib, no display)."""

from __future__ import annotations

import os
from typing import Any

from fastsdf.io import atomic_write

__all__ = ["plot_history"]


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
