"""The baselines: ``FourierFeatures`` (NeRF's positional encoding, Gaussian Fourier features) against
their papers' formulas in float64, ``ReluMLP`` against a plain float64 twin, their checks, and both
through fit, saving, meshing, rendering, train_deepsdf and ``fastsdf fit --network``."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import fastsdf
import fastsdf.training.fit
from fastsdf import FourierFeatures, ReluMLP
from fastsdf.cli import _parser, main
from fastsdf.cli.demo import bundled_mesh
from fastsdf.cli.fit import network_builder
from fastsdf.nn.fourier_features import MAX_FREQUENCIES, MAX_SIGMA
from fastsdf.training.checkpoint import Checkpoint

from training_helpers import sphere_samples

EPS32 = 2.0**-24  # float32's unit roundoff


def _points(rng: np.random.Generator, in_features: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An odd number of points, some beyond [-1, 1] (renderers and meshing query a little outside)."""
    n = int(rng.integers(1, 40)) * 2 + 1
    return torch.from_numpy(rng.uniform(-1.2, 1.2, (n, in_features))).to(dtype)


# --- FourierFeatures --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_positional_encoding_is_nerfs_gamma(rng: np.random.Generator, dtype: torch.dtype) -> None:
    in_features, frequencies = int(rng.integers(1, 5)), int(rng.integers(1, MAX_FREQUENCIES + 1))
    encoding = FourierFeatures(in_features, frequencies).to(dtype)
    x = _points(rng, in_features, dtype)
    got = encoding(x).double()
    p = x.double()
    phases = torch.cat([2.0**k * math.pi * p for k in range(frequencies)], dim=-1)  # frequency first
    expected = torch.cat([p, torch.sin(phases), torch.cos(phases)], dim=-1)
    assert got.shape == (len(x), encoding.out_features) == (len(x), in_features * (1 + 2 * frequencies))
    # The phase is rounded twice (float32's pi, the product): errors of |phase| eps each, then the sine's.
    tolerance = 4 * EPS32 * phases.abs().repeat(1, 2) + 1e-6
    assert torch.equal(got[:, :in_features], p)
    assert ((got[:, in_features:] - expected[:, in_features:]).abs() <= tolerance).all()


def test_gaussian_features_are_tanciks(rng: np.random.Generator) -> None:
    in_features, features, sigma = int(rng.integers(1, 5)), int(rng.integers(1, 40)), float(rng.uniform(0.5, 20))
    torch.manual_seed(int(rng.integers(2**31)))
    encoding = FourierFeatures(in_features, sigma=sigma, features=features)
    assert encoding.matrix.shape == (features, in_features) and not encoding.include_input
    x = _points(rng, in_features)
    matrix, p = encoding.matrix.double(), x.double()
    phases = p @ matrix.T
    expected = torch.cat([torch.sin(phases), torch.cos(phases)], dim=-1)
    # A sum of in_features float32 products: each term and the sum rounded once.
    tolerance = 2 * (in_features + 1) * EPS32 * (p.abs() @ matrix.abs().T).repeat(1, 2) + 1e-6
    assert ((encoding(x).double() - expected).abs() <= tolerance).all()
    assert FourierFeatures(in_features, sigma=sigma, include_input=True)(x).shape[-1] == 2 * 256 + in_features


def test_gaussian_matrix_is_2_pi_sigma_normal() -> None:
    sigma = 3.5
    matrix = FourierFeatures(3, sigma=sigma, features=4096).matrix / (2 * math.pi * sigma)
    # 12,288 draws: the sample's std is within 0.7% of 1 (one standard error); 10% is never missed.
    assert abs(float(matrix.std()) - 1) < 0.1 and abs(float(matrix.mean())) < 0.1


def test_phases_stay_float32_under_rounding_matmul_settings(rng: np.random.Generator) -> None:
    encoding = FourierFeatures(3, 12)
    x = _points(rng, 3)
    exact = encoding(x)
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")  # oneDNN may then multiply in bf16
        assert torch.equal(encoding(x), exact)
    finally:
        torch.set_float32_matmul_precision(before)


def test_leading_shapes_and_nan_stay_per_point(rng: np.random.Generator) -> None:
    encoding = FourierFeatures(2, 3)
    x = torch.from_numpy(rng.uniform(-1, 1, (3, 5, 2))).float()
    x[1, 2, 0] = float("nan")
    out = encoding(x)
    assert out.shape == (3, 5, encoding.out_features)
    finite = torch.isfinite(out).all(dim=-1)
    assert not finite[1, 2] and finite.sum() == 14


@pytest.mark.parametrize("kwargs, error, words", [
    ({}, ValueError, "give one of frequencies"),
    ({"frequencies": 4, "sigma": 1.0}, ValueError, "give one of frequencies"),
    ({"frequencies": 0}, ValueError, "frequencies must be in [1, 16]"),
    ({"frequencies": MAX_FREQUENCIES + 1}, ValueError, "frequencies must be in [1, 16]"),
    ({"frequencies": 4.0}, TypeError, "frequencies must be an integer"),
    ({"frequencies": True}, TypeError, "frequencies must be an integer"),
    ({"frequencies": 4, "features": 8}, ValueError, "give it with sigma"),
    ({"sigma": 0.0}, ValueError, "sigma must be in (0, 2048]"),
    ({"sigma": -1.0}, ValueError, "sigma must be in (0, 2048]"),
    ({"sigma": float("nan")}, ValueError, "sigma must be a finite number"),
    ({"sigma": float("inf")}, ValueError, "sigma must be a finite number"),
    ({"sigma": MAX_SIGMA * 2}, ValueError, "sigma must be in (0, 2048]"),
    ({"sigma": "10"}, TypeError, "sigma must be a real number"),
    ({"sigma": 1.0, "features": 0}, ValueError, "features must be >= 1"),
    ({"in_features": 0, "frequencies": 2}, ValueError, "in_features must be >= 1"),
    ({"frequencies": 2, "include_input": "yes"}, TypeError, "include_input must be"),
])
def test_fourier_features_refuse_bad_arguments(kwargs: dict, error: type, words: str) -> None:
    with pytest.raises(error, match=None) as caught:
        FourierFeatures(**kwargs)
    assert words in str(caught.value)


# --- ReluMLP ----------------------------------------------------------------------------------------


def _reference(network: ReluMLP, x: torch.Tensor, latent: torch.Tensor | None) -> torch.Tensor:
    """The network written out in float64 from its parameters: encoding, code first, ReLU layers with
    the input concatenated again before the skip layers, a linear output."""
    params = {k: v.double() for k, v in network.state_dict().items()}
    p = x.double()
    if network.encoding is not None:
        enc = network.encoding
        phases = p @ enc.matrix.double().T
        p = torch.cat(([p] if enc.include_input else []) + [torch.sin(phases), torch.cos(phases)], dim=-1)
    inputs = p if latent is None else torch.cat([latent.double().expand(len(p), -1), p], dim=-1)
    h = inputs
    for i in range(network.hidden_layers + 1):
        if i in network.skip:
            h = torch.cat([h, inputs], dim=-1)
        h = torch.relu(h @ params[f"layers.{i}.weight"].T + params[f"layers.{i}.bias"])
    return h @ params["output.weight"].T + params["output.bias"]


def _random_network(rng: np.random.Generator, latent_features: int = 0) -> ReluMLP:
    in_features, hidden_layers = int(rng.integers(1, 4)), int(rng.integers(0, 4))
    skip = (int(rng.integers(1, hidden_layers + 1)),) if hidden_layers else ()
    encoding = [None, {"in_features": in_features, "frequencies": int(rng.integers(1, 8))},
                {"in_features": in_features, "sigma": 2.0, "features": int(rng.integers(1, 20))}][rng.integers(3)]
    torch.manual_seed(int(rng.integers(2**31)))
    return ReluMLP(in_features, int(rng.integers(1, 24)) * 2 + 1, hidden_layers, int(rng.integers(1, 3)), skip=skip,
                   latent_features=latent_features, encoding=encoding)


@pytest.mark.parametrize("latent_features", [0, 5])
def test_relu_mlp_matches_its_float64_twin(rng: np.random.Generator, latent_features: int) -> None:
    network = _random_network(rng, latent_features)
    x = _points(rng, network.in_features)
    latent = torch.from_numpy(rng.standard_normal(latent_features)).float() if latent_features else None
    got, expected = network(x, latent).double(), _reference(network, x, latent)
    # float32 layers: each output within a few eps of the sum of its terms' magnitudes, grown through depth.
    scale = float(1 + expected.abs().max() + sum(p.detach().abs().sum() for p in network.parameters()) / 100)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= 1e-4 * scale
    exact = network.double()(x.double(), None if latent is None else latent.double())
    assert torch.allclose(exact, expected, rtol=1e-10, atol=1e-10 * scale)


def test_relu_mlp_jacobian_is_its_twins_gradient(rng: np.random.Generator) -> None:
    network = _random_network(rng, 3).double()
    x = _points(rng, network.in_features, torch.float64)
    latent = torch.from_numpy(rng.standard_normal(3))
    y, jacobian = network.forward_with_gradient(x.reshape(1, -1, network.in_features), latent)
    assert y.shape == (1, len(x), network.out_features)
    assert jacobian.shape == (1, len(x), network.out_features, network.in_features)
    points = x.clone().requires_grad_(True)
    expected = _reference(network, points, latent)
    for o in range(network.out_features):
        (row,) = torch.autograd.grad(expected[:, o].sum(), points, retain_graph=True)
        assert torch.allclose(jacobian[0, :, o], row, rtol=1e-10, atol=1e-10)
    with torch.no_grad():
        y, jacobian = network.forward_with_gradient(x, latent)
    assert not y.requires_grad and not jacobian.requires_grad


def test_relu_mlp_trains_through_its_gradient() -> None:
    """An eikonal loss on forward_with_gradient reaches the parameters (SIREN's loss trains it)."""
    network = ReluMLP(3, 16, 2, 1, skip=(1,), encoding=FourierFeatures(3, 2))
    _, jacobian = network.forward_with_gradient(torch.rand(33, 3))
    ((jacobian.norm(dim=-1) - 1) ** 2).mean().backward()
    # Every parameter but the output's bias, on which no gradient depends.
    assert all(p.grad is not None for name, p in network.named_parameters() if name != "output.bias")
    assert network.layers[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs, error, words", [
    ({"in_features": 0}, ValueError, "in_features must be >= 1"),
    ({"hidden_features": 0}, ValueError, "hidden_features must be >= 1"),
    ({"hidden_features": 8.0}, TypeError, "hidden_features must be an integer"),
    ({"hidden_layers": -1}, ValueError, "hidden_layers must be >= 0"),
    ({"out_features": 0}, ValueError, "out_features must be >= 1"),
    ({"latent_features": -1}, ValueError, "latent_features must be >= 0"),
    ({"skip": (0,)}, ValueError, "skip must be in [1, 2]"),
    ({"skip": (3,)}, ValueError, "skip must be in [1, 2]"),
    ({"skip": 1}, TypeError, "skip must be a sequence"),
    ({"skip": "1"}, TypeError, "skip must be a sequence"),
    ({"skip": (1,), "hidden_layers": 0}, ValueError, "skip needs hidden_layers >= 1"),
    ({"encoding": "pe"}, TypeError, "encoding must be a FourierFeatures"),
    ({"encoding": FourierFeatures(2, 3)}, ValueError, "the encoding takes 2 coordinates"),
    ({"encoding": {"in_features": 3, "frequencies": 99}}, ValueError, "frequencies must be in [1, 16]"),
])
def test_relu_mlp_refuses_bad_arguments(kwargs: dict, error: type, words: str) -> None:
    arguments = {"in_features": 3, "hidden_features": 8, "hidden_layers": 2, "out_features": 1, **kwargs}
    with pytest.raises(error) as caught:
        ReluMLP(**arguments)
    assert words in str(caught.value)


@pytest.mark.parametrize("x, latent, error, words", [
    ([[0.0, 0.0, 0.0]], None, TypeError, "x must be a torch.Tensor"),
    (torch.zeros(4, 2), None, ValueError, "x must have shape (..., 3)"),
    (torch.zeros(4, 3, dtype=torch.float64), None, TypeError, "x is torch.float64"),
    (torch.zeros(4, 3), torch.zeros(2), ValueError, "no latent input"),
])
def test_relu_mlp_checks_its_inputs(x: object, latent: object, error: type, words: str) -> None:
    network = ReluMLP(3, 8, 1, 1, encoding=FourierFeatures(3, 2))
    for call in (network, network.forward_with_gradient):
        with pytest.raises(error) as caught:
            call(x, latent)
        assert words in str(caught.value)
    with pytest.raises(ValueError, match="pass latent="):
        ReluMLP(3, 8, 1, 1, latent_features=2)(torch.zeros(4, 3))


# --- saved, fitted, meshed, rendered, trained as a decoder --------------------------------------


@pytest.mark.parametrize("encoding", [None, {"in_features": 3, "frequencies": 5},
                                      {"in_features": 3, "sigma": 4.0, "features": 9, "include_input": True}])
def test_a_saved_relu_mlp_comes_back_exactly(encoding: dict | None, tmp_path: Path, rng: np.random.Generator) -> None:
    network = ReluMLP(3, 12, 2, 1, skip=(2,), encoding=encoding)
    model = fastsdf.FittedSDF(network, fastsdf.NormalizationTransform([0.1, 0.0, -0.2], 1.5))
    loaded = fastsdf.load_model(model.save(tmp_path / "m"))
    assert isinstance(loaded.network, ReluMLP) and loaded.network.config() == network.config()
    assert loaded.network.state_dict().keys() == network.state_dict().keys()
    assert all(torch.equal(loaded.network.state_dict()[k], v) for k, v in network.state_dict().items())
    points = rng.uniform(-1, 1, (17, 3)).astype(np.float32)
    assert np.array_equal(loaded.sdf(points), model.sdf(points))


def test_a_damaged_encoding_config_is_a_clear_error(tmp_path: Path) -> None:
    path = fastsdf.FittedSDF(ReluMLP(3, 8, 1, 1, encoding=FourierFeatures(3, 4)),
                             fastsdf.NormalizationTransform.identity()).save(tmp_path / "m")
    state = torch.load(path, weights_only=True)
    state["network"]["config"]["encoding"]["frequencies"] = 40
    torch.save(state, path)
    with pytest.raises(ValueError, match="does not make a ReluMLP.*frequencies must be in"):
        fastsdf.load_model(path)


def test_fit_mesh_and_render_a_positional_encoding_network(tmp_path: Path) -> None:
    network = functools.partial(ReluMLP, 3, 32, 2, 1, skip=(1,), encoding=FourierFeatures(3, 4))
    for loss in ("sdf_l1", "siren"):
        model, history = fastsdf.fit(bundled_mesh(), network, loss=loss, steps=8, batch_size=512, seed=0,
                                     pool_points=5000, progress=False, device="cpu")
        assert history["steps"] == 8 and isinstance(model.network, ReluMLP)
    verts, faces = fastsdf.extract_mesh(model, 16, bounds=model.bounds(), device="cpu", progress=False)
    assert verts.shape[1] == 3
    from fastsdf.render import render_sdf

    image = render_sdf(model, bounds=model.bounds(), size=16, max_steps=8)
    assert image.shape == (16, 16, 3) and np.isfinite(image).all()


def test_a_checkpoint_of_another_network_is_refused_and_an_old_one_resumes(tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint.pt"
    small = {"steps": 4, "batch_size": 256, "seed": 0, "pool_points": 2000, "progress": False, "device": "cpu"}
    gaussian = functools.partial(FourierFeatures, 3, sigma=2.0, features=8)
    fastsdf.fit(bundled_mesh(), lambda: ReluMLP(3, 8, 1, 1, encoding=gaussian()), checkpoint=checkpoint, **small)
    other = functools.partial(FourierFeatures, 3, sigma=3.0, features=8)  # the same shapes, another sigma
    with pytest.raises(ValueError, match="checkpoint of another run"):
        fastsdf.fit(bundled_mesh(), lambda: ReluMLP(3, 8, 1, 1, encoding=other()), checkpoint=checkpoint, **small)
    # Checkpoints from before the network was recorded resume.
    state = torch.load(checkpoint, weights_only=True)
    del state["settings"]["network"]
    torch.save(state, checkpoint)
    assert Checkpoint(checkpoint, {**state["settings"], "network": {}}).resume(
        ReluMLP(3, 8, 1, 1, encoding=gaussian()), torch.optim.Adam(ReluMLP(3, 8, 1, 1).parameters()))[0] == 4


def test_train_deepsdf_with_a_relu_decoder(tmp_path: Path, rng: np.random.Generator) -> None:
    shapes = [sphere_samples(r, rng, 600) for r in (0.3, 0.6)]
    for i, samples in enumerate(shapes):
        fastsdf.save_npz(tmp_path / "data" / f"s{i}.npz", samples)
    decoder = ReluMLP(3, 16, 1, 1, skip=(1,), latent_features=4, encoding=FourierFeatures(3, 2))
    model, history = fastsdf.train_deepsdf(tmp_path / "data", decoder, epochs=2, shapes_per_batch=2,
                                           samples_per_shape=64, seed=0, device="cpu", progress=False, num_workers=0)
    loaded = fastsdf.load_model(model.save(tmp_path / "out"))
    assert isinstance(loaded.decoder, ReluMLP) and torch.equal(loaded.codes, model.codes)
    shape = loaded.shape("s1")
    values, gradient = shape.forward_with_gradient(torch.zeros(5, 3))
    assert values.shape == (5,) and gradient.shape == (5, 3)
    assert np.array_equal(shape.sdf(np.zeros((5, 3), np.float32)), model.shape("s1").sdf(np.zeros((5, 3), np.float32)))


# --- fastsdf fit --network ----------------------------------------------------------------------


@pytest.mark.parametrize("options, expected", [
    ([], ("SirenMLP", None, None)),
    (["--network", "relu", "--layers", "7"], ("ReluMLP", [4], None)),
    (["--network", "relu", "--no-skip"], ("ReluMLP", [], None)),
    (["--network", "pe"], ("ReluMLP", [2], {"in_features": 3, "frequencies": 10, "sigma": None, "features": None,
                                            "include_input": True})),
    (["--network", "pe", "--frequencies", "6", "--width", "40"],
     ("ReluMLP", [2], {"in_features": 3, "frequencies": 6, "sigma": None, "features": None, "include_input": True})),
    (["--network", "pe", "--sigma", "2.5", "--features", "16"],
     ("ReluMLP", [2], {"in_features": 3, "frequencies": None, "sigma": 2.5, "features": 16, "include_input": False})),
])
def test_fit_command_builds_the_network_asked_for(options: list[str], expected: tuple) -> None:
    args = _parser().parse_args(["fit", "MESH", "--out", "OUT", *options])
    network = network_builder(args)()
    config = network.config()
    assert (type(network).__name__, config.get("skip"), config.get("encoding")) == expected
    assert config["hidden_features"] == args.width and config["hidden_layers"] == args.layers


@pytest.mark.parametrize("options, words", [
    (["--frequencies", "4"], "--frequencies is for --network pe"),
    (["--network", "relu", "--sigma", "2"], "--sigma is for --network pe"),
    (["--network", "pe", "--frequencies", "4", "--sigma", "2"], "exclude each other"),
    (["--network", "pe", "--features", "8"], "--features needs --sigma"),
    (["--no-skip"], "--no-skip is for --network relu or pe"),
    (["--network", "pe", "--frequencies", str(MAX_FREQUENCIES + 1)], "--frequencies must be in [1, 16]"),
    (["--network", "mlp"], "--network: invalid choice"),
])
def test_fit_command_refuses_options_that_do_not_go_together(options: list[str], words: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", str(bundled_mesh()), "--out", str(tmp_path), *options]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fastsdf fit: error: ") and words in err, err
    assert not any(tmp_path.iterdir())
