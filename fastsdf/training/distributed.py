"""What training under torchrun shares (``train_deepsdf``, ``train_occupancy``): the process count and
rank, and the import that must come before a script's ``init_process_group``.

A script of its own imports a training function (``from fastsdf import train_deepsdf``, or
``train_occupancy``) before ``init_process_group``, as the ``fastsdf`` commands do: see the import
of ``torch.distributed.nn.functional`` below; training warns otherwise.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

if torch.distributed.is_available():
    # Imported here, before a script's init_process_group, on purpose: this torch module takes the
    # default process group as its functions' default arguments when it is imported (torch 2.13),
    # and torch imports it lazily (the first optimiser step imports torch._dynamo, which imports
    # it). Imported after init_process_group it keeps the group alive: destroy_process_group then
    # leaves gloo's worker threads running, and one that frees a finished collective's tensor while
    # the interpreter shuts down aborts the process (SIGABRT after a run that finished: about 1
    # two-process run in 40 on 2 cores).
    import torch.distributed.nn.functional  # noqa: F401

__all__ = ["world"]


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
