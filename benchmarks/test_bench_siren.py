"""SIREN benchmarks: fastsdf.SirenMLP against the PyTorch code people run today, same weights, same run.

The network is the SIREN SDF network, 3 -> 256 x 4 sine layers -> 1 (``SirenMLP(3, 256, 3, 1)``:
the official class's hidden_layers=3), about 0.4 MFLOP per point.

    siren-cpu-forward{n}     the network at n points (65,536 and 4,096), no gradient recorded:
                             PyTorch eager (the official Siren class), torch.compile of it, eager under
                             bf16 autocast, siren-pytorch's SirenNet, fastsdf
    siren-cpu-train{n}       one training step at 16,384 points: L1 on the SDF plus the eikonal term
                             |grad| - 1, backward and an Adam step; eager takes the gradient with
                             torch.autograd.grad(create_graph=True) as the official code does, fastsdf
                             with forward_with_gradient
    siren-cuda-forward{n}    n = 2^18 .. 2^22 on a GPU: eager, torch.compile, fastsdf (fp32, tf32, bf16)
    siren-cuda-gradient{n}   the network and its input gradient: eager autograd vs forward_with_gradient
    siren-cuda-train{n}      the training step on a GPU

The CUDA groups need a GPU (skipped without one). FASTSDF_BENCH_POINTS replaces every point count
(named ``count``: make_results.py reads a parameter ``n`` as a grid size).
"""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import fastsdf
from bench_common import bench_points, cpu_threads

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from official_siren import Siren as OfficialSiren  # noqa: E402  (the official SIREN, as published)

pytest.importorskip("pytest_benchmark")

NETWORK = dict(in_features=3, hidden_features=256, hidden_layers=3, out_features=1)
NETWORK_TEXT = "SIREN 3 -> 256 x 4 sine layers -> 1 (official hidden_layers=3), float32 unless the peer says"
CPU_FORWARD = bench_points((65_536, 4_096))
CPU_TRAIN = bench_points((16_384,))
CUDA_SIZES = bench_points(tuple(2**k for k in range(18, 23)))
SIREN_PYTORCH_NOTE = ("siren-pytorch: SirenNet with the same weights (w0 = w0_initial = 30, identity final "
                      "activation).")


def _official(device: str) -> OfficialSiren:
    torch.manual_seed(0)
    return OfficialSiren(**NETWORK, outermost_linear=True).to(device)


def _ours(official: OfficialSiren, precision: str = "fp32") -> fastsdf.SirenMLP:
    return fastsdf.SirenMLP.from_official_state_dict(official.state_dict(), precision=precision).to(
        next(official.parameters()).device)


def _siren_pytorch(official: OfficialSiren) -> Any:
    siren_pytorch = pytest.importorskip("siren_pytorch")
    net = siren_pytorch.SirenNet(dim_in=3, dim_hidden=256, dim_out=1, num_layers=4, w0=30.0, w0_initial=30.0)
    state = {}
    for i, (key, value) in enumerate(official.state_dict().items()):
        layer, kind = divmod(i, 2)
        name = f"layers.{layer}" if layer < 4 else "last_layer"
        state[f"{name}.{'weight' if kind == 0 else 'bias'}"] = value
    net.load_state_dict(state)
    return net.to(next(official.parameters()).device)


def _points(n: int, device: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(n)
    return (torch.rand(n, 3, generator=generator) * 2 - 1).to(device)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _record(benchmark: Any, peer: str, version: str, device: str, points: int, what: str, **extra: Any) -> None:
    benchmark.extra_info.update(peer=peer, version=version, device=device, points=points,
                                threads=None if device == "cuda" else cpu_threads(),
                                input=f"{NETWORK_TEXT}; {what}", **extra)


# --- forward ---------------------------------------------------------------------------------


def _forward_peers(device: str) -> dict[str, Callable[[OfficialSiren], tuple[str, str, Callable, dict]]]:
    """name -> make(official) -> (peer, version, call(x), extra_info)."""
    torch_version = torch.__version__

    def eager(official: OfficialSiren) -> tuple:
        return "PyTorch eager", torch_version, lambda x: official.net(x), {}

    def compiled(official: OfficialSiren) -> tuple:
        return "torch.compile", torch_version, torch.compile(official.net), {}

    def autocast(official: OfficialSiren) -> tuple:
        def call(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast(device, dtype=torch.bfloat16):
                return official.net(x)

        return "PyTorch eager, bf16 autocast", torch_version, call, {}

    def siren_pytorch(official: OfficialSiren) -> tuple:
        net = _siren_pytorch(official)
        return "siren-pytorch", importlib.metadata.version("siren-pytorch"), net, {"notes": [SIREN_PYTORCH_NOTE]}

    def ours(precision: str) -> Callable:
        def make(official: OfficialSiren) -> tuple:
            model = _ours(official, precision)
            return "fastsdf", fastsdf.__version__, model, {"variant": precision, "compare_with": "fp32"}

        return make

    peers = {"eager": eager, "compile": compiled, "autocast": autocast, "siren-pytorch": siren_pytorch,
             "fastsdf": ours("fp32")}
    if device == "cuda":
        peers.update({"fastsdf-tf32": ours("tf32"), "fastsdf-bf16": ours("bf16")})
    return peers


def _bench_forward(benchmark: Any, device: str, key: str, n: int) -> None:
    official = _official(device)
    peer, version, call, extra = _forward_peers(device)[key](official)
    x = _points(n, device)

    def run() -> torch.Tensor:
        with torch.no_grad():
            out = call(x)
        _sync(device)
        return out

    run()  # compiles, packs, warms caches
    benchmark.pedantic(run, rounds=10 if device == "cuda" else 5, warmup_rounds=1, iterations=1)
    _record(benchmark, peer, version, device, n, f"{n:,} points uniform in [-1, 1]^3, no gradient recorded",
            **extra)


@pytest.mark.parametrize(("key", "count"), [
    pytest.param(key, count, id=f"{key}-{count}", marks=pytest.mark.benchmark(group=f"siren-cpu-forward{count}"))
    for count in CPU_FORWARD for key in _forward_peers("cpu")])
def test_siren_cpu_forward(benchmark: Any, key: str, count: int) -> None:
    _bench_forward(benchmark, "cpu", key, count)


# --- training step -------------------------------------------------------------------------------


def _train_step(peer: str, official: OfficialSiren, precision: str = "fp32") -> tuple[Callable, Any]:
    """A step of L1 + eikonal and Adam: (step(x), the model stepped)."""
    if peer == "eager":
        model = official
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-5)

        def loss_of(x: torch.Tensor) -> torch.Tensor:
            y, coords = model(x)
            grad = torch.autograd.grad(y, coords, torch.ones_like(y), create_graph=True)[0]
            return y.abs().mean() + (grad.norm(dim=-1) - 1).abs().mean()
    else:
        model = _ours(official, precision)
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-5)

        def loss_of(x: torch.Tensor) -> torch.Tensor:
            y, jacobian = model.forward_with_gradient(x)
            return y.abs().mean() + (jacobian[:, 0].norm(dim=-1) - 1).abs().mean()

    def step(x: torch.Tensor) -> None:
        optimiser.zero_grad(set_to_none=True)
        loss_of(x).backward()
        optimiser.step()

    return step, model


def _bench_train(benchmark: Any, device: str, key: str, n: int) -> None:
    official = _official(device)
    precision = key.split("-")[1] if key.startswith("fastsdf-") else "fp32"
    step, _ = _train_step("eager" if key == "eager" else "fastsdf", official, precision)
    x = _points(n, device)

    def run() -> None:
        step(x)
        _sync(device)

    run()
    benchmark.pedantic(run, rounds=10 if device == "cuda" else 5, warmup_rounds=1, iterations=1)
    peer = ("PyTorch eager (autograd.grad, create_graph)", torch.__version__) if key == "eager" else (
        "fastsdf", fastsdf.__version__)
    extra = {} if key == "eager" else {"variant": precision, "compare_with": "fp32"}
    _record(benchmark, *peer, device, n, f"one Adam step of L1 + eikonal at {n:,} points", **extra)


@pytest.mark.parametrize(("key", "count"), [
    pytest.param(key, count, id=f"{key}-{count}", marks=pytest.mark.benchmark(group=f"siren-cpu-train{count}"))
    for count in CPU_TRAIN for key in ("eager", "fastsdf-fp32")])
def test_siren_cpu_train(benchmark: Any, key: str, count: int) -> None:
    _bench_train(benchmark, "cpu", key, count)


# --- CUDA ----------------------------------------------------------------------------------------


def _cuda_or_skip() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    pytest.importorskip("triton")


@pytest.mark.cuda
@pytest.mark.parametrize(("key", "count"), [
    pytest.param(key, count, id=f"{key}-{count}", marks=pytest.mark.benchmark(group=f"siren-cuda-forward{count}"))
    for count in CUDA_SIZES for key in ("eager", "compile", "fastsdf", "fastsdf-tf32", "fastsdf-bf16")])
def test_siren_cuda_forward(benchmark: Any, key: str, count: int) -> None:
    _cuda_or_skip()
    _bench_forward(benchmark, "cuda", key, count)


@pytest.mark.cuda
@pytest.mark.parametrize(("key", "count"), [
    pytest.param(key, count, id=f"{key}-{count}", marks=pytest.mark.benchmark(group=f"siren-cuda-gradient{count}"))
    for count in CUDA_SIZES for key in ("autograd", "fastsdf")])
def test_siren_cuda_gradient(benchmark: Any, key: str, count: int) -> None:
    n = count
    _cuda_or_skip()
    official = _official("cuda")
    model = _ours(official)
    x = _points(n, "cuda")

    def autograd() -> Any:
        y, coords = official(x)
        return y, torch.autograd.grad(y, coords, torch.ones_like(y))[0]

    def ours() -> Any:
        with torch.no_grad():
            return model.forward_with_gradient(x)

    call = autograd if key == "autograd" else ours

    def run() -> Any:
        out = call()
        _sync("cuda")
        return out

    run()
    benchmark.pedantic(run, rounds=10, warmup_rounds=1, iterations=1)
    peer = ("PyTorch autograd", torch.__version__) if key == "autograd" else ("fastsdf", fastsdf.__version__)
    _record(benchmark, *peer, "cuda", n, f"the network and its input gradient at {n:,} points")


@pytest.mark.cuda
@pytest.mark.parametrize(("key", "count"), [
    pytest.param(key, count, id=f"{key}-{count}", marks=pytest.mark.benchmark(group=f"siren-cuda-train{count}"))
    for count in CUDA_SIZES for key in ("eager", "fastsdf-fp32", "fastsdf-bf16")])
def test_siren_cuda_train(benchmark: Any, key: str, count: int) -> None:
    _cuda_or_skip()
    _bench_train(benchmark, "cuda", key, count)
