"""The epoch loop that ``train_deepsdf``, ``train_occupancy`` and ``train_shape_vae`` share: the processes' agreement, the
checkpoint, DistributedDataParallel, the stream of batches, the totals and history of each epoch,
the progress bar and the time budget. A trainer brings what differs: its module and optimiser,
its settings, its loss per batch (``step``) and what an epoch's totals mean (``summary``).

Under torchrun (``torch.distributed`` initialised) every batch's shapes are dealt out to the
processes (``shape_batches``), and ``step`` is given ``scale`` = processes / shapes in the batch:
a process's loss is its share of the batch's sum over shapes times ``scale``, so that DDP's average
of the processes' gradients is the gradient of the whole batch's mean over shapes, and 1 and N
processes train the same model (up to floating-point summation order).

Before training, the processes agree (``fastsdf.training.distributed``): they must see the same
shapes (``fingerprint``: names, row counts, surface points) and have the same settings, else every
process stops with an error listing what each saw. The checkpoint is the first process's (rank 0):
it alone decides whether there is one, reads it, sends its state to the others and writes it.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any, Callable, Sequence

import torch
from torch import nn

from fastsdf._progress import progress_bar
from fastsdf._validation import integer, real
from fastsdf.training.checkpoint import Checkpoint
from fastsdf.training.distributed import data_parallel, on_every_process, same_on_every_process
from fastsdf.training.distributed import world as process_world
from fastsdf.training.shape_collection import ShapeCollection
from fastsdf.training.shape_loader import shape_batches
from fastsdf.training.shapes import load_shapes

__all__ = ["SHAPES", "fingerprint", "read_shapes", "train_epochs", "training_device"]

SHAPES = "shapes (count, digest of names and row counts)"  # the fingerprint's name in the agreement


def read_shapes(data: ShapeCollection | str | os.PathLike | Sequence[str | os.PathLike]) -> ShapeCollection:
    """``data`` itself if a ``ShapeCollection``, else ``load_shapes(data)``; under DDP, where reading
    fails on one process it fails on every one (``on_every_process``)."""
    return on_every_process(lambda: data if isinstance(data, ShapeCollection) else load_shapes(data),
                            "reading the samples")


def training_device(device: Any) -> torch.device:
    """``device``, by default CUDA where there is one, else the CPU."""
    return torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))


def fingerprint(shapes: ShapeCollection) -> tuple[int, str]:
    """(shape count, a digest of their names, row counts and surface point counts), which every
    process must share."""
    digest = hashlib.sha256()
    for index, name in enumerate(shapes.names):
        digest.update(f"{name}\0{shapes.sizes(index)}\0{shapes.surface_size(index)}\n".encode())
    return len(shapes), digest.hexdigest()[:16]


def train_epochs(shapes: ShapeCollection, trainable: nn.Module, optimiser: torch.optim.Optimizer,
                 settings: dict[str, Any], *, label: str, columns: Sequence[str],
                 step: Callable[[nn.Module, Any, float], tuple[torch.Tensor, Sequence[float]]],
                 summary: Callable[[torch.Tensor, int], Sequence[float]],
                 start_epoch: Callable[[int], None] | None = None, draw: Callable[[list[int], int], Any] | None = None,
                 agree: dict[str, Any] | None = None, device: torch.device, checkpoint: str | os.PathLike | None,
                 checkpoint_every: float, time_budget: float | None, progress: bool | None,
                 num_workers: int) -> dict[str, Any]:
    """Trains ``trainable`` (on ``device``) with ``optimiser`` for ``settings["epochs"]`` epochs, or
    until ``time_budget`` seconds of training have passed (checked at each epoch's end); returns
    the history.

    Args:
        shapes: what the batches are drawn from.
        settings: the run's settings: ``epochs``, ``shapes_per_batch``, ``samples_per_shape`` and
            ``seed`` drive the loop, and all of them, with ``shapes`` (the names), are what a
            checkpoint must have been written with; the history keeps them, less the names.
        label: the progress bar's.
        columns: the history's keys for ``summary``'s values, after ``epoch`` and ``seconds``; the
            bar shows the first.
        step: ``step(module, batch, scale)`` (the module: DDP's wrapper under DDP; the batch: the
            tensors ``draw`` gives, on ``device``): one batch's forward pass -> (this process's loss
            to minimise: its share of the batch's sum over shapes, times ``scale``; the numbers it
            adds to the epoch's totals).
        summary: ``summary(totals, epoch)``: the values of ``columns`` from the epoch's totals
            (float64, summed over the processes), ``epoch`` counted from 0.
        start_epoch: called with the epoch (from 0) before its first batch (a learning-rate schedule).
        draw: ``shape_batches``'s ``draw`` (default: ``ShapeCollection.batch``).
        agree: more values every process must share (with the shapes and settings).
        checkpoint, checkpoint_every: a file saved every so many seconds (at an epoch's end) and at
            the end, by the first process only; when it exists (on the first process), training
            resumes from it, its state sent to every process.
        time_budget: seconds of training (None: no limit); with a checkpoint, a later call goes on.
            Refused with several processes, whose clocks would stop them at different epochs.
        progress: a bar over epochs (default: when stderr is a terminal; first process only).
        num_workers: DataLoader processes drawing the batches; the result does not depend on it.

    Returns:
        per epoch ``epoch`` (counted from 1), ``seconds`` (of training, so far) and ``columns``;
        ``training_seconds``, ``epochs`` (done), ``settings``.
    """
    if time_budget is not None:
        time_budget = real(time_budget, "time_budget", 0, low_open=True)
    num_workers = integer(num_workers, "num_workers", 0)
    epochs, shapes_per_batch = settings["epochs"], settings["shapes_per_batch"]
    world, rank = process_world()
    if world > 1 and time_budget is not None:
        raise ValueError("a time budget would stop parallel processes at different epochs: give epochs alone")
    public = {key: value for key, value in settings.items() if key != "shapes"}
    # Processes that disagree would deadlock or train apart: all stop, saying who saw what.
    same_on_every_process({SHAPES: fingerprint(shapes), **(agree or {}), "checkpoint": checkpoint is not None,
                           **public},
                          "the shapes and settings", "every node must read the same sample files at the same path, "
                          "and every process train with the same settings")
    saver = Checkpoint(checkpoint, settings, checkpoint_every, shared=True) if checkpoint is not None else None
    history: dict[str, Any] = {key: [] for key in ("epoch", "seconds", *columns)}
    done, trained = 0, 0.0
    resumed = None if saver is None else saver.resume(trainable, optimiser)
    if resumed is not None:
        done, trained, history = resumed
    engine = data_parallel(trainable, device)

    stream = shape_batches(shapes, first_epoch=done, epochs=epochs, shapes_per_batch=shapes_per_batch,
                           samples_per_shape=settings["samples_per_shape"], seed=settings["seed"], rank=rank,
                           world=world, num_workers=num_workers, pin_memory=device.type == "cuda", draw=draw)
    bar = progress_bar(progress if rank == 0 else False, epochs, done, label, "epoch")
    trainable.train()
    try:
        while done < epochs and (time_budget is None or trained < time_budget):
            tick = time.perf_counter()
            if start_epoch is not None:
                start_epoch(done)
            totals = None
            for start in range(0, len(shapes), shapes_per_batch):
                batch = tuple(t.to(device, non_blocking=True) for t in next(stream))
                optimiser.zero_grad(set_to_none=True)
                loss, counts = step(engine, batch, world / min(shapes_per_batch, len(shapes) - start))
                loss.backward()
                optimiser.step()
                counts = torch.tensor(counts, dtype=torch.float64)
                totals = counts if totals is None else totals + counts
            if world > 1:
                totals = totals.to(device)  # NCCL reduces CUDA tensors
                torch.distributed.all_reduce(totals)
                totals = totals.cpu()
            trained += time.perf_counter() - tick
            for key, value in zip(("epoch", "seconds", *columns), (done + 1, trained, *summary(totals, done))):
                history[key].append(value)
            done += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix({columns[0]: f"{history[columns[0]][-1]:.3e}"}, refresh=False)
            if saver is not None:
                saver.maybe_save(trainable, optimiser, None, done, trained, history)
    finally:
        if bar is not None:
            bar.close()
    if saver is not None:
        saver.save(trainable, optimiser, None, done, trained, history)
    trainable.eval()
    history.update(training_seconds=trained, epochs=done, settings=public)
    return history
