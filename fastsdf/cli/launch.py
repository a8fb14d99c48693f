"""What the training commands share (``train-deepsdf``, ``train-occupancy``, ``train-shape-vae``,
``train-diffusion``): their launch on one process or under torchrun, on one node or several, and
their output folder, which only the first process checks, reads and writes."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Callable

from fastsdf.cli.common import add_overwrite_option, integer, refuse_to_overwrite, seed

__all__ = ["OUTPUTS", "add_run_options", "multinode_help", "train_command"]

OUTPUTS = ("model.pt", "training.png")


def add_run_options(train: argparse.ArgumentParser, default_workers: int | None) -> None:
    """The options every trainer's command ends with: --seed, --workers (loader processes, for a
    dataset trainer: ``default_workers`` not None), --quiet and --overwrite."""
    train.add_argument("--seed", type=seed, default=0, help="random seed (default: 0)")
    if default_workers is not None:
        train.add_argument("--workers", type=integer(0), default=default_workers, metavar="N",
                           help="processes that read the batches' samples from disk ahead of training; 0: none "
                                f"(default: {default_workers}; the result does not depend on it)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    add_overwrite_option(train)


def multinode_help(command: str, source: str = "DATA") -> str:
    """The help's paragraph on launching ``fastsdf COMMAND SOURCE`` under torchrun, on one node or several."""
    return f"""\
On several processes, launch it with torchrun, e.g.

  torchrun --standalone --nproc_per_node 2 -m fastsdf.cli {command} {source} --out OUT

(gloo on CPUs, NCCL on GPUs: one GPU per process); the result is the same as on one process.
On several nodes, run the same command on each, with a rendezvous instead of --standalone:

  torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \\
      --rdzv_id JOB -m fastsdf.cli {command} {source} --out OUT

(HOST: a node every node reaches; or static rendezvous: --master_addr HOST --master_port 29500
--node_rank I, I = 0 on HOST). {source} must hold the same files at the same path on every node (a
shared filesystem or copies); the processes check that they read the same and stop, all of them,
if not. OUT is written and read (its checkpoint too) only by the first process (rank 0):
the other nodes need not see it. With c10d, torchrun chooses which node that is (--node_rank is
ignored), so resuming from a checkpoint on one node's own disk needs static rendezvous, with that
node as node 0, or an OUT on a shared filesystem.
"""


def train_command(args: argparse.Namespace, train: Callable[[Any, str, Path], tuple[Any, dict[str, Any]]],
                  outcome: Callable[[dict[str, Any]], str], inputs: Callable[[], tuple[Any, str]] | None = None,
                  unit: str = "epoch") -> int:
    """Runs ``fastsdf {args.command}``: ``train(data, device, checkpoint)`` -> (model, history) on
    what ``inputs()`` reads on every process (data, and its name in the summary: "12 shapes";
    default: the samples of ``args.data``), torch seeded with ``args.seed``, the checkpoint in
    ``args.out``; then the first process writes the model and its curves (over ``unit``s) into
    ``args.out`` and prints a summary that ends with ``outcome(history)``. Existing outputs are
    refused unless ``args.overwrite``, and a checkpoint there is resumed. Under torchrun
    (WORLD_SIZE > 1) it sets up the process group (gloo, or NCCL with one GPU per process) and
    takes it down at the end."""
    import torch
    import torch.distributed as dist

    from fastsdf.training.distributed import from_first_process, on_every_process

    out = Path(args.out)
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
    device = "cpu"
    if launched:
        cuda = torch.cuda.is_available()
        dist.init_process_group("nccl" if cuda else "gloo")
        if cuda:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"  # this node's GPU, not the global rank's
            torch.cuda.set_device(device)
    elif torch.cuda.is_available():
        device = "cuda"
    try:
        # OUT is the first process's alone (other nodes may not see it): it checks it and decides,
        # and every process hears the answer, so that they all go on or all stop.
        from_first_process(lambda: _check_out(out), "checking --out")
        # Bad inputs: every process stops now.
        data, subject = on_every_process(inputs or (lambda: _shapes(args.data)), "reading the inputs")
        from_first_process(lambda: _claim_out(out, args.overwrite), "checking --out")
        torch.manual_seed(args.seed)  # the networks' initialisation, the same on every process
        model, history = train(data, device, out / "checkpoint.pt")
        # Every process waits for the first one's writing, so that all end with its outcome.
        from_first_process(lambda: _write(out, args.command, subject, unit, model, history, outcome(history)),
                           f"writing {out}")
    finally:
        if launched:
            dist.destroy_process_group()
    return 0


def _shapes(data: str) -> tuple[Any, str]:
    from fastsdf.training.shapes import load_shapes

    shapes = load_shapes(data)
    return shapes, f"{len(shapes)} shapes"


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out is not a folder: {out}")


def _claim_out(out: Path, overwrite: bool) -> None:
    checkpoint = out / "checkpoint.pt"
    if checkpoint.exists():  # the run is unfinished: it resumes, and its outputs are its own
        print(f"resuming from {checkpoint}")
    else:
        refuse_to_overwrite([out / name for name in OUTPUTS], overwrite)


def _write(out: Path, command: str, subject: str, unit: str, model: Any, history: dict[str, Any],
           outcome: str) -> None:
    import torch.distributed as dist

    from fastsdf.plots import plot_history

    path = model.save(out)
    plot_history(history, out / "training.png", title=f"fastsdf {command} ({subject})", x=unit)
    processes = dist.get_world_size() if dist.is_initialized() else 1
    print(f"trained on {subject}: {history[unit + 's']} {unit}s in {history['training_seconds']:.1f} s "
          f"on {processes} process{'es' if processes > 1 else ''}, {outcome}")
    print(f"  model.pt:     {path.resolve()}")
    print(f"  training.png: {(out / 'training.png').resolve()}")
    (out / "checkpoint.pt").unlink(missing_ok=True)
