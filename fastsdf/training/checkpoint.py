"""Training progress saved atomically every so often, so that a killed run resumes where it was."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastsdf.io import atomic_write

__all__ = ["Checkpoint"]

FORMAT = "fastsdf.checkpoint"


class Checkpoint:
    """A checkpoint file for one run: the model, optimiser, random generators (the run's own, if it
    has one, and torch's global one, which dropout draws from), steps done, seconds trained and
    history, with the run's settings, which a resume must match.

    Args:
        path: the file (written atomically: a kill during a save leaves the previous one whole).
        settings: plain values describing the run (compared on resume).
        every: seconds between saves (``maybe_save``).
    """

    def __init__(self, path: str | os.PathLike, settings: dict[str, Any], every: float = 30.0):
        self.path = Path(path)
        self.settings = settings
        self.every = float(every)
        self._last = time.perf_counter()

    def exists(self) -> bool:
        return self.path.exists()

    def restore(self, network: nn.Module, optimiser: torch.optim.Optimizer,
                generator: torch.Generator | None = None) -> tuple[int, float, dict[str, Any]]:
        """Loads the saved state into ``network``, ``optimiser`` and ``generator``; returns (steps
        done, seconds trained, history)."""
        return self.apply(self.load(), network, optimiser, generator)

    def load(self) -> dict[str, Any]:
        """The saved state, checked: a fastsdf checkpoint of this run (``apply`` puts it in place;
        between the two it can travel, as DDP's first process sends it to the others)."""
        try:
            # Plain values and tensors only: a checkpoint lying in an output folder cannot run code.
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same to the user
            raise ValueError(f"{self.path} is not a readable checkpoint (damaged, or not written by fastsdf): "
                             f"{type(exc).__name__}; remove it to start afresh") from None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError(f"{self.path} is not a fastsdf checkpoint")
        settings = self.settings
        if "network" not in state["settings"]:  # written before checkpoints recorded the network
            settings = {key: value for key, value in settings.items() if key != "network"}
        if state["settings"] != settings:
            raise ValueError(f"{self.path} is a checkpoint of another run ({_differences(state['settings'], settings)}"
                             f"): remove it to start afresh")
        return state

    @staticmethod
    def apply(state: dict[str, Any], network: nn.Module, optimiser: torch.optim.Optimizer,
              generator: torch.Generator | None = None) -> tuple[int, float, dict[str, Any]]:
        """Puts ``load``'s state into ``network``, ``optimiser``, ``generator`` and torch's global
        generator; returns (steps done, seconds trained, history)."""
        try:
            network.load_state_dict(state["network"])
            optimiser.load_state_dict(state["optimiser"])
        except (RuntimeError, ValueError) as exc:
            first_line = str(exc).strip().splitlines()[0]
            raise ValueError(f"the checkpoint is of another network than this run's ({first_line}): remove it to "
                             f"start afresh") from None
        if generator is not None:
            generator.set_state(state["generator"])
        torch.random.set_rng_state(state["torch_rng"])
        return state["steps"], state["seconds"], state["history"]

    def maybe_save(self, *args: Any, **kwargs: Any) -> None:
        """``save`` if ``every`` seconds have passed since the last one."""
        if time.perf_counter() - self._last >= self.every:
            self.save(*args, **kwargs)

    def save(self, network: nn.Module, optimiser: torch.optim.Optimizer, generator: torch.Generator | None,
             steps: int, seconds: float, history: dict[str, Any]) -> None:
        state = {"format": FORMAT, "settings": self.settings, "network": network.state_dict(),
                 "optimiser": optimiser.state_dict(), "generator": None if generator is None else generator.get_state(),
                 "torch_rng": torch.random.get_rng_state(), "steps": steps, "seconds": seconds, "history": history}
        with atomic_write(self.path) as f:
            torch.save(state, f)
        self._last = time.perf_counter()


def _differences(saved: dict[str, Any], wanted: dict[str, Any]) -> str:
    """The settings in which a checkpoint differs from this run, one clause each; a list (such as
    the shapes' names) by its length and first difference rather than in full."""
    clauses = []
    for key in sorted(set(saved) | set(wanted), key=str):
        if key not in saved or key not in wanted:
            clauses.append(f"{key}: {'not ' if key not in saved else ''}saved, {'not ' if key not in wanted else ''}"
                           f"set now")
            continue
        old, new = saved[key], wanted[key]
        if old == new:
            continue
        if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
            first = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new)))
            clauses.append(f"{key}: {len(old)} saved, {len(new)} now, first differing at position {first}")
        else:
            clauses.append(f"{key}: {_short(old)} saved, {_short(new)} now")
    return "; ".join(clauses)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
