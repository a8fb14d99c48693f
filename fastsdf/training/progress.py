"""The progress bars of long runs (training, ``fastsdf`` commands), and the one rule for showing them."""

from __future__ import annotations

import sys
from typing import Any, Iterable

__all__ = ["progress_bar", "show_progress"]


def show_progress(enabled: bool | None) -> bool:
    """Whether a bar is shown: ``enabled`` when given, else whether stderr is a terminal (someone
    is watching)."""
    return sys.stderr.isatty() if enabled is None else enabled


def progress_bar(enabled: bool | None, total: int | None, initial: int, desc: str, unit: str,
                 iterable: Iterable[Any] | None = None) -> Any:
    """A tqdm bar (over ``iterable``, if given), or None when ``show_progress(enabled)`` is False. A
    ``total`` of None counts without an end (a time budget)."""
    if not show_progress(enabled):
        return None
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, leave=False)
