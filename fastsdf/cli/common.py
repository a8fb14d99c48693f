"""What several commands share: the parser, argument types, the rule for existing outputs, the
fit-extract-evaluate-render pipeline's steps."""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path
from typing import Any, Callable, Iterable, NoReturn

from fastsdf import _validation

__all__ = ["SEED_MAX", "Parser", "UsageError", "add_overwrite_option", "integer", "load_fitted", "load_model_of",
           "mesh_method", "number", "positive", "positive_int", "progress_enabled", "refuse_to_overwrite",
           "relu_network", "resolution", "seed", "write_json"]

SEED_MAX = _validation.SEED_LIMIT - 1


class UsageError(ValueError):
    """A bad command line found after parsing (exit status 2)."""


class Parser(argparse.ArgumentParser):
    """argparse's parser, reporting a bad command line in one line on stderr (``PROG: error:
    message``, exit status 2) rather than after its usage block; ``--help`` shows the usage."""

    def error(self, message: str) -> NoReturn:
        # "argument --steps: must be >= 1" (the types below say "must be") reads "--steps must be >= 1".
        match = re.fullmatch(r"argument (\S+): (.*)", message, re.DOTALL)
        if match:
            message = f"{match[1]}{' ' if match[2].startswith('must ') else ': '}{match[2]}"
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def _argparse_type(convert: Callable[[str], Any], check: Callable[..., Any], *args: Any,
                   **kwargs: Any) -> Callable[[str], Any]:
    """An argparse type: the text through ``convert``, then the ``fastsdf._validation`` check given
    an empty name (its message then starts at "must"; the parser puts the option's name in front)."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = text  # not a number at all: the check says so, quoting it
        try:
            return check(value, "", *args, **kwargs)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def integer(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [minimum, maximum]."""
    return _argparse_type(int, _validation.integer, minimum, maximum)


def number(low: float = -math.inf, high: float = math.inf, *, low_open: bool = False,
           high_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number between ``low`` and ``high`` (each included unless open)."""
    return _argparse_type(float, _validation.real, low, high, low_open=low_open, high_open=high_open)


positive_int = integer(1)
positive = number(0.0, low_open=True)
resolution = integer(2)  # grid samples per axis
seed = integer(0, SEED_MAX)


def add_overwrite_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace outputs that already exist (without it the command refuses to start)")


def refuse_to_overwrite(outputs: Iterable[Path], overwrite: bool) -> None:
    """FileExistsError (exit status 1) naming the first of ``outputs`` that exists, unless ``overwrite``.

    The rule of every command that writes: outputs already there are never replaced without
    ``--overwrite`` (``fastsdf sample`` skips them instead); a run with a checkpoint is unfinished,
    and resumes (its outputs are its own).
    """
    if overwrite:
        return
    existing = [path for path in outputs if path.exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise FileExistsError(f"{existing[0]} exists{more}: pass --overwrite to replace it, or choose another output")


def relu_network(width: int, hidden_layers: int, *, skip: bool = True, latent_features: int = 0,
                 encoding: dict[str, Any] | None = None) -> Any:
    """``fastsdf.ReluMLP(3, width, hidden_layers, 1)`` (``--network relu`` or ``pe``, ``--decoder
    relu``), the input fed again into its middle layer, as DeepSDF's layer 4 of 8, unless not
    ``skip`` (or it has no hidden layer to feed); ``latent_features``: a code's length;
    ``encoding``: a ``FourierFeatures``'s arguments."""
    from fastsdf.nn import FourierFeatures, ReluMLP

    middle = ((hidden_layers + 1) // 2,) if skip and hidden_layers else ()
    return ReluMLP(3, width, hidden_layers, 1, skip=middle, latent_features=latent_features,
                   encoding=None if encoding is None else FourierFeatures(**encoding))


def progress_enabled(quiet: bool) -> bool:
    """Whether a command shows its progress bars: never with ``--quiet``, else by the rule of every bar."""
    from fastsdf._progress import show_progress

    return show_progress(False if quiet else None)


def write_json(path: Path, data: dict[str, Any]) -> None:
    from fastsdf.io import atomic_write

    with atomic_write(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")


def mesh_method(model: Any, requested: str = "sparse") -> str:
    """``requested``, except that an occupancy model (logits, not distances: no bound on how fast
    they change) is never meshed by the narrow band: "sparse" becomes "mise" (Occupancy Networks'
    extraction, refined where the signs change)."""
    return "mise" if requested == "sparse" and getattr(model, "kind", "sdf") != "sdf" else requested


def load_model_of(path: str, kind: type, what: str) -> Any:
    """The model saved at ``path`` if it is a ``kind`` (``what`` names it in the error), else ValueError."""
    from fastsdf.training.loading import load_model

    model = load_model(path)
    if not isinstance(model, kind):
        raise ValueError(f"{path} does not hold {what}")
    return model


def load_fitted(path: str) -> Any:
    """The ``FittedSDF`` saved at ``path`` (``fastsdf fit``'s); ValueError for another kind of model."""
    from fastsdf.training.fitted import FittedSDF

    return load_model_of(path, FittedSDF, "one fitted shape (fastsdf fit's output); a DeepSDF auto-decoder's "
                                          "shapes are meshed by `fastsdf reconstruct`")
