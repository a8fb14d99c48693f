"""One process of a torchrun launch that runs several ``fastsdf`` command lines in one process group
and checks, whenever training finishes (``train_deepsdf`` or ``train_diffusion``), that every
process holds the same model (every tensor of its state), bit for bit (``replicas identical:
True``, printed while the group is up, before the command writes).

Run as a script: ``torchrun ... tests/replica_probe.py CASES``, CASES a JSON list of cases, each a
list of one command line per rank (so that each rank can be given its own DATA or --out, whichever
node torchrun makes it). The script sets up the group itself, so that the commands share it, and
prints, as its last line, the JSON list of each case's [exit status, stdout, stderr] on this rank.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys

import torch
import torch.distributed as dist

import fastsdf.training.train_deepsdf as deepsdf  # before the process group, as the CLI imports them
import fastsdf.training.train_diffusion as diffusion
from fastsdf.cli import main


def _identical_everywhere(tensor: torch.Tensor) -> bool:
    tensor = tensor.detach().reshape(-1).contiguous()  # 1-D: a dtype view of bytes needs a dimension
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor)
    return all(torch.equal(g.view(torch.uint8), gathered[0].view(torch.uint8)) for g in gathered)


def _checking(train):  # noqa: ANN001, ANN202 - a trainer, and the same trainer checked
    def checked(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - the trainer's own
        model, history = train(*args, **kwargs)
        same = all([_identical_everywhere(t) for t in model.state_dict().values()])
        print(f"replicas identical: {same}")
        return model, history

    return checked


def _run(cases: list[list[list[str]]]) -> list[list]:
    outcomes = []
    for per_rank in cases:
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            status = main(per_rank[dist.get_rank()])
        outcomes.append([status, stdout.getvalue(), stderr.getvalue()])
    return outcomes


if __name__ == "__main__":
    deepsdf.train_deepsdf = _checking(deepsdf.train_deepsdf)
    diffusion.train_diffusion = _checking(diffusion.train_diffusion)
    dist.init_process_group("gloo")
    outcomes = _run(json.loads(sys.argv[1]))
    dist.destroy_process_group()
    print(json.dumps(outcomes))
