"""What the DeepSDF, saved-model and CLI tests share: training data, and the launching of process
groups (torchrun's, on the loopback interface) that cannot hang."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import fastsdf
from fastsdf.geometry.sampling import SdfSamples


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Networks this small run fastest on one thread, and far slower on a busy machine's two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sphere_samples(radius: float, rng: np.random.Generator, count: int = 6000, surface: int = 0) -> SdfSamples:
    """DeepSDF-style samples of a sphere: most near the surface (std 0.02), a fifth uniform in the cube;
    ``surface`` points on the sphere with their normals (an encoder's input), drawn after the rest."""
    near = count - count // 5
    directions = rng.standard_normal((near, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    points = np.concatenate([directions * (radius + rng.normal(0, 0.02, (near, 1))),
                             rng.uniform(-1, 1, (count // 5, 3))])
    if not surface:
        return SdfSamples(points, np.linalg.norm(points, axis=1) - radius)
    normals = rng.standard_normal((surface, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    return SdfSamples(points, np.linalg.norm(points, axis=1) - radius, normals * radius, normals)


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def distributed_env() -> dict[str, str]:
    """The environment for processes of a test's process group: this checkout's fastsdf first on the
    path (a script's own folder would come first otherwise), one thread each, gloo on the loopback."""
    root = str(Path(fastsdf.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}


def _descendants(pid: int) -> list[int]:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [d for child in map(int, children) for d in (child, *_descendants(child))]


def run_together(commands: list[list[str]], timeout: float, envs: list[dict[str, str]] | None = None,
                 ) -> list[subprocess.CompletedProcess]:
    """Runs ``commands`` at once (torchrun launchers of one job, say; ``envs``: each one's
    environment, default ``distributed_env()``) and waits for all, ``timeout`` seconds at most: past
    it, or as soon as one fails, every one of them and every process they started (torchrun's
    workers run in sessions of their own) is killed, so no test can hang."""
    envs = envs or [distributed_env()] * len(commands)
    outputs = [(tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")) for _ in commands]
    running = [subprocess.Popen(command, stdout=out, stderr=err, text=True, env=env)
               for command, env, (out, err) in zip(commands, envs, outputs)]
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in running):
            if time.monotonic() > deadline or any(p.poll() not in (None, 0) for p in running):
                break
            time.sleep(0.1)
    finally:
        for process in running:
            for pid in (*_descendants(process.pid), process.pid) if process.poll() is None else ():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            process.wait()
    results = []
    for command, process, (out, err) in zip(commands, running, outputs):
        out.seek(0), err.seek(0)
        results.append(subprocess.CompletedProcess(command, process.returncode, out.read(), err.read()))
        out.close(), err.close()
    return results


def first_process_wrote(outcomes: tuple[list, list], root: Path, name: str, resumed: bool) -> Path:
    """The folder ``root/{name}0`` after checking a case that tests/replica_probe.py ran on 2
    processes, with ``--out root/{name}0`` and ``root/{name}1``: both succeeded with bitwise equal
    replicas; the first alone trained (resuming its checkpoint if ``resumed``) and wrote its folder;
    the second's folder holds only its own checkpoint (damaged: unread) if ``resumed``, else was never made."""
    for status, out, err in outcomes:
        assert status == 0 and "replicas identical: True" in out, err
    (_, out0, _), (_, out1, _) = outcomes
    assert "on 2 processes" in out0 and "trained" not in out1
    assert ("resuming from" in out0) == resumed and "resuming" not in out1
    assert sorted(p.name for p in (root / f"{name}0").iterdir()) == ["model.pt", "training.png"]
    if resumed:
        assert [p.name for p in (root / f"{name}1").iterdir()] == ["checkpoint.pt"]
    else:
        assert not (root / f"{name}1").exists()
    return root / f"{name}0"
