"""The step loop that ``fit`` and ``train_diffusion`` share: the checkpoint, the stop rule (steps
and/or seconds of training), the history of the loss, the progress bar, the moving average of the
weights (if kept), the weights with the best held-out score (if chosen so). A trainer brings what
differs: its module, optimiser and generator, its settings, its loss per step (``step``), which
draws its own batch, and its learning-rate schedule (``rate``).

A ``parallel`` run is trained by torchrun's processes together (``train_diffusion``, whose ``step``
goes through DistributedDataParallel): they must agree on the settings, the checkpoint is the
first process's (``Checkpoint``'s ``shared``), the history's loss is the processes' mean and the
progress bar the first process's. Otherwise (``fit``) each process trains on its own.

(``train_epochs`` is the epoch-based trainers' loop: shapes dealt out over processes, totals per
epoch. ``reconstruct`` optimises one code for a few hundred iterations, with neither checkpoint nor
history to keep, and has its own few lines.)
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import torch
from torch import nn

from fastsdf._progress import progress_bar
from fastsdf.training.checkpoint import Checkpoint
from fastsdf.training.distributed import same_on_every_process
from fastsdf.training.distributed import world as process_world
from fastsdf.training.selection import BestWeights

__all__ = ["train_steps"]

COLUMNS = ("step", "seconds", "loss", "learning_rate")  # the history's keys per entry


def train_steps(network: nn.Module, optimiser: torch.optim.Optimizer, generator: torch.Generator | None,
                settings: dict[str, Any], *, step: Callable[[int], torch.Tensor], steps: int | None,
                time_budget: float | None, rate: Callable[[int, float], float], record_every: int = 1,
                label: str, checkpoint: str | os.PathLike | None, checkpoint_every: float,
                progress: bool | None, average: nn.Module | None = None, best: BestWeights | None = None,
                parallel: bool = False, agree: dict[str, Any] | None = None) -> dict[str, Any]:
    """Trains ``network`` with ``optimiser`` until ``steps`` steps or ``time_budget`` seconds of
    training, whichever comes first (at least one of them given); returns the history.

    Args:
        generator: the run's own generator, which ``step`` draws from, or None; saved and restored
            with the checkpoint (as is torch's global one).
        settings: plain values describing the run, which a checkpoint must have been written with.
        step: ``step(done)``: the loss of step ``done`` (counted from 0), its batch drawn; the loop
            zeroes the gradients before, and steps the optimiser after. Under ``parallel``, this
            process's share of the batch's loss, scaled so that the processes' mean is the batch's
            loss (the mean of the gradients, which DDP takes, is then the batch's gradient).
        rate: ``rate(done, trained)``: the learning rate of step ``done`` (counted from 0), after
            ``trained`` seconds of training.
        record_every: steps per history entry (and per checkpoint and bar update); the run's last
            step always makes one.
        label: the progress bar's.
        checkpoint, checkpoint_every: a file saved every so many seconds (at a history entry) and
            at the end; when it exists, training resumes from it.
        progress: a bar over steps (default: when stderr is a terminal).
        average: ``fastsdf.training.ema.moving_average(network)``, updated after every step, saved
            and restored with the checkpoint; or None.
        best: a ``fastsdf.training.selection.BestWeights``, updated at every history entry (its
            score recorded as the entry's ``validation_loss``), saved and restored with the
            checkpoint; or None.
        parallel: torchrun's processes, if ``torch.distributed`` is initialised, train together
            (the module's docstring); they must agree on ``settings`` and ``agree`` (more values)
            and stop by ``steps`` alone.

    Returns:
        per entry ``step`` (counted from 1), ``seconds`` (of training, so far), ``loss`` (the mean
        over the steps since the previous entry), ``learning_rate`` (the last step's), with
        ``best`` ``validation_loss``; ``training_seconds``, ``steps`` (done), with ``best``
        ``best_step`` (the entry whose weights ``best`` holds).
    """
    if parallel and time_budget is not None:
        raise ValueError("a time budget would stop parallel processes at different steps: give steps alone")
    world, rank = process_world() if parallel else (1, 0)
    if world > 1:
        # Processes that disagree would deadlock or train apart: all stop, saying who saw what.
        same_on_every_process({"checkpoint": checkpoint is not None, **(agree or {}), **settings}, "the settings",
                              "every process must train on the same data with the same settings")
    saver = Checkpoint(checkpoint, settings, checkpoint_every, shared=parallel) if checkpoint is not None else None
    history: dict[str, Any] = {key: [] for key in (*COLUMNS, *(("validation_loss",) if best is not None else ()))}
    done, trained = 0, 0.0
    kept = None if best is None else best.module
    resumed = None if saver is None else saver.resume(network, optimiser, generator, average, kept)
    if resumed is not None:
        done, trained, history = resumed
        if best is not None:
            best.restore(history)

    def finished() -> bool:
        return (steps is not None and done >= steps) or (time_budget is not None and trained >= time_budget)

    bar = progress_bar(progress if rank == 0 else False, steps, done, label, "step")
    network.train()
    window, window_steps = 0.0, 0
    try:
        while not finished():
            tick = time.perf_counter()
            learning_rate = rate(done, trained)
            for group in optimiser.param_groups:
                group["lr"] = learning_rate
            optimiser.zero_grad(set_to_none=True)
            loss = step(done)
            loss.backward()
            optimiser.step()
            if average is not None:
                average.update_parameters(network)
            window += loss.item()  # waits for the step: the seconds below are the device's too
            window_steps += 1
            trained += time.perf_counter() - tick
            done += 1
            if done % record_every != 0 and not finished():
                continue
            mean = window / window_steps
            if world > 1:
                total = torch.tensor(window, dtype=torch.float64, device=loss.device)  # NCCL reduces CUDA tensors
                torch.distributed.all_reduce(total)
                mean = total.item() / (world * window_steps)
            for key, value in zip(COLUMNS, (done, trained, mean, learning_rate)):
                history[key].append(value)
            if best is not None:
                history["validation_loss"].append(best.update(done))
            window, window_steps = 0.0, 0
            if bar is not None:
                bar.update(done - bar.n)
                bar.set_postfix(loss=f"{history['loss'][-1]:.3e}", refresh=False)
            if saver is not None:
                saver.maybe_save(network, optimiser, generator, done, trained, history, average, kept)
    finally:
        if bar is not None:
            bar.close()
    if saver is not None:
        saver.save(network, optimiser, generator, done, trained, history, average, kept)
    network.eval()
    history.update(training_seconds=trained, steps=done)
    if best is not None:
        history.update(best_step=best.step)
    return history
