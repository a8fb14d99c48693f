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
            raise ValueError(f"{self.path} is a checkpoint of another run ({state['settings']}, not "
                             f"{self.settings}): remove it to start afresh")
        return state

    @staticmethod
    def apply(state: dict[str, Any], network: nn.Module, optimiser: torch.optim.Optimizer,
              generator: torch.Generator | None = None) -> tuple[int, float, dict[str, Any]]:
        """Puts ``load``'s state into ``network``, ``optimiser``, ``generator`` and torch's global
        generator; returns (steps done, seconds trained, history)."""
        network.load_state_dict(state["network"])
        optimiser.load_state_dict(state["optimiser"])
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
