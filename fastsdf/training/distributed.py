"""What training under torchrun shares (``train_deepsdf``, ``train_occupancy``, ``train_shape_vae``,
``train_diffusion``): the process count and rank, the import that must come before a script's
``init_process_group``, the decisions the processes make together so that none of them waits
forever, and the wrapping of the trained module in DistributedDataParallel (``data_parallel``).

A script of its own imports a training function (``from fastsdf import train_deepsdf``, or
``train_occupancy``) before ``init_process_group``, as the ``fastsdf`` commands do: see the import
of ``torch.distributed.nn.functional`` below; training warns otherwise.

Under DDP every process must take the same path: the same shapes, the same starting state, the
same number of steps. A process that raises while the others wait in a collective leaves them
waiting until the group's timeout (gloo notices a peer that exits; NCCL waits for its watchdog),
and two processes that decide differently (one sees a checkpoint, another does not, as on nodes
that do not share a filesystem) train different runs or deadlock. So a step that can fail, or
whose answer depends on what a process can see, goes through one of two rules:

- ``on_every_process``: every process runs it, then they exchange how it went; if it failed on
  any, it fails on all, each with a message naming the process that failed and why.
- ``from_first_process``: the first process (rank 0, the one that reads and writes the output
  folder) runs it; its answer, or its failure, reaches every process.

``same_on_every_process`` checks that what each process found for itself (the shapes it read) is
the same everywhere, and fails on every process where it is not.

Without an initialised process group (one process) both simply run the step.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, TypeVar

import torch
from torch import nn

if torch.distributed.is_available():
    # Imported here, before a script's init_process_group, on purpose: this torch module takes the
    # default process group as its functions' default arguments when it is imported (torch 2.13),
    # and torch imports it lazily (the first optimiser step imports torch._dynamo, which imports
    # it). Imported after init_process_group it keeps the group alive: destroy_process_group then
    # leaves gloo's worker threads running, and one that frees a finished collective's tensor while
    # the interpreter shuts down aborts the process (SIGABRT after a run that finished: about 1
    # two-process run in 40 on 2 cores).
    import torch.distributed.nn.functional  # noqa: F401

__all__ = ["data_parallel", "from_first_process", "on_every_process", "same_on_every_process", "world"]

T = TypeVar("T")


def world() -> tuple[int, int]:
    """(process count, this process's rank): (1, 0) unless torch.distributed is initialised."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if _holds_a_process_group(torch.distributed.nn.functional.broadcast):
            warnings.warn("torch.distributed.nn was imported after init_process_group, so the process group "
                          "outlives destroy_process_group and gloo processes may abort at exit: import "
                          "fastsdf.training.train_deepsdf or train_occupancy (or `from fastsdf import "
                          "train_deepsdf`) first", RuntimeWarning, stacklevel=3)
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def _holds_a_process_group(function: Any) -> bool:
    import torch.distributed as dist

    return any(isinstance(value, dist.ProcessGroup) for value in function.__defaults__ or ())


def _group() -> tuple[int, int] | None:
    """(process count, rank) of an initialised group of more than one process, else None."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.get_world_size(), dist.get_rank()
    return None


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def on_every_process(work: Callable[[], T], what: str) -> T:
    """``work()`` on every process; its value here once every process has succeeded.

    Raises:
        the exception ``work`` raised here, where it failed here; RuntimeError naming the first
        process that failed and its error, on the processes where it succeeded.
    """
    group = _group()
    if group is None:
        return work()
    try:
        value, failure = work(), None
    except Exception as error:  # noqa: BLE001 - any failure must reach the other processes
        value, failure = None, error
    outcomes: list[str | None] = [None] * group[0]
    torch.distributed.all_gather_object(outcomes, None if failure is None else _describe(failure))
    if failure is not None:
        raise failure
    failed = [(rank, message) for rank, message in enumerate(outcomes) if message is not None]
    if failed:
        rank, message = failed[0]
        others = f" (and {len(failed) - 1} other processes)" if len(failed) > 1 else ""
        raise RuntimeError(f"{what} failed on process {rank}{others}: {message}")
    return value


def from_first_process(work: Callable[[], T], what: str) -> T:
    """``work()`` on the first process (rank 0) only; its value (pickled, tensors included) on
    every process.

    Raises:
        the exception ``work`` raised, on the first process; RuntimeError with its message on the
        others.
    """
    group = _group()
    if group is None:
        return work()
    value, failure = None, None
    if group[1] == 0:
        try:
            value = work()
        except Exception as error:  # noqa: BLE001 - the other processes must hear of it
            failure = error
    box = [(value, None if failure is None else _describe(failure))]
    torch.distributed.broadcast_object_list(box, src=0)
    if failure is not None:
        raise failure
    value, message = box[0]
    if message is not None:
        raise RuntimeError(f"{what} failed on process 0: {message}")
    return value


def same_on_every_process(value: object, what: str, hint: str) -> None:
    """ValueError on every process unless ``value`` (small, picklable, compared with ==) is the
    same on all; the message lists each process's ``value`` as ``what`` and ends with ``hint``."""
    group = _group()
    if group is None:
        return
    values: list[object] = [None] * group[0]
    torch.distributed.all_gather_object(values, value)
    if any(v != values[0] for v in values):
        seen = "; ".join(f"process {rank}: {v}" for rank, v in enumerate(values))
        raise ValueError(f"the processes do not agree on {what} ({seen}): {hint}")


def data_parallel(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` under DistributedDataParallel where several processes train (on ``device``: one GPU
    per process, or the CPU), else ``module`` itself. DDP starts every process from the first one's
    weights and averages the gradients over the processes at each backward pass."""
    if _group() is None:
        return module
    # Gradients as views of DDP's buckets: one copy of them fewer (DeepSDF's code table is large).
    return nn.parallel.DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None,
                                               gradient_as_bucket_view=True)
