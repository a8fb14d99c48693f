"""The seeds training takes: what NumPy's and torch's generators both accept."""

from __future__ import annotations

from typing import Any

import torch

from fastsdf._validation import SEED_LIMIT, integer

__all__ = ["SEED_LIMIT", "check_seed", "mixed_seed", "torch_generator"]

_MIX = 1_000_003  # the multiplier that folds counters (an epoch, a shape, a step) into a seed


def check_seed(seed: Any, allow_none: bool = True) -> int | None:
    """``seed`` as an int (None stays None where allowed); ValueError unless an integer in [0, 2^63)."""
    if seed is None and allow_none:
        return None
    return integer(seed, "seed", 0, SEED_LIMIT - 1)


def mixed_seed(seed: int, *counters: int) -> int:
    """One seed in [0, 2^63) from ``seed`` and ``counters`` (say an epoch and a shape, or a step):
    a draw seeded by it depends on them alone, not on what was drawn before, so that any process,
    DataLoader worker or resumed run makes the same draw."""
    for counter in counters:
        seed = (seed * _MIX + counter) % 2**63
    return seed


def torch_generator(seed: Any) -> torch.Generator:
    """A CPU generator seeded by ``seed`` (checked by ``check_seed``), or from fresh entropy for None."""
    generator = torch.Generator()
    seed = check_seed(seed)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator
