"""Latent diffusion: the maths against closed forms in float64 (noise schedules, forward noising,
the posterior, DDIM and DDPM steps, guidance, the moving average of the weights), the denoiser, and
training on a small auto-decoder's codes end to end (resume, saving, the train-diffusion and
generate commands). Under torchrun: test_diffusion_ddp.py.

The shapes are the DeepSDF tests' family of spheres: a small auto-decoder learns their codes in a
few seconds, and a small denoiser learns those codes' distribution in a few hundred steps.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import fastsdf
from fastsdf.cli import main
from fastsdf.nn import LatentDenoiser
from fastsdf.nn.denoiser import timestep_embedding
from fastsdf.training.autodecoder import AutoDecoder
from fastsdf.training.diffusion import NoiseSchedule, ddim_sample, ddim_timesteps, diffusion_loss, predictions
from fastsdf.training.ema import moving_average
from fastsdf.training.latent_diffusion import LatentDiffusion
from fastsdf.training.seeding import mixed_seed
from fastsdf.training.selection import BestWeights
from fastsdf.training.shapes import ShapeSamples
from fastsdf.training.steps import train_steps
from fastsdf.training.train_diffusion import _held_out_loss
from training_helpers import one_thread, sphere_samples  # noqa: F401 - one_thread: a fixture, autouse

RADII = (0.3, 0.4, 0.5, 0.6, 0.7)
LATENT = 8
SMALL_DENOISER = {"hidden_features": 64, "blocks": 2, "time_features": 32}
TRAINING = {"steps": 300, "batch_size": 64, "timesteps": 100, "progress": False, "device": "cpu"}


def schedules(rng: np.random.Generator) -> list[NoiseSchedule]:
    """Both kinds at a random length (linear needs T >= 21 to keep its scaled betas below 1)."""
    return [NoiseSchedule.cosine(int(rng.integers(2, 1500))), NoiseSchedule.linear(int(rng.integers(21, 1500)))]


# ------------------------------------------------------------------------------------------------
# Schedules
# ------------------------------------------------------------------------------------------------


def test_linear_schedule_is_ddpm_s_scaled_by_1000_over_t(rng: np.random.Generator) -> None:
    ddpm = NoiseSchedule.linear(1000)
    assert ddpm.betas[0].item() == pytest.approx(1e-4, rel=1e-12)
    assert ddpm.betas[-1].item() == pytest.approx(0.02, rel=1e-12)
    steps = int(rng.integers(21, 3000))
    schedule = NoiseSchedule.linear(steps)
    expected = np.linspace(1e-4 * 1000 / steps, 0.02 * 1000 / steps, steps)
    np.testing.assert_allclose(schedule.betas.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(schedule.alpha_bars.numpy(), np.cumprod(1 - expected), rtol=1e-10)
    with pytest.raises(ValueError, match="timesteps"):
        NoiseSchedule.linear(20)  # beta_end 0.02 * 50 = 1


def test_cosine_schedule_is_nichol_and_dhariwal_s(rng: np.random.Generator) -> None:
    steps = int(rng.integers(2, 3000))
    schedule = NoiseSchedule.cosine(steps)
    f = [math.cos((t / steps + 0.008) / 1.008 * math.pi / 2) ** 2 for t in range(steps + 1)]
    betas = np.minimum([1 - f[t + 1] / f[t] for t in range(steps)], 0.999)
    np.testing.assert_allclose(schedule.betas.numpy(), betas, rtol=1e-9)
    unclipped = betas < 0.999
    np.testing.assert_allclose(schedule.alpha_bars.numpy()[unclipped], (np.array(f[1:]) / f[0])[unclipped], rtol=1e-9)
    assert schedule.betas[-1].item() == 0.999  # f(T) = 0: clipped


def test_every_schedule_noises_to_nothing_monotonically(rng: np.random.Generator) -> None:
    for schedule in schedules(rng):
        bars = schedule.alpha_bars
        assert ((schedule.betas > 0) & (schedule.betas < 1)).all()
        assert (bars[1:] < bars[:-1]).all() and bars[0] < 1
        if schedule.timesteps >= 100:
            assert bars[-1] < 1e-3
    with pytest.raises(ValueError, match="betas"):
        NoiseSchedule(torch.tensor([0.1, 1.0]))
    with pytest.raises(ValueError, match="schedule"):
        NoiseSchedule.named("quadratic", 10)


def test_ddim_timesteps_run_down_evenly_to_zero(rng: np.random.Generator) -> None:
    steps = int(rng.integers(2, 1000))
    assert ddim_timesteps(steps, steps) == list(range(steps - 1, -1, -1))
    some = ddim_timesteps(steps, int(rng.integers(2, steps + 1)))
    assert some[0] == steps - 1 and some[-1] == 0 and all(a > b for a, b in zip(some, some[1:]))
    assert ddim_timesteps(steps, 1) == [steps - 1]
    with pytest.raises(ValueError, match="steps"):
        ddim_timesteps(steps, steps + 1)


# ------------------------------------------------------------------------------------------------
# Forward noising and the posterior
# ------------------------------------------------------------------------------------------------


def test_forward_noising_step_by_step_has_the_closed_form_marginal(rng: np.random.Generator) -> None:
    """x_t from x_{t-1} by N(sqrt(1 - beta_t) x_{t-1}, beta_t): the marginal is q_sample's
    N(sqrt(abar_t) x0, (1 - abar_t) I), exactly for its coefficients and in distribution."""
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    schedule = schedules(rng)[int(rng.integers(2))]
    t = int(rng.integers(min(schedule.timesteps, 60)))
    mean, variance = 1.0, 0.0  # x_t = mean x0 + noise of this variance
    for s in range(t + 1):
        mean, variance = mean * math.sqrt(1 - schedule.betas[s]), (1 - schedule.betas[s]) * variance + schedule.betas[s]
    bar = schedule.alpha_bars[t].item()
    assert mean == pytest.approx(math.sqrt(bar), rel=1e-12) and variance == pytest.approx(1 - bar, rel=1e-10)

    n = 200_000
    x0 = torch.tensor([0.7, -1.3], dtype=torch.float64)
    x = x0.expand(n, 2).clone()
    for s in range(t + 1):
        x = torch.sqrt(1 - schedule.betas[s]) * x + torch.sqrt(schedule.betas[s]) * torch.randn(
            n, 2, dtype=torch.float64, generator=generator)
    # Six standard errors of the mean and of the variance: a false alarm once in ~10^8 runs.
    torch.testing.assert_close(x.mean(0), math.sqrt(bar) * x0, rtol=0, atol=6 * math.sqrt((1 - bar) / n))
    torch.testing.assert_close(x.var(0), torch.full((2,), 1 - bar, dtype=torch.float64), rtol=0,
                               atol=6 * (1 - bar) * math.sqrt(2 / n))
    noise = torch.randn(5, 2, dtype=torch.float64, generator=generator)
    torch.testing.assert_close(schedule.q_sample(x0.expand(5, 2), t, noise),
                               math.sqrt(bar) * x0 + math.sqrt(1 - bar) * noise, rtol=1e-14, atol=1e-14)


def test_posterior_is_bayes_rule_of_the_forward_process(rng: np.random.Generator) -> None:
    """q(x_{t-1} | x_t, x0) ~ q(x_t | x_{t-1}) q(x_{t-1} | x0): precisions add, means weigh by them."""
    for schedule in schedules(rng):
        t = torch.from_numpy(rng.integers(1, schedule.timesteps, 7))
        x0, xt = (torch.from_numpy(rng.standard_normal((7, 3))) for _ in range(2))
        bar_prev, beta = schedule.alpha_bars[t - 1][:, None], schedule.betas[t][:, None]
        precision = 1 / (1 - bar_prev) + (1 - beta) / beta
        variance = 1 / precision
        mean = variance * (torch.sqrt(bar_prev) * x0 / (1 - bar_prev) + torch.sqrt(1 - beta) * xt / beta)
        got_mean, got_variance = schedule.posterior(x0, xt, t)
        scale = float(x0.abs().max() + xt.abs().max())
        torch.testing.assert_close(got_mean, mean, rtol=1e-9, atol=1e-12 * scale)
        torch.testing.assert_close(got_variance.expand(7, 1), variance, rtol=1e-9, atol=0)
        mean0, variance0 = schedule.posterior(x0, xt, 0)
        torch.testing.assert_close(mean0, x0, rtol=0, atol=1e-14 * scale)
        assert variance0.item() == 0


# ------------------------------------------------------------------------------------------------
# DDIM and DDPM steps
# ------------------------------------------------------------------------------------------------


def test_ddim_with_eta_0_and_the_true_noise_stays_on_the_trajectory(rng: np.random.Generator) -> None:
    """Given the noise that made x_t, DDIM (eta 0) lands on x_{t'} = sqrt(abar_t') x0 + sqrt(1 -
    abar_t') noise for any t' < t, and on x0 itself for t' = -1."""
    for schedule in schedules(rng):
        x0, noise = (torch.from_numpy(rng.standard_normal((6, 5))) for _ in range(2))
        t = int(rng.integers(1, schedule.timesteps))
        t_prev = int(rng.integers(-1, t))
        xt = schedule.q_sample(x0, t, noise)
        for prediction, output in (("epsilon", noise), ("x0", x0)):
            x0_hat, noise_hat = predictions(output, xt, t, schedule, prediction)
            # x0 from the noise divides by sqrt(abar_t), which magnifies rounding by 1 / sqrt(abar_t).
            tolerance = 1e-13 * float(xt.abs().max()) / math.sqrt(schedule.alpha_bars[t].item())
            torch.testing.assert_close(schedule.ddim_step(xt, t, -1, x0_hat, noise_hat), x0, rtol=0, atol=tolerance)
            expected = x0 if t_prev < 0 else schedule.q_sample(x0, t_prev, noise)
            torch.testing.assert_close(schedule.ddim_step(xt, t, t_prev, x0_hat, noise_hat), expected, rtol=0,
                                       atol=tolerance)


@pytest.mark.parametrize("prediction", ["epsilon", "x0"])
def test_ddim_sampling_with_an_exact_model_recovers_the_data_point(prediction: str, rng: np.random.Generator) -> None:
    """The data are one point x*: the exact model predicts x* (or the noise that leads to it), and
    DDIM with eta 0 reaches x* from any start in any number of steps."""
    schedule = NoiseSchedule.cosine(int(rng.integers(2, 500)))
    target = torch.from_numpy(rng.standard_normal(4))

    def exact(xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        bar = schedule.alpha_bars[t][:, None]
        return target.expand_as(xt) if prediction == "x0" else (xt - torch.sqrt(bar) * target) / torch.sqrt(1 - bar)

    noise = torch.from_numpy(rng.standard_normal((9, 4)))
    steps = int(rng.integers(1, schedule.timesteps + 1))
    out = ddim_sample(exact, schedule, noise, steps, prediction)
    magnification = 1 / math.sqrt(schedule.alpha_bars[-1].item())  # the first x0 estimate from a noise prediction
    torch.testing.assert_close(out, target.expand(9, 4), rtol=0, atol=1e-12 * magnification * 10)


def test_ddim_with_eta_1_over_all_steps_is_ddpm_s_ancestral_step(rng: np.random.Generator) -> None:
    for schedule in schedules(rng):
        t = int(rng.integers(1, schedule.timesteps))
        xt, x0, z = (torch.from_numpy(rng.standard_normal((5, 3))) for _ in range(3))
        noise_hat = predictions(x0, xt, t, schedule, "x0")[1]
        ddim = schedule.ddim_step(xt, t, t - 1, x0, noise_hat, eta=1.0, noise=z)
        torch.testing.assert_close(ddim, schedule.ddpm_step(xt, t, x0, z), rtol=1e-10, atol=1e-10)
        # eta = 1's sigma^2 is the posterior's variance: the same mean and spread whatever the draw.
        mean, variance = schedule.posterior(x0, xt, t)
        torch.testing.assert_close(schedule.ddim_step(xt, t, t - 1, x0, noise_hat, eta=1.0, noise=torch.zeros_like(z)),
                                   mean, rtol=1e-10, atol=1e-10)
        spread = schedule.ddim_step(xt, t, t - 1, x0, noise_hat, eta=1.0, noise=torch.ones_like(z)) - mean
        torch.testing.assert_close(spread, torch.sqrt(variance).expand_as(spread), rtol=1e-9, atol=1e-12)


def test_ddim_sampler_with_eta_1_and_all_steps_is_ddpm_s_sampler(rng: np.random.Generator) -> None:
    schedule = NoiseSchedule.linear(int(rng.integers(21, 60)))
    weight = torch.from_numpy(rng.standard_normal((3, 3))) * 0.3

    def model(xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # any smooth function of x_t and t
        return torch.tanh(xt @ weight + t[:, None] / schedule.timesteps)

    seed = int(rng.integers(2**62))
    start = torch.from_numpy(rng.standard_normal((4, 3)))
    ddim = ddim_sample(model, schedule, start, schedule.timesteps, "epsilon", eta=1.0,
                       generator=torch.Generator().manual_seed(seed))
    generator, x = torch.Generator().manual_seed(seed), start
    for t in range(schedule.timesteps - 1, -1, -1):
        x0, _ = predictions(model(x, torch.full((4,), t)), x, t, schedule, "epsilon")
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        x = schedule.ddpm_step(x, t, x0, z)
    torch.testing.assert_close(ddim, x, rtol=1e-8, atol=1e-8 * float(x.abs().max()))


def test_guidance_mixes_the_conditional_and_unconditional_outputs(rng: np.random.Generator, seed: int) -> None:
    torch.manual_seed(seed)
    denoiser = LatentDenoiser(3, condition_size=2, **SMALL_DENOISER).double()
    with torch.no_grad():
        denoiser.null_condition.normal_()
    schedule = NoiseSchedule.cosine(50)
    noise, condition = (torch.from_numpy(rng.standard_normal((5, k))) for k in (3, 2))
    t = torch.full((5,), 49)
    with torch.no_grad():
        conditional, unconditional = denoiser(noise, t, condition), denoiser(noise, t)
        torch.testing.assert_close(unconditional, denoiser(noise, t, condition, torch.ones(5, dtype=torch.bool)))
        for w in (0.0, 1.0, float(rng.uniform(1.5, 4))):
            # One step from T-1 to the data with x0-prediction returns the (guided) output itself.
            out = ddim_sample(denoiser, schedule, noise, 1, "x0", condition=condition, guidance=w)
            torch.testing.assert_close(out, unconditional + w * (conditional - unconditional), rtol=1e-12, atol=1e-12)


def test_the_loss_of_an_exact_model_is_zero(rng: np.random.Generator) -> None:
    schedule = NoiseSchedule.cosine(100)
    x0, noise = (torch.from_numpy(rng.standard_normal((8, 4))) for _ in range(2))
    t = torch.from_numpy(rng.integers(0, 100, 8))
    loss = diffusion_loss(lambda xt, tt: (xt - torch.sqrt(schedule.alpha_bars[tt])[:, None] * x0)
                          / torch.sqrt(1 - schedule.alpha_bars[tt])[:, None], schedule, x0, t, noise, "epsilon")
    assert loss.item() < 1e-20
    assert diffusion_loss(lambda xt, tt: x0, schedule, x0, t, noise, "x0").item() == 0


# ------------------------------------------------------------------------------------------------
# The denoiser
# ------------------------------------------------------------------------------------------------


def test_timestep_embedding_is_the_sinusoidal_one(rng: np.random.Generator) -> None:
    t = torch.from_numpy(rng.integers(0, 1000, 6))
    for features in (8, 9):
        embedding = timestep_embedding(t, features)
        half = features // 2
        frequencies = np.exp(-math.log(10_000) * np.arange(half) / half)
        angles = t.numpy()[:, None] * frequencies
        expected = np.concatenate([np.cos(angles), np.sin(angles), np.zeros((6, features % 2))], axis=1)
        np.testing.assert_allclose(embedding.numpy(), expected, rtol=0, atol=1e-12)


def test_denoiser_checks_its_inputs() -> None:
    denoiser = LatentDenoiser(LATENT, **SMALL_DENOISER)
    assert denoiser(torch.zeros(3, LATENT), torch.tensor([0, 5, 9])).shape == (3, LATENT)
    assert denoiser(torch.zeros(3, LATENT), 4).shape == (3, LATENT)
    for x, t, match in ((torch.zeros(3, 5), 0, "x must"), (torch.zeros(3, LATENT).double(), 0, "float64"),
                        (torch.zeros(3, LATENT), torch.zeros(2), "t must")):
        with pytest.raises(ValueError, match=match):
            denoiser(x, t)
    with pytest.raises(ValueError, match="unconditional"):
        denoiser(torch.zeros(3, LATENT), 0, torch.zeros(3, 2))
    conditional = LatentDenoiser(LATENT, condition_size=2, **SMALL_DENOISER)
    with pytest.raises(ValueError, match="condition must"):
        conditional(torch.zeros(3, LATENT), 0, torch.zeros(3, 3))
    with pytest.raises(ValueError, match="drop_condition"):
        conditional(torch.zeros(3, LATENT), 0, torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="blocks"):
        LatentDenoiser(LATENT, blocks=0)


# ------------------------------------------------------------------------------------------------
# The moving average of the weights
# ------------------------------------------------------------------------------------------------


def ema_closed_form(weights: list[np.ndarray], decay: float) -> np.ndarray:
    """The average after len(weights) - 1 steps, weights[0] the initial ones and weights[k] those after
    step k: w_0 prod_k d_k + sum_k (1 - d_k) w_k prod_{j > k} d_j, d_k = min(decay, (1 + k) / (10 + k))."""
    d = [min(decay, (1 + k) / (10 + k)) for k in range(1, len(weights))]
    total = weights[0] * np.prod(d)
    for k in range(1, len(weights)):
        total = total + (1 - d[k - 1]) * weights[k] * np.prod(d[k:])
    return total


def test_the_moving_average_is_its_closed_form(rng: np.random.Generator) -> None:
    """Over steps where the warm-up rules and steps where the decay does (it takes over at k = 8 for
    0.5, never for 0.9999 here); its state (the step count included) resumes it exactly."""
    for decay in (float(rng.uniform(0.5, 0.8)), 0.9999):
        network = torch.nn.Linear(3, 2).double()
        weights = [torch.cat([p.detach().reshape(-1) for p in network.parameters()]).numpy().copy()]
        average = moving_average(network, decay)
        halfway = None
        for k in range(1, 13):
            with torch.no_grad():
                for p in network.parameters():
                    p.copy_(torch.from_numpy(rng.standard_normal(p.shape)))
            weights.append(torch.cat([p.detach().reshape(-1) for p in network.parameters()]).numpy().copy())
            average.update_parameters(network)
            if k == 6:
                halfway = moving_average(torch.nn.Linear(3, 2).double(), decay)
                halfway.load_state_dict(average.state_dict())
            elif k > 6:
                halfway.update_parameters(network)
        got = torch.cat([p.detach().reshape(-1) for p in average.module.parameters()]).numpy()
        np.testing.assert_allclose(got, ema_closed_form(weights, decay), rtol=1e-12, atol=1e-12)
        for a, b in zip(average.module.parameters(), halfway.module.parameters()):
            assert torch.equal(a, b)


def test_training_averages_the_weights_of_every_step(autodecoder: AutoDecoder, monkeypatch: pytest.MonkeyPatch) -> None:
    """The model's ``ema`` is the closed form over the weights after each of the run's steps, from
    the initial ones; ``ema_decay=0`` keeps none."""
    torch.manual_seed(0)
    denoiser = LatentDenoiser(LATENT, **SMALL_DENOISER)
    weights = [torch.cat([p.detach().reshape(-1) for p in denoiser.parameters()]).double().numpy().copy()]
    real_step = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        result = real_step(self, *args, **kwargs)
        weights.append(torch.cat([p.detach().reshape(-1) for p in denoiser.parameters()]).double().numpy().copy())
        return result

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    model, _ = fastsdf.train_diffusion(autodecoder, denoiser, ema_decay=0.7, seed=1, **{**TRAINING, "steps": 15})
    assert len(weights) == 16 and model.ema is not denoiser
    got = torch.cat([p.detach().reshape(-1) for p in model.ema.parameters()]).double().numpy()
    np.testing.assert_allclose(got, ema_closed_form(weights, 0.7), rtol=0, atol=1e-6 * np.abs(weights).max())
    plain, _ = fastsdf.train_diffusion(autodecoder, ema_decay=0, **{**TRAINING, "steps": 2})
    assert plain.ema is None


def test_sampling_uses_the_moving_average(diffusion, seed: int) -> None:
    """By default DDIM denoises with ``ema``; ``ema=False`` with the last step's weights."""
    model, _ = diffusion
    assert model.ema is not None

    def alone(denoiser: torch.nn.Module) -> LatentDiffusion:
        return LatentDiffusion(denoiser, model.mean, model.std, model.schedule_name, model.schedule.timesteps,
                               model.prediction, clip=model.clip)

    averaged, last = model.sample(5, steps=7, seed=seed), model.sample(5, steps=7, seed=seed, ema=False)
    assert torch.equal(averaged, alone(model.ema).sample(5, steps=7, seed=seed))
    assert torch.equal(last, alone(model.denoiser).sample(5, steps=7, seed=seed))
    assert not torch.equal(averaged, last)
    for bad in ("no", 0, None):
        with pytest.raises(ValueError, match="ema must be True or False"):
            model.sample(5, steps=7, seed=seed, ema=bad)
    with pytest.raises(ValueError, match="ema must be the denoiser's network"):
        LatentDiffusion(model.denoiser, model.mean, model.std, ema=LatentDenoiser(LATENT, hidden_features=8, blocks=1))


# ------------------------------------------------------------------------------------------------
# Training on an auto-decoder's codes
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def autodecoder(one_thread: None) -> AutoDecoder:
    rng = np.random.default_rng(0)
    shapes = ShapeSamples([f"r{r}" for r in RADII], [sphere_samples(r, rng, 2000) for r in RADII])
    torch.manual_seed(0)
    decoder = fastsdf.DeepSDFDecoder(latent_size=LATENT, hidden_features=32, hidden_layers=3, latent_in=(), dropout=0.0)
    model, _ = fastsdf.train_deepsdf(shapes, decoder, epochs=60, shapes_per_batch=5, samples_per_shape=256,
                                     learning_rate=2e-3, code_learning_rate=1e-2, seed=0, progress=False,
                                     num_workers=0, device="cpu")
    return model


@pytest.fixture(scope="module")
def diffusion(autodecoder: AutoDecoder) -> tuple[LatentDiffusion, dict]:
    torch.manual_seed(0)
    return fastsdf.train_diffusion(autodecoder, LatentDenoiser(LATENT, **SMALL_DENOISER), seed=0, **TRAINING)


def test_samples_follow_the_codes_distribution(autodecoder: AutoDecoder, diffusion, seed: int) -> None:
    """In the normalised frame (where the codes have mean 0 and variance 1 per dimension, as N(0, I)
    has), DDIM's codes lie near the training codes and have their covariance, which N(0, I) has not."""
    model, history = diffusion
    assert history["steps"] == TRAINING["steps"] and np.mean(history["loss"][-5:]) < history["loss"][0] / 2
    train = model.normalise(autodecoder.codes)
    generated = model.normalise(model.sample(400, steps=20, seed=seed))
    prior = torch.randn(400, LATENT, generator=torch.Generator().manual_seed(seed))

    def nearest(z: torch.Tensor) -> float:
        return torch.cdist(z, train).min(dim=1).values.mean().item()

    def covariance_error(z: torch.Tensor) -> float:
        return torch.linalg.matrix_norm(torch.cov(z.T) - torch.cov(train.T) * 4 / 5).item()  # population covariance

    assert nearest(generated) < 0.3 * nearest(prior), (nearest(generated), nearest(prior))
    assert covariance_error(generated) < 0.5 * covariance_error(prior), (covariance_error(generated),
                                                                         covariance_error(prior))
    assert (generated.mean(0) - train.mean(0)).norm() < 0.6
    # A generated code decodes to a sphere like the training ones (radii 0.3 to 0.7).
    shape = model.shape(model.sample(1, steps=10, seed=seed)[0])
    vertices, faces = fastsdf.extract_mesh(shape, 24, bounds=shape.bounds(), method="sparse", device="cpu")
    radius = np.median(np.linalg.norm(vertices.numpy(), axis=1))
    assert len(faces) and 0.25 < radius < 0.75, radius


def test_sampling_is_seeded_and_eta_adds_noise(diffusion, seed: int) -> None:
    model, _ = diffusion
    a, b = model.sample(6, steps=10, seed=seed), model.sample(6, steps=10, seed=seed)
    assert torch.equal(a, b) and a.shape == (6, LATENT)
    noisy = model.sample(6, steps=10, eta=1.0, seed=seed)
    assert not torch.equal(a, noisy) and torch.isfinite(noisy).all()
    assert not torch.equal(a, model.sample(6, steps=10, seed=seed + 1 if seed < 2**62 else 0))
    for kwargs, match in (({"count": 0}, "count"), ({"count": 2, "steps": 101}, "steps"),
                          ({"count": 2, "eta": -1.0}, "eta"), ({"count": 2, "condition": torch.zeros(2)}, "without")):
        with pytest.raises(ValueError, match=match):
            model.sample(**kwargs)


def test_save_and_load_the_diffusion_model(diffusion, tmp_path: Path, seed: int) -> None:
    model, _ = diffusion
    path = model.save(tmp_path / "diffusion")
    loaded = fastsdf.load_model(tmp_path / "diffusion")
    assert isinstance(loaded, LatentDiffusion) and path == tmp_path / "diffusion" / "model.pt"
    assert loaded.autodecoder.names == model.autodecoder.names and loaded.clip == model.clip
    assert torch.equal(loaded.sample(5, steps=7, seed=seed), model.sample(5, steps=7, seed=seed))
    for a, b in zip(loaded.ema.parameters(), model.ema.parameters()):
        assert torch.equal(a, b)
    state = torch.load(path, weights_only=True)
    del state["ema"]  # a file from before the moving average: sampled with the denoiser
    torch.save(state, tmp_path / "old.pt")
    old = fastsdf.load_model(tmp_path / "old.pt")
    assert old.ema is None and torch.equal(old.sample(5, steps=7, seed=seed), model.sample(5, steps=7, seed=seed,
                                                                                            ema=False))
    for key, value, words in (("schedule", "quadratic", "'schedule'"), ("mean", torch.zeros(3), "'mean'"),
                              ("autodecoder", {"codes": torch.zeros(2, 2)}, "'autodecoder'"),
                              ("timesteps", 1, "timesteps"), ("clip", "big", "'clip'"), ("ema", 3, "'ema'"),
                              ("ema", {"class": "LatentDenoiser"}, "'ema'")):
        torch.save({**state, key: value}, tmp_path / "bad.pt")
        with pytest.raises(ValueError, match=words) as error:
            fastsdf.load_model(tmp_path / "bad.pt")
        assert str(tmp_path / "bad.pt") in str(error.value)
    torch.save({**state, "network": model.autodecoder.state()["network"]}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="LatentDenoiser"):
        fastsdf.load_model(tmp_path / "bad.pt")


def killed_and_resumed(latent_model: AutoDecoder, denoiser: Any, options: dict, folder: Path,
                       monkeypatch: pytest.MonkeyPatch, killed_after: int) -> tuple[tuple, tuple]:
    """The run uninterrupted (checkpointing to whole.pt), and the same killed after ``killed_after``
    steps (run.pt) then resumed from a denoiser of other initial weights: ((model, history) of each)."""
    whole = fastsdf.train_diffusion(latent_model, denoiser(0), checkpoint=folder / "whole.pt", **options)
    real_step, calls = torch.optim.Adam.step, {"n": 0}

    def dying_step(self, *args, **kwargs):  # noqa: ANN001
        calls["n"] += 1
        if calls["n"] > killed_after:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        fastsdf.train_diffusion(latent_model, denoiser(0), checkpoint=folder / "run.pt", **options)
    monkeypatch.setattr(torch.optim.Adam, "step", real_step)
    return whole, fastsdf.train_diffusion(latent_model, denoiser(5), checkpoint=folder / "run.pt", **options)


def test_a_killed_run_resumes_where_it_stopped(autodecoder: AutoDecoder, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    options = {**TRAINING, "steps": 40, "seed": 7, "checkpoint_every": 0.0}

    def denoiser(seed: int) -> LatentDenoiser:
        torch.manual_seed(seed)
        return LatentDenoiser(LATENT, dropout=0.1, **SMALL_DENOISER)  # dropout: the global generator resumes too

    (whole, _), (resumed, history) = killed_and_resumed(autodecoder, denoiser, options, tmp_path, monkeypatch, 23)
    assert history["step"] == list(range(1, 41))
    assert resumed.ema is not None and any(key.startswith("ema.") for key in whole.state_dict())
    for key, value in whole.state_dict().items():  # the moving average's too
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=1e-6, msg=key)
    with pytest.raises(ValueError, match=r"another run \(ema_decay: 0.9999 saved, 0.999 now\)"):
        fastsdf.train_diffusion(autodecoder, denoiser(0), checkpoint=tmp_path / "run.pt",
                                **{**options, "ema_decay": 0.999})
    # A checkpoint from before the moving average resumes without one, and only so.
    state = torch.load(tmp_path / "run.pt", weights_only=True)
    del state["settings"]["ema_decay"], state["settings"]["latents"], state["average"]
    torch.save(state, tmp_path / "old.pt")
    with pytest.raises(ValueError, match=r"before checkpoints recorded ema_decay .*: resume it with ema_decay=0.0"):
        fastsdf.train_diffusion(autodecoder, denoiser(0), checkpoint=tmp_path / "old.pt", **options)
    old, history = fastsdf.train_diffusion(autodecoder, denoiser(0), checkpoint=tmp_path / "old.pt",
                                           **{**options, "ema_decay": 0.0})
    assert old.ema is None and history["step"] == list(range(1, 41))
    with pytest.raises(ValueError, match=r"another run \(steps: 40 saved, 50 now\)"):
        fastsdf.train_diffusion(autodecoder, denoiser(0), checkpoint=tmp_path / "run.pt", **{**options, "steps": 50})
    conditions = torch.randn(len(autodecoder.names), 3)
    conditioned = LatentDenoiser(LATENT, condition_size=3, **SMALL_DENOISER)
    with pytest.raises(ValueError, match=r"another run \(condition_size: 0 saved, 3 now; latents: "):
        fastsdf.train_diffusion(autodecoder, conditioned, conditions=conditions, checkpoint=tmp_path / "run.pt",
                                **options)
    # The same shapes' codes, retrained since: the checkpoint's denoiser learned other latents.
    retrained = copy.deepcopy(autodecoder)
    retrained.codes.mul_(1.5)
    with pytest.raises(ValueError, match=r"another run \(latents: '[0-9a-f]{16}' saved, '[0-9a-f]{16}' now\)"):
        fastsdf.train_diffusion(retrained, denoiser(0), checkpoint=tmp_path / "run.pt", **options)
    wider = LatentDenoiser(LATENT, **{**SMALL_DENOISER, "hidden_features": 2 * SMALL_DENOISER["hidden_features"]})
    with pytest.raises(ValueError, match="checkpoint is of another network than this run's"):
        fastsdf.train_diffusion(autodecoder, wider, checkpoint=tmp_path / "run.pt", **options)


def test_parallel_training_stops_by_steps_alone() -> None:
    """Each process would measure its own seconds and stop at its own step, leaving the others waiting."""
    network = torch.nn.Linear(2, 1)
    with pytest.raises(ValueError, match="time budget would stop parallel processes"):
        train_steps(network, torch.optim.Adam(network.parameters()), None, {}, step=lambda done: network.weight.sum(),
                    steps=None, time_budget=1.0, rate=lambda done, trained: 1e-3, label="", checkpoint=None,
                    checkpoint_every=0.0, progress=False, parallel=True)


def test_conditions_train_and_guide(autodecoder: AutoDecoder, seed: int) -> None:
    """The API an encoder will use: one condition per shape, and guided sampling on one."""
    conditions = torch.tensor(RADII)[:, None]
    torch.manual_seed(0)
    model, _ = fastsdf.train_diffusion(autodecoder, LatentDenoiser(LATENT, condition_size=1, **SMALL_DENOISER),
                                       conditions=conditions, seed=0, **{**TRAINING, "steps": 30})
    codes = model.sample(4, steps=5, seed=seed, condition=torch.tensor([0.5]), guidance=2.0)
    assert codes.shape == (4, LATENT) and torch.isfinite(codes).all()
    with pytest.raises(ValueError, match="condition"):
        model.sample(4, condition=torch.zeros(4, 2))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"steps": 0}, "steps"), ({"batch_size": 2.0}, "batch_size"), ({"schedule": "quadratic"}, "schedule"),
    ({"prediction": "v"}, "prediction"), ({"learning_rate": float("nan")}, "learning_rate"),
    ({"conditions": torch.zeros(4, 1)}, "conditions"), ({"timesteps": 1}, "timesteps"),
    ({"condition_dropout": 1.5}, "condition_dropout"), ({"ema_decay": 1.0}, "ema_decay"),
    ({"ema_decay": -0.1}, "ema_decay"),
])
def test_training_rejects_bad_arguments(autodecoder: AutoDecoder, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fastsdf.train_diffusion(autodecoder, **{**TRAINING, **kwargs})


def test_training_needs_codes_that_vary_and_a_matching_denoiser(autodecoder: AutoDecoder, tmp_path: Path) -> None:
    decoder = autodecoder.decoder
    with pytest.raises(ValueError, match="at least 2"):
        fastsdf.train_diffusion(AutoDecoder(decoder, torch.zeros(1, LATENT), ["a"]), **TRAINING)
    with pytest.raises(ValueError, match="all the same"):
        fastsdf.train_diffusion(AutoDecoder(decoder, torch.ones(3, LATENT), ["a", "b", "c"]), **TRAINING)
    with pytest.raises(ValueError, match="latents of 5"):
        fastsdf.train_diffusion(autodecoder, LatentDenoiser(5, **SMALL_DENOISER), **TRAINING)
    fitted = fastsdf.FittedSDF(fastsdf.SirenMLP(3, 8, 1, 1), fastsdf.NormalizationTransform.identity())
    with pytest.raises(ValueError, match="auto-decoder"):
        fastsdf.train_diffusion(fitted.save(tmp_path / "fitted"), **TRAINING)
    with pytest.raises(TypeError, match="AutoDecoder"):
        fastsdf.train_diffusion(decoder, **TRAINING)


# ------------------------------------------------------------------------------------------------
# Held-out codes choose the weights
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def many_codes(autodecoder: AutoDecoder) -> AutoDecoder:
    """30 codes (enough to hold some out), the spheres' decoder: training the denoiser needs only the codes."""
    codes = torch.randn(30, LATENT, generator=torch.Generator().manual_seed(3)) * 0.2
    return AutoDecoder(autodecoder.decoder, codes, [f"shape{i}" for i in range(30)])


def test_best_weights_keeps_the_lowest_scoring_ones(rng: np.random.Generator) -> None:
    network = torch.nn.Linear(3, 2)
    scores = [float(x) for x in rng.permutation(6)]
    seen, kept = [], None
    best = BestWeights(network, lambda: scores[len(seen)])
    for step, score in enumerate(scores, start=1):
        with torch.no_grad():
            for p in network.parameters():
                p.copy_(torch.from_numpy(rng.standard_normal(p.shape)))
        assert best.update(step * 10) == score
        seen.append(score)
        if score == min(seen):
            kept = copy.deepcopy(network.state_dict())
    assert (best.loss, best.step) == (min(scores), 10 * (scores.index(min(scores)) + 1))
    for key, value in kept.items():
        assert torch.equal(best.module.state_dict()[key], value)
    again = BestWeights(network, lambda: 0.0)
    again.restore({"step": [10 * (i + 1) for i in range(len(scores))], "validation_loss": scores})
    assert (again.loss, again.step) == (best.loss, best.step)
    diverged = BestWeights(network, lambda: float("nan"))
    assert math.isnan(diverged.update(5)) and (diverged.loss, diverged.step) == (math.inf, 0)
    with pytest.raises(TypeError, match="torch module"):
        BestWeights(lambda: 0.0, lambda: 0.0)
    with pytest.raises(TypeError, match="callable"):
        BestWeights(network, 0.0)


def test_held_out_codes_choose_the_weights(many_codes: AutoDecoder) -> None:
    """A tenth of the codes (3 of 30, drawn by the seed) stays out of training (the statistics are
    the others'); the sampling network gets the weights of the entry with the lowest held-out loss,
    which is that network's loss on them at the returned weights."""
    options = {**TRAINING, "steps": 50, "seed": 2}
    torch.manual_seed(0)
    model, history = fastsdf.train_diffusion(many_codes, LatentDenoiser(LATENT, **SMALL_DENOISER), **options)
    held = [many_codes.names.index(name) for name in history["held_out_shapes"]]
    trained = [i for i in range(30) if i not in held]
    assert len(held) == 3 and len(history["validation_loss"]) == len(history["step"]) == 50
    torch.testing.assert_close(model.mean, many_codes.codes[trained].mean(0))
    lowest = int(np.argmin(history["validation_loss"]))
    assert history["best_step"] == history["step"][lowest]
    score = _held_out_loss(model.ema, model.schedule, model.prediction, model.normalise(many_codes.codes[held]), None,
                           mixed_seed(2, -2), 1)
    assert score() == pytest.approx(history["validation_loss"][lowest], rel=1e-6)
    assert model.history["best_step"] == history["best_step"]
    torch.manual_seed(0)
    again, repeat = fastsdf.train_diffusion(many_codes, LatentDenoiser(LATENT, **SMALL_DENOISER), **options)
    assert repeat["held_out_shapes"] == history["held_out_shapes"]  # the seed draws them
    every, plain = fastsdf.train_diffusion(many_codes, **{**options, "held_out": 0.0, "steps": 3})
    assert "validation_loss" not in plain and "held_out_shapes" not in plain
    torch.testing.assert_close(every.mean, many_codes.codes.mean(0))
    with pytest.raises(ValueError, match=r"at least 2 shapes, the model has 30 \(29 held out\)"):
        fastsdf.train_diffusion(many_codes, **{**options, "held_out": 0.99})
    with pytest.raises(ValueError, match="held_out"):
        fastsdf.train_diffusion(many_codes, **{**options, "held_out": 1.0})


def test_a_killed_run_resumes_with_its_best_weights(many_codes: AutoDecoder, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The kept weights, their step and the held-out losses survive a kill; a checkpoint from
    before held-out codes resumes only without them."""
    options = {**TRAINING, "steps": 30, "seed": 4, "checkpoint_every": 0.0, "held_out": 0.2}

    def denoiser(seed: int) -> LatentDenoiser:
        torch.manual_seed(seed)
        return LatentDenoiser(LATENT, **SMALL_DENOISER)

    (whole, expected), (resumed, history) = killed_and_resumed(many_codes, denoiser, options, tmp_path, monkeypatch, 17)
    assert history["best_step"] == expected["best_step"] and len(history["held_out_shapes"]) == 6
    np.testing.assert_allclose(history["validation_loss"], expected["validation_loss"], rtol=1e-5)
    for key, value in whole.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=1e-6, msg=key)
    state = torch.load(tmp_path / "run.pt", weights_only=True)
    del state["settings"]["held_out"], state["best"]
    torch.save(state, tmp_path / "old.pt")
    with pytest.raises(ValueError, match=r"before checkpoints recorded held_out .*: resume it with held_out=0.0"):
        fastsdf.train_diffusion(many_codes, denoiser(0), checkpoint=tmp_path / "old.pt", **options)


# ------------------------------------------------------------------------------------------------
# The commands
# ------------------------------------------------------------------------------------------------


def test_train_diffusion_and_generate_commands(autodecoder: AutoDecoder, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    autodecoder.save(tmp_path / "deepsdf")
    train = ["train-diffusion", str(tmp_path / "deepsdf"), "--out", str(tmp_path / "diffusion"), "--steps", "60",
             "--width", "32", "--blocks", "1", "--batch-size", "32", "--timesteps", "50", "--quiet"]
    assert main(train) == 0
    assert sorted(p.name for p in (tmp_path / "diffusion").iterdir()) == ["model.pt", "training.png"]
    assert isinstance(fastsdf.load_model(tmp_path / "diffusion"), LatentDiffusion)
    generate = ["generate", str(tmp_path / "diffusion"), "--count", "3", "--steps", "5", "--resolution", "16",
                "--seed", "4", "--quiet"]
    assert main([*generate, "--out", str(tmp_path / "a")]) == 0
    assert main([*generate, "--out", str(tmp_path / "b")]) == 0
    written = sorted(p.name for p in (tmp_path / "a").iterdir())
    summary = json.loads((tmp_path / "a" / "generation.json").read_text())
    meshed = [name for name, shape in summary["shapes"].items() if shape["triangles"]]
    assert written == sorted(["generation.json", "grid.png", *(f"{name}.ply" for name in meshed)])
    assert sorted(summary["shapes"]) == ["shape_000", "shape_001", "shape_002"] and meshed
    assert (tmp_path / "a" / "grid.png").read_bytes()[1:4] == b"PNG"
    again = json.loads((tmp_path / "b" / "generation.json").read_text())
    assert again["shapes"] == summary["shapes"]  # the same seed, the same codes and meshes
    capsys.readouterr()
    assert main([*generate, "--out", str(tmp_path / "c"), "--steps", "51"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--steps must be <= 50" in err and not (tmp_path / "c").exists()
    assert main(["generate", str(tmp_path / "deepsdf"), "--count", "1", "--out", str(tmp_path / "d")]) == 1
    assert "latent diffusion model" in capsys.readouterr().err
