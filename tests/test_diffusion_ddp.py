"""Latent diffusion under DDP: 2 processes on the loopback interface (torchrun --standalone, gloo),
each with an output folder of its own, as on nodes that share no filesystem, running ``fastsdf
train-diffusion`` in one process group (tests/replica_probe.py, which also checks that every process ends with the same
weights, bit for bit): processes given other settings, the resume of a killed run from the
checkpoint that only the first process's node has, and a fresh run. One single-process run of the
same command is the reference that both runs must match (to floating-point summation order): the
processes share each batch's codes. About 15 s on 2 busy cores, the launches' processes importing
torch for most of it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fastsdf
from fastsdf.cli import main
from fastsdf.nn import LatentDenoiser
from fastsdf.training.autodecoder import AutoDecoder
from training_helpers import first_process_wrote, one_thread, run_together  # noqa: F401 - one_thread: a fixture, autouse

LATENT, SHAPES, SEED, STEPS, KILLED_AT = 8, 12, 3, 30, 12  # 12 codes: one held out (train_diffusion's tenth)
# A batch of 15 codes: shares of 7 and 8 rows, so the losses' scaling is tested on unequal shares.
OPTIONS = ["--steps", str(STEPS), "--batch-size", "15", "--timesteps", "50", "--width", "32", "--blocks", "2",
           "--seed", str(SEED), "--quiet"]
TIMEOUT = 240  # seconds for the whole launch: ~10 s on 2 idle cores
CASES = ("other settings on process 1", "a batch smaller than the processes", "resume", "fresh")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """{"folder": the runs' folder, "single": the single-process model, case: (rank 0's outcome, rank
    1's), each [exit status, stdout, stderr]}."""
    root = tmp_path_factory.mktemp("diffusion_ddp")
    codes = torch.from_numpy(np.random.default_rng(0).standard_normal((SHAPES, LATENT), dtype=np.float32))
    decoder = fastsdf.DeepSDFDecoder(latent_size=LATENT, hidden_features=16, hidden_layers=2, latent_in=(), dropout=0.0)
    AutoDecoder(decoder, codes, [f"s{i}" for i in range(SHAPES)]).save(root / "codes")
    assert main(["train-diffusion", str(root / "codes"), "--out", str(root / "single"), *OPTIONS]) == 0

    # The checkpoint a single-process run killed after KILLED_AT steps left on rank 0's node (its
    # denoiser and settings as the command's); rank 1's folder holds a damaged one, which no process may read.
    real_step, steps = torch.optim.Adam.step, []

    def dying_step(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        steps.append(1)
        if len(steps) > KILLED_AT:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    torch.manual_seed(SEED)
    denoiser = LatentDenoiser(LATENT, hidden_features=32, blocks=2)
    with pytest.MonkeyPatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(torch.optim.Adam, "step", dying_step)
        fastsdf.train_diffusion(fastsdf.load_model(root / "codes"), denoiser, steps=STEPS, batch_size=15,
                                timesteps=50, seed=SEED, device="cpu", checkpoint=root / "resume0" / "checkpoint.pt",
                                checkpoint_every=0.0, progress=False)
    (root / "resume1").mkdir()
    (root / "resume1" / "checkpoint.pt").write_bytes(b"not a checkpoint")

    def case(outs: list[str], *extra: list[str]) -> list[list[str]]:
        return [["train-diffusion", str(root / "codes"), "--out", str(root / out), *OPTIONS, *more]
                for out, more in zip(outs, extra or ([], []))]

    cases = [case(["unused0", "unused1"], ["--ema-decay", "0.999"], []),
             case(["unused0", "unused1"], ["--batch-size", "1"], ["--batch-size", "1"]), case(["resume0", "resume1"]),
             case(["fresh0", "fresh1"])]
    # Each process's output into a file of its own (LOGS/<run>/attempt_0/<rank>/stdout.log).
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "--log-dir", str(root / "logs"), "--redirects", "3",
                str(Path(__file__).with_name("replica_probe.py")), json.dumps(cases)]
    [result] = run_together([launcher], TIMEOUT)
    logs = [next((root / "logs").glob(f"*/attempt_0/{rank}/std{stream}.log")).read_text()
            for rank in range(2) for stream in ("out", "err")]
    assert result.returncode == 0, f"{result.stderr[-2000:]}\n{logs[1][-2000:]}\n{logs[3][-2000:]}"
    by_rank = [json.loads(logs[i].splitlines()[-1]) for i in (0, 2)]
    return {"folder": root, "single": fastsdf.load_model(root / "single"),
            **{name: pair for name, pair in zip(CASES, zip(*by_rank))}}


def assert_same_model(trained, single) -> None:  # noqa: ANN001 - LatentDiffusion
    assert trained.ema is not None and trained.history["step"] == single.history["step"]
    np.testing.assert_allclose(trained.history["loss"], single.history["loss"], rtol=1e-5)
    for (name, a), b in zip(single.state_dict().items(), trained.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5 * max(1.0, float(a.abs().max())), msg=name)


def test_processes_given_other_settings_all_stop_with_the_reason(runs) -> None:
    for status, _, err in runs["other settings on process 1"]:
        assert status == 1 and "do not agree on the settings" in err and "'ema_decay': 0.999" in err, err
    for status, _, err in runs["a batch smaller than the processes"]:
        assert status == 1 and "batch_size (1) must be at least the number of processes (2)" in err, err
    assert not any((runs["folder"] / name).exists() for name in ("unused0", "unused1"))


def test_two_processes_resume_from_the_checkpoint_only_the_first_process_reads(runs) -> None:
    """The first process reads its checkpoint and sends its state to the other, which never reads
    its own (damaged) one: the uninterrupted run's model, written by the first process only."""
    folder = first_process_wrote(runs["resume"], runs["folder"], "resume", True)
    assert_same_model(fastsdf.load_model(folder), runs["single"])


def test_two_processes_train_what_one_process_trains(runs) -> None:
    """Bitwise equal replicas; the model (its moving average included), written into the first
    process's folder alone, is the single process's: the other process's folder is never made."""
    folder = first_process_wrote(runs["fresh"], runs["folder"], "fresh", False)
    assert "trained on 12 codes: 30 steps" in runs["fresh"][0][1] and "the 1 held-out code was" in runs["fresh"][0][1]
    assert_same_model(fastsdf.load_model(folder), runs["single"])
