"""DeepSDF: the decoder (against a re-implementation of the original), auto-decoder training on one
and two processes, resumption, latent inference from full and partial samples, interpolation, saving.

The shapes are a family of spheres (radii 0.3 to 0.7): a one-parameter family a small decoder learns
in seconds, whose truth is known everywhere (|p| - r).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastsdf
from fastsdf import DeepSDFDecoder, SdfSamples
from fastsdf.nn import SirenMLP
from fastsdf.training.autodecoder import AutoDecoder
from fastsdf.training.reconstruct import ITERATIONS
from fastsdf.training.shapes import ShapeSamples, load_shapes

RADII = (0.3, 0.4, 0.5, 0.6, 0.7)
HELD_OUT = 0.55
SMALL_DECODER = {"latent_size": 8, "hidden_features": 64, "hidden_layers": 4, "latent_in": (2,), "dropout": 0.0}
TRAINING = {"epochs": 150, "shapes_per_batch": 5, "samples_per_shape": 512, "learning_rate": 2e-3,
            "code_learning_rate": 1e-2, "decay_every": 100, "progress": False}


def sphere_samples(radius: float, rng: np.random.Generator, count: int = 6000) -> SdfSamples:
    """DeepSDF-style samples of a sphere: most near the surface (std 0.02), a fifth uniform in the cube."""
    near = count - count // 5
    directions = rng.standard_normal((near, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    points = np.concatenate([directions * (radius + rng.normal(0, 0.02, (near, 1))),
                             rng.uniform(-1, 1, (count // 5, 3))])
    return SdfSamples(points, np.linalg.norm(points, axis=1) - radius)


def sphere_family(seed: int) -> ShapeSamples:
    rng = np.random.default_rng(seed)
    return ShapeSamples([f"r{r}" for r in RADII], [sphere_samples(r, rng) for r in RADII])


def small_decoder(seed: int = 0) -> DeepSDFDecoder:
    torch.manual_seed(seed)
    return DeepSDFDecoder(**SMALL_DECODER)


@pytest.fixture(scope="module")
def trained() -> tuple[AutoDecoder, dict]:
    return fastsdf.train_deepsdf(sphere_family(0), small_decoder(), seed=0, **TRAINING)


def radius_error(shape: fastsdf.FittedSDF, radius: float, rng: np.random.Generator) -> float:
    """Mean |f(p) - (|p| - r)| over points within 0.05 of the sphere."""
    directions = rng.standard_normal((2000, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    points = (directions * (radius + rng.uniform(-0.05, 0.05, (2000, 1)))).astype(np.float32)
    return float(np.abs(shape.sdf(points) - (np.linalg.norm(points, axis=1) - radius)).mean())


# ------------------------------------------------------------------------------------------------
# The decoder
# ------------------------------------------------------------------------------------------------


def original_deepsdf_forward(state: dict[str, torch.Tensor], latent: torch.Tensor, xyz: torch.Tensor,
                             latent_in: tuple[int, ...] = (4,)) -> torch.Tensor:
    """The forward pass of DeepSDF's ``deep_sdf_decoder.Decoder`` (its defaults: weight norm on
    every hidden layer, the input concatenated again before ``latent_in``, ReLU, tanh at the end),
    evaluated, as the original does, from its state dict's ``lin{i}.weight_g/weight_v/bias``."""
    layers = len({k.split(".")[0] for k in state})
    inputs = torch.cat([latent, xyz], dim=1)
    x = inputs
    for i in range(layers):
        if i in latent_in:
            x = torch.cat([x, inputs], dim=1)
        if f"lin{i}.weight_v" in state:
            v = state[f"lin{i}.weight_v"]
            weight = state[f"lin{i}.weight_g"] * v / v.norm(dim=1, keepdim=True)
        else:
            weight = state[f"lin{i}.weight"]
        x = F.linear(x, weight, state[f"lin{i}.bias"])
        if i < layers - 1:
            x = F.relu(x)
    return torch.tanh(x)


def original_state_dict(latent_size: int, width: int, hidden_layers: int, latent_in: tuple[int, ...],
                        generator: torch.Generator) -> dict[str, torch.Tensor]:
    inputs = latent_size + 3
    state = {}
    for i in range(hidden_layers + 1):
        fan_in = inputs if i == 0 else width
        fan_out = 1 if i == hidden_layers else (width - inputs if i + 1 in latent_in else width)
        v = torch.randn(fan_out, fan_in, generator=generator, dtype=torch.float64) / fan_in**0.5
        if i < hidden_layers:
            state[f"module.lin{i}.weight_g"] = torch.rand(fan_out, 1, generator=generator, dtype=torch.float64) + 0.5
            state[f"module.lin{i}.weight_v"] = v
        else:
            state[f"module.lin{i}.weight"] = v
        state[f"module.lin{i}.bias"] = torch.randn(fan_out, generator=generator, dtype=torch.float64) * 0.1
    return state


def test_decoder_has_the_paper_s_shape() -> None:
    decoder = DeepSDFDecoder()
    assert decoder.latent_size == 256 and len(decoder.layers) == 8 and decoder.dropout == 0.2
    assert decoder.layers[0].in_features == 259
    assert decoder.layers[3].out_features == 512 - 259 and decoder.layers[4].in_features == 512
    assert all(hasattr(layer, "parametrizations") for layer in decoder.layers)
    points, codes = torch.randn(10, 3) * 5, torch.randn(10, 256) * 5
    values = decoder.eval()(points, codes)
    assert values.shape == (10, 1) and values.abs().max() < 1
    np.testing.assert_allclose(decoder(points, codes[0]).detach(), decoder(points, codes[:1].expand(10, -1)).detach(),
                               rtol=0, atol=1e-6)
    assert DeepSDFDecoder(**decoder.config()).config() == decoder.config()


@pytest.mark.parametrize(("latent_size", "width", "layers", "latent_in"),
                         [(256, 512, 8, (4,)), (7, 33, 3, (1,)), (1, 16, 5, (2, 4))])
def test_decoder_matches_the_original_deepsdf(latent_size: int, width: int, layers: int, latent_in: tuple,
                                              seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    state = original_state_dict(latent_size, width, layers, latent_in, generator)
    decoder = DeepSDFDecoder.from_deepsdf_state_dict(state, latent_in=latent_in, dropout=0.2).eval()
    assert decoder.output.weight.dtype == torch.float64
    assert (decoder.latent_size, decoder.hidden_features, decoder.hidden_layers) == (latent_size, width, layers)
    xyz = torch.randn(257, 3, generator=generator, dtype=torch.float64)
    latent = torch.randn(257, latent_size, generator=generator, dtype=torch.float64)
    expected = original_deepsdf_forward({k.removeprefix("module."): v for k, v in state.items()}, latent, xyz,
                                        latent_in)
    torch.testing.assert_close(decoder(xyz, latent).detach(), expected, rtol=1e-12, atol=1e-12)


def test_decoder_rejects_bad_arguments_and_inputs() -> None:
    with pytest.raises(ValueError, match="latent_in"):
        DeepSDFDecoder(hidden_layers=4, latent_in=(4,))
    with pytest.raises(ValueError, match="exceed"):
        DeepSDFDecoder(latent_size=256, hidden_features=128)
    with pytest.raises(ValueError, match="dropout"):
        DeepSDFDecoder(dropout=1.0)
    with pytest.raises(ValueError, match="not a DeepSDF"):
        DeepSDFDecoder.from_deepsdf_state_dict({"net.0.weight": torch.zeros(1)})
    decoder = DeepSDFDecoder(**SMALL_DECODER)
    with pytest.raises(ValueError, match="points"):
        decoder(torch.zeros(4, 2), torch.zeros(8))
    with pytest.raises(ValueError, match="latent"):
        decoder(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="latent"):
        decoder(torch.zeros(4, 3), torch.zeros(4, 5))


# ------------------------------------------------------------------------------------------------
# Auto-decoder training
# ------------------------------------------------------------------------------------------------


def test_training_learns_every_shape_and_its_code(trained, seed: int) -> None:
    model, history = trained
    assert history["epochs"] == TRAINING["epochs"] and len(history["loss"]) == TRAINING["epochs"]
    assert np.mean(history["loss"][-10:]) < history["loss"][0] / 5
    assert history["learning_rate"][0] == 2e-3 and history["learning_rate"][-1] == 1e-3
    rng = np.random.default_rng(seed)
    for name, radius in zip(model.names, RADII):
        assert radius_error(model.shape(name), radius, rng) < 0.02, name
    assert model.code("r0.3").shape == (8,) and torch.equal(model.code(0), model.code("r0.3"))


def test_sample_pools_are_balanced_and_the_same_on_any_process() -> None:
    shapes = sphere_family(1)
    points, sdf, owners = shapes.batch([4, 1], 100, seed=3, epoch=2)
    assert points.shape == (200, 3) and owners.tolist() == [4] * 100 + [1] * 100
    assert (sdf[:50] > 0).all() and (sdf[50:100] <= 0).all()
    alone, _, _ = shapes.batch([1], 100, seed=3, epoch=2)
    assert torch.equal(alone, points[100:])
    assert not torch.equal(shapes.batch([1], 100, seed=3, epoch=3)[0], alone)


def test_load_shapes_and_its_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for radius in (0.3, 0.5):
        fastsdf.save_npz(tmp_path / f"sphere_{radius}.npz", sphere_samples(radius, rng, 100))
    shapes = load_shapes(tmp_path)
    assert shapes.names == ["sphere_0.3", "sphere_0.5"] and len(shapes) == 2
    with pytest.raises(FileNotFoundError):
        load_shapes(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .npz"):
        load_shapes(tmp_path / "empty")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="broken.npz"):
        load_shapes(tmp_path)
    with pytest.raises(ValueError, match="unique"):
        ShapeSamples(["a", "a"], [sphere_samples(0.3, rng, 10)] * 2)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"epochs": 0}, "epochs"), ({"shapes_per_batch": 1.5}, "shapes_per_batch"),
    ({"learning_rate": float("nan")}, "learning_rate"), ({"code_regularization": -1.0}, "code_regularization"),
])
def test_training_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fastsdf.train_deepsdf(sphere_family(0), small_decoder(), **{**TRAINING, **kwargs})


def test_training_needs_a_decoder_with_a_latent_input() -> None:
    with pytest.raises(ValueError, match="latent"):
        fastsdf.train_deepsdf(sphere_family(0), SirenMLP(3, 16, 1, 1), **TRAINING)


def test_siren_with_a_latent_input_is_a_decoder_too(seed: int) -> None:
    torch.manual_seed(0)
    decoder = SirenMLP(3, 64, 2, 1, latent_features=8, double_backward=False)
    model, history = fastsdf.train_deepsdf(sphere_family(0), decoder, seed=0, **{**TRAINING, "epochs": 60,
                                                                               "learning_rate": 5e-4})
    assert np.mean(history["loss"][-5:]) < history["loss"][0] / 3
    assert radius_error(model.shape("r0.5"), 0.5, np.random.default_rng(seed)) < 0.05


def test_a_killed_run_resumes_where_it_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    options = {**TRAINING, "epochs": 12, "shapes_per_batch": 2, "seed": 5, "checkpoint_every": 0.0}
    whole, _ = fastsdf.train_deepsdf(sphere_family(0), small_decoder(), checkpoint=tmp_path / "whole.pt", **options)

    real_step = torch.optim.Adam.step
    calls = {"n": 0}

    def dying_step(self, *args, **kwargs):  # noqa: ANN001
        calls["n"] += 1
        if calls["n"] > 16:  # in the 6th of 12 epochs (3 steps each)
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        fastsdf.train_deepsdf(sphere_family(0), small_decoder(), checkpoint=tmp_path / "run.pt", **options)
    monkeypatch.setattr(torch.optim.Adam, "step", real_step)
    resumed, history = fastsdf.train_deepsdf(sphere_family(0), small_decoder(seed=9), checkpoint=tmp_path / "run.pt",
                                             **options)
    assert history["epoch"] == list(range(1, 13))
    torch.testing.assert_close(resumed.codes, whole.codes, rtol=0, atol=1e-6)
    points = torch.rand(50, 3) * 2 - 1
    torch.testing.assert_close(resumed.decoder(points, resumed.codes[0]), whole.decoder(points, whole.codes[0]),
                               rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="another run"):
        fastsdf.train_deepsdf(sphere_family(0), small_decoder(), checkpoint=tmp_path / "run.pt",
                              **{**options, "epochs": 20})


def test_two_processes_train_what_one_trains(tmp_path: Path) -> None:
    """torchrun with 2 CPU processes (gloo) through the CLI against the API on one process."""
    data = tmp_path / "data"
    shapes = sphere_family(2)
    for name, samples in zip(shapes.names, (sphere_samples(r, np.random.default_rng(i)) for i, r in enumerate(RADII))):
        fastsdf.save_npz(data / f"{name}.npz", samples)
    options = ["--latent-size", "8", "--width", "64", "--layers", "4", "--dropout", "0", "--epochs", "6",
               "--shapes-per-batch", "4", "--samples-per-shape", "256", "--seed", "3", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "fastsdf.cli", "train-deepsdf", str(data), "--out", str(tmp_path / "ddp"), *options],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "on 2 processes" in result.stdout and not (tmp_path / "ddp" / "checkpoint.pt").exists()
    ddp = fastsdf.load_model(tmp_path / "ddp")

    torch.manual_seed(3)
    decoder = DeepSDFDecoder(latent_size=8, hidden_features=64, hidden_layers=4, latent_in=(2,), dropout=0.0)
    single, _ = fastsdf.train_deepsdf(load_shapes(data), decoder, epochs=6, shapes_per_batch=4,
                                      samples_per_shape=256, seed=3, progress=False)
    assert ddp.names == single.names
    torch.testing.assert_close(ddp.codes, single.codes, rtol=0, atol=1e-4)
    points = torch.rand(100, 3) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(ddp.decoder(points, ddp.codes[1]), single.decoder(points, single.codes[1]),
                                   rtol=0, atol=1e-4)


# ------------------------------------------------------------------------------------------------
# Latent inference, interpolation, saving
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_reconstruct_a_held_out_shape(trained, precision: str, seed: int) -> None:
    model, _ = trained
    rng = np.random.default_rng(seed)
    samples = sphere_samples(HELD_OUT, rng)
    before = [p.detach().clone() for p in model.decoder.parameters()]
    result = fastsdf.reconstruct(model, samples, seed=seed % 2**31, precision=precision)
    assert result.code.shape == (8,) and result.code.dtype == torch.float32 and result.seconds > 0
    assert len(result.loss) == ITERATIONS
    assert radius_error(result.shape, HELD_OUT, rng) < 0.02
    assert all(torch.equal(a, b) for a, b in zip(before, model.decoder.parameters()))
    assert all(p.requires_grad for p in model.decoder.parameters()) and not model.decoder.training


@pytest.mark.parametrize("direction", [(0, 0, 1), (-1, 0, 0)])
def test_reconstruct_from_one_side_completes_the_shape(trained, direction: tuple, seed: int) -> None:
    model, _ = trained
    rng = np.random.default_rng(seed)
    samples = sphere_samples(HELD_OUT, rng)
    seen = fastsdf.partial_view(samples, direction)
    assert 0.3 * len(samples) < len(seen) < 0.7 * len(samples)
    assert (seen.points @ np.asarray(direction, float) >= 0).all()
    result = fastsdf.reconstruct(model, seen, seed=seed % 2**31)
    hidden = -np.asarray(direction, float)  # the unseen side must be right too
    points = rng.standard_normal((2000, 3))
    points = points / np.linalg.norm(points, axis=1, keepdims=True) * (HELD_OUT + rng.uniform(-0.05, 0.05, (2000, 1)))
    points = points[points @ hidden > 0].astype(np.float32)
    assert np.abs(result.shape.sdf(points) - (np.linalg.norm(points, axis=1) - HELD_OUT)).mean() < 0.03


def test_reconstruct_takes_npz_files_and_arrays_and_rejects_bad_input(trained, tmp_path: Path) -> None:
    model, _ = trained
    samples = sphere_samples(0.4, np.random.default_rng(0), 500)
    fastsdf.save_npz(tmp_path / "s.npz", samples)
    a = fastsdf.reconstruct(model, tmp_path / "s.npz", iterations=5, seed=1)
    b = fastsdf.reconstruct(model, (samples.points, samples.sdf), iterations=5, seed=1)
    torch.testing.assert_close(a.code, b.code)
    with pytest.raises(ValueError, match="iterations"):
        fastsdf.reconstruct(model, samples, iterations=0)
    with pytest.raises(ValueError, match="precision"):
        fastsdf.reconstruct(model, samples, precision="fp16")
    with pytest.raises(ValueError, match="no samples"):
        fastsdf.reconstruct(model, (np.zeros((0, 3)), np.zeros(0)))
    with pytest.raises(TypeError, match="samples"):
        fastsdf.reconstruct(model, [1, 2, 3])
    with pytest.raises(ValueError, match="direction"):
        fastsdf.partial_view(samples, (0, 0, 0))


def test_interpolation_runs_between_the_codes(trained) -> None:
    model, _ = trained
    shapes = model.interpolate("r0.3", "r0.7", 5)
    assert len(shapes) == 5
    torch.testing.assert_close(shapes[0].network.code, model.code("r0.3"))
    torch.testing.assert_close(shapes[-1].network.code, model.code("r0.7"))
    radii = []
    for shape in shapes:
        verts, faces = fastsdf.extract_mesh(shape, 48, bounds=shape.bounds())
        assert len(faces) > 0
        radii.append(float(np.linalg.norm(verts.numpy(), axis=1).mean()))
    assert radii == sorted(radii) and abs(radii[0] - 0.3) < 0.03 and abs(radii[-1] - 0.7) < 0.03
    with pytest.raises(ValueError, match="count"):
        model.interpolate(0, 1, 1)
    with pytest.raises(KeyError):
        model.shape("no such shape")


def test_save_and_load_the_auto_decoder(trained, tmp_path: Path) -> None:
    model, _ = trained
    path = model.save(tmp_path / "run")
    assert path == tmp_path / "run" / "model.pt"
    loaded = fastsdf.load_model(tmp_path / "run")
    assert isinstance(loaded, AutoDecoder) and loaded.names == model.names
    assert isinstance(loaded.decoder, DeepSDFDecoder) and loaded.decoder.config() == model.decoder.config()
    torch.testing.assert_close(loaded.codes, model.codes)
    points = np.random.default_rng(0).uniform(-1, 1, (100, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.shape("r0.5").sdf(points), model.shape("r0.5").sdf(points), rtol=0, atol=1e-6)
    assert loaded.history["epochs"] == TRAINING["epochs"]
