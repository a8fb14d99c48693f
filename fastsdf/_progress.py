"""The progress bars of long runs (training, meshing, ``fastsdf`` commands), and the one rule for
showing them."""

from __future__ import annotations

import sys
from typing import Any, Iterable

__all__ = ["progress_bar", "show_progress"]


def show_progress(enabled: bool | None, long_run: bool = True) -> bool:
    """Whether a bar is shown: ``enabled`` when given; else when stderr is a terminal (someone is
    watching) and the caller expects the run to be long enough to watch (``long_run``:
    ``extract_mesh`` says so for grids of 2^24 points or more, training always)."""
    return sys.stderr.isatty() and long_run if enabled is None else bool(enabled)


def progress_bar(enabled: bool | None, total: int | None, initial: int, desc: str, unit: str,
                 iterable: Iterable[Any] | None = None, *, long_run: bool = True, unit_scale: bool = False) -> Any:
    """A tqdm bar (over ``iterable``, if given), or None when ``show_progress(enabled, long_run)``
    is False (tqdm is then not even imported). A ``total`` of None counts without an end (a time
    budget); ``unit_scale`` writes large counts as 1.2M."""
    if not show_progress(enabled, long_run):
        return None
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, unit_scale=unit_scale, leave=False)
