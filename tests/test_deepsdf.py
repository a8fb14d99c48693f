"""DeepSDF: the decoder (against a re-implementation of the original), auto-decoder training (on
several processes: test_deepsdf_ddp.py), resumption, latent inference from full and partial
samples, interpolation, saving.

The shapes are a family of spheres (radii 0.3 to 0.7): a one-parameter family a small decoder learns
in seconds, whose truth is known everywhere (|p| - r).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fastsdf
from fastsdf import DeepSDFDecoder
from fastsdf.nn import SirenMLP
from fastsdf.training.autodecoder import AutoDecoder
from fastsdf.training.reconstruct import ITERATIONS, RECIPES
from fastsdf.training.shapes import ShapeSamples, load_shapes
from original_deepsdf import Decoder as OriginalDecoder
from training_helpers import sphere_samples

RADII = (0.3, 0.4, 0.5, 0.6, 0.7)
HELD_OUT = 0.55
SMALL_DECODER = {"latent_size": 8, "hidden_features": 64, "hidden_layers": 4, "latent_in": (2,), "dropout": 0.0}
TRAINING = {"epochs": 150, "shapes_per_batch": 5, "samples_per_shape": 512, "learning_rate": 2e-3,
            "code_learning_rate": 1e-2, "decay_every": 100, "progress": False}


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


def randomised_original(seed: int, latent_size: int, dims: list[int], **specs) -> OriginalDecoder:
    """The original decoder in float64 with every parameter drawn afresh (weight_g, LayerNorm gains
    and biases away from their initial 1 and 0, so that each one counts)."""
    torch.manual_seed(seed % 2**63)
    original = OriginalDecoder(latent_size, dims, **specs).double()
    with torch.no_grad():
        for name, parameter in original.named_parameters():
            if name.endswith("weight_g") or name.startswith("bn") and name.endswith("weight"):
                parameter.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                parameter.normal_(0.0, 0.1)
    return original


# (latent_size, dims, specs): the paper's decoder (specs.json of examples/), and every setting of
# normalisation, tanh and latent_in the original has and DeepSDFDecoder takes.
ORIGINAL_SETTINGS = {
    "paper": (256, [512] * 8, {"norm_layers": list(range(8)), "latent_in": [4], "weight_norm": True}),
    "paper, use_tanh": (256, [512] * 8, {"norm_layers": list(range(8)), "latent_in": [4], "weight_norm": True,
                                         "use_tanh": True}),
    "weight norm on the output too": (7, [33] * 3, {"norm_layers": [0, 1, 2, 3], "latent_in": [1],
                                                    "weight_norm": True}),
    "plain": (1, [16] * 5, {"latent_in": [2, 4]}),
    "plain, use_tanh": (5, [24] * 4, {"use_tanh": True}),
    "layer norm": (6, [32] * 4, {"norm_layers": [0, 1, 2, 3], "latent_in": [2]}),
    "layer norm on some layers, use_tanh": (6, [32] * 4, {"norm_layers": [1, 3], "latent_in": [2],
                                                         "use_tanh": True}),
    "layer norm, the output's unused": (3, [20] * 3, {"norm_layers": [0, 1, 2, 3]}),
}


@pytest.mark.parametrize("setting", list(ORIGINAL_SETTINGS))
def test_decoder_matches_the_original_deepsdf(setting: str, seed: int) -> None:
    """Every setting in float64, evaluated and in training (the same dropout draws: LayerNorm,
    ReLU and dropout in the original's order), from a DataParallel checkpoint's keys."""
    latent_size, dims, specs = ORIGINAL_SETTINGS[setting]
    hidden = list(range(len(dims)))
    original = randomised_original(seed, latent_size, dims, dropout=hidden, dropout_prob=0.2, **specs)
    state = {f"module.{k}": v for k, v in original.state_dict().items()}
    decoder = DeepSDFDecoder.from_deepsdf_state_dict(state, use_tanh=specs.get("use_tanh", False), dropout=0.2)
    assert decoder.output.weight.dtype == torch.float64
    assert (decoder.latent_size, decoder.hidden_features, decoder.hidden_layers) == (latent_size, dims[0], len(dims))
    assert decoder.latent_in == tuple(specs.get("latent_in", ()))
    generator = torch.Generator().manual_seed(seed % 2**63)
    xyz = torch.randn(257, 3, generator=generator, dtype=torch.float64)
    latent = torch.randn(257, latent_size, generator=generator, dtype=torch.float64)
    for training in (False, True):
        original.train(training)
        decoder.train(training)
        torch.manual_seed(seed % 2**63)
        expected = original(torch.cat([latent, xyz], dim=1))
        torch.manual_seed(seed % 2**63)
        got = decoder(xyz, latent)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12, msg=f"{setting}, training={training}")
    assert DeepSDFDecoder(**decoder.config()).config() == decoder.config()


@pytest.mark.parametrize(("specs", "kwargs", "message"), [
    ({"xyz_in_all": True}, {}, "xyz_in_all"),
    ({"norm_layers": [0, 2], "weight_norm": True}, {}, "every hidden layer or none"),
    ({"latent_in": [3]}, {}, "before the output layer"),
    ({"latent_in": [2]}, {"latent_in": (1,)}, "latent_in"),
    ({}, {"tanh_output": False}, "tanh"),
])
def test_original_settings_without_a_counterpart_are_refused(specs: dict, kwargs: dict, message: str) -> None:
    original = randomised_original(0, 4, [16] * 3, **specs)
    with pytest.raises((ValueError, TypeError), match=message):
        DeepSDFDecoder.from_deepsdf_state_dict(original.state_dict(), **kwargs)


@pytest.mark.parametrize("damage", ["extra key", "missing bias", "bn without weight", "both norms", "narrow"])
def test_damaged_original_state_dicts_are_refused(damage: str) -> None:
    state = randomised_original(0, 4, [16] * 3, norm_layers=[0, 1, 2]).state_dict()
    if damage == "extra key":
        state["lat_vecs.weight"] = torch.zeros(3, 4)
    elif damage == "missing bias":
        del state["lin1.bias"]
    elif damage == "bn without weight":
        del state["bn1.weight"]
    elif damage == "both norms":
        state["lin0.weight_g"], state["lin0.weight_v"] = torch.ones(16, 1), state.pop("lin0.weight")
    else:
        state["lin1.weight"], state["lin1.bias"] = state["lin1.weight"][:12], state["lin1.bias"][:12]
    with pytest.raises(ValueError):
        DeepSDFDecoder.from_deepsdf_state_dict(state)


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
    ({"time_budget": 0.0}, "time_budget"),
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


def test_a_time_budget_stops_at_an_epoch_s_end_and_the_checkpoint_goes_on(tmp_path: Path) -> None:
    options = {**TRAINING, "epochs": 4, "samples_per_shape": 64, "seed": 1, "num_workers": 0}
    _, history = fastsdf.train_deepsdf(sphere_family(0), small_decoder(), time_budget=1e-9,
                                       checkpoint=tmp_path / "run.pt", **options)
    assert history["epoch"] == [1] and history["epochs"] == 1
    _, history = fastsdf.train_deepsdf(sphere_family(0), small_decoder(), checkpoint=tmp_path / "run.pt", **options)
    assert history["epoch"] == [1, 2, 3, 4]


def test_parallel_training_stops_by_epochs_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each process's own clock would stop it at a different epoch, and the others would wait forever."""
    from fastsdf.training import epochs

    monkeypatch.setattr(epochs, "process_world", lambda: (2, 0))
    with pytest.raises(ValueError, match="time budget would stop parallel processes"):
        fastsdf.train_deepsdf(sphere_family(0), small_decoder(), time_budget=10.0, **TRAINING)


def test_a_killed_run_resumes_where_it_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Streamed from the files by 2 DataLoader workers (ShapeSamples in memory go the same way)."""
    options = {**TRAINING, "epochs": 12, "shapes_per_batch": 2, "seed": 5, "checkpoint_every": 0.0, "num_workers": 2}
    for i, (name, radius) in enumerate(zip(sphere_family(0).names, RADII)):
        fastsdf.save_npz(tmp_path / "data" / f"{name}.npz", sphere_samples(radius, np.random.default_rng(i)))
    data = tmp_path / "data"
    whole, _ = fastsdf.train_deepsdf(data, small_decoder(), checkpoint=tmp_path / "whole.pt", **options)

    real_step = torch.optim.Adam.step
    calls = {"n": 0}

    def dying_step(self, *args, **kwargs):  # noqa: ANN001
        calls["n"] += 1
        if calls["n"] > 16:  # in the 6th of 12 epochs (3 steps each)
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        fastsdf.train_deepsdf(data, small_decoder(), checkpoint=tmp_path / "run.pt", **options)
    monkeypatch.setattr(torch.optim.Adam, "step", real_step)
    resumed, history = fastsdf.train_deepsdf(data, small_decoder(seed=9), checkpoint=tmp_path / "run.pt",
                                             **options)
    assert history["epoch"] == list(range(1, 13))
    torch.testing.assert_close(resumed.codes, whole.codes, rtol=0, atol=1e-6)
    points = torch.rand(50, 3) * 2 - 1
    torch.testing.assert_close(resumed.decoder(points, resumed.codes[0]), whole.decoder(points, whole.codes[0]),
                               rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="another run"):
        fastsdf.train_deepsdf(data, small_decoder(), checkpoint=tmp_path / "run.pt",
                              **{**options, "epochs": 20})


# One process in a gloo group of one: prints its thread count before the group, the names of the
# threads left after training in it and destroy_process_group, and the warnings training gave.
GROUP_SCRIPT = """
import json, os, sys, time, warnings
import torch, torch.distributed as dist
import fastsdf
from fastsdf.training.shapes import load_shapes

def train():
    decoder = fastsdf.DeepSDFDecoder(latent_size=4, hidden_features=16, hidden_layers=2, latent_in=(), dropout=0.0)
    fastsdf.train_deepsdf(load_shapes(sys.argv[1]), decoder, epochs=2, shapes_per_batch=5, samples_per_shape=64,
                          progress=False)

{before_group}
torch.ones(500, 500) @ torch.ones(500, 500)  # the pools' threads exist before the count
before = len(os.listdir("/proc/self/task"))
dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
{in_group}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    train()
dist.destroy_process_group()

def threads():
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{{task}}/comm") as f:
                names.append(f.read().strip())
        except FileNotFoundError:  # exited since the listing
            pass
    return names

# Threads of a destroyed group may take a moment to exit (CI saw 3 once, on a loaded machine);
# those of a group kept alive stay.
deadline = time.monotonic() + 10
while len(threads()) > before and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps([before, sorted(threads()), [str(w.message) for w in caught]]))
"""


def train_in_a_group(tmp_path: Path, import_first: bool) -> tuple[int, list[str], list[str]]:
    """(threads before init_process_group, the names of those left after destroy_process_group,
    the warnings training gave)."""
    for i, (name, radius) in enumerate(zip(sphere_family(0).names, RADII)):
        fastsdf.save_npz(tmp_path / f"{name}.npz", sphere_samples(radius, np.random.default_rng(i)))
    load = "from fastsdf import train_deepsdf"  # what a script does first (the docstring says so)
    script = GROUP_SCRIPT.format(before_group=load if import_first else "", in_group="" if import_first else load)
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    before, after, warned = json.loads(result.stdout.strip().splitlines()[-1])
    return before, after, warned


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads in /proc/self/task")
def test_training_leaves_no_gloo_threads_after_destroy_process_group(tmp_path: Path) -> None:
    """torch.distributed.nn, imported after init_process_group, would keep the group and its gloo
    threads alive past destroy_process_group; one of them then aborted about 1 torchrun run in 40 at exit."""
    before, after, warned = train_in_a_group(tmp_path, import_first=True)
    assert len(after) == before and warned == [], after


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads in /proc/self/task")
def test_training_warns_when_fastsdf_came_after_the_process_group(tmp_path: Path) -> None:
    _, _, warned = train_in_a_group(tmp_path, import_first=False)
    assert len(warned) == 1 and "imported after init_process_group" in warned[0]


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


# ------------------------------------------------------------------------------------------------
# Reconstruction recipes
# ------------------------------------------------------------------------------------------------


def test_the_deepsdf_recipe_is_the_original_s() -> None:
    """DeepSDF's reconstruct.py as its main block calls it: 800 iterations of 8,000 samples, Adam at
    5e-3 times 0.1^(e // (800 // 2)), codes from N(0, 0.01^2), L1 between the clamped prediction and
    target, 1e-4 mean(z^2)."""
    recipe = RECIPES["deepsdf"]
    assert (recipe.iterations, recipe.samples_per_iteration, recipe.learning_rate, recipe.init_std) == (
        800, 8000, 5e-3, 0.01)
    assert (recipe.code_regularization, recipe.penalty, recipe.clamp, recipe.precision) == (1e-4, "mean", "both", "fp32")
    rates = [recipe.learning_rate_at(i) for i in range(800)]
    assert rates[:400] == [5e-3] * 400 and rates[400:] == pytest.approx([5e-4] * 400, rel=1e-12)
    odd = dataclasses.replace(recipe, iterations=7)  # int(7 / 2) = 3: a third rate for the last iteration
    assert [odd.learning_rate_at(i) for i in range(7)] == pytest.approx([5e-3] * 3 + [5e-4] * 3 + [5e-5], rel=1e-12)
    assert RECIPES["fast"].iterations == ITERATIONS and RECIPES["fast"].penalty == "sum"
    with pytest.raises(ValueError, match="penalty"):
        dataclasses.replace(recipe, penalty="l1")


def test_recipe_objectives_penalise_and_clamp_as_documented(seed: int) -> None:
    code = torch.randn(256, generator=torch.Generator().manual_seed(seed % 2**63), dtype=torch.float64)
    target = torch.tensor([0.05, -0.5, 0.5, 0.5], dtype=torch.float64)
    deepsdf, fast = RECIPES["deepsdf"], RECIPES["fast"]
    assert deepsdf.objective(target.clamp(-0.1, 0.1), target, code)[0].item() == pytest.approx(
        1e-4 * code.square().mean().item(), rel=1e-12)
    assert fast.objective(target.clamp(-0.1, 0.1), target, code)[0].item() == pytest.approx(
        1e-4 * code.square().sum().item(), rel=1e-12)
    predicted = torch.tensor([0.3, -0.3, 0.05, 0.3], dtype=torch.float64, requires_grad=True)
    for recipe, loss, gradient in ((deepsdf, 0.025, [0, 0, -0.25, 0]), (fast, 0.075, [0.25, 0, -0.25, 0])):
        _, errors = recipe.objective(predicted, target, code)
        assert errors.item() == pytest.approx(loss, rel=1e-12), recipe.clamp
        torch.testing.assert_close(torch.autograd.grad(errors, predicted)[0],
                                   torch.tensor(gradient, dtype=torch.float64), rtol=0, atol=1e-15)


def test_reconstruct_runs_the_original_algorithm_with_the_deepsdf_recipe(trained, seed: int) -> None:
    """reconstruct(recipe="deepsdf") against DeepSDF's loop written out, on the same samples."""
    model, _ = trained
    samples = sphere_samples(HELD_OUT, np.random.default_rng(seed))
    seed = seed % 2**31
    result = fastsdf.reconstruct(model, samples, recipe="deepsdf", iterations=9, samples_per_iteration=256, seed=seed)
    assert result.recipe.penalty == "mean" and result.recipe.precision == "fp32" and len(result.loss) == 9
    assert result.learning_rate == pytest.approx([5e-3] * 4 + [5e-4] * 4 + [5e-5], rel=1e-12)

    pool = ShapeSamples(["target"], [samples])
    latent = torch.empty(8).normal_(0.0, 0.01, generator=torch.Generator().manual_seed(seed)).requires_grad_(True)
    optimizer = torch.optim.Adam([latent], lr=5e-3)
    decoder = model.decoder.eval()
    for e in range(9):
        xyz, sdf_gt, _ = pool.batch([0], 256, seed, e)
        for group in optimizer.param_groups:
            group["lr"] = 5e-3 * (1 / 10) ** (e // int(9 / 2))
        optimizer.zero_grad()
        pred_sdf = decoder(xyz, latent)[:, 0].clamp(-0.1, 0.1)
        loss = torch.nn.L1Loss()(pred_sdf, sdf_gt.clamp(-0.1, 0.1)) + 1e-4 * torch.mean(latent.pow(2))
        loss.backward()
        optimizer.step()
    decoder.zero_grad(set_to_none=True)
    torch.testing.assert_close(result.code, latent.detach(), rtol=0, atol=1e-6)


def test_cli_reconstruct_takes_the_recipe(trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastsdf.cli import main
    from fastsdf.training import reconstruct as reconstruct_module

    model, _ = trained
    model.save(tmp_path / "run")
    fastsdf.save_npz(tmp_path / "s.npz", sphere_samples(0.4, np.random.default_rng(0), 500))
    calls = []

    class Stop(Exception):
        pass

    def recording(*args, **kwargs):  # noqa: ANN002, ANN003
        calls.append(kwargs)
        raise Stop

    monkeypatch.setattr(reconstruct_module, "reconstruct", recording)
    for extra, recipe in (([], "fast"), (["--recipe", "deepsdf"], "deepsdf")):
        with pytest.raises(Stop):
            main(["reconstruct", str(tmp_path / "run"), str(tmp_path / "s.npz"), "--out", str(tmp_path / "out"),
                  "--quiet", *extra])
        assert calls[-1]["recipe"] == recipe and calls[-1]["iterations"] is None
    assert main(["reconstruct", "M", "S", "--out", "O", "--recipe", "paper"]) == 2
