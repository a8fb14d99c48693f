"""fastsdf.SirenMLP against its float64 twin (fastsdf.ops.siren_reference) and the official SIREN.

Every test draws fresh weights and inputs (the ``rng`` / ``seed`` fixtures). Fast paths are
compared with the reference run in float64 on the same float32 weights. Tolerances are relative to
the magnitude each float32 computation works at, not to its result, which may cancel to almost
nothing: the largest sum of absolute terms of the product that makes it (|W| |a| + |b| for an
output, the first layer's |G c| |W| for the Jacobian, the points' absolute contributions for a
gradient summed over points). Float32 rounds each term to within 6e-8 of
itself, and omega_0 = 30 magnifies that through the layers, hence the constants. Outputs the kernels
write are first filled with NaN (``poisoned``) so that any element they miss shows.
The Triton kernels have their own module (test_siren_triton.py).
"""

from __future__ import annotations

import copy
import io
import math
import pickle

import numpy as np
import pytest
import torch

import fastsdf
from fastsdf import _backend
from fastsdf.nn import Siren, SirenMLP
from fastsdf.ops import siren as siren_ops
from fastsdf.ops import siren_cpu
from official_siren import Siren as OfficialSiren
from siren_helpers import (RTOL_GRAD, RTOL_Y, double_copy, gradient_errors, magnitudes, output_errors,  # noqa: F401
                           poisoned, reference_outputs, scaled_error, training_loss)

# Between two float32 computations (each its own rounding, magnified by the omegas), relative to
# siren_helpers.magnitudes.
RTOL_FLOAT32 = 1e-3


@pytest.fixture(autouse=True)
def _seeded_torch(seed: int) -> None:
    torch.manual_seed(seed % (2**63))


# --------------------------------------------------------------------------------------------
# Construction, initialisation, validation
# --------------------------------------------------------------------------------------------


def test_layers_and_initialisation_follow_the_official_siren() -> None:
    model = SirenMLP(3, 256, 3, 1)
    assert [tuple(w.shape) for w in model.weights] == [(256, 3), (256, 256), (256, 256), (256, 256), (1, 256)]
    assert model.omegas == (30.0, 30.0, 30.0, 30.0, None)
    first = model.weights[0].detach()
    assert first.abs().max() <= 1 / 3 and first.abs().max() > 0.9 / 3  # U(-1/3, 1/3), 768 draws
    for w in list(model.weights)[1:]:
        bound = math.sqrt(6 / 256) / 30
        values = w.detach()
        assert values.abs().max() <= bound
        if values.numel() > 1000:
            # A uniform distribution: its variance is bound^2 / 3.
            assert abs(values.var().item() / (bound**2 / 3) - 1) < 0.05
    for b, fan_in in zip(model.biases, (3, 256, 256, 256, 256)):
        assert b.detach().abs().max() <= 1 / math.sqrt(fan_in)
    assert not SirenMLP(3, 16, 1, 1, bias=False).biases
    last_sine = SirenMLP(2, 16, 1, 4, outermost_linear=False, hidden_omega_0=10.0)
    assert last_sine.omegas == (30.0, 10.0, 10.0)
    assert "hidden_features=16" in repr(last_sine)


@pytest.mark.parametrize("kwargs, message", [
    ({"in_features": 0}, "in_features"),
    ({"hidden_features": 2.5}, "hidden_features"),
    ({"hidden_layers": -1}, "hidden_layers"),
    ({"out_features": True}, "out_features"),
    ({"first_omega_0": 0}, "first_omega_0"),
    ({"hidden_omega_0": float("nan")}, "hidden_omega_0"),
    ({"hidden_omega_0": "fast"}, "hidden_omega_0"),
    ({"latent_features": -2}, "latent_features"),
    ({"precision": "fp16"}, "precision"),
])
def test_bad_construction_arguments(kwargs: dict, message: str) -> None:
    args = {"in_features": 3, "hidden_features": 8, "hidden_layers": 1, "out_features": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        SirenMLP(**args)


def test_bad_inputs_raise_clear_errors() -> None:
    model = SirenMLP(3, 16, 1, 1)
    with pytest.raises(TypeError, match="torch.Tensor"):
        model(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        model(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        model(torch.tensor(1.0))
    with pytest.raises(TypeError, match="float64"):
        model(torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="no latent"):
        model(torch.zeros(2, 3), torch.zeros(2, 4))
    coded = SirenMLP(3, 16, 1, 1, latent_features=4)
    with pytest.raises(ValueError, match="latent="):
        coded(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="broadcast"):
        coded(torch.zeros(5, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="precision"):
        model.precision = "int8"


def test_nan_inputs_give_nan_for_those_points_only() -> None:
    model = SirenMLP(3, 32, 1, 1)
    x = torch.rand(10, 3)
    x[3, 1] = float("nan")
    x[7, 0] = float("inf")
    with torch.no_grad():
        y, j = model.forward_with_gradient(x)
    bad = torch.zeros(10, dtype=torch.bool)
    bad[[3, 7]] = True
    assert torch.isnan(y[bad]).all() and torch.isfinite(y[~bad]).all()
    assert torch.isfinite(j[~bad]).all()


# --------------------------------------------------------------------------------------------
# Values and gradients against the float64 reference
# --------------------------------------------------------------------------------------------

SHAPES = [(1,), (7,), (3, 5), (2, 1, 4)]


@pytest.mark.parametrize("lead", SHAPES)
@pytest.mark.parametrize("width, hidden_layers, outputs, outermost_linear",
                         [(32, 0, 1, True), (64, 2, 3, False), (256, 3, 1, True)])
def test_inference_matches_reference(lead: tuple, width: int, hidden_layers: int, outputs: int,
                                     outermost_linear: bool, poisoned: None) -> None:
    model = SirenMLP(3, width, hidden_layers, outputs, outermost_linear=outermost_linear)
    x = torch.rand(*lead, 3) * 2 - 1
    with torch.no_grad():
        y = model(x)
        y2, j = model.forward_with_gradient(x)
    error_y, error_j = output_errors(model, x, y, j)
    context = f"width={width} layers={hidden_layers} out={outputs} lead={lead}"
    assert error_y <= RTOL_Y, context
    assert torch.equal(y, y2), context
    assert error_j <= RTOL_GRAD, context


def test_a_million_points(poisoned: None) -> None:
    """1000003 points in one call (odd, so the last tile is partial): every output written, a
    random sample of them against the reference."""
    model = SirenMLP(3, 32, 2, 1)
    x = torch.rand(1_000_003, 3) * 2 - 1
    with torch.no_grad():
        y, j = model.forward_with_gradient(x)
    assert torch.isfinite(y).all() and torch.isfinite(j).all()
    rows = torch.cat([torch.tensor([0, len(x) - 1]), torch.randint(0, len(x), (3000,))])
    error_y, error_j = output_errors(model, x[rows], y[rows], j[rows])
    assert error_y <= RTOL_Y and error_j <= RTOL_GRAD


@pytest.mark.parametrize("with_gradient", [False, True])
@pytest.mark.parametrize("latent_features", [0, 6])
def test_training_gradients_match_reference(with_gradient: bool, latent_features: int) -> None:
    """Gradients of a loss on y (+ eikonal) for every parameter, the input and the latent code."""
    model = SirenMLP(3, 64, 2, 1, latent_features=latent_features)
    twin = double_copy(model)
    n = 67
    x = torch.rand(n, 3) * 2 - 1
    latent = torch.randn(n, latent_features) * 0.1 if latent_features else None

    def grads(m: SirenMLP, dtype: torch.dtype, rows: slice) -> list[torch.Tensor]:
        xx = x.to(dtype).requires_grad_()
        ll = None if latent is None else latent.to(dtype).requires_grad_()
        if with_gradient:
            y, j = m.forward_with_gradient(xx[rows], None if ll is None else ll[rows])
        else:
            y, j = m(xx[rows], None if ll is None else ll[rows]), None
        inputs = [*m.parameters(), xx] + ([ll] if ll is not None else [])
        return list(torch.autograd.grad(training_loss(y, j, n), inputs))

    got = grads(model, torch.float32, slice(None))
    errors = gradient_errors(got, lambda rows: grads(twin, torch.float64, rows), n)
    for index, error in enumerate(errors):
        assert error <= RTOL_GRAD, f"gradient {index}"


def test_eikonal_double_backward_official_style() -> None:
    """Code written for the official SIREN takes dy/dx with autograd (create_graph) and
    backpropagates a loss on it: the composed path supports that double backward."""
    model = SirenMLP(3, 32, 2, 1)
    twin = double_copy(model)
    n = 41
    x = torch.rand(n, 3) * 2 - 1

    def grads(m: SirenMLP, dtype: torch.dtype, rows: slice) -> list[torch.Tensor]:
        xx = x[rows].to(dtype).requires_grad_()
        y = m(xx)
        g = torch.autograd.grad(y, xx, torch.ones_like(y), create_graph=True)[0]
        params = list(m.parameters())
        # (The output bias does not move the gradient.)
        found = torch.autograd.grad((g.norm(dim=-1) - 1).pow(2).sum() / n, params, allow_unused=True)
        return [torch.zeros_like(p) if f is None else f for p, f in zip(params, found)]

    got = grads(model, torch.float32, slice(None))
    for error in gradient_errors(got, lambda rows: grads(twin, torch.float64, rows), n):
        assert error <= RTOL_GRAD


def test_fused_cpu_gradients_are_first_order() -> None:
    model = SirenMLP(3, 16, 1, 1)
    x = torch.rand(5, 3).requires_grad_()
    y, j = model.forward_with_gradient(x)
    (gx,) = torch.autograd.grad(j.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="(?i)differentiable|does not require grad"):
        torch.autograd.grad(gx.sum(), x)


@pytest.mark.parametrize("hidden, outputs, outermost_linear",
                         [(37, 2, False), (64, 2, False), (37, 1, True), (64, 3, True), (37, 9, True)])
@pytest.mark.parametrize("width", [4, 8, 16])
def test_every_cpu_vector_width(width: int, hidden: int, outputs: int, outermost_linear: bool,
                                poisoned: None) -> None:
    """The C++ kernel for SSE, AVX2 and AVX-512 vectors (where this CPU has them), forward (alone,
    and with the Jacobian and a tape) and backward, straight through the binding, with and without a
    tape. Padded to 40 or 64 floats, not multiples of the 6-row register blocks of SSE and AVX2: a
    block must not read past the scratch's last row (`make sanitize` shows any read there). A
    linear last layer with fewer outputs than a vector has lanes runs as dot products, a wider one
    (9 outputs for 4 and 8 floats) on the panels."""
    model = SirenMLP(3, hidden, 2, outputs, outermost_linear=outermost_linear)
    try:
        net = siren_cpu.packed(list(model.weights), list(model.biases), model.omegas, siren_ops.KernelCache(),
                               width=width)
    except ValueError as exc:
        pytest.skip(str(exc))
    n = 61
    x = torch.rand(n, 3) * 2 - 1
    y, j = torch.empty(n, outputs), torch.empty(n, outputs, 3)
    tape = torch.empty(net.tape_floats(n, True))
    net.forward(x.numpy(), y.numpy(), j.numpy(), 3, tape.numpy())
    error_y, error_j = output_errors(model, x, y, j)
    assert error_y <= RTOL_Y and error_j <= RTOL_GRAD
    y_alone = torch.empty(n, outputs)
    net.forward(x.numpy(), y_alone.numpy(), None, 3, None)
    assert output_errors(model, x, y_alone)[0] <= RTOL_Y
    dy, dj = torch.randn(n, outputs), torch.randn(n, outputs, 3)
    twin = double_copy(model)

    def want(rows: slice) -> list[torch.Tensor]:
        xx = x.double().requires_grad_()
        yy, jj = twin.forward_with_gradient(xx[rows])
        loss = (yy * dy[rows].double()).sum() + (jj * dj[rows].double()).sum()
        return list(torch.autograd.grad(loss, [*twin.parameters(), xx]))

    layers = len(model.weights)
    for taped in (None, tape):
        grads = [torch.empty(p.shape) for p in model.parameters()]  # the weights, then the biases
        dx = torch.empty(n, 3)
        net.backward(x.numpy(), dy.numpy(), dj.numpy(), 3, [g.numpy() for g in grads[:layers]],
                     [g.numpy() for g in grads[layers:]], dx.numpy(), None if taped is None else taped.numpy())
        for error in gradient_errors([*grads, dx], want, n):
            assert error <= RTOL_GRAD


def test_sincos_kernel(poisoned: None) -> None:
    z = (torch.rand(1_000_003) * 2 - 1) * 10
    s, c = siren_cpu.sincos(z, 30.0)
    phase = 30.0 * z.double()
    # float32 rounds omega * z to within 6e-8 of 300, which bounds the error of any float32 sine.
    assert (s.double() - torch.sin(phase)).abs().max() < 1e-4
    assert (c.double() / 30 - torch.cos(phase)).abs().max() < 1e-4


# The vectorised sine against float64 sin and cos of the same float32 argument: its fast path is
# within 9.4e-8 of them for |x| < 8192 (every float32 there checked, SSE, AVX2 and AVX-512), the
# inference's sine alone (AVX2 and AVX-512, reduced by pi) within 8.9e-8 (the same check), the exact
# path beyond within half a float32 ulp (2.98e-8 below 1); omega cos adds a rounding.
SINE_ATOL = 1e-7


def random_floats(rng: np.random.Generator, n: int) -> np.ndarray:
    """Finite float32 values of every magnitude: random bit patterns, NaN and Inf redrawn, plus the
    edges of the fast range and of float32."""
    bits = rng.integers(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    while not np.isfinite(x).all():
        bad = ~np.isfinite(x)
        x[bad] = rng.integers(0, 2**32, size=int(bad.sum()), dtype=np.uint64).astype(np.uint32).view(np.float32)
    edges = np.array([0.0, -0.0, 8191.999, 8192.0, -8192.0, 8192.001, 1e8, 1e12, 3.4e38, -3.4e38, 1e-45],
                     np.float32)
    return np.concatenate([x, edges])


@pytest.mark.parametrize("omega", [1.0, 30.0, 1e8, 1e12])
def test_sincos_kernel_every_magnitude(omega: float, rng: np.random.Generator, poisoned: None) -> None:
    """sin(omega z) and omega cos(omega z) for finite z of every magnitude: within SINE_ATOL of the
    float64 values of the float32 phase (the kernel's own product), so within [-1, 1] and finite
    wherever that phase is (before, beyond |phase| ~ 1e8 they left [-1, 1] and reached 9e30)."""
    z = random_floats(rng, 200_003)
    with np.errstate(over="ignore"):
        phase = (z * np.float32(omega)).astype(np.float64)
    s, c = siren_cpu.sincos(torch.from_numpy(z), omega)
    finite = np.isfinite(phase)
    assert np.isnan(s.numpy()[~finite]).all()  # float32 overflow of the phase itself: sin(inf)
    s64, c64 = s.double().numpy()[finite], c.double().numpy()[finite]
    assert np.abs(s64 - np.sin(phase[finite])).max() <= SINE_ATOL
    assert np.abs(c64 / omega - np.cos(phase[finite])).max() <= SINE_ATOL + 2**-24
    assert np.abs(s64).max() <= 1.0


@pytest.mark.parametrize("width", [4, 8, 16])
def test_fused_sine_every_magnitude(width: int, rng: np.random.Generator, poisoned: None) -> None:
    """The fused kernel's own sine, for each vector width: a network y = sin(omega x) (one sine unit,
    a linear output of weight 1), so y and its Jacobian omega cos(omega x) come straight from the
    kernel's sine, forward (with the Jacobian and without) and from the tape."""
    omega = 3.0
    weights = [np.ones((1, 1), np.float32), np.ones((1, 1), np.float32)]
    try:
        net = _backend.cpu().SirenNet(weights, [None, None], [omega, None], width)
    except ValueError as exc:
        pytest.skip(str(exc))
    x = random_floats(rng, 100_003)
    with np.errstate(over="ignore"):
        x = x[np.isfinite(x * np.float32(omega))].reshape(-1, 1)
    n = len(x)
    y, j = np.empty((n, 1), np.float32), np.empty((n, 1, 1), np.float32)
    tape = np.empty(net.tape_floats(n, True), np.float32)
    net.forward(x, y, j, 1, tape)
    phase = (x * np.float32(omega)).astype(np.float64)
    assert np.abs(y - np.sin(phase)).max() <= SINE_ATOL
    assert np.abs(j[:, :, 0] / omega - np.cos(phase)).max() <= SINE_ATOL + 2**-24
    # Inference alone (no Jacobian, no tape) runs the kernel's sine without its cosine.
    y_alone = np.empty_like(y)
    net.forward(x, y_alone, None, 1, None)
    assert np.abs(y_alone - np.sin(phase)).max() <= SINE_ATOL
    # The backward rebuilds sin and cos from the tape: d(sum y)/dW_last = sum of sin(omega x).
    grad_w = [np.empty((1, 1), np.float32), np.empty((1, 1), np.float32)]
    net.backward(x, np.ones((n, 1), np.float32), np.zeros((n, 1, 1), np.float32), 1, grad_w, [None, None], None,
                 tape)
    assert np.isfinite(grad_w[1]).all() and abs(grad_w[1][0, 0] - np.sin(phase).sum()) <= 1e-4 * n


@pytest.mark.parametrize("width", [4, 8, 16])
def test_inference_sine_across_its_fast_range(width: int, rng: np.random.Generator) -> None:
    """The activations have a sine of their own in the AVX2 and AVX-512 kernels, cheaper than the
    sine and cosine pair (a reduction by pi and one polynomial, csrc/siren sin_vec): within SINE_ATOL
    of float64 sin over its fast range |phase| < 8192, sampled densest where its error peaks: phases
    near (q + 1/2) pi (|r| near pi/2, the polynomial's largest terms) and near q pi (the reduction's
    cancellation). With the Jacobian the activations are the same bits."""
    weights = [np.ones((1, 1), np.float32), np.ones((1, 1), np.float32)]
    try:
        net = _backend.cpu().SirenNet(weights, [None, None], [1.0, None], width)
    except ValueError as exc:
        pytest.skip(str(exc))
    q = rng.integers(-2607, 2608, size=100_000).astype(np.float64)
    x = np.concatenate([rng.uniform(-8192, 8192, 100_000), (q + 0.5) * np.pi + rng.uniform(-0.3, 0.3, q.size),
                        q * np.pi + rng.uniform(-1e-3, 1e-3, q.size)]).astype(np.float32)
    x = x[np.abs(x) < 8192].reshape(-1, 1)
    y = np.full_like(x, np.nan)
    net.forward(x, y, None, 1, None)  # omega 1: the phase is x itself
    assert np.abs(y - np.sin(x.astype(np.float64))).max() <= SINE_ATOL
    y_with_jacobian, j = np.full_like(x, np.nan), np.full((len(x), 1, 1), np.nan, np.float32)
    net.forward(x, y_with_jacobian, j, 1, None)
    assert np.array_equal(y, y_with_jacobian)


def test_huge_omegas_give_finite_outputs() -> None:
    """Sines stay in [-1, 1] whatever omega (z) is, so a finite point gives a finite output (before,
    omega = 1e12 gave sines of 9e30 and, three layers on, NaN)."""
    model = SirenMLP(3, 64, 3, 1, first_omega_0=1e12, hidden_omega_0=1e12)
    x = torch.rand(333, 3) * 2 - 1
    with torch.no_grad():
        y = model(x)
    bound = model.weights[-1].detach().abs().sum() + model.biases[-1].detach().abs().sum()
    assert torch.isfinite(y).all() and y.abs().max() <= bound * (1 + 1e-6)
    # A Jacobian and gradients that do not overflow float32 (omegas 1e8 over two sine layers).
    model = SirenMLP(3, 32, 1, 1, first_omega_0=1e8, hidden_omega_0=1e8)
    x.requires_grad_()
    y, j = model.forward_with_gradient(x)
    assert torch.isfinite(y).all() and torch.isfinite(j).all()
    grads = torch.autograd.grad(training_loss(y, j, len(x)), [*model.parameters(), x])
    assert all(torch.isfinite(g).all() for g in grads)


# --------------------------------------------------------------------------------------------
# Backends, precision, devices
# --------------------------------------------------------------------------------------------


def test_backends_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    model = SirenMLP(3, 64, 1, 1)
    x = torch.rand(100, 3)
    outputs = {}
    for name in ("reference", "cpu"):
        monkeypatch.setenv("FASTSDF_BACKEND", name)
        with torch.no_grad():
            outputs[name] = model.forward_with_gradient(x)
    scales = magnitudes(model, x)
    for a, b, scale in zip(outputs["reference"], outputs["cpu"], scales):
        assert scaled_error(b, a, scale) <= RTOL_GRAD


def test_forced_backends_that_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    model = SirenMLP(3, 16, 1, 1).double()
    monkeypatch.setenv("FASTSDF_BACKEND", "cpu")
    with pytest.raises(fastsdf.BackendUnavailableError, match="float32"):
        model(torch.rand(4, 3, dtype=torch.float64))
    monkeypatch.setenv("FASTSDF_BACKEND", "turbo")
    with pytest.raises(ValueError, match="FASTSDF_BACKEND"):
        model(torch.rand(4, 3, dtype=torch.float64))
    monkeypatch.setenv("FASTSDF_BACKEND", "triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(fastsdf.BackendUnavailableError):
        SirenMLP(3, 16, 1, 1)(torch.rand(4, 3))


def test_float64_runs_the_reference() -> None:
    model = SirenMLP(3, 32, 1, 1).double()
    x = torch.rand(9, 3, dtype=torch.float64)
    assert siren_ops.backend(x) == "reference"
    with torch.no_grad():
        assert torch.equal(model(x), reference_outputs(model, x))


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_precision_modes(precision: str) -> None:
    """On the CPU the fused kernel computes in fp32 whatever the mode; the autograd path rounds the
    hidden products to bf16 in "bf16" mode (the first layer stays exact)."""
    model = SirenMLP(3, 64, 2, 1, precision=precision)
    x = torch.rand(50, 3) * 2 - 1
    want = reference_outputs(model, x)
    scale = magnitudes(model, x)[0]
    with torch.no_grad():
        assert scaled_error(model(x), want, scale) <= RTOL_Y
    tolerance = 5e-2 if precision == "bf16" else RTOL_Y
    assert scaled_error(model(x.requires_grad_()).detach(), want, scale) <= tolerance


def test_empty_batch() -> None:
    model = SirenMLP(3, 16, 1, 2)
    with torch.no_grad():
        y, j = model.forward_with_gradient(torch.zeros(0, 3))
    assert y.shape == (0, 2) and j.shape == (0, 2, 3)
    assert model(torch.zeros(4, 0, 3)).shape == (4, 0, 2)


def test_cache_follows_parameter_updates() -> None:
    """The packed weights are rebuilt after an optimiser step or a load_state_dict."""
    model = SirenMLP(3, 32, 1, 1)
    x = torch.rand(20, 3)
    with torch.no_grad():
        before = model(x)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    model(x).sum().backward()
    optimiser.step()
    with torch.no_grad():
        after = model(x)
    assert not torch.equal(before, after)
    assert output_errors(model, x, after)[0] <= RTOL_Y
    other = SirenMLP(3, 32, 1, 1)
    model.load_state_dict(other.state_dict())
    with torch.no_grad():
        assert torch.equal(model(x), other(x))


EDITS = {
    "data.add_": lambda p, q: p.data.add_(q),
    "data.copy_": lambda p, q: p.data.copy_(p.data + q),
    "data =": lambda p, q: setattr(p, "data", p.data + q),
    "data[...] =": lambda p, q: p.data.__setitem__((0,), p.data[0] + q[0]),
    "numpy view": lambda p, q: np.add(p.detach().numpy(), q.numpy(), out=p.detach().numpy()),
}


@pytest.mark.parametrize("edit", list(EDITS))
@pytest.mark.parametrize("which", ["weight", "bias"])
def test_cache_follows_edits_through_data(edit: str, which: str) -> None:
    """Edits that bypass autograd's version counters (optimisers and user code editing ``.data``, a
    NumPy view): the fused kernel must not keep the weights it packed before."""
    model = SirenMLP(3, 32, 1, 1)
    x = torch.rand(20, 3) * 2 - 1
    with torch.no_grad():
        before = model(x)
        model.forward_with_gradient(x)
    parameter = (model.weights if which == "weight" else model.biases)[1]
    EDITS[edit](parameter, torch.randn_like(parameter) * 0.05)
    with torch.no_grad():
        y = model(x)
        y2, j = model.forward_with_gradient(x)
    assert not torch.equal(y, before)
    assert torch.equal(y, y2)
    error_y, error_j = output_errors(model, x, y, j)
    assert error_y <= RTOL_Y and error_j <= RTOL_GRAD


def test_pickle_deepcopy_and_torch_save() -> None:
    model = SirenMLP(3, 16, 1, 1, latent_features=2)
    x, latent = torch.rand(6, 3), torch.rand(2)
    with torch.no_grad():
        want = model(x, latent)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    for clone in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model), torch.load(buffer, weights_only=False)):
        with torch.no_grad():
            assert torch.equal(clone(x, latent), want)


# --------------------------------------------------------------------------------------------
# The official SIREN and siren-pytorch
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("outermost_linear", [True, False])
def test_official_state_dicts_round_trip(outermost_linear: bool) -> None:
    official = OfficialSiren(2, 32, 2, 3, outermost_linear=outermost_linear, first_omega_0=20, hidden_omega_0=25)
    model = SirenMLP.from_official_state_dict(official.state_dict(), first_omega_0=20, hidden_omega_0=25)
    assert model.outermost_linear == outermost_linear and model.hidden_layers == 2
    x = torch.rand(13, 2)
    with torch.no_grad():
        want = official(x)[0]
        assert scaled_error(model(x), want, magnitudes(model, x)[0]) <= RTOL_FLOAT32
    back = model.to_official_state_dict()
    assert list(back) == list(official.state_dict())
    for key, value in official.state_dict().items():
        assert torch.equal(back[key], value)
    with pytest.raises(ValueError, match="outermost_linear"):
        SirenMLP.from_official_state_dict(official.state_dict(), outermost_linear=not outermost_linear)
    prefixed = {f"module.{k}": v for k, v in official.state_dict().items()}
    assert SirenMLP.from_official_state_dict(prefixed).hidden_features == 32


def test_official_drop_in_siren() -> None:
    """`Siren` behaves as the official class: defaults, (output, coords), gradients through coords,
    and state dicts loaded and saved under the official keys."""
    official = OfficialSiren(3, 32, 1, 1, outermost_linear=True)
    ours = Siren(3, 32, 1, 1, outermost_linear=True)
    ours.load_state_dict(official.state_dict())
    assert list(ours.state_dict()) == list(official.state_dict())
    x = torch.rand(17, 3)
    out, coords = ours(x)
    want, want_coords = official(x)
    assert coords.requires_grad and torch.equal(coords, want_coords)
    y_scale, j_scale = magnitudes(ours, x)
    assert scaled_error(out.detach(), want.detach(), y_scale) <= RTOL_FLOAT32
    grad = torch.autograd.grad(out, coords, torch.ones_like(out))[0]
    want_grad = torch.autograd.grad(want, want_coords, torch.ones_like(want))[0]
    assert scaled_error(grad, want_grad, j_scale) <= RTOL_FLOAT32
    assert not Siren(2, 8, 1, 1).outermost_linear  # the official default


@pytest.mark.parametrize("bad", ["gap", "ragged", "mixed bias", "stranger"])
def test_bad_official_state_dicts(bad: str) -> None:
    state = OfficialSiren(2, 8, 1, 1, outermost_linear=True).state_dict()
    if bad == "gap":
        state = {k.replace("net.1.", "net.5."): v for k, v in state.items()}
    elif bad == "ragged":
        state["net.1.linear.weight"] = torch.zeros(8, 7)
    elif bad == "mixed bias":
        del state["net.0.linear.bias"]
    else:
        state["encoder.weight"] = torch.zeros(1)
    with pytest.raises(ValueError):
        SirenMLP.from_official_state_dict(state)


def test_siren_pytorch_conversion() -> None:
    siren_pytorch = pytest.importorskip("siren_pytorch")
    theirs = siren_pytorch.SirenNet(dim_in=3, dim_hidden=32, dim_out=2, num_layers=3, w0=1.0, w0_initial=30.0)
    ours = SirenMLP.from_siren_pytorch_state_dict(theirs.state_dict(), w0=1.0, w0_initial=30.0, final_sine=False)
    assert ours.hidden_layers == 2 and ours.omegas == (30.0, 1.0, 1.0, None)
    x = torch.rand(11, 3)
    with torch.no_grad():
        assert scaled_error(ours(x), theirs(x), magnitudes(ours, x)[0]) <= RTOL_FLOAT32
    with pytest.raises(ValueError, match="last_layer"):
        SirenMLP.from_siren_pytorch_state_dict({"layers.0.weight": torch.zeros(4, 3)}, w0=1.0, w0_initial=30.0,
                                               final_sine=False)
