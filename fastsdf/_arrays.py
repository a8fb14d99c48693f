"""What every layer asks of an array it was given: is it a torch tensor, and its values as NumPy.

Told without importing torch: a tensor can exist only once torch is imported, so a session that
uses NumPy alone never pays for the import.
"""

from __future__ import annotations

import sys
from typing import Any, Sequence

import numpy as np

__all__ = ["concatenate", "constant_like", "is_tensor", "to_numpy"]


def is_tensor(x: Any) -> bool:
    """Whether ``x`` is a torch tensor (a subclass such as ``nn.Parameter`` included)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def to_numpy(x: Any) -> np.ndarray:
    """``x`` as a NumPy array: a tensor detached and copied to the host, anything else through
    ``np.asarray``."""
    if is_tensor(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def concatenate(parts: list[Any]) -> Any:
    """The arrays or tensors of ``parts`` (all of one kind) joined along their first axis."""
    if is_tensor(parts[0]):
        import torch

        return torch.cat(parts)
    return np.concatenate(parts)


def constant_like(values: Sequence[float] | np.ndarray, like: Any) -> Any:
    """``values`` as an array of ``like``'s kind, dtype and device (to combine with it)."""
    if is_tensor(like):
        import torch

        return torch.as_tensor(values, dtype=like.dtype, device=like.device)
    return np.asarray(values, dtype=like.dtype)
