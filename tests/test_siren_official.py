"""fastsdf's SIREN against the official code as published (tests/official_siren.py): the notebook's
``Siren`` (initialisation, ``net``, ``forward_with_activations``) and the repository's
``SingleBVPNet`` checkpoints (experiment_scripts/train_sdf.py's).

Fresh seeds each run; float64 comparisons are relative to the largest value compared.
"""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
from torch import nn

from fastsdf.nn import Siren, SirenMLP
from fastsdf.nn.siren import SineLayer
from fastsdf.ops import siren_reference
from official_siren import SingleBVPNet
from official_siren import SineLayer as OfficialSineLayer
from official_siren import Siren as OfficialSiren

# float64 against float64: the two differ only in how they round sums (matmul against addmm).
RTOL_FLOAT64 = 1e-12
# float32 fused kernels against float64 (as tests/siren_helpers.py's RTOL_Y).
RTOL_FLOAT32 = 2e-5


@pytest.fixture(autouse=True)
def _seeded_torch(seed: int) -> None:
    torch.manual_seed(seed % 2**63)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().double(), want.detach().double()
    assert got.shape == want.shape, (got.shape, want.shape)
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-300))


def without_module(key: str) -> str:
    """An activation key with the class's module path dropped: "<class 'SineLayer'>_3"."""
    return re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"<class '\1'>", key)


# --------------------------------------------------------------------------------------------
# The official class as published (the benchmarks' "plain PyTorch SIREN")
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("outermost_linear", [True, False])
def test_the_official_class_is_initialised_as_published(outermost_linear: bool) -> None:
    official = OfficialSiren(3, 256, 2, 2, outermost_linear=outermost_linear, first_omega_0=30, hidden_omega_0=20.0)
    layers = [layer.linear if isinstance(layer, OfficialSineLayer) else layer for layer in official.net]
    assert isinstance(official.net[-1], nn.Linear) == outermost_linear
    first = layers[0].weight.detach()
    assert first.abs().max() <= 1 / 3 and first.abs().max() > 0.9 / 3  # U(+-1/3), 768 draws
    for linear in layers[1:]:
        bound = math.sqrt(6 / 256) / 20
        assert linear.weight.detach().abs().max() <= bound
        if linear.weight.numel() > 1000:
            assert abs(linear.weight.detach().var().item() / (bound**2 / 3) - 1) < 0.05
    x = torch.rand(5, 3)
    out, coords = official(x)
    assert coords.requires_grad and torch.equal(coords, x) and out.shape == (5, 2)


@pytest.mark.parametrize("outermost_linear", [True, False])
def test_one_seed_draws_the_official_weights(outermost_linear: bool, seed: int) -> None:
    """fastsdf draws its parameters in the official order: the same seed, the same network."""
    torch.manual_seed(seed % 2**63)
    official = OfficialSiren(2, 48, 2, 3, outermost_linear=outermost_linear, hidden_omega_0=25.0)
    torch.manual_seed(seed % 2**63)
    ours = Siren(2, 48, 2, 3, outermost_linear=outermost_linear, hidden_omega_0=25.0)
    torch.manual_seed(seed % 2**63)
    mlp = SirenMLP(2, 48, 2, 3, outermost_linear=outermost_linear, hidden_omega_0=25.0)
    want = official.state_dict()
    for state in (ours.state_dict(), mlp.to_official_state_dict()):
        assert list(state) == list(want)
        assert all(torch.equal(state[k], want[k]) for k in want)
    assert [name for name, _ in ours.named_parameters()] == [name for name, _ in official.named_parameters()]


# --------------------------------------------------------------------------------------------
# Siren.net and forward_with_activations
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("outermost_linear", [True, False])
def test_net_has_the_official_modules(outermost_linear: bool) -> None:
    model = Siren(3, 32, 2, 1, outermost_linear=outermost_linear, first_omega_0=30, hidden_omega_0=15.0)
    assert len(model.net) == 4 and all(isinstance(layer, SineLayer) for layer in model.net[:3])
    assert isinstance(model.net[-1], nn.Linear) == outermost_linear
    first, second = model.net[0], model.net[1]
    assert (first.omega_0, first.is_first, first.in_features) == (30, True, 3)
    assert (second.omega_0, second.is_first, second.in_features) == (15.0, False, 32)
    assert isinstance(first.linear, nn.Linear) and first.linear.weight is model.weights[0]
    x = torch.rand(9, 3) * 2 - 1
    with torch.no_grad():
        assert relative_error(model.net(x), model(x)[0]) <= 1e-5  # the module path and the fused kernel


def test_changes_through_net_reach_the_fused_forward() -> None:
    """Code that edits ``net`` (an omega, weights in place) changes what forward computes, as in
    the official class."""
    model = Siren(3, 32, 2, 1, outermost_linear=True)
    x = torch.rand(21, 3) * 2 - 1
    model.net[1].omega_0 = 12.0
    with torch.no_grad():
        model.net[2].linear.weight.mul_(0.5)
        model.net[0].linear.bias.zero_()
        got = model(x)[0]
    assert model.omegas == (30.0, 12.0, 30.0, None)
    weights = [w.detach().double() for w in model.weights]
    biases = [b.detach().double() for b in model.biases]
    want = siren_reference.forward(x.double(), weights, biases, model.omegas)
    assert relative_error(got, want) <= RTOL_FLOAT32
    with torch.no_grad():
        assert relative_error(model.net(x), want) <= RTOL_FLOAT32


@pytest.mark.parametrize("outermost_linear", [True, False])
def test_forward_with_activations_is_the_official_one(outermost_linear: bool) -> None:
    official = OfficialSiren(1, 64, 3, 1, outermost_linear=outermost_linear).double()
    ours = Siren(1, 64, 3, 1, outermost_linear=outermost_linear).double()
    ours.load_state_dict(official.state_dict())
    signal = torch.linspace(-1, 1, 513, dtype=torch.float64).view(1, 513, 1)  # the notebook's shape
    found = {}
    for name, model in (("official", official), ("ours", ours)):
        activations = model.forward_with_activations(signal, retain_grad=True)
        activations[next(reversed(activations))].mean().backward()
        found[name] = activations
    assert [without_module(k) for k in found["ours"]] == [without_module(k) for k in found["official"]]
    assert list(found["ours"])[1] == "<class 'fastsdf.nn.siren.SineLayer'>_0"
    assert len(found["ours"]) == 1 + 2 * 5 - outermost_linear  # the input, then 2 per sine layer, 1 per linear
    for (key, got), want in zip(found["ours"].items(), found["official"].values()):
        assert got.shape == want.shape and got.requires_grad, key
        assert relative_error(got, want) <= RTOL_FLOAT64, key
        if key != "input":
            assert relative_error(got.grad, want.grad) <= RTOL_FLOAT64, key
    assert torch.equal(found["ours"]["input"], signal) and found["ours"]["input"] is not signal
    plain = ours.forward_with_activations(signal)
    assert not any(value.retains_grad for value in plain.values())
    last = plain[next(reversed(plain))]
    assert relative_error(last, ours(signal)[0]) <= RTOL_FLOAT64


def test_forward_with_activations_checks_its_input_and_takes_a_code() -> None:
    model = Siren(3, 16, 1, 1, latent_features=4, outermost_linear=True)
    x, code = torch.rand(6, 3), torch.rand(4)
    activations = model.forward_with_activations(x, latent=code)
    assert relative_error(activations[next(reversed(activations))], model(x, code)[0]) <= 1e-5
    with pytest.raises(ValueError, match="latent="):
        model.forward_with_activations(x)
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        Siren(3, 16, 1, 1).forward_with_activations(torch.rand(6, 2))


def test_different_hidden_omegas_run_on_every_path() -> None:
    model = Siren(3, 32, 3, 2, outermost_linear=False)
    for layer, omega in zip(model.net[1:], (10.0, 20.0, 40.0, 5.0)):
        layer.omega_0 = omega
    x = torch.rand(40, 3) * 2 - 1
    want = siren_reference.forward(x.double(), [w.detach().double() for w in model.weights],
                                   [b.detach().double() for b in model.biases], model.omegas)
    with torch.no_grad():
        assert relative_error(model(x)[0], want) <= RTOL_FLOAT32  # the fused CPU kernel
    assert relative_error(model(x.requires_grad_())[0], want) <= RTOL_FLOAT32  # the autograd path


def test_siren_loads_a_siren_mlp_state_dict() -> None:
    mlp = SirenMLP(3, 16, 2, 1, outermost_linear=False)
    model = Siren(3, 16, 2, 1)
    model.load_state_dict(mlp.state_dict())
    x = torch.rand(8, 3)
    with torch.no_grad():
        assert torch.equal(model(x)[0], mlp(x))
    mixed = {**mlp.state_dict(), **{f"net.{k}": v for k, v in {"0.linear.weight": torch.zeros(16, 3)}.items()}}
    with pytest.raises(ValueError, match="mixes"):
        model.load_state_dict(mixed)


# --------------------------------------------------------------------------------------------
# SingleBVPNet checkpoints (experiment_scripts/train_sdf.py)
# --------------------------------------------------------------------------------------------


def test_the_single_bvp_net_helper_is_initialised_as_published() -> None:
    network = SingleBVPNet(in_features=3, hidden_features=256, num_hidden_layers=2)
    linears = [block[0] for block in network.net.net]
    assert list(network.state_dict())[:2] == ["net.net.0.0.weight", "net.net.0.0.bias"]
    assert len(linears) == 4 and len(network.net.net[-1]) == 1  # a linear output layer
    assert linears[0].weight.abs().max() <= 1 / 3
    for linear in linears[1:]:  # sine_init, the output layer's too
        assert linear.weight.abs().max() <= math.sqrt(6 / 256) / 30


@pytest.mark.parametrize("hidden_layers", [0, 1, 3])
def test_single_bvp_net_checkpoints_load_as_the_same_function(hidden_layers: int, seed: int) -> None:
    bvp = SingleBVPNet(out_features=2, in_features=3, hidden_features=48, num_hidden_layers=hidden_layers).double()
    state = bvp.state_dict()
    x = torch.rand(333, 3, dtype=torch.float64) * 2 - 1
    result = bvp({"coords": x})
    want = result["model_out"]
    want_grad = torch.autograd.grad(want[:, 0].sum(), result["model_in"])[0]

    mlp = SirenMLP.from_official_state_dict(state)
    assert mlp.omegas == (30.0, *[30.0] * hidden_layers, None) and mlp.out_features == 2
    with torch.no_grad():
        assert relative_error(mlp(x), want) <= RTOL_FLOAT64
    prefixed = SirenMLP.from_official_state_dict({f"module.{k}": v for k, v in state.items()}, outermost_linear=True)
    with torch.no_grad():
        assert relative_error(prefixed(x), want) <= RTOL_FLOAT64

    siren = Siren(3, 48, hidden_layers, 2, outermost_linear=True).double()
    siren.load_state_dict(state)
    out, coords = siren(x)
    grad = torch.autograd.grad(out[:, 0].sum(), coords)[0]
    assert relative_error(out, want) <= RTOL_FLOAT64 and relative_error(grad, want_grad) <= RTOL_FLOAT64

    # float32: the fused kernel on a float32 checkpoint, against the official network in float64 on
    # the same weights.
    bvp32 = SingleBVPNet(out_features=2, in_features=3, hidden_features=48, num_hidden_layers=hidden_layers)
    single = SirenMLP.from_official_state_dict(bvp32.state_dict())
    x32 = torch.rand(1001, 3) * 2 - 1
    with torch.no_grad():
        want32 = copy.deepcopy(bvp32).double()({"coords": x32.double()})["model_out"]
        assert relative_error(single(x32), want32) <= RTOL_FLOAT32


@pytest.mark.parametrize("case", ["sine output", "other omega", "extra key", "missing key", "mixed layouts",
                                  "other size"])
def test_single_bvp_net_checkpoints_are_refused_where_the_function_would_differ(case: str) -> None:
    state = SingleBVPNet(in_features=3, hidden_features=16, num_hidden_layers=1).state_dict()
    target = Siren(3, 16, 1, 1, outermost_linear=True)
    if case == "sine output":
        with pytest.raises(ValueError, match="outermost_linear"):
            SirenMLP.from_official_state_dict(state, outermost_linear=False)
        target = Siren(3, 16, 1, 1)
        match = "outermost_linear=True"
    elif case == "other omega":
        with pytest.raises(ValueError, match="30"):
            SirenMLP.from_official_state_dict(state, hidden_omega_0=20.0)
        target = Siren(3, 16, 1, 1, outermost_linear=True, first_omega_0=60.0)
        match = "30"
    elif case == "extra key":  # mode='rbf' adds its layer
        state["rbf_layer.centres"] = torch.zeros(4, 3)
        match = "rbf_layer"
    elif case == "missing key":
        del state["net.net.1.0.bias"]
        match = "bias"
    elif case == "mixed layouts":
        state["net.0.linear.weight"] = torch.zeros(16, 3)
        match = "not both|mixes"
    else:
        target = Siren(3, 16, 2, 1, outermost_linear=True)
        match = "net.3"
    if case not in ("sine output", "other omega", "other size"):
        with pytest.raises(ValueError, match=match):
            SirenMLP.from_official_state_dict(state)
    with pytest.raises((ValueError, RuntimeError), match=match):
        target.load_state_dict(state)
