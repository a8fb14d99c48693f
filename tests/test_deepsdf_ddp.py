"""DeepSDF's auto-decoder under DDP: 2 processes on one node (torchrun --standalone), and 2 "nodes"
of one process each over the loopback interface (c10d rendezvous), each node with an output folder
of its own, as nodes that share no filesystem but the data's.

Every run trains the sphere family on the same settings, so one single-process run is the reference
they must all match (to floating-point summation order). The 2-node launch runs several command
lines in one process group (tests/replica_probe.py, which also checks that every process ends with
the same codes and decoder, bit for bit): processes that disagree, a resume from the checkpoint that
only the first process's node has, and a fresh run. About 40 s on 2 busy cores, the launches'
agents and processes importing torch for most of it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fastsdf
from fastsdf import DeepSDFDecoder
from fastsdf.training.autodecoder import AutoDecoder
from fastsdf.training.shapes import load_shapes
from training_helpers import first_process_wrote, free_port, run_together, sphere_samples

RADII = (0.3, 0.4, 0.5, 0.6, 0.7)
EPOCHS, SHAPES_PER_BATCH, SEED = 6, 4, 3  # 2 steps per epoch over the 5 shapes
OPTIONS = ["--latent-size", "8", "--width", "64", "--layers", "4", "--dropout", "0", "--epochs", str(EPOCHS),
           "--shapes-per-batch", str(SHAPES_PER_BATCH), "--samples-per-shape", "256", "--seed", str(SEED), "--quiet"]
API_OPTIONS = {"epochs": EPOCHS, "shapes_per_batch": SHAPES_PER_BATCH, "samples_per_shape": 256, "seed": SEED,
               "progress": False, "num_workers": 0}
TIMEOUT = 240  # seconds for a whole launch: ~10 s on 2 idle cores
CASES = ("data missing on process 1", "fewer shapes on process 1", "process 0's output exists",
         "process 0's checkpoint is damaged", "resume", "fresh")


def decoder() -> DeepSDFDecoder:
    """The CLI's decoder for OPTIONS, initialised as it initialises it."""
    torch.manual_seed(SEED)
    return DeepSDFDecoder(latent_size=8, hidden_features=64, hidden_layers=4, latent_in=(2,), dropout=0.0)


@pytest.fixture(scope="module")
def spheres(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, AutoDecoder]:
    """(a folder of the spheres' sample files, the single-process model trained on them)."""
    data = tmp_path_factory.mktemp("spheres")
    for i, radius in enumerate(RADII):
        fastsdf.save_npz(data / f"r{radius}.npz", sphere_samples(radius, np.random.default_rng(i)))
    single, _ = fastsdf.train_deepsdf(load_shapes(data), decoder(), **API_OPTIONS)
    return data, single


def assert_same_model(trained: AutoDecoder, single: AutoDecoder) -> None:
    assert trained.names == single.names
    torch.testing.assert_close(trained.codes, single.codes, rtol=0, atol=1e-4)
    points = torch.rand(100, 3) * 2 - 1
    with torch.no_grad():
        for i in range(len(single.names)):
            torch.testing.assert_close(trained.decoder(points, trained.codes[i]), single.decoder(points, single.codes[i]),
                                       rtol=0, atol=1e-4)


def test_two_processes_train_what_one_trains(spheres, tmp_path: Path) -> None:
    """torchrun --standalone with 2 CPU processes (gloo) through the CLI, DataLoader workers included."""
    data, single = spheres
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "fastsdf.cli", "train-deepsdf", str(data), "--out", str(tmp_path / "ddp"), *OPTIONS]
    [result] = run_together([command], TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "on 2 processes" in result.stdout and not (tmp_path / "ddp" / "checkpoint.pt").exists()
    assert_same_model(fastsdf.load_model(tmp_path / "ddp"), single)


@pytest.fixture(scope="module")
def two_nodes(spheres, tmp_path_factory: pytest.TempPathFactory, monkeypatch_module) -> dict:
    """The 2-node launch: {"folder": its folder, "data": the spheres, case: (rank 0's outcome, rank
    1's), each [exit status, stdout, stderr]}. Each rank is given its own DATA or --out per case."""
    data, _ = spheres
    root = tmp_path_factory.mktemp("nodes")
    fewer, done, damaged = root / "fewer", root / "done", root / "damaged"
    for folder in (fewer, done, damaged):
        folder.mkdir()
    for path in sorted(data.glob("*.npz"))[:-1]:
        (fewer / path.name).write_bytes(path.read_bytes())
    (done / "model.pt").write_bytes(b"an earlier run's")
    (damaged / "checkpoint.pt").write_bytes(b"not a checkpoint")

    # The checkpoint a run stopped after 3 of its 6 epochs left on rank 0's node; rank 1's folder
    # holds a damaged one, which no process may read.
    real_step, steps = torch.optim.Adam.step, []

    def dying_step(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        steps.append(1)
        if len(steps) > 3 * 2:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch_module.setattr(torch.optim.Adam, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        fastsdf.train_deepsdf(load_shapes(data), decoder(), checkpoint=root / "resume0" / "checkpoint.pt",
                              checkpoint_every=0.0, **API_OPTIONS)
    monkeypatch_module.undo()
    (root / "resume1").mkdir()
    (root / "resume1" / "checkpoint.pt").write_bytes(b"not a checkpoint")

    def case(datas: list[Path], outs: list[str]) -> list[list[str]]:
        return [["train-deepsdf", str(d), "--out", str(root / o), *OPTIONS, "--workers", "0"] for d, o in zip(datas, outs)]

    unused = ["unused0", "unused1"]
    cases = [case([data, root / "missing"], unused), case([data, fewer], unused),
             case([data, data], ["done", "unused1"]), case([data, data], ["damaged", "unused1"]),
             case([data, data], ["resume0", "resume1"]), case([data, data], ["fresh0", "fresh1"])]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{free_port()}", "--rdzv_id", "test",
                str(Path(__file__).with_name("replica_probe.py")), json.dumps(cases)]
    results = run_together([launcher, launcher], TIMEOUT)
    for node, result in enumerate(results):
        assert result.returncode == 0, f"node {node}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    by_rank = [json.loads(result.stdout.splitlines()[-1]) for result in results]
    if "trained on" in by_rank[1][-1][1]:
        by_rank.reverse()  # c10d made the second launcher's process rank 0
    return {"folder": root, "data": data, **{name: pair for name, pair in zip(CASES, zip(*by_rank))}}


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_two_nodes_that_disagree_all_stop_with_the_reason(two_nodes) -> None:
    """Every process stops at once, with an error that says which process saw what, rather than
    hang in a collective or train apart; nothing is written, nothing replaced."""
    root = two_nodes["folder"]
    (status0, _, err0), (status1, _, err1) = two_nodes["data missing on process 1"]
    assert status1 == 1 and "no such folder" in err1
    assert status0 == 1 and "failed on process 1: FileNotFoundError" in err0
    for status, _, err in two_nodes["fewer shapes on process 1"]:
        assert status == 1 and "do not agree on the shapes and settings" in err and "same path" in err
        assert "process 1: {'shapes (count, digest of names and row counts)': (4, '" in err
    (status0, _, err0), (status1, _, err1) = two_nodes["process 0's output exists"]
    assert status0 == 1 and "model.pt exists" in err0
    assert status1 == 1 and "failed on process 0: FileExistsError" in err1 and "--overwrite" in err1
    (status0, _, err0), (status1, _, err1) = two_nodes["process 0's checkpoint is damaged"]
    assert status0 == 1 and "not a readable checkpoint" in err0
    assert status1 == 1 and "failed on process 0: ValueError" in err1
    assert not any((root / name).exists() for name in ("unused0", "unused1"))
    assert (root / "done" / "model.pt").read_bytes() == b"an earlier run's"


def test_two_nodes_resume_from_the_checkpoint_only_the_first_process_s_node_has(two_nodes, spheres) -> None:
    """The first process reads its node's checkpoint and sends its state to the other, which never
    reads its own folder (a damaged checkpoint there): the uninterrupted run's model, bitwise equal
    replicas, written on the first process's node only."""
    resumed = fastsdf.load_model(first_process_wrote(two_nodes["resume"], two_nodes["folder"], "resume", True))
    assert resumed.history["epoch"] == list(range(1, EPOCHS + 1))
    assert_same_model(resumed, spheres[1])


def test_two_nodes_train_what_one_process_trains(two_nodes, spheres) -> None:
    """Bitwise equal replicas; the model, only in the first process's node's folder, is the
    single-process one; the other node's folder is never made."""
    folder = first_process_wrote(two_nodes["fresh"], two_nodes["folder"], "fresh", False)
    assert_same_model(fastsdf.load_model(folder), spheres[1])
