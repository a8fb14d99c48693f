"""What ``fastsdf.ops.siren`` asks of a backend's fused kernels (``FusedBackend``, which
``fastsdf.ops.siren_cpu`` and ``fastsdf.ops.siren_triton`` implement as modules), and the cache in
which a backend keeps what it prepares from a network's parameters (``KernelCache``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch

__all__ = ["FusedBackend", "KernelCache", "records_graph"]


class KernelCache:
    """What a backend prepares from a network's parameters (the CPU kernel's packed weights), kept
    while ``holds(prepared)`` says it still matches them. That check must look at the values:
    edits through ``.data`` (``p.data.add_(...)``, ``p.data.copy_(...)``, ``p.data = new``) or
    through a NumPy view bump no version counter and may keep the storage. Owned by a module; copies
    and pickles of it start empty."""

    def __init__(self) -> None:
        self._entries: dict[str, Any] = {}

    def get(self, name: str, make: Callable[[], Any], holds: Callable[[Any], bool]) -> Any:
        entry = self._entries.get(name)
        if entry is None or not holds(entry):
            entry = self._entries[name] = make()
        return entry

    def __reduce__(self) -> tuple:
        return (KernelCache, ())


def records_graph(tensors: Sequence[torch.Tensor | None]) -> bool:
    """Whether autograd records a call on ``tensors``: grad mode on and one of them requires grad."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


class FusedBackend(Protocol):
    """A backend's fused kernels as the dispatcher calls them: x (N, in), weights (out, in) per layer,
    biases or None, omegas or None for a linear last layer, precision one of ``siren.PRECISIONS``."""

    def supports(self, weights: Sequence[torch.Tensor], omegas: Sequence[float | None]) -> bool:
        """Whether the fused kernels take this network (else the composed path runs it)."""
        ...

    def jacobian_pays(self, precision: str) -> bool:
        """Whether ``forward_with_gradient`` at ``precision`` runs fused unless FASTSDF_BACKEND forces
        it: where it was measured faster than the composed path."""
        ...

    def serves_recorded(self, x: torch.Tensor, weights: Sequence[torch.Tensor], grad_columns: int | None,
                        double_backward: bool) -> bool:
        """Whether a call that autograd records runs fused, its backward the backend's (else the
        composed path): ``grad_columns`` None for ``forward``; ``double_backward`` whether the
        call's gradients must themselves be differentiable."""
        ...

    def forward(self, x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None],
                omegas: Sequence[float | None], precision: str, cache: KernelCache) -> torch.Tensor:
        """The network at x: (N, out)."""
        ...

    def forward_with_gradient(self, x: torch.Tensor, weights: Sequence[torch.Tensor],
                              biases: Sequence[torch.Tensor | None], omegas: Sequence[float | None], precision: str,
                              grad_columns: int, cache: KernelCache) -> tuple[torch.Tensor, torch.Tensor]:
        """(y (N, out), dy/dx (N, out, grad_columns)) for the last ``grad_columns`` inputs."""
        ...
