"""One process of a torchrun launch that runs several ``fastsdf`` command lines in one process group
and checks, whenever training finishes, that every process holds the same codes and decoder, bit
for bit (``replicas identical: True``, printed while the group is up, before the command writes).

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

import fastsdf.training.train_deepsdf as training  # before the process group, as the CLI imports it
from fastsdf.cli import main

_train = training.train_deepsdf


def _identical_everywhere(tensor: torch.Tensor) -> bool:
    tensor = tensor.detach().contiguous()
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor)
    return all(torch.equal(g.view(torch.int32), gathered[0].view(torch.int32)) for g in gathered)


def _checked(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - train_deepsdf's own
    model, history = _train(*args, **kwargs)
    same = all([_identical_everywhere(t) for t in (model.codes, *model.decoder.parameters())])
    print(f"replicas identical: {same}")
    return model, history


def _run(cases: list[list[list[str]]]) -> list[list]:
    outcomes = []
    for per_rank in cases:
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            status = main(per_rank[dist.get_rank()])
        outcomes.append([status, stdout.getvalue(), stderr.getvalue()])
    return outcomes


if __name__ == "__main__":
    training.train_deepsdf = _checked
    dist.init_process_group("gloo")
    outcomes = _run(json.loads(sys.argv[1]))
    dist.destroy_process_group()
    print(json.dumps(outcomes))
