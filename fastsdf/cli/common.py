"""What several commands share: argument types, the fit-extract-evaluate-render pipeline's steps."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

__all__ = ["UsageError", "load_fitted", "load_model_of", "mesh_method", "positive", "positive_int",
           "progress_enabled", "write_json"]


class UsageError(ValueError):
    """A bad command line found after parsing (exit status 2)."""


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def resolution(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"expected at least 2 samples per axis, got {text!r}")
    return value


def progress_enabled(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


def write_json(path: Path, data: dict[str, Any]) -> None:
    from fastsdf.io import atomic_write

    with atomic_write(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")


def mesh_method(model: Any, requested: str = "sparse") -> str:
    """``requested``, except that an occupancy model (logits, not distances: no bound on how fast
    they change) is never meshed sparsely."""
    return "chunked" if requested == "sparse" and getattr(model, "kind", "sdf") != "sdf" else requested


def load_model_of(path: str, kind: type, what: str) -> Any:
    """The model saved at ``path`` if it is a ``kind`` (``what`` names it in the error), else ValueError."""
    from fastsdf.training.saved import load_model

    model = load_model(path)
    if not isinstance(model, kind):
        raise ValueError(f"{path} does not hold {what}")
    return model


def load_fitted(path: str) -> Any:
    """The ``FittedSDF`` saved at ``path`` (``fastsdf fit``'s); ValueError for another kind of model."""
    from fastsdf.training.fitted import FittedSDF

    return load_model_of(path, FittedSDF, "one fitted shape (fastsdf fit's output); a DeepSDF auto-decoder's "
                                          "shapes are meshed by `fastsdf reconstruct`")
