"""fastsdf.SirenMLP against its float64 twin (fastsdf.ops.siren_reference) and the official SIREN.

Every test draws fresh weights and inputs (the ``rng`` / ``seed`` fixtures). Fast paths are
compared with the reference run in float64 on the same float32 weights; tolerances are relative to
the size of what is compared (omega_0 = 30 magnifies float32 rounding through the layers). Outputs
the kernels write are first filled with NaN (``poisoned``) so that any element they miss shows.
The Triton kernels have their own module (test_siren_triton.py).
"""

from __future__ import annotations

import copy
import io
import math
import os
import pickle
from typing import Any, Callable

import numpy as np
import pytest
import torch

import fastsdf
from fastsdf.nn import Siren, SirenMLP
from fastsdf.ops import siren as siren_ops
from fastsdf.ops import siren_cpu, siren_reference
from official_siren import Siren as OfficialSiren

# Relative tolerances (of the largest reference value) for float32 fast paths against float64, and
# between two float32 computations (each its own rounding, magnified by the omegas).
RTOL_Y = 2e-5
RTOL_GRAD = 2e-4
RTOL_FLOAT32 = 1e-3


@pytest.fixture(autouse=True)
def _seeded_torch(seed: int) -> None:
    torch.manual_seed(seed % (2**63))


@pytest.fixture
def poisoned(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.empty returns NaN-filled float tensors, so unwritten kernel outputs show."""
    real_empty = torch.empty

    def empty(*args: Any, **kwargs: Any) -> torch.Tensor:
        out = real_empty(*args, **kwargs)
        if out.is_floating_point():
            out.fill_(float("nan"))
        return out

    monkeypatch.setattr(torch, "empty", empty)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.double(), want.double()
    assert got.shape == want.shape, (got.shape, want.shape)
    if want.numel() == 0:
        return 0.0
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-12))


def reference_outputs(model: SirenMLP, x: torch.Tensor, latent: torch.Tensor | None = None,
                      with_gradient: bool = False) -> Any:
    """The float64 reference on the model's own (float32) weights."""
    weights = [w.detach().double() for w in model.weights]
    biases = [b.detach().double() for b in model.biases] or [None] * len(weights)
    points = x.double().reshape(-1, model.in_features)
    if latent is not None:
        latent = latent.double().expand(*x.shape[:-1], model.latent_features).reshape(-1, model.latent_features)
        points = torch.cat([latent, points], dim=-1)
    lead = tuple(x.shape[:-1])
    if not with_gradient:
        return siren_reference.forward(points, weights, biases, model.omegas).reshape(*lead, model.out_features)
    y, j = siren_reference.forward_with_gradient(points, weights, biases, model.omegas, model.in_features)
    return y.reshape(*lead, model.out_features), j.reshape(*lead, model.out_features, model.in_features)


def double_copy(model: SirenMLP) -> SirenMLP:
    twin = copy.deepcopy(model).double()
    return twin


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
    want_y, want_j = reference_outputs(model, x, with_gradient=True)
    context = f"width={width} layers={hidden_layers} out={outputs} lead={lead}"
    assert relative_error(y, want_y) <= RTOL_Y, context
    assert torch.equal(y, y2), context
    assert relative_error(j, want_j) <= RTOL_GRAD, context


def test_a_million_points(poisoned: None) -> None:
    """1000003 points in one call (odd, so the last tile is partial): every output written, a
    random sample of them against the reference."""
    model = SirenMLP(3, 32, 2, 1)
    x = torch.rand(1_000_003, 3) * 2 - 1
    with torch.no_grad():
        y, j = model.forward_with_gradient(x)
    assert torch.isfinite(y).all() and torch.isfinite(j).all()
    rows = torch.cat([torch.tensor([0, len(x) - 1]), torch.randint(0, len(x), (3000,))])
    want_y, want_j = reference_outputs(model, x[rows], with_gradient=True)
    assert relative_error(y[rows], want_y) <= RTOL_Y
    assert relative_error(j[rows], want_j) <= RTOL_GRAD


def _loss(y: torch.Tensor, j: torch.Tensor | None) -> torch.Tensor:
    """An L1 term on y and an eikonal term on the Jacobian, as SDF training uses."""
    loss = y.abs().mean()
    if j is not None:
        loss = loss + (j[..., 0, :].norm(dim=-1) - 1).abs().mean()
    return loss


@pytest.mark.parametrize("with_gradient", [False, True])
@pytest.mark.parametrize("latent_features", [0, 6])
def test_training_gradients_match_reference(with_gradient: bool, latent_features: int) -> None:
    """Gradients of an L1 (+ eikonal) loss for every parameter, the input and the latent code."""
    model = SirenMLP(3, 64, 2, 1, latent_features=latent_features)
    twin = double_copy(model)
    x = torch.rand(67, 3) * 2 - 1
    latent = torch.randn(67, latent_features) * 0.1 if latent_features else None

    def grads(m: SirenMLP, dtype: torch.dtype) -> list[torch.Tensor]:
        xx = x.to(dtype).requires_grad_()
        ll = None if latent is None else latent.to(dtype).requires_grad_()
        if with_gradient:
            y, j = m.forward_with_gradient(xx, ll)
        else:
            y, j = m(xx, ll), None
        inputs = [*m.parameters(), xx] + ([ll] if ll is not None else [])
        return list(torch.autograd.grad(_loss(y, j), inputs))

    got, want = grads(model, torch.float32), grads(twin, torch.float64)
    for index, (g, w) in enumerate(zip(got, want)):
        assert relative_error(g, w) <= RTOL_GRAD, f"gradient {index}"


def test_eikonal_double_backward_official_style() -> None:
    """Code written for the official SIREN takes dy/dx with autograd (create_graph) and
    backpropagates a loss on it: the composed path supports that double backward."""
    model = SirenMLP(3, 32, 2, 1)
    twin = double_copy(model)
    x = torch.rand(41, 3) * 2 - 1

    def grads(m: SirenMLP, dtype: torch.dtype) -> list[torch.Tensor]:
        xx = x.to(dtype).requires_grad_()
        y = m(xx)
        g = torch.autograd.grad(y, xx, torch.ones_like(y), create_graph=True)[0]
        params = list(m.parameters())
        # (The output bias does not move the gradient.)
        found = torch.autograd.grad((g.norm(dim=-1) - 1).pow(2).mean(), params, allow_unused=True)
        return [torch.zeros_like(p) if f is None else f for p, f in zip(params, found)]

    for g, w in zip(grads(model, torch.float32), grads(twin, torch.float64)):
        assert relative_error(g, w) <= RTOL_GRAD


def test_fused_cpu_gradients_are_first_order() -> None:
    model = SirenMLP(3, 16, 1, 1)
    x = torch.rand(5, 3).requires_grad_()
    y, j = model.forward_with_gradient(x)
    (gx,) = torch.autograd.grad(j.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="(?i)differentiable|does not require grad"):
        torch.autograd.grad(gx.sum(), x)


@pytest.mark.parametrize("width", [4, 8, 16])
def test_every_cpu_vector_width(width: int, poisoned: None) -> None:
    """The C++ kernel for SSE, AVX2 and AVX-512 vectors (where this CPU has them), forward and
    backward, straight through the binding."""
    model = SirenMLP(3, 48, 2, 2, outermost_linear=False)
    try:
        net = siren_cpu.packed(list(model.weights), list(model.biases), model.omegas, siren_ops.KernelCache(),
                               width=width)
    except ValueError as exc:
        pytest.skip(str(exc))
    n = 61
    x = torch.rand(n, 3) * 2 - 1
    y, j = torch.empty(n, 2), torch.empty(n, 2, 3)
    net.forward(x.numpy(), y.numpy(), j.numpy(), 3)
    want_y, want_j = reference_outputs(model, x, with_gradient=True)
    assert relative_error(y, want_y) <= RTOL_Y and relative_error(j, want_j) <= RTOL_GRAD
    dy, dj = torch.randn(n, 2), torch.randn(n, 2, 3)
    grads = [torch.empty(p.shape) for p in model.parameters()]  # the weights, then the biases
    layers = len(model.weights)
    dx = torch.empty(n, 3)
    net.backward(x.numpy(), dy.numpy(), dj.numpy(), 3, [g.numpy() for g in grads[:layers]],
                 [g.numpy() for g in grads[layers:]], dx.numpy())
    twin = double_copy(model)
    xx = x.double().requires_grad_()
    yy, jj = twin.forward_with_gradient(xx)
    want = torch.autograd.grad((yy * dy.double()).sum() + (jj * dj.double()).sum(), [*twin.parameters(), xx])
    for g, w in zip([*grads, dx], want):
        assert relative_error(g, w) <= RTOL_GRAD


def test_sincos_kernel(poisoned: None) -> None:
    z = (torch.rand(1_000_003) * 2 - 1) * 10
    s, c = siren_ops._cpu_sincos(z, 30.0)
    phase = 30.0 * z.double()
    # float32 rounds omega * z to within 6e-8 of 300, which bounds the error of any float32 sine.
    assert (s.double() - torch.sin(phase)).abs().max() < 1e-4
    assert (c.double() / 30 - torch.cos(phase)).abs().max() < 1e-4


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
    for a, b in zip(outputs["reference"], outputs["cpu"]):
        assert relative_error(a, b) <= RTOL_GRAD


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
    with torch.no_grad():
        assert relative_error(model(x), want) <= RTOL_Y
    tolerance = 5e-2 if precision == "bf16" else RTOL_Y
    assert relative_error(model(x.requires_grad_()).detach(), want) <= tolerance


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
    assert relative_error(after, reference_outputs(model, x)) <= RTOL_Y
    other = SirenMLP(3, 32, 1, 1)
    model.load_state_dict(other.state_dict())
    with torch.no_grad():
        assert torch.equal(model(x), other(x))


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
        assert relative_error(model(x), want) <= RTOL_FLOAT32
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
    assert relative_error(out.detach(), want.detach()) <= RTOL_FLOAT32
    grad = torch.autograd.grad(out, coords, torch.ones_like(out))[0]
    want_grad = torch.autograd.grad(want, want_coords, torch.ones_like(want))[0]
    assert relative_error(grad, want_grad) <= RTOL_FLOAT32
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
        assert relative_error(ours(x), theirs(x)) <= RTOL_FLOAT32
    with pytest.raises(ValueError, match="last_layer"):
        SirenMLP.from_siren_pytorch_state_dict({"layers.0.weight": torch.zeros(4, 3)}, w0=1.0, w0_initial=30.0,
                                               final_sine=False)
