"""The point-cloud VAE of shapes (DiffusionSDF's first stage) and generation conditioned on point
clouds: the KL term and the reparameterisation against closed forms, training on a family of
spheres (its latents and decoded radii), saving, resuming, latent diffusion over its latents
conditioned on partial clouds, and the commands.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import fastsdf
from fastsdf.cli import main
from fastsdf.nn import DeepSDFDecoder, LatentDenoiser
from fastsdf.training.autodecoder import AutoDecoder
from fastsdf.training.latent_diffusion import LatentDiffusion
from fastsdf.training.losses import gaussian_kl
from fastsdf.training.shape_vae import ShapeVAE, cloud_latents, reparameterise, shape_vae_encoder
from fastsdf.training.shapes import ShapeSamples
from training_helpers import one_thread, sphere_samples  # noqa: F401 - one_thread: a fixture, autouse

RADII = (0.3, 0.45, 0.6, 0.75)
LATENT = 8
SMALL = {"shapes_per_batch": 4, "samples_per_shape": 256, "cloud_points": 64, "learning_rate": 3e-3,
         "progress": False, "num_workers": 0, "device": "cpu"}
DENOISER = {"hidden_features": 64, "blocks": 2, "time_features": 32}
RAY = np.stack([np.linspace(0, 1, 101), np.zeros(101), np.zeros(101)], axis=1).astype(np.float32)


def spheres(seed: int, radii: tuple[float, ...] = RADII) -> ShapeSamples:
    rng = np.random.default_rng(seed)
    return ShapeSamples([f"r{r}" for r in radii], [sphere_samples(r, rng, 2000, surface=300) for r in radii])


def networks(seed: int = 0) -> tuple[torch.nn.Module, DeepSDFDecoder]:
    torch.manual_seed(seed)
    return (shape_vae_encoder(LATENT, 32, blocks=2, prior_std=0.25),
            DeepSDFDecoder(latent_size=LATENT, hidden_features=32, hidden_layers=3, latent_in=(), dropout=0.0))


def radius(shape: fastsdf.FittedSDF) -> float:
    """Where the decoded field first turns positive along +x (the spheres are centred)."""
    values = shape.sdf(RAY)
    return float(RAY[np.argmax(values > 0), 0]) if (values > 0).any() else 1.0


def cloud(radius_: float, rng: np.random.Generator, count: int = 300) -> np.ndarray:
    directions = rng.standard_normal((count, 3))
    return directions / np.linalg.norm(directions, axis=1, keepdims=True) * radius_


# ------------------------------------------------------------------------------------------------
# The KL term and the reparameterisation
# ------------------------------------------------------------------------------------------------


def test_kl_is_the_closed_form_of_two_gaussians(rng: np.random.Generator) -> None:
    mean = torch.from_numpy(rng.normal(0, 2, (5, 7)))
    log_var = torch.from_numpy(rng.uniform(-8, 4, (5, 7)))
    prior_std = float(rng.uniform(0.05, 3))
    sigma = np.exp(0.5 * log_var.numpy())
    expected = np.log(prior_std / sigma) + (sigma**2 + mean.numpy() ** 2) / (2 * prior_std**2) - 0.5
    got = gaussian_kl(mean, log_var, prior_std)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())
    library = torch.distributions.kl_divergence(torch.distributions.Normal(mean, torch.from_numpy(sigma)),
                                                torch.distributions.Normal(torch.zeros((), dtype=torch.float64),
                                                                           torch.tensor(prior_std, dtype=torch.float64)))
    np.testing.assert_allclose(got.numpy(), library.numpy(), rtol=1e-10, atol=1e-12 * np.abs(expected).max())
    assert (got >= 0).all()
    at_prior = gaussian_kl(torch.zeros(3, dtype=torch.float64), torch.full((3,), 2 * math.log(prior_std),
                                                                          dtype=torch.float64), prior_std)
    assert float(at_prior.abs().max()) < 1e-14


def test_reparameterisation_has_the_gaussian_s_statistics_and_gradients(rng: np.random.Generator, seed: int) -> None:
    mean = torch.from_numpy(rng.normal(0, 1, 3))
    log_var = torch.from_numpy(rng.uniform(-4, 2, 3))
    n = 200_000
    noise = torch.randn(n, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    samples = reparameterise(mean, log_var, noise)
    variance = log_var.exp()
    # Six standard errors of the mean and of the variance: a false alarm once in ~10^8 runs.
    torch.testing.assert_close(samples.mean(0), mean, rtol=0, atol=float(6 * (variance / n).sqrt().max()))
    torch.testing.assert_close(samples.var(0), variance, rtol=0, atol=float(6 * variance.max() * math.sqrt(2 / n)))
    mean.requires_grad_(True), log_var.requires_grad_(True)
    one = noise[0]
    grad_mean, grad_log_var = torch.autograd.grad(reparameterise(mean, log_var, one).sum(), (mean, log_var))
    torch.testing.assert_close(grad_mean, torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(grad_log_var, 0.5 * torch.exp(0.5 * log_var.detach()) * one)


# ------------------------------------------------------------------------------------------------
# Training on spheres
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vae(one_thread: None) -> tuple[ShapeVAE, dict]:
    return fastsdf.train_shape_vae(spheres(0), *networks(0), epochs=150, seed=0, **SMALL)


def test_the_latents_decode_to_the_spheres_in_order(vae, rng: np.random.Generator) -> None:
    model, history = vae
    assert history["epoch"] == list(range(1, 151)) and not model.training
    assert np.mean(history["loss"][-5:]) < 0.5 * history["loss"][0] and np.isfinite(history["kl"]).all()
    assert model.names == [f"r{r}" for r in RADII] and model.codes.shape == (len(RADII), LATENT)
    decoded = [radius(model.shape(name)) for name in model.names]
    assert all(a < b for a, b in zip(decoded, decoded[1:])), decoded
    np.testing.assert_allclose(decoded, RADII, atol=0.08)
    # A new cloud of a sphere encodes to a latent of a sphere of its size.
    for r in (RADII[0], RADII[-1]):
        assert abs(radius(model.shape(model.encode(cloud(r, rng)))) - r) < 0.1
    # Sampled latents: seeded draws from the cloud's Gaussian (the mean within six standard errors).
    points, seed = cloud(0.5, rng), int(rng.integers(2**61))
    mean, log_var = model.distribution(points, count=0)  # all the points: the seed draws the noise alone
    draws = torch.stack([model.encode(points, 0, seed + k, sample=True) for k in range(64)])
    assert torch.equal(draws[0], model.encode(points, 0, seed, sample=True)) and not torch.equal(draws[0], mean)
    assert bool(((draws.mean(0) - mean).abs() <= 6 * torch.exp(0.5 * log_var) / 8 + 1e-6).all())
    torch.testing.assert_close(cloud_latents(model, spheres(0), 64, 0), model.codes, rtol=0, atol=0)


def test_save_and_load_give_the_same_model(vae, tmp_path: Path, rng: np.random.Generator) -> None:
    model, _ = vae
    path = model.save(tmp_path / "vae")
    loaded = fastsdf.load_model(tmp_path / "vae")
    assert isinstance(loaded, ShapeVAE) and not loaded.training and path.name == "model.pt"
    assert loaded.names == model.names and loaded.settings == model.settings and torch.equal(loaded.codes, model.codes)
    points, probes = cloud(0.5, rng), rng.uniform(-1, 1, (200, 3)).astype(np.float32)
    torch.testing.assert_close(loaded.encode(points), model.encode(points), rtol=0, atol=0)
    np.testing.assert_array_equal(loaded.shape(2).sdf(probes), model.shape(2).sdf(probes))
    state = torch.load(path, weights_only=True)
    for key, value, words in (("codes", torch.full((4, LATENT), float("nan")), "'codes'"),
                              ("names", ["a"], "'names'"), ("encoder", model.state()["decoder"], "log-variance")):
        torch.save({**state, key: value}, tmp_path / "bad.pt")
        with pytest.raises(ValueError, match=words) as error:
            fastsdf.load_model(tmp_path / "bad.pt")
        assert str(tmp_path / "bad.pt") in str(error.value)


def test_a_stopped_run_resumes_to_the_uninterrupted_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Streamed from files (with surface points)."""
    data = tmp_path / "data"
    rng = np.random.default_rng(4)
    for r in RADII[:3]:
        fastsdf.save_npz(data / f"r{r}.npz", sphere_samples(r, rng, 600, surface=100))
    options = {**SMALL, "shapes_per_batch": 2, "epochs": 5, "seed": 7, "checkpoint_every": 0.0}
    whole, _ = fastsdf.train_shape_vae(data, *networks(3), checkpoint=tmp_path / "whole.pt", **options)
    real_step, calls = torch.optim.Adam.step, {"n": 0}

    def dying_step(self, *args, **kwargs):  # noqa: ANN001
        calls["n"] += 1
        if calls["n"] > 5:  # in the 3rd of 5 epochs (2 steps each)
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        fastsdf.train_shape_vae(data, *networks(3), checkpoint=tmp_path / "run.pt", **options)
    monkeypatch.setattr(torch.optim.Adam, "step", real_step)
    resumed, history = fastsdf.train_shape_vae(data, *networks(8), checkpoint=tmp_path / "run.pt", **options)
    assert history["epoch"] == list(range(1, 6))
    for key, value in whole.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=1e-6, msg=key)
    with pytest.raises(ValueError, match="another run"):
        fastsdf.train_shape_vae(data, *networks(3), checkpoint=tmp_path / "run.pt", **{**options, "kl_weight": 1.0})


def test_training_rejects_bad_data_and_settings() -> None:
    bare = ShapeSamples(["a", "b"], [sphere_samples(r, np.random.default_rng(0), 100) for r in (0.3, 0.5)])
    with pytest.raises(ValueError, match="--n-surface"):
        fastsdf.train_shape_vae(bare, *networks(), epochs=1, **SMALL)
    for bad, words in (({"kl_weight": -1.0}, "kl_weight"), ({"prior_std": 0.0}, "prior_std"),
                       ({"cloud_points": 0}, "cloud_points"), ({"epochs": 0}, "epochs")):
        with pytest.raises(ValueError, match=words):
            fastsdf.train_shape_vae(spheres(0, RADII[:2]), *networks(), **{"epochs": 1, **SMALL, **bad})
    encoder, decoder = networks()
    with pytest.raises(ValueError, match="log-variance"):
        fastsdf.train_shape_vae(spheres(0, RADII[:2]), fastsdf.PointNetEncoder(LATENT, 16), decoder, epochs=1, **SMALL)
    with pytest.raises(ValueError, match="no latent input"):
        ShapeVAE(encoder, DeepSDFDecoder(latent_size=0, hidden_features=16, hidden_layers=2, latent_in=()))
    model = ShapeVAE(encoder, decoder)
    for points, words in ((np.zeros((0, 3)), "non-empty"), (np.full((4, 3), np.inf), "finite")):
        with pytest.raises(ValueError, match=words):
            model.encode(points)
    with pytest.raises(ValueError, match="latent must be"):
        model.shape(torch.zeros(LATENT + 1))
    with pytest.raises(ValueError, match="not the ones"):
        model.partial_conditions(spheres(0, RADII[:2]))


# ------------------------------------------------------------------------------------------------
# Diffusion over the latents, conditioned on partial clouds
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def conditioned(vae) -> LatentDiffusion:
    model, _ = vae
    torch.manual_seed(0)
    diffusion, _ = fastsdf.train_diffusion(model, LatentDenoiser(LATENT, condition_size=LATENT, **DENOISER),
                                           conditions=model.partial_conditions(spheres(0), seed=1),
                                           condition_dropout=0.2, steps=300, batch_size=64, timesteps=100,
                                           seed=0, progress=False, device="cpu")
    return diffusion


def test_a_small_sphere_s_partial_cloud_generates_small_shapes(conditioned: LatentDiffusion,
                                                                rng: np.random.Generator, seed: int) -> None:
    sizes = {}
    for r in (RADII[0], RADII[-1]):
        direction = rng.standard_normal(3)
        condition = conditioned.encode_condition(fastsdf.partial_cloud(cloud(r, rng), direction), seed=seed)
        codes = conditioned.sample(4, steps=10, seed=seed, condition=condition, guidance=3.0)
        sizes[r] = [radius(conditioned.shape(code)) for code in codes]
    assert max(sizes[RADII[0]]) < min(sizes[RADII[-1]]), sizes
    assert isinstance(conditioned.latent_model, ShapeVAE) and conditioned.autodecoder is None


def test_save_and_load_the_conditioned_model(conditioned: LatentDiffusion, tmp_path: Path,
                                             rng: np.random.Generator, seed: int) -> None:
    conditioned.save(tmp_path / "gen")
    loaded = fastsdf.load_model(tmp_path / "gen")
    assert isinstance(loaded, LatentDiffusion) and isinstance(loaded.latent_model, ShapeVAE)
    points = cloud(0.5, rng)
    condition = loaded.encode_condition(points, seed=seed)
    torch.testing.assert_close(condition, conditioned.encode_condition(points, seed=seed), rtol=0, atol=0)
    torch.testing.assert_close(loaded.sample(3, steps=5, seed=seed, condition=condition, guidance=2.0),
                               conditioned.sample(3, steps=5, seed=seed, condition=condition, guidance=2.0),
                               rtol=0, atol=0)
    state = torch.load(tmp_path / "gen" / "model.pt", weights_only=True)
    torch.save({**state, "autodecoder": state["shape_vae"]}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="two latent models"):
        fastsdf.load_model(tmp_path / "bad.pt")


def test_conditions_need_an_encoder_and_a_conditioned_model(vae) -> None:
    model, _ = vae
    unconditioned = LatentDiffusion(LatentDenoiser(LATENT, **DENOISER), torch.zeros(LATENT), torch.ones(LATENT),
                                    timesteps=10, latent_model=model)
    with pytest.raises(ValueError, match="without conditions"):
        unconditioned.encode_condition(cloud(0.5, np.random.default_rng(0)))
    autodecoder = AutoDecoder(model.decoder, model.codes, model.names)
    no_encoder = LatentDiffusion(LatentDenoiser(LATENT, condition_size=LATENT, **DENOISER), torch.zeros(LATENT),
                                 torch.ones(LATENT), timesteps=10, latent_model=autodecoder)
    with pytest.raises(ValueError, match="no point-cloud encoder"):
        no_encoder.encode_condition(cloud(0.5, np.random.default_rng(0)))
    with pytest.raises(TypeError, match="latent_model"):
        LatentDiffusion(LatentDenoiser(LATENT, **DENOISER), torch.zeros(LATENT), torch.ones(LATENT),
                        latent_model=model.decoder)


# ------------------------------------------------------------------------------------------------
# The commands
# ------------------------------------------------------------------------------------------------


def test_train_shape_vae_train_diffusion_and_conditioned_generate(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    rng = np.random.default_rng(1)
    for r in RADII[:3]:
        fastsdf.save_npz(data / f"r{r}.npz", sphere_samples(r, rng, 600, surface=100))
    np.savez(tmp_path / "scan.npz", points=fastsdf.partial_cloud(cloud(0.4, rng), (0, 0, 1)))
    vae = ["train-shape-vae", str(data), "--out", str(tmp_path / "vae"), "--latent-size", "8", "--width", "32",
           "--layers", "2", "--dropout", "0", "--encoder-width", "16", "--blocks", "2", "--epochs", "4",
           "--shapes-per-batch", "3", "--samples-per-shape", "64", "--input-points", "32", "--workers", "0", "--quiet"]
    assert main(vae) == 0
    assert sorted(p.name for p in (tmp_path / "vae").iterdir()) == ["model.pt", "training.png"]
    assert isinstance(fastsdf.load_model(tmp_path / "vae"), ShapeVAE)
    train = ["train-diffusion", str(tmp_path / "vae"), "--steps", "20", "--width", "16", "--blocks", "1",
             "--batch-size", "16", "--timesteps", "20", "--quiet"]
    assert main([*train, "--out", str(tmp_path / "gen"), "--partial-clouds", str(data)]) == 0
    assert "with partial-cloud conditions" in capsys.readouterr().out
    assert fastsdf.load_model(tmp_path / "gen").condition_size == 8
    generate = ["generate", str(tmp_path / "gen"), "--count", "2", "--steps", "4", "--resolution", "12", "--quiet",
                "--condition", str(tmp_path / "scan.npz"), "--guidance", "2"]
    assert main([*generate, "--out", str(tmp_path / "shapes")]) == 0
    summary = json.loads((tmp_path / "shapes" / "generation.json").read_text())
    assert summary["guidance"] == 2.0 and summary["condition"] == str((tmp_path / "scan.npz").resolve())
    assert sorted(summary["shapes"]) == ["shape_000", "shape_001"]

    capsys.readouterr()
    assert main([*generate[:-4], "--guidance", "2", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--condition" in err and not (tmp_path / "x").exists()
    assert main([*train, "--condition-dropout", "0.2", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--condition-dropout needs --partial-clouds" in err
    assert not (tmp_path / "d").exists()
    assert main([*train, "--out", str(tmp_path / "plain")]) == 0
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "plain"), "--count", "1", "--condition", str(tmp_path / "scan.npz"),
                 "--out", str(tmp_path / "y")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "without conditions" in err and not (tmp_path / "y").exists()
    assert main([*generate[:-3], str(tmp_path / "missing.ply"), "--out", str(tmp_path / "z")]) == 1
    assert "no such point cloud file" in capsys.readouterr().err
    fitted = fastsdf.FittedSDF(fastsdf.SirenMLP(3, 8, 1, 1), fastsdf.NormalizationTransform.identity())
    fitted.save(tmp_path / "fitted")
    assert main(["train-diffusion", str(tmp_path / "fitted"), "--out", str(tmp_path / "w")]) == 1
    assert "latent model" in capsys.readouterr().err
