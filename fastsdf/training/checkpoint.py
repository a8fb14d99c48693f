"""Training progress saved atomically every so often, so that a killed run resumes where it was.

The checkpoint of a run that torchrun's processes train together (``shared``) is the first
process's (rank 0): it alone decides whether there is one, reads it and sends its state to the
others (``resume``), and writes it (``save`` does nothing on the other processes), so that nodes
need not share the output folder.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastsdf.io import atomic_write
from fastsdf.training.distributed import from_first_process
from fastsdf.training.distributed import world as process_world

__all__ = ["Checkpoint"]

FORMAT = "fastsdf.checkpoint"
ANY = object()  # see ADDED_SETTINGS
# Settings that checkpoints gained later, with the value a file that lacks them was written with
# (ANY: not known, so any value resumes it).
ADDED_SETTINGS = {"network": ANY, "ema_decay": 0.0, "latents": ANY, "held_out": 0.0}


class Checkpoint:
    """A checkpoint file for one run: the model, optimiser, random generators (the run's own, if it
    has one, and torch's global one, which dropout draws from), the moving average of the model's
    weights (if the run keeps one: ``fastsdf.training.ema``), the best weights so far (if the run
    chooses its weights by a held-out score: ``fastsdf.training.selection``), steps done, seconds
    trained and history, with the run's settings, which a resume must match.

    Args:
        path: the file (written atomically: a kill during a save leaves the previous one whole).
        settings: plain values describing the run (compared on resume).
        every: seconds between saves (``maybe_save``).
        shared: the run is torchrun's processes' together, and the checkpoint the first process's;
            otherwise each process's own (one process's run).
    """

    def __init__(self, path: str | os.PathLike, settings: dict[str, Any], every: float = 30.0, *,
                 shared: bool = False):
        self.path = Path(path)
        self.settings = settings
        self.every = float(every)
        self.shared = shared
        self._last = time.perf_counter()

    def exists(self) -> bool:
        return self.path.exists()

    def resume(self, network: nn.Module, optimiser: torch.optim.Optimizer, generator: torch.Generator | None = None,
               average: nn.Module | None = None,
               best: nn.Module | None = None) -> tuple[int, float, dict[str, Any]] | None:
        """Where the file exists, its state put into ``network``, ``optimiser``, ``generator``,
        ``average`` and ``best`` (``apply``): (steps done, seconds trained, history); None where there is none.
        A shared checkpoint: where it exists on the first process, which reads it, on every
        process; reading it, where it fails, fails on every process."""
        def read() -> dict[str, Any] | None:
            return self.load() if self.exists() else None

        state = from_first_process(read, f"reading {self.path}") if self.shared else read()
        return None if state is None else self.apply(state, network, optimiser, generator, average, best)

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
        saved = dict(state["settings"])
        for key, implied in ADDED_SETTINGS.items():
            if key in self.settings and key not in saved:
                if implied is not ANY and self.settings[key] != implied:
                    raise ValueError(f"{self.path} was written before checkpoints recorded {key} (its run had {key}="
                                     f"{implied!r}, this one {self.settings[key]!r}): resume it with {key}={implied!r}, "
                                     f"or remove it to start afresh")
                saved[key] = self.settings[key]
        if saved != self.settings:
            raise ValueError(f"{self.path} is a checkpoint of another run ({_differences(saved, self.settings)}"
                             f"): remove it to start afresh")
        return state

    @staticmethod
    def apply(state: dict[str, Any], network: nn.Module, optimiser: torch.optim.Optimizer,
              generator: torch.Generator | None = None,
              average: nn.Module | None = None, best: nn.Module | None = None) -> tuple[int, float, dict[str, Any]]:
        """Puts ``load``'s state into ``network``, ``optimiser``, ``generator``, ``average``,
        ``best`` and torch's global generator; returns (steps done, seconds trained, history)."""
        try:
            network.load_state_dict(state["network"])
            optimiser.load_state_dict(state["optimiser"])
            if average is not None:
                average.load_state_dict(state.get("average") or {})
            if best is not None:
                best.load_state_dict(state.get("best") or {})
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
             steps: int, seconds: float, history: dict[str, Any], average: nn.Module | None = None,
             best: nn.Module | None = None) -> None:
        """Writes the state (a shared checkpoint: on the first process only)."""
        if self.shared and process_world()[1] != 0:
            return
        state = {"format": FORMAT, "settings": self.settings, "network": network.state_dict(),
                 "optimiser": optimiser.state_dict(), "generator": None if generator is None else generator.get_state(),
                 "torch_rng": torch.random.get_rng_state(), "average": None if average is None else average.state_dict(),
                 "best": None if best is None else best.state_dict(), "steps": steps, "seconds": seconds, "history": history}
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
