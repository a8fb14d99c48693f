"""The Triton SIREN kernels (fastsdf.kernels.siren) against the float64 reference.

Without a GPU they run in Triton's interpreter on the CPU (TRITON_INTERPRET=1, which Triton reads
when the kernels are defined, hence set here before they are imported); with one, on CUDA, and the
tests marked ``cuda`` add sizes the interpreter is too slow for.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
triton = pytest.importorskip("triton")

from fastsdf.kernels import siren as kernels  # noqa: E402
from fastsdf.nn import SirenMLP  # noqa: E402
from fastsdf.ops import siren as siren_ops  # noqa: E402

from test_siren import (RTOL_GRAD, RTOL_Y, double_copy, gradient_errors, output_errors,  # noqa: E402,F401
                        poisoned, training_loss)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# On the GPU "fp32" is three TF32 products: as accurate as fp32, summed in another order.
RTOL = {"fp32": (RTOL_Y * 5, RTOL_GRAD * 5), "tf32": (5e-3, 5e-2), "bf16": (3e-2, 2e-1)}


@pytest.fixture(autouse=True)
def _triton_backend(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    monkeypatch.setenv("FASTSDF_BACKEND", "triton")
    torch.manual_seed(seed % (2**63))


def run(model: SirenMLP, x: torch.Tensor, latent: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        y = model(x, latent)
        y2, j = model.forward_with_gradient(x, latent)
    assert torch.equal(y, y2)
    return y, j


@pytest.mark.parametrize("points", [1, 7, 130])
@pytest.mark.parametrize("width, hidden_layers, outputs, outermost_linear, bias",
                         [(16, 0, 1, True, True), (32, 2, 3, False, False), (64, 1, 1, True, True)])
def test_fused_kernels_match_reference(points: int, width: int, hidden_layers: int, outputs: int,
                                       outermost_linear: bool, bias: bool, poisoned: None) -> None:
    model = SirenMLP(3, width, hidden_layers, outputs, outermost_linear=outermost_linear, bias=bias).to(DEVICE)
    assert kernels.supports(list(model.weights))
    x = torch.rand(points, 3, device=DEVICE) * 2 - 1
    y, j = run(model, x)
    error_y, error_j = output_errors(model.cpu(), x.cpu(), y.cpu(), j.cpu())
    tol_y, tol_j = RTOL["fp32"]
    assert error_y <= tol_y and error_j <= tol_j


def test_latent_codes_and_a_wide_first_layer(poisoned: None) -> None:
    """20 inputs (a latent code of 17 and a point): the first layer goes through tl.dot."""
    model = SirenMLP(3, 32, 1, 1, latent_features=17).to(DEVICE)
    x = torch.rand(40, 3, device=DEVICE) * 2 - 1
    latent = torch.randn(17, device=DEVICE) * 0.1
    y, j = run(model, x, latent)
    error_y, error_j = output_errors(model.cpu(), x.cpu(), y.cpu(), j.cpu(), latent.cpu())
    tol_y, tol_j = RTOL["fp32"]
    assert error_y <= tol_y and error_j <= tol_j


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_precision_modes(precision: str) -> None:
    model = SirenMLP(3, 32, 2, 1, precision=precision).to(DEVICE)
    x = torch.rand(50, 3, device=DEVICE) * 2 - 1
    y, j = run(model, x)
    error_y, error_j = output_errors(model.cpu(), x.cpu(), y.cpu(), j.cpu())
    tol_y, tol_j = RTOL[precision]
    assert error_y <= tol_y and error_j <= tol_j


def test_other_widths_take_the_composed_path() -> None:
    model = SirenMLP(3, 24, 1, 1).to(DEVICE)
    assert not kernels.supports(list(model.weights))
    x = torch.rand(9, 3, device=DEVICE)
    y, j = run(model, x)
    error_y, error_j = output_errors(model.cpu(), x.cpu(), y.cpu(), j.cpu())
    assert error_y <= RTOL_Y and error_j <= RTOL_GRAD


def test_training_gradients_through_the_triton_sine(monkeypatch: pytest.MonkeyPatch) -> None:
    model = SirenMLP(3, 32, 1, 1).to(DEVICE)
    twin = double_copy(model.cpu()).to(DEVICE)
    n = 33
    x = torch.rand(n, 3, device=DEVICE) * 2 - 1

    def grads(m: SirenMLP, dtype: torch.dtype, rows: slice) -> list[torch.Tensor]:
        xx = x.to(dtype).requires_grad_()
        y, j = m.forward_with_gradient(xx[rows])
        return [g.cpu() for g in torch.autograd.grad(training_loss(y, j, n), [*m.parameters(), xx])]

    assert siren_ops.backend(x) == "triton"
    got = grads(model, torch.float32, slice(None))
    monkeypatch.setenv("FASTSDF_BACKEND", "reference")
    for error in gradient_errors(got, lambda rows: grads(twin, torch.float64, rows), n):
        assert error <= RTOL_GRAD


def test_sincos(poisoned: None) -> None:
    z = (torch.rand(3001, device=DEVICE) * 2 - 1) * 5
    s, c = kernels.sincos(z, 30.0)
    phase = 30.0 * z.double()
    assert (s.double() - torch.sin(phase)).abs().max() < 1e-4
    assert (c.double() / 30 - torch.cos(phase)).abs().max() < 1e-4


@pytest.mark.cuda
@pytest.mark.parametrize("width", [64, 256, 512])
def test_large_batches_on_cuda(width: int, poisoned: None) -> None:
    if DEVICE != "cuda":
        pytest.skip("needs a CUDA GPU")
    model = SirenMLP(3, width, 3, 1).to(DEVICE)
    x = torch.rand(1_000_003, 3, device=DEVICE) * 2 - 1
    y, j = run(model, x)
    assert torch.isfinite(y).all() and torch.isfinite(j).all()
    rows = torch.randint(0, len(x), (4000,), device=DEVICE)
    error_y, error_j = output_errors(model.cpu(), x[rows].cpu(), y[rows].cpu(), j[rows].cpu())
    tol_y, tol_j = RTOL["fp32"]
    assert error_y <= tol_y and error_j <= tol_j


def test_hidden_layers_with_different_omegas_are_computed_with_theirs(poisoned: None) -> None:
    """The kernels take one hidden omega: a network whose hidden layers differ (fastsdf.Siren's
    ``net[i].omega_0`` can be set per layer, as in the official class) runs on the composed path."""
    from fastsdf.nn import Siren

    model = Siren(3, 32, 3, 1, outermost_linear=True).to(DEVICE)
    for layer, omega in zip(model.net[1:4], (10.0, 30.0, 45.0)):
        layer.omega_0 = omega
    x = torch.rand(37, 3, device=DEVICE) * 2 - 1
    with torch.no_grad():
        y = model(x)[0]
        j = model.forward_with_gradient(x)[1]
    error_y, error_j = output_errors(model.cpu(), x.cpu(), y.cpu(), j.cpu())
    tol_y, tol_j = RTOL["fp32"]
    assert error_y <= tol_y and error_j <= tol_j
