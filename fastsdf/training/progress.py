"""The progress bar of long training runs."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["progress_bar"]


def progress_bar(enabled: bool | None, total: int | None, initial: int, desc: str, unit: str) -> Any:
    """A tqdm bar, or None when ``enabled`` is False, or None and stderr is not a terminal. A
    ``total`` of None counts without an end (a time budget)."""
    if enabled is False or (enabled is None and not sys.stderr.isatty()):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False)
